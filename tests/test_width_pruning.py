"""width_pruning against the contract kit, plus what narrowing the residual stream specifically promises."""

import copy

import pytest
import torch

from autocompress.measure import dummy_inputs, parameter_count
from autocompress.model_io import loads_with_plain_transformers, save_candidate
from autocompress.plugins.width_pruning import WidthPruning, kept_width
from autocompress.testing import TechniqueContract, tiny_model


class TestWidthPruningContract(TechniqueContract):
    technique = WidthPruning
    mild_config = {"width_fraction": 0.75}
    # The mildest cut on the kit's 4-head models is one head in four, with no recovery: measured 0.21-0.23
    # of the largest logit on the trained tiny models (the search always distils after it).
    mild_tolerance = 0.25
    strong_config = {"width_fraction": 0.5}
    bad_configs = [{"width_fraction": 0.0}, {"width_fraction": 1.5}, {"width_fraction": "half"}, {"samples": 0},
                   {"width": 32}]


def _narrow(model, tmp_path, **values):
    return TestWidthPruningContract().apply(model, values, tmp_path)


def test_width_is_rounded_to_whole_heads():
    assert kept_width(384, 32, 0.67) == 256
    assert kept_width(768, 64, 2 / 3) == 512  # the source documents' student: 512 wide, 8 heads of 64
    assert kept_width(64, 16, 0.1) == 16  # at least one head


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_every_part_on_the_stream_narrows_and_the_config_stays_true(tmp_path, family):
    model = tiny_model(family, hidden=64, heads=4, ffn=128)
    student, _ = _narrow(copy.deepcopy(model), tmp_path, width_fraction=0.5)
    width = 32
    hidden_attribute, heads_attribute = (("hidden_size", "num_attention_heads") if family == "bert"
                                         else ("dim", "n_heads"))
    assert getattr(student.config, hidden_attribute) == width and getattr(student.config, heads_attribute) == 2
    state = student.state_dict()
    for name, value in state.items():
        if name.endswith("position_ids") or name.endswith("token_type_ids"):
            continue
        if "embeddings" in name and "weight" in name and "LayerNorm" not in name:
            assert value.shape[1] == width, name  # every embedding table: width columns
        elif "LayerNorm" in name or "layer_norm" in name:
            assert value.shape == (width,), name
    # every q/k/v: 2 heads of 16 read the narrow stream; FFN keeps its 128 neurons
    layer = student.get_submodule("bert.encoder.layer.0" if family == "bert" else "distilbert.transformer.layer.0")
    query = layer.attention.self.query if family == "bert" else layer.attention.q_lin
    ffn_in = layer.intermediate.dense if family == "bert" else layer.ffn.lin1
    assert tuple(query.weight.shape) == (32, 32) and tuple(ffn_in.weight.shape) == (128, 32)
    head = student.bert.pooler.dense if family == "bert" else student.pre_classifier
    assert tuple(head.weight.shape) == (32, 32) and tuple(student.classifier.weight.shape) == (2, 32)
    assert parameter_count(student) < 0.6 * parameter_count(model)
    with torch.inference_mode():
        assert student(**dummy_inputs(2, 7, 128)).logits.shape == (2, 2)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_plain_transformers_reloads_a_width_pruned_model(tmp_path, family):
    from transformers import AutoModelForSequenceClassification

    student, context = _narrow(tiny_model(family), tmp_path, width_fraction=0.5)
    directory = save_candidate(tmp_path / "saved", student, context.tokenizer, [])
    assert loads_with_plain_transformers(directory)
    plain = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    inputs = dummy_inputs(2, 9, 128)
    with torch.inference_mode():
        assert torch.equal(plain(**inputs).logits, student(**inputs).logits)


def test_the_channels_that_carry_activation_are_kept(tmp_path):
    """Channels whose every weight is zeroed carry nothing: those are the ones removed."""
    model = tiny_model("bert", hidden=64, heads=4)
    dead = torch.arange(0, 64, 2)  # half of the stream
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight[dead] = 0.0
                module.bias[dead] = 0.0
    student, _ = _narrow(model, tmp_path, width_fraction=0.5)
    kept_gamma = student.bert.embeddings.LayerNorm.weight
    assert (kept_gamma != 0).all()  # every zero channel went, every live one stayed


def test_heads_keep_their_size_and_the_most_important_stay(tmp_path):
    model = tiny_model("bert", hidden=64, heads=4)
    layer = model.bert.encoder.layer[0]
    with torch.no_grad():  # head 2 of layer 0 writes nothing: it is the one dropped
        layer.attention.output.dense.weight[:, 32:48] = 0.0
    original_query = layer.attention.self.query.weight.detach().clone()
    student, _ = _narrow(copy.deepcopy(model), tmp_path, width_fraction=0.75)
    query = student.bert.encoder.layer[0].attention.self.query.weight
    assert query.shape == (48, 48)  # 3 heads of 16 (the head size stays) reading 48 channels
    channels = _kept_channels(model, student)
    heads_0_1_3 = [r for r in range(64) if not 32 <= r < 48]
    assert torch.equal(query, original_query[heads_0_1_3][:, channels])


def _kept_channels(model, student) -> list[int]:
    """The stream channels the student kept, found by matching word-embedding columns (random, so unique)."""
    original = model.bert.embeddings.word_embeddings.weight.detach()
    kept = student.bert.embeddings.word_embeddings.weight.detach()
    return [next(c for c in range(original.shape[1]) if torch.equal(original[:, c], kept[:, j]))
            for j in range(kept.shape[1])]


def test_without_data_weights_decide_with_a_warning():
    from autocompress.arch import adapter_for
    from autocompress.plugin_manager import build_host
    from autocompress.technique import ApplyContext

    model = tiny_model("bert")
    context = ApplyContext(adapter=adapter_for(model, build_host(autoload=False).architectures), tokenizer=None)
    with pytest.warns(UserWarning, match="weight norms"):
        student = WidthPruning().apply(model, WidthPruning.make_config({"width_fraction": 0.5}), context)
    assert student.config.hidden_size == 32


def test_roberta_and_shared_layers_narrow_too(tmp_path):
    from autocompress.plugins.layer_sharing import LayerSharing
    from autocompress.technique import PlanStep

    contract = TestWidthPruningContract()
    model = tiny_model("bert", layers=4)
    context = contract.context(model, tmp_path)
    from autocompress.candidate import apply_steps

    steps = [PlanStep(LayerSharing, LayerSharing.make_config({"group_size": 2})),
             PlanStep(WidthPruning, WidthPruning.make_config({"width_fraction": 0.5}))]
    student = apply_steps(model, steps, context)
    layers = student.bert.encoder.layer
    assert layers[0] is layers[1] and layers[0].attention.self.query.weight.shape == (32, 32)
    roberta, _ = _narrow(tiny_model("roberta"), tmp_path, width_fraction=0.5)
    assert roberta.config.hidden_size == 32 and roberta.classifier.out_proj.weight.shape == (2, 32)


def test_hidden_state_distillation_projects_the_narrow_student_to_the_teacher_width(tmp_path, monkeypatch):
    from autocompress import distill
    from autocompress.arch import adapter_for
    from autocompress.candidate import apply_steps
    from autocompress.plugin_manager import build_host
    from autocompress.plugins.distillation import Distillation
    from autocompress.technique import PlanStep

    seen = []
    original = distill.hidden_state_loss

    def spy(student, teacher, mask, projection=None):
        seen.append((student.shape[-1], teacher.shape[-1], projection))
        return original(student, teacher, mask, projection)

    monkeypatch.setattr(distill, "hidden_state_loss", spy)
    model = tiny_model("bert")
    context = TestWidthPruningContract().context(model, tmp_path)  # the teacher: the unpruned model
    student = apply_steps(model, [PlanStep(WidthPruning, WidthPruning.make_config({"width_fraction": 0.5}))], context)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    context.adapter = adapter_for(student, build_host(autoload=False).architectures)
    config = Distillation.make_config({"hidden_weight": 1.0, "attention_weight": 1.0, "epochs": 1.0, "batch_size": 8,
                                       "learning_rate": 1e-3})
    student = apply_steps(student, [PlanStep(Distillation, config)], context)
    assert seen and all(ours == 32 and theirs == 64 and isinstance(projection, torch.nn.Linear)
                        and (projection.in_features, projection.out_features) == (32, 64)
                        for ours, theirs, projection in seen)
    assert student.config.hidden_size == 32 and "projections" not in "".join(student.state_dict())  # thrown away
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())  # it trained

"""layer_sharing against the contract kit, plus what sharing specifically promises."""

import copy

import pytest
import torch

from autocompress.measure import dummy_inputs, model_bytes, parameter_count
from autocompress.plugins.layer_sharing import LayerSharing, groups_of
from autocompress.testing import TechniqueContract, tiny_model


class TestLayerSharingContract(TechniqueContract):
    technique = LayerSharing
    mild_config = {"group_size": 2}
    # Groups of 2 is the mildest sharing; measured without recovery on the trained tiny models: 0.0005-0.0034
    # of the largest logit on BERT, RoBERTa, XLM-R and DistilBERT, but 0.62 on ELECTRA.
    mild_tolerance = 0.65
    strong_config = {"group_size": 2, "representative": "middle"}
    bad_configs = [{"group_size": 0}, {"group_size": 1.5}, {"representative": "last"}, {"groups": 2}]
    reduces_latency = False  # every layer position still runs


def _share(model, tmp_path, **values):
    return TestLayerSharingContract().apply(model, values, tmp_path)


def test_groups_are_consecutive_and_the_last_may_be_smaller():
    assert groups_of(6, 2) == [[0, 1], [2, 3], [4, 5]]
    assert groups_of(5, 2) == [[0, 1], [2, 3], [4]]
    assert groups_of(3, 4) == [[0, 1, 2]]


@pytest.mark.parametrize("family, path", [("bert", "bert.encoder.layer"),
                                          ("distilbert", "distilbert.transformer.layer")])
def test_a_group_runs_one_module_and_counts_once(tmp_path, family, path):
    teacher = tiny_model(family, layers=6)
    student, context = _share(copy.deepcopy(teacher), tmp_path, group_size=3, representative="middle")
    layers = student.get_submodule(path)
    assert layers[0] is layers[1] is layers[2] and layers[3] is layers[4] is layers[5]
    assert layers[0] is not layers[3]
    one_layer = sum(p.numel() for p in teacher.get_submodule(path)[0].parameters())
    assert parameter_count(teacher) - parameter_count(student) == 4 * one_layer
    assert model_bytes(teacher) - model_bytes(student) == 4 * one_layer * 4
    # middle of [0, 1, 2] is 1, of [3, 4, 5] is 4: their teacher weights run every position of the group
    for position, source in ((0, 1), (5, 4)):
        for (name, ours), theirs in zip(layers[position].state_dict().items(),
                                        teacher.get_submodule(path)[source].state_dict().values(), strict=True):
            assert torch.equal(ours, theirs), (position, name)
    assert context.layer_origin is None  # no layer removed: distillation maps positions one to one


def test_best_picks_the_member_that_reproduces_the_group(tmp_path):
    teacher = tiny_model("bert", layers=4)
    layers = teacher.bert.encoder.layer
    with torch.no_grad():  # layer 1 does nothing (zero residual branches) and layer 0 much: 0 represents [0, 1]
        for name in ("attention.output.dense", "output.dense"):
            layers[1].get_submodule(name).weight.zero_()
            layers[1].get_submodule(name).bias.zero_()
    student, _ = _share(copy.deepcopy(teacher), tmp_path, group_size=2, representative="best")
    shared = student.bert.encoder.layer
    assert shared[0] is shared[1]
    assert torch.equal(shared[0].output.dense.weight, layers[0].output.dense.weight)


def test_best_without_data_falls_back_to_middle_with_a_warning():
    from autocompress.arch import adapter_for
    from autocompress.plugin_manager import build_host
    from autocompress.technique import ApplyContext

    teacher = tiny_model("bert", layers=4)
    student = copy.deepcopy(teacher)
    context = ApplyContext(adapter=adapter_for(student, build_host(autoload=False).architectures), tokenizer=None)
    with pytest.warns(UserWarning, match="middle"):
        student = LayerSharing().apply(student, LayerSharing.make_config({"group_size": 2}), context)
    shared, original = student.bert.encoder.layer, teacher.bert.encoder.layer
    assert torch.equal(shared[1].output.dense.weight, original[0].output.dense.weight)  # middle of [0, 1]


def test_group_size_one_changes_nothing(tmp_path):
    model = tiny_model("bert")
    layers = list(model.bert.encoder.layer)
    student, _ = _share(model, tmp_path, group_size=1)
    assert list(student.bert.encoder.layer) == layers


def test_shared_weights_get_gradients_from_every_position(tmp_path):
    """One training step on the shared model moves the shared weights by the sum of both positions' gradients."""
    student, _ = _share(tiny_model("bert", layers=2), tmp_path, group_size=2, representative="first")
    weight = student.bert.encoder.layer[0].output.dense.weight
    assert weight is student.bert.encoder.layer[1].output.dense.weight
    inputs = dummy_inputs(2, 8, 128)
    contributions = []
    handles = [layer.output.dense.register_full_backward_hook(
        lambda module, grad_in, grad_out: contributions.append(grad_out[0].detach())) for layer in
        student.bert.encoder.layer[:1]]
    student.train()
    student(**inputs).logits.sum().backward()
    for handle in handles:
        handle.remove()
    assert len(contributions) == 2  # the one module was called (and differentiated) at both positions
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert sum(1 for p in student.parameters() if p is weight) == 1  # the optimiser sees it once


def test_lora_recovery_keeps_the_sharing(tmp_path):
    from autocompress.arch import adapter_for
    from autocompress.candidate import apply_steps
    from autocompress.plugin_manager import build_host
    from autocompress.plugins.lora import LoraRecovery
    from autocompress.technique import PlanStep

    student, context = _share(tiny_model("bert", layers=4), tmp_path, group_size=2, representative="first")
    count = parameter_count(student)
    weight = student.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    context.adapter = adapter_for(student, build_host(autoload=False).architectures)
    config = LoraRecovery.make_config({"epochs": 1.0, "batch_size": 8, "learning_rate": 1e-2, "targets": "both"})
    trained = apply_steps(student, [PlanStep(LoraRecovery, config)], context)
    layers = trained.bert.encoder.layer
    assert layers[0] is layers[1] and layers[2] is layers[3]
    assert type(layers[0].attention.self.query) is torch.nn.Linear  # merged, no adapter left
    assert not torch.equal(layers[0].attention.self.query.weight, weight)  # the merged update reached it
    assert parameter_count(trained) == count


def test_plain_transformers_cannot_rebuild_shared_layers_and_is_not_claimed_to(tmp_path):
    from autocompress.model_io import loads_with_plain_transformers, save_candidate

    student, context = _share(tiny_model("bert", layers=4), tmp_path, group_size=2)
    directory = save_candidate(tmp_path / "saved", student, context.tokenizer, [])
    assert not loads_with_plain_transformers(directory)  # the aliases are not in the file: only ties

"""distillation against the contract kit, plus its losses, layer mapping, teacher cache and pruning hooks.

Training changes no shape, so the contract's parameter/memory/latency claims are off.
"""

import copy

import optuna
import pytest
import torch
from torch import nn

from autocompress import distill
from autocompress.arch import adapter_for
from autocompress.candidate import apply_steps
from autocompress.data import stratified_split
from autocompress.errors import InputError
from autocompress.measure import thread_count
from autocompress.plugin_manager import build_host
from autocompress.plugins.distillation import Distillation
from autocompress.plugins.lora import LoraRecovery
from autocompress.technique import ApplyContext, Plan, PlanStep
from autocompress.testing import (
    TechniqueContract,
    synthetic_sentiment,
    tiny_model,
    tiny_tokenizer,
    write_tiny_checkpoint,
)
from autocompress.training import encode


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models gain nothing from a second thread, and on a busy 2-core machine it makes them far slower.
    with thread_count(1):
        yield


class TestDistillationContract(TechniqueContract):
    technique = Distillation
    mild_config = {"learning_rate": 1e-7, "epochs": 0.5}
    strong_config = {"learning_rate": 1e-3, "epochs": 2.0, "batch_size": 8, "hidden_weight": 1.0,
                     "attention_weight": 1.0}
    bad_configs = [{"temperature": 0.0}, {"alpha": 1.5}, {"attention_weight": -1.0}, {"hidden_weight": -0.1},
                   {"attention_loss": "l2"}, {"learning_rate": 0.0}, {"epochs": 0.0}, {"batch_size": 0},
                   {"batch_size": 2.5}, {"eval_every": -1}, {"temprature": 2.0}]
    # Training changes weight values only: no shape, so neither parameters, memory nor latency.
    reduces_parameters = False
    reduces_memory = False
    reduces_latency = False


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory):
    with thread_count(1):
        directory = write_tiny_checkpoint(tmp_path_factory.mktemp("teacher"), train_steps=40)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    return model, AutoTokenizer.from_pretrained(directory)


def _data(n: int = 120):
    texts, labels = synthetic_sentiment(n, seed=3)
    return stratified_split(texts, [1 if label == "pos" else 0 for label in labels], ["neg", "pos"])


def _context(student, teacher, tokenizer, data=None, **kwargs) -> ApplyContext:
    host = build_host(autoload=False)
    return ApplyContext(adapter=adapter_for(student, host.architectures), tokenizer=tokenizer,
                        data=data if data is not None else _data(), teacher=teacher, max_length=32, **kwargs)


def _distill(student, context, **values):
    return Distillation().apply(student, Distillation.make_config(values), context)


def _keep_layers(model, indices):
    model.bert.encoder.layer = nn.ModuleList(model.bert.encoder.layer[i] for i in indices)
    model.config.num_hidden_layers = len(indices)
    return model


def _teacher_student_kl(student, teacher, tokenizer, data) -> float:
    encoded = encode(tokenizer, data.validation, 32)
    total = 0.0
    with torch.inference_mode():
        for inputs, _ in encoded.batches(64):
            total += float(distill.soft_label_loss(student(**inputs).logits, teacher(**inputs).logits, 1.0))
    return total


def test_distillation_brings_a_layer_dropped_student_closer_to_the_teacher(teacher_checkpoint):
    teacher, tokenizer = teacher_checkpoint
    student = _keep_layers(copy.deepcopy(teacher), [1])
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    data = _data(200)
    before = _teacher_student_kl(student, teacher, tokenizer, data)
    _distill(student, _context(student, teacher, tokenizer, data), learning_rate=2e-3, epochs=3.0, alpha=0.0,
             batch_size=16)
    after = _teacher_student_kl(student, teacher, tokenizer, data)
    assert after < 0.5 * before, (before, after)


def test_hidden_state_loss_projects_a_narrower_student(monkeypatch, tmp_path):
    teacher = tiny_model("bert", layers=2, hidden=64, heads=4)
    student = tiny_model("bert", layers=1, hidden=32, heads=2, ffn=64, seed=1)
    seen = []
    original = distill.hidden_state_loss

    def spy(student_states, teacher_states, mask, projection=None):
        seen.append((student_states.shape[-1], teacher_states.shape[-1], projection))
        return original(student_states, teacher_states, mask, projection)

    monkeypatch.setattr(distill, "hidden_state_loss", spy)
    modules_before = [name for name, _ in student.named_modules()]
    _distill(student, _context(student, teacher, tiny_tokenizer(tmp_path)), hidden_weight=1.0, epochs=1.0,
             learning_rate=1e-3)
    assert seen
    assert all(s == 32 and t == 64 for s, t, _ in seen)
    assert all(isinstance(p, nn.Linear) and (p.in_features, p.out_features) == (32, 64) for _, _, p in seen)
    assert [name for name, _ in student.named_modules()] == modules_before  # projection discarded


def test_attention_loss_works_with_the_default_sdpa_attention(monkeypatch, tmp_path):
    teacher = tiny_model("bert", layers=2, heads=4)
    student = tiny_model("bert", layers=1, heads=2, seed=1)  # fewer heads: head-averaged maps
    assert teacher.config._attn_implementation == student.config._attn_implementation == "sdpa"
    seen = []
    original = distill.attention_map_loss

    def spy(student_maps, teacher_maps, mask, kind):
        value = original(student_maps, teacher_maps, mask, kind)
        seen.append((student_maps.shape[1], teacher_maps.shape[1], float(value.detach())))
        return value

    monkeypatch.setattr(distill, "attention_map_loss", spy)
    _distill(student, _context(student, teacher, tiny_tokenizer(tmp_path)), attention_weight=1.0, epochs=1.0)
    assert seen and all((s, t) == (2, 4) and v > 0 for s, t, v in seen)
    assert teacher.config._attn_implementation == student.config._attn_implementation == "sdpa"


def test_attention_map_loss_ignores_padding_and_averages_heads():
    maps = torch.softmax(torch.randn(2, 4, 5, 5), dim=-1)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    for kind in distill.ATTENTION_LOSSES:
        assert float(distill.attention_map_loss(maps, maps.clone(), mask, kind)) == pytest.approx(0.0, abs=1e-6)
        averaged = maps.mean(dim=1, keepdim=True).expand(2, 2, 5, 5)
        assert float(distill.attention_map_loss(averaged, maps, mask, kind)) == pytest.approx(0.0, abs=1e-6)
        changed = maps.clone()
        changed[1, :, 3:] = torch.softmax(torch.randn(4, 2, 5), dim=-1)  # padded query rows only
        assert float(distill.attention_map_loss(changed, maps, mask, kind)) == pytest.approx(0.0, abs=1e-6)


def test_uniform_layer_map():
    assert distill.uniform_layer_map(3, 6) == [1, 3, 5]
    assert distill.uniform_layer_map(4, 6) == [1, 2, 4, 5]
    assert distill.uniform_layer_map(1, 6) == [5]
    assert distill.uniform_layer_map(2, 2) == [0, 1]


def test_teacher_logits_are_computed_once_per_dataset(monkeypatch, tmp_path):
    monkeypatch.setattr(distill, "TEACHER_LOGITS", {})
    teacher = tiny_model("bert")
    template = copy.deepcopy(teacher)  # students are copied before the hook: deepcopy would copy it
    calls = []
    teacher.register_forward_hook(lambda module, args, output: calls.append(1))
    tokenizer, data = tiny_tokenizer(tmp_path), _data()

    def teacher_calls() -> int:
        calls.clear()
        student = copy.deepcopy(template)
        _distill(student, _context(student, teacher, tokenizer, data), epochs=1.0)
        return len(calls)

    assert teacher_calls() > 0
    assert teacher_calls() == 0  # the second run found every training example's logits in the cache
    assert len(next(iter(distill.TEACHER_LOGITS.values())).logits) == len(set(data.train.texts))


def test_report_is_called_and_a_pruned_trial_propagates(tmp_path):
    teacher = tiny_model("bert")
    tokenizer, data = tiny_tokenizer(tmp_path), _data()
    reports = []
    student = copy.deepcopy(teacher)
    context = _context(student, teacher, tokenizer, data, report=lambda step, value: reports.append((step, value)))
    _distill(student, context, eval_every=1, epochs=1.0, batch_size=32)
    steps = -(-len(data.train) // 32)
    assert [step for step, _ in reports] == list(range(1, steps + 1))
    assert all(0.0 <= value <= 1.0 for _, value in reports)

    def prune(step, value):
        raise optuna.TrialPruned(f"pruned at step {step}")

    student = copy.deepcopy(teacher)
    context = _context(student, teacher, tokenizer, data, report=prune)
    step = PlanStep(Distillation, Distillation.make_config({"attention_weight": 1.0}))
    with pytest.raises(optuna.TrialPruned):
        apply_steps(student, [step], context)
    assert teacher.config._attn_implementation == student.config._attn_implementation == "sdpa"


def test_without_a_listener_recovery_skips_evaluating_and_trains_exactly_the_same(tmp_path):
    """Outside a search nobody reads the validation accuracy (``no_report``): no forward pass in eval
    mode is made for it, and the trained weights equal those of a run that evaluated every step."""
    teacher = tiny_model("bert")
    tokenizer, data = tiny_tokenizer(tmp_path), _data()
    trained, eval_forwards = [], []
    for report in (None, lambda step, value: None):
        student = copy.deepcopy(teacher)
        forwards = []
        student.register_forward_hook(lambda module, args, output, seen=forwards: seen.append(module.training))
        context = _context(student, teacher, tokenizer, data, **({"report": report} if report else {}))
        _distill(student, context, eval_every=1, epochs=1.0, batch_size=32)
        trained.append(student.state_dict())
        eval_forwards.append(forwards.count(False))
    assert eval_forwards[0] == 0 and eval_forwards[1] > 0  # the listener's run evaluated, the other did not
    assert trained[0].keys() == trained[1].keys()
    assert all(torch.equal(trained[0][name], trained[1][name]) for name in trained[0])


def test_non_finite_loss_raises(tmp_path):
    teacher = tiny_model("bert")
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        teacher.classifier.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite"):
        _distill(student, _context(student, teacher, tiny_tokenizer(tmp_path)))


def test_needs_teacher_and_data(tmp_path):
    model = tiny_model("bert")
    tokenizer = tiny_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="teacher"):
        _distill(model, _context(model, None, tokenizer))
    context = _context(model, copy.deepcopy(model), tokenizer)
    context.data = None
    with pytest.raises(ValueError, match="data"):
        _distill(model, context)


def test_a_plan_never_holds_both_recovery_techniques():
    with pytest.raises(InputError, match="conflicts with lora"):
        Plan.build([PlanStep(Distillation, Distillation.Config()), PlanStep(LoraRecovery, LoraRecovery.Config())])


def test_a_vocabulary_trimmed_student_reads_teacher_logits_by_teacher_ids(monkeypatch, tmp_path):
    monkeypatch.setattr(distill, "TEACHER_LOGITS", {})
    teacher = tiny_model("bert")
    tokenizer, data = tiny_tokenizer(tmp_path), _data()
    host = build_host(autoload=False)
    trim = host.techniques["vocab_trim"]  # a built-in: always registered
    student = copy.deepcopy(teacher)
    context = _context(student, teacher, tokenizer, data)
    student = apply_steps(student, [PlanStep(trim, trim.Config())], context)
    assert student.get_input_embeddings().num_embeddings < teacher.get_input_embeddings().num_embeddings
    assert context.token_map is not None  # student ids -> teacher ids, set by the trimmer
    context.adapter = adapter_for(student, host.architectures)
    _distill(student, context, hidden_weight=1.0)
    rows = set(next(iter(distill.TEACHER_LOGITS.values())).logits)
    untrimmed = copy.deepcopy(teacher)
    _distill(untrimmed, _context(untrimmed, teacher, tokenizer, data))
    assert set(next(iter(distill.TEACHER_LOGITS.values())).logits) == rows  # same teacher-side keys: cache hits

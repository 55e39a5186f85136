"""The probe: what each post step buys here decides the starting points and the refused choices."""

import pytest
import torch
from optuna.distributions import CategoricalDistribution

from autocompress.arch import adapter_for
from autocompress.deployment import StaticInt8Request
from autocompress.errors import ExportError
from autocompress.measure import Measurement, Target, parameter_count
from autocompress.plugin_manager import build_host
from autocompress.plugins.quantization import Quantization
from autocompress.search.probe import (
    Probe,
    ProbeRow,
    adapt_starting_points,
    quality_keeper,
    restrict_spaces,
    run_probe,
)
from autocompress.search.starting_points import default_file, load_starting_points
from autocompress.technique import ApplyContext
from autocompress.testing import tiny_model
from autocompress.testing.target_contract import SETTINGS, trained_tiny

HOST = build_host(autoload=False)


class CannedTimings(Target):
    """A test double for the timings: latency by what the model is (float, int8, bf16); static
    int8 refused as the cpu target refuses it."""

    name = "canned"

    def __init__(self, int8_ms: float, bf16_ms: float, float_ms: float = 10.0, int4_ms: float = 20.0):
        self.latency = {"float": float_ms, "int8": int8_ms, "bf16": bf16_ms, "int4": int4_ms}
        self.calls: list[str] = []

    @staticmethod
    def kind(model) -> str:
        if isinstance(model, StaticInt8Request):
            raise ExportError("this target runs no static int8 (a test double's refusal)")
        if any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules()):
            return "int8"
        if any(type(p).__name__.startswith("Int4") for p in model.parameters()):  # torchao's packed int4
            return "int4"
        return "bf16" if next(model.parameters()).dtype == torch.bfloat16 else "float"

    def measure(self, model, settings):
        kind = self.kind(model)
        self.calls.append(kind)
        ms = self.latency[kind]
        return Measurement(ms, ms, 1.0, 1.0, 0.0, parameter_count(model))


def _probe(target) -> Probe:
    trained = trained_tiny()

    def context(model):
        return ApplyContext(adapter=adapter_for(model, HOST.architectures), tokenizer=trained.tokenizer,
                            data=trained.data, max_length=32)

    return run_probe(tiny_model("bert"), [Quantization], target, SETTINGS, context)


def _spaces():
    return {"quantization": Quantization.search_space()}


def test_the_probe_times_each_post_step_beside_the_teacher_interleaved():
    target = CannedTimings(int8_ms=5.0, bf16_ms=8.0)
    probe = _probe(target)
    rows = {row.label: row for row in probe.rows}
    assert set(rows) == set(Quantization.references)
    assert rows["int8 dynamic only"].speedup == pytest.approx(2.0)
    assert rows["bf16 only"].speedup == pytest.approx(1.25)
    assert "static int8" in rows["int8 static only"].refused and rows["int8 static only"].speedup is None
    assert rows["int4 weight-only only"].speedup == pytest.approx(0.5)
    # one warm-up call per step, then teacher, int8, bf16, int4 taking turns
    assert target.calls[:3] == ["int8", "bf16", "int4"]
    assert target.calls[3:] == ["float", "int8", "bf16", "int4"] * 3
    assert Probe.from_dict(probe.as_dict()) == probe
    assert (probe.target, probe.batch_size, probe.seq_len) == ("canned", SETTINGS.batch_size, SETTINGS.seq_len)


@pytest.mark.parametrize("int8_ms, bf16_ms, post", [(12.0, 5.0, "bf16"), (4.0, 6.0, "int8")])
def test_the_starting_points_end_in_the_post_step_that_is_fastest_here(int8_ms, bf16_ms, post):
    probe = _probe(CannedTimings(int8_ms=int8_ms, bf16_ms=bf16_ms))
    plans = load_starting_points(default_file(), set(HOST.techniques.names()))
    assert all(plan["quantization"]["dtype"] == "int8" for plan in plans)  # the file was tuned on one CPU
    adapted = adapt_starting_points(plans, probe, _spaces())
    assert len(adapted) == len(plans)
    assert [plan["quantization"]["dtype"] for plan in adapted] == [post] * len(plans)
    assert adapted[0] == {"quantization": {"dtype": post}}
    assert adapted[3]["quantization"]["embeddings"] is True  # the plan's other fields stay
    assert adapted[1]["ffn_pruning"] == plans[1]["ffn_pruning"]
    # ... unless the new step does not use them: int8's embeddings field means nothing for bf16.
    by_name = {name: HOST.techniques[name] for name in HOST.techniques.names()}
    used = adapt_starting_points(plans, probe, _spaces(), techniques=by_name)
    assert used[3]["quantization"] == ({"dtype": "int8", "embeddings": True} if post == "int8" else {"dtype": "bf16"})


def test_static_int8_starting_points_keep_no_layer_in_float():
    """Where static int8 is fastest (OpenVINO), the starting points end in exactly the step the probe
    timed: no float fallback, which the teacher did not need and which cost more than it bought."""
    speeds = {"int8 dynamic only": 6.0, "bf16 only": 6.5, "int8 static only": 4.0, "int4 weight-only only": 7.0}
    rows = tuple(ProbeRow(label, "quantization", dict(config), latency_ms=speeds[label], teacher_latency_ms=10.0)
                 for label, config in Quantization.references.items())
    probe = Probe("openvino", 1, 64, 2, rows)
    plans = load_starting_points(default_file(), set(HOST.techniques.names()))
    adapted = adapt_starting_points(plans, probe, _spaces())
    assert [plan["quantization"]["dtype"] for plan in adapted] == ["int8-static"] * len(plans)
    assert all(plan["quantization"]["fallback_layers"] == 0 for plan in adapted)


def test_no_post_step_when_none_pays_off_and_none_outside_the_space():
    slow = _probe(CannedTimings(int8_ms=11.0, bf16_ms=10.2))  # neither beats the teacher by 5%
    plans = load_starting_points(default_file(), set(HOST.techniques.names()))
    adapted = adapt_starting_points(plans, slow, _spaces())
    assert len(adapted) == len(plans) - 1  # quantization alone has nothing left
    assert all("quantization" not in plan for plan in adapted)
    fast_bf16 = _probe(CannedTimings(int8_ms=8.0, bf16_ms=2.0))
    int8_only = {"quantization": {**_spaces()["quantization"], "dtype": CategoricalDistribution(["int8"])}}
    # the user's space has no bf16: the fastest step inside it is chosen
    assert adapt_starting_points(plans, fast_bf16, int8_only)[0] == {"quantization": {"dtype": "int8"}}


def _references(int8_val: float | None, bf16_val: float, error: str | None = None) -> list[dict]:
    """The by-hand references as the search stores them (study.record.reference_record)."""
    from autocompress.study.record import reference_record

    def manifest(dtype):
        return [{"technique": "quantization", "version": "1", "config": {"dtype": dtype}}]

    return [reference_record("int8 dynamic only", manifest("int8"), int8_val, int8_val, error=error),
            reference_record("bf16 only", manifest("bf16"), bf16_val, bf16_val)]


def test_the_fastest_post_step_that_breaks_quality_on_its_own_does_not_start_the_plans():
    """A decoder LLM: int8 dynamic is the fastest step and leaves the teacher's accuracy at chance
    (SmolLM2: 0.7467 -> 0.5333); the plans end in bf16, which keeps it, instead."""
    probe = _probe(CannedTimings(int8_ms=3.0, bf16_ms=5.0))
    plans = load_starting_points(default_file(), set(HOST.techniques.names()))
    broken = quality_keeper(_references(int8_val=0.53, bf16_val=0.745), teacher_val=0.75, max_drop=0.01)
    adapted = adapt_starting_points(plans, probe, _spaces(), keeps_quality=broken)
    assert [plan["quantization"]["dtype"] for plan in adapted] == ["bf16"] * len(plans)
    # int8 within the limit (an encoder), or no accuracy limit at all: the fastest step, as before
    for keeper in (quality_keeper(_references(int8_val=0.745, bf16_val=0.75), 0.75, 0.01),
                   quality_keeper(_references(int8_val=0.53, bf16_val=0.745), 0.75, None),
                   quality_keeper(_references(None, 0.745, error="RuntimeError: x"), 0.75, 0.01)):
        assert adapt_starting_points(plans, probe, _spaces(), keeps_quality=keeper)[0] == {
            "quantization": {"dtype": "int8"}}
    # neither keeps quality: no post step ends the plans, and quantization alone is dropped
    neither = quality_keeper(_references(int8_val=0.53, bf16_val=0.70), teacher_val=0.75, max_drop=0.01)
    adapted = adapt_starting_points(plans, probe, _spaces(), keeps_quality=neither)
    assert len(adapted) == len(plans) - 1 and all("quantization" not in plan for plan in adapted)


def test_a_choice_the_target_refuses_leaves_the_search_space():
    probe = _probe(CannedTimings(int8_ms=5.0, bf16_ms=6.0))
    restricted = restrict_spaces(_spaces(), probe)
    assert restricted["quantization"]["dtype"].choices == ("int8", "bf16", "int4")
    assert _spaces()["quantization"]["dtype"].choices == ("int8", "bf16", "int8-static", "int4")
    assert restricted["quantization"]["fallback_layers"] == _spaces()["quantization"]["fallback_layers"]
    # int4 without torchao: the probe's row says what to install, and no trial samples it
    missing = Probe("cpu", 1, 8, 1, (
        ProbeRow("int8", "quantization", {"dtype": "int8"}, latency_ms=5.0, teacher_latency_ms=10.0),
        ProbeRow("int4", "quantization", {"dtype": "int4", "group_size": 32},
                 refused='quantization to int4: the Python package \'torchao\' is not installed')))
    assert restrict_spaces(_spaces(), missing)["quantization"]["dtype"].choices == ("int8", "bf16", "int8-static")
    # a choice is never emptied: with every value refused the space stays as it was
    everything = Probe("t", 1, 8, 1, tuple(ProbeRow(v, "quantization", {"dtype": v}, refused="no")
                                          for v in ("int8", "bf16", "int8-static", "int4")))
    assert restrict_spaces(_spaces(), everything)["quantization"]["dtype"].choices == _spaces()["quantization"][
        "dtype"].choices

"""The target contract kit: checks every target must pass, built-in or third-party.

Subclass ``TargetContract`` in your tests and set ``target`` (and ``plugin`` for a third-party
one). pytest then checks, on a tiny BERT classifier trained in seconds on synthetic sentences:

- ``unavailable_reason()`` is None or a non-empty string (when a string, the rest is skipped with it);
- the target is registered under its ``name``;
- a measurement is positive and consistent: median > 0, p90 >= median, memory = weights +
  working memory, weights > 0, the parameter count of the model it was given; a model twice as
  wide holds more weight bytes;
- ``runtime(model)`` agrees with PyTorch on the trained float model: logits within
  ``float_tolerance``, every prediction the same;
- each post-training variant (int8 dynamic, bf16, static int8 with one layer kept in float) is
  either measured (positive, consistent, and scored within ``quantized_agreement`` of PyTorch's
  float predictions) when listed in ``runs``, or refused with an ``AutocompressError`` whose
  message says why when not.

The check functions (``check_measurement``, ``check_runtime_agrees``, ``check_variant``) are
public, so a test can show the kit rejecting a broken target.
"""

from __future__ import annotations

import copy
import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

try:
    import pytest
except ImportError as exc:  # the kit is pytest test classes; say how to get it
    from autocompress.errors import MissingPackage

    raise MissingPackage.for_import(exc, "autocompress.testing (the target contract kit)") from None
import torch
from torch import nn

from autocompress.errors import AutocompressError
from autocompress.measure import Measurement, MeasureSettings, Target, parameter_count
from autocompress.training import Encoded

#: Post-training variants every target is tried on: label -> quantization Config values.
VARIANTS: dict[str, dict[str, Any]] = {
    "int8": {"dtype": "int8"},
    "bf16": {"dtype": "bf16"},
    "int8-static": {"dtype": "int8-static", "fallback_layers": 1, "calibration_size": 32},
}
SETTINGS = MeasureSettings(batch_size=2, seq_len=16, threads=1, warmup=1, repeats=3)


def check_measurement(measurement: Any, model: nn.Module) -> Measurement:
    """A measurement must be a positive, self-consistent ``Measurement`` of ``model``."""
    assert isinstance(measurement, Measurement), f"measure() returned {type(measurement).__name__}, not Measurement"
    assert measurement.latency_ms > 0, f"median latency {measurement.latency_ms} ms is not positive"
    assert measurement.latency_p90_ms >= measurement.latency_ms, "p90 latency below the median"
    assert measurement.model_mb > 0, f"the model's weights take {measurement.model_mb} MB"
    assert measurement.activation_mb >= 0, f"negative working memory {measurement.activation_mb} MB"
    assert abs(measurement.memory_mb - (measurement.model_mb + measurement.activation_mb)) < 1e-6, (
        "memory_mb must be model_mb + activation_mb")
    assert measurement.parameters == parameter_count(model), (
        f"{measurement.parameters} parameters reported, the model has {parameter_count(model)}")
    return measurement


def _predictions(model: nn.Module, data: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    logits = []
    with torch.inference_mode():
        for inputs, _ in data.batches(16):
            output = model(**inputs)
            logits.append(output.logits.float())
    stacked = torch.cat(logits)
    return stacked, stacked.argmax(-1)


def check_runtime_agrees(scored: nn.Module, reference: nn.Module, data: Encoded, tolerance: float | None,
                         min_agreement: float) -> float:
    """``scored`` (a target's runtime) against PyTorch's ``reference``: logits within ``tolerance``
    (None: not compared) and at least ``min_agreement`` of the predictions the same. Returns the agreement."""
    actual, predicted = _predictions(scored, data)
    expected, reference_predicted = _predictions(reference, data)
    assert actual.shape == expected.shape, f"runtime logits {tuple(actual.shape)}, PyTorch {tuple(expected.shape)}"
    if tolerance is not None:
        difference = float((actual - expected).abs().max())
        assert difference <= tolerance, f"runtime logits differ from PyTorch's by {difference:.3g} > {tolerance:g}"
    agreement = float((predicted == reference_predicted).float().mean())
    assert agreement >= min_agreement, (
        f"runtime predictions agree with PyTorch's on {agreement:.1%} < {min_agreement:.0%}")
    return agreement


def check_variant(target: Target, deployed: nn.Module, runs: bool, settings: MeasureSettings = SETTINGS
                  ) -> Measurement | str:
    """A post-training variant is measured (``runs``) or refused with a clear ``AutocompressError``.

    Returns the measurement, or the refusal's message.
    """
    try:
        measurement = target.measure(deployed, settings)
    except AutocompressError as exc:
        message = str(exc).strip()
        assert not runs, f"{target.name} should run this candidate but refused it: {message}"
        assert len(message) >= 20, f"a refusal must say why, got {message!r}"
        return message
    except Exception as exc:
        raise AssertionError(f"{target.name} failed with {type(exc).__name__}: {exc}; a target that cannot run a "
                             "candidate must raise an AutocompressError saying why") from exc
    assert runs, f"{target.name} measured a candidate it declares it refuses"
    return check_measurement(measurement, deployed)


@dataclass
class TrainedTiny:
    """A tiny BERT classifier trained on synthetic sentences, with its tokenizer and data."""

    model: nn.Module
    tokenizer: Any
    data: Any  # TaskData
    evaluation: Encoded


@functools.lru_cache(maxsize=2)
def trained_tiny(seed: int = 0) -> TrainedTiny:
    """Trained once per process and seed (every contract class and test shares it; treat it as read-only)."""
    from autocompress.data import stratified_split
    from autocompress.testing.tiny import synthetic_sentiment, tiny_model, tiny_tokenizer
    from autocompress.training import encode, fine_tune

    tokenizer = tiny_tokenizer(Path(tempfile.mkdtemp(prefix="autocompress-target-contract-")))
    texts, labels = synthetic_sentiment(240, seed=seed + 3)
    data = stratified_split(texts, [1 if label == "pos" else 0 for label in labels], ["neg", "pos"], seed=seed)
    model = tiny_model("bert", layers=3, seed=seed)
    fine_tune(model, encode(tokenizer, data.train, 32), epochs=3, learning_rate=3e-3, batch_size=32, seed=seed)
    return TrainedTiny(model.eval(), tokenizer, data, encode(tokenizer, data.validation, 32))


class TargetContract:
    """Subclass as ``TestX(TargetContract)`` and set the class attributes below."""

    target: ClassVar[type[Target]]
    #: For a third-party plugin under test: the plugin module/object to register.
    plugin: ClassVar[Any] = None
    #: The post-training variants (keys of ``VARIANTS``) this target runs; the others it must refuse.
    runs: ClassVar[frozenset[str]] = frozenset(VARIANTS)
    #: Largest |runtime - PyTorch| logit difference for the float model.
    float_tolerance: ClassVar[float] = 1e-3
    #: Smallest share of the quantized variants' predictions that must match PyTorch's float ones.
    quantized_agreement: ClassVar[float] = 0.85

    # -- helpers -----------------------------------------------------------------------------
    def host(self):
        from autocompress.plugin_manager import build_host

        if self.plugin is None:
            return build_host(autoload=False)
        return build_host(autoload=False, extra_plugins=[(self.target.name + "-under-test", self.plugin)])

    def make_target(self) -> Target:
        reason = self.target.unavailable_reason()
        if reason is not None:
            pytest.skip(f"target '{self.target.name}' is unavailable here: {reason}")
        return self.target()

    @pytest.fixture
    def trained(self) -> TrainedTiny:
        return trained_tiny()

    def deployed(self, trained: TrainedTiny, variant: str) -> nn.Module:
        from autocompress.arch import adapter_for
        from autocompress.candidate import apply_steps
        from autocompress.technique import ApplyContext, PlanStep

        host = self.host()
        quantization = host.techniques["quantization"]
        model = copy.deepcopy(trained.model)
        context = ApplyContext(adapter=adapter_for(model, host.architectures), tokenizer=trained.tokenizer,
                               data=trained.data, max_length=32)
        step = PlanStep(quantization, quantization.make_config(VARIANTS[variant]))
        return apply_steps(model, [step], context).eval()

    # -- the contract ------------------------------------------------------------------------
    def test_unavailable_reason_is_a_sentence_or_none(self):
        reason = self.target.unavailable_reason()
        assert reason is None or (isinstance(reason, str) and reason.strip()), repr(reason)

    def test_registered_under_its_name(self):
        host = self.host()
        assert host.targets[self.target.name] is self.target

    def test_measurement_is_positive_and_consistent(self):
        from autocompress.testing.tiny import tiny_model

        target = self.make_target()
        narrow = tiny_model("bert", hidden=32, ffn=64)
        wide = tiny_model("bert", hidden=64, ffn=256)
        small = check_measurement(target.measure(narrow, SETTINGS), narrow)
        large = check_measurement(target.measure(wide, SETTINGS), wide)
        assert large.model_mb > small.model_mb, "a wider model must hold more weight bytes"

    def test_runtime_agrees_with_pytorch(self, trained):
        target = self.make_target()
        check_runtime_agrees(target.runtime(trained.model), trained.model, trained.evaluation,
                             self.float_tolerance, 1.0)

    @pytest.mark.parametrize("variant", list(VARIANTS))
    def test_post_training_variant_is_measured_or_refused_clearly(self, trained, variant):
        target = self.make_target()
        deployed = self.deployed(trained, variant)
        result = check_variant(target, deployed, variant in self.runs)
        if isinstance(result, Measurement):
            check_runtime_agrees(target.runtime(deployed), trained.model, trained.evaluation, None,
                                 self.quantized_agreement)

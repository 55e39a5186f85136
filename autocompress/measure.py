"""Latency and memory of a deployed candidate, measured the same way for baseline and candidates.

Latency: fixed thread count, warm-up runs, then ``repeats`` timed forward passes on a batch of
``batch_size`` x ``seq_len`` tokens (``latency="prompt"``: the prompt, or a classifier's input);
median and p90 in milliseconds. ``latency="token"`` (a causal LM generating, the language-model
task's default) times instead each greedy decoding step with the KV cache after a prompt of
``seq_len`` tokens: milliseconds per generated token, and the memory growth includes the cache. Memory: bytes of the
deployed model's parameters and buffers (int8 packed weights included; a tensor shared by several
modules counted once, ``autocompress.shared_weights``), plus the peak growth of
the memory the process's allocator has handed out during a few more forward passes after warm-up
(activations and scratch space; the resident set where the allocator cannot say), sampled by a
background thread. glibc's malloc thresholds are fixed first, so neither figure depends on what the
process did before (autocompress/allocator.py).
"""

from __future__ import annotations

import functools
import gc
import statistics
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import psutil
import torch
from torch import nn

from autocompress.allocator import heap_in_use, release_free_memory, steady_allocator
from autocompress.shared_weights import distinct_state

MB = 2**20


#: What a measurement may time: a forward pass over the prompt, or one generated token with the KV cache.
LATENCY_MODES = ("prompt", "token")


@dataclass(frozen=True)
class MeasureSettings:
    batch_size: int = 1
    seq_len: int = 64
    threads: int = 2
    warmup: int = 5
    repeats: int = 20
    #: What is timed: one of ``LATENCY_MODES`` (``prompt``: a forward pass over the input; ``token``:
    #: a decoding step with the KV cache). None: the task's choice (``TaskProvider.default_latency``),
    #: resolved before measuring; measuring treats it as ``prompt``.
    latency: str | None = None

    def __post_init__(self):
        if self.latency is not None and self.latency not in LATENCY_MODES:
            raise ValueError(f"latency must be one of {', '.join(LATENCY_MODES)}, got {self.latency!r}")
        for name in ("batch_size", "seq_len", "threads", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


@dataclass(frozen=True)
class Measurement:
    latency_ms: float  # median
    latency_p90_ms: float
    memory_mb: float  # model_mb + activation_mb
    model_mb: float
    activation_mb: float
    parameters: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_timings(cls, timings: list[float], weight_bytes: int, activation_bytes: int,
                     parameters: int) -> Measurement:
        """Median and p90 of ``timings`` (ms); memory = weights + inference working memory."""
        return cls(
            latency_ms=statistics.median(timings),
            latency_p90_ms=percentile(timings, 0.9),
            memory_mb=(weight_bytes + activation_bytes) / MB,
            model_mb=weight_bytes / MB,
            activation_mb=activation_bytes / MB,
            parameters=parameters,
        )


def _refusing_unhandled_requests(method: Callable) -> Callable:
    """``method`` of a target, first refusing a deployment request the target does not handle."""
    @functools.wraps(method)
    def checked(self: Any, model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        from autocompress.deployment import DeploymentRequest

        settings = args[0] if args else kwargs.get("settings")
        latency = getattr(settings, "latency", None) or "prompt"
        if latency not in self.latency_modes:
            from autocompress.errors import ExportError

            raise ExportError(f"target '{self.name}' times {', '.join(self.latency_modes)} latency, not {latency}")
        if isinstance(model, DeploymentRequest) and not isinstance(model, self.handles_requests):
            from autocompress.errors import ExportError

            kind = model.kind.replace("_", " ")
            raise ExportError(f"target '{self.name}' does not run {kind} candidates (it handles "
                              f"{', '.join(t.__name__ for t in self.handles_requests) or 'no deployment requests'})")
        return method(self, model, *args, **kwargs)

    checked.refuses_unhandled_requests = True
    return checked


class Target(ABC):
    """A hardware/runtime target that measures a deployed candidate."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: The deployment requests (``autocompress.deployment``, e.g. ``StaticInt8Request``) this target
    #: handles itself: finishes (quantizes, compiles) or refuses with its own reason. Any other
    #: request is refused before the target's ``measure``/``runtime`` see it, so a target written
    #: before requests existed never times a float model as if it were int8. Added in plugin API 1.3.
    handles_requests: ClassVar[tuple[type, ...]] = ()
    #: The ``MeasureSettings.latency`` modes this target times; another is refused (the search checks
    #: before it starts, and ``measure`` refuses it). Added with the language-model task.
    latency_modes: ClassVar[tuple[str, ...]] = ("prompt",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("measure", "runtime"):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "refuses_unhandled_requests", False):
                setattr(cls, name, _refusing_unhandled_requests(method))

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this target cannot be used here (e.g. a runtime package is missing), or None.

        Checked before a search starts, so choosing an unusable target fails in seconds with
        this message (which should say what to install).
        """
        return None

    @abstractmethod
    def measure(self, model: nn.Module, settings: MeasureSettings) -> Measurement:
        """Latency and memory of ``model`` (already in its deployed form).

        Raise an ``AutocompressError`` subclass whose message says why when this target cannot
        run the candidate: that trial fails with the message and the search goes on.
        """

    @_refusing_unhandled_requests
    def runtime(self, model: nn.Module) -> nn.Module:
        """``model`` as this target runs it, for scoring accuracy on what is measured: a module
        whose ``forward(input_ids, attention_mask, ...)`` returns an object with ``logits``.

        The default is the model itself (the target runs PyTorch). A target whose runtime
        computes differently (another engine, other int8 kernels) returns a wrapper around it.
        Added in plugin API 1.2.
        """
        return model


def _tensor_bytes(value: Any) -> int:
    """Bytes a state value holds. A tensor subclass that packs its data (torchao's int4 weights,
    say) holds the tensors it flattens to (``__tensor_flatten__``), not its logical shape x dtype."""
    if isinstance(value, torch.Tensor):
        if hasattr(value, "__tensor_flatten__"):
            names, _ = value.__tensor_flatten__()
            return sum(_tensor_bytes(getattr(value, name)) for name in names)
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def model_bytes(model: nn.Module) -> int:
    """Bytes of everything the model's state holds (int8 packed linears unpack to int8 tensors).

    A tensor shared by several modules (tied or shared weights) counts once.
    """
    return sum(_tensor_bytes(v) for v in distinct_state(model)[0].values())


def parameter_count(model: nn.Module) -> int:
    """Number of weights, counting int8 packed linears' weights and biases too; shared weights once."""
    total = 0
    for value in distinct_state(model)[0].values():
        values = value if isinstance(value, (tuple, list)) else (value,)
        total += sum(v.numel() for v in values if isinstance(v, torch.Tensor) and v.dtype != torch.long)
    return total


def dummy_inputs(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # Token ids >= 1000 avoid special tokens; latency does not depend on the values.
    low = min(1000, vocab_size - 1)
    ids = torch.randint(low, vocab_size, (batch_size, seq_len), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@contextmanager
def thread_count(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _PeakSampler(threading.Thread):
    """Samples the memory in use in the background: the allocator's bytes in use where it can say
    (glibc), else the resident set; ``stop()`` returns the peak growth."""

    def __init__(self, interval_s: float = 0.0005):
        super().__init__(daemon=True)
        process = psutil.Process()
        self._read = heap_in_use if heap_in_use() is not None else (lambda: process.memory_info().rss)
        self._stop_event = threading.Event()
        self.interval_s = interval_s
        self.start_bytes = self._read()
        self.peak_bytes = self.start_bytes

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak_bytes = max(self.peak_bytes, self._read())
            self._stop_event.wait(self.interval_s)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak_bytes = max(self.peak_bytes, self._read())
        return self.peak_bytes - self.start_bytes


def vocab_size_of(model: nn.Module) -> int:
    return model.get_input_embeddings().num_embeddings


def time_calls(run: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Wall-clock milliseconds of ``repeats`` calls of ``run`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        timings.append((time.perf_counter() - start) * 1000.0)
    return timings


_frozen_depth = 0


@contextmanager
def long_lived_objects() -> Iterator[None]:
    """Inside: every object alive on entry (modules, the task, its teacher) is left out of later
    garbage collections (``gc.freeze``), after one last full collection.

    Each memory measurement starts with a full collection (``memory_growth``); with torch and
    transformers loaded that walks ~420k objects, 0.3 s every time, to find nothing among them.
    Objects made inside are collected as usual. Unfrozen when the outermost of nested uses ends,
    so nothing is kept for good."""
    global _frozen_depth
    gc.collect()
    gc.freeze()
    _frozen_depth += 1
    try:
        yield
    finally:
        _frozen_depth -= 1
        if _frozen_depth == 0:
            gc.unfreeze()


def memory_growth(run: Callable[[], object], runs: int = 3) -> int:
    """Peak growth of the memory in use over a few calls of ``run``, after warm-up (separately from
    the timed runs, so the sampling thread does not disturb the latency figures)."""
    gc.collect()
    release_free_memory()  # the same floor whatever ran before (autocompress/allocator.py)
    sampler = _PeakSampler()
    sampler.start()
    try:
        for _ in range(runs):
            run()
    finally:
        growth = sampler.stop()
    return max(0, growth)


def time_forward(model: nn.Module, inputs: dict[str, torch.Tensor], warmup: int, repeats: int) -> list[float]:
    """Wall-clock milliseconds of ``repeats`` forward passes after ``warmup`` untimed ones."""
    with torch.inference_mode():
        return time_calls(lambda: model(**inputs), warmup, repeats)


def decoding(model: nn.Module, inputs: dict[str, torch.Tensor], steps: int) -> Iterator[Callable[[], object]]:
    """Greedy generation after the prompt ``inputs`` (run here, with the KV cache): yields ``steps``
    calls, each of which generates the next token with the cache (so each can be timed alone).
    A model that keeps no cache (not a causal LM) is refused: it generates nothing."""
    from autocompress.errors import ExportError

    state = {"out": model(**inputs, use_cache=True), "mask": inputs["attention_mask"]}
    if getattr(state["out"], "cache", None) is None:
        raise ExportError(f"{type(model).__name__} keeps no KV cache: per-token latency (--latency token) needs a "
                          "causal language model")

    def step() -> None:
        token = state["out"].logits[:, -1:].argmax(-1)
        state["mask"] = torch.cat([state["mask"], torch.ones_like(token)], dim=1)
        state["out"] = model(input_ids=token, attention_mask=state["mask"], cache=state["out"].cache, use_cache=True)

    for _ in range(steps):
        yield step


def time_decoding(model: nn.Module, inputs: dict[str, torch.Tensor], warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` generated tokens after ``warmup`` untimed ones (KV cache,
    after the prompt ``inputs``)."""
    timings = []
    with torch.inference_mode():
        for index, step in enumerate(decoding(model, inputs, warmup + repeats)):
            start = time.perf_counter()
            step()
            if index >= warmup:
                timings.append((time.perf_counter() - start) * 1000.0)
    return timings


def generation_memory_growth(model: nn.Module, inputs: dict[str, torch.Tensor], steps: int = 8) -> int:
    """Peak growth of the memory in use over a prompt and ``steps`` generated tokens: the KV cache at the
    prompt's length and the working memory."""
    def generate() -> None:
        for step in decoding(model, inputs, steps):
            step()

    with torch.inference_mode():
        generate()  # warm-up
        return memory_growth(generate, runs=1)


def inference_memory_growth(model: nn.Module, inputs: dict[str, torch.Tensor], runs: int = 3) -> int:
    """Peak growth of the memory in use over a few forward passes, after warm-up."""
    with torch.inference_mode():
        return memory_growth(lambda: model(**inputs), runs)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure_eager(model: nn.Module, settings: MeasureSettings) -> Measurement:
    """Measure a PyTorch eager-mode model in this process (the CPU target's method)."""
    model.eval()
    if settings.latency == "token":  # a prompted classifier generates through its decoder and a full LM head
        from autocompress.prompted import causal_lm_of

        model = causal_lm_of(model, timing_only=True)
    steady_allocator()  # a forward pass reuses memory in any process, fresh or after training
    inputs = dummy_inputs(settings.batch_size, settings.seq_len, vocab_size_of(model))
    with thread_count(settings.threads):
        if settings.latency == "token":
            timings = time_decoding(model, inputs, settings.warmup, settings.repeats)
            activation = generation_memory_growth(model, inputs)
        else:
            timings = time_forward(model, inputs, settings.warmup, settings.repeats)
            activation = inference_memory_growth(model, inputs)
    return Measurement.from_timings(timings, model_bytes(model), activation, parameter_count(model))

"""The technique contract kit: checks every technique must pass, built-in or third-party.

Every check that compares outputs uses inputs with many distinct token ids, rows of different
lengths and real padding (``varied_inputs``, and the kit's sentences as the tokenizer encodes
them), runs on every model family in ``families`` that the technique supports, and fails with
the numbers it compared. A technique that supports none of them fails instead of passing with
nothing checked.
"""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path
from typing import Any, ClassVar

try:
    import pytest
except ImportError as exc:  # the kit is pytest test classes; say how to get it
    from autocompress.errors import MissingPackage

    raise MissingPackage.for_import(exc, "autocompress.testing (the technique contract kit)") from None
import optuna
import torch

from autocompress.arch import adapter_for
from autocompress.candidate import apply_steps
from autocompress.errors import InputError
from autocompress.measure import dummy_inputs, model_bytes, parameter_count, thread_count, time_forward
from autocompress.model_io import MANIFEST, WEIGHTS, load_pretrained, save_candidate
from autocompress.plugin_manager import build_host
from autocompress.search.sampling import suggest
from autocompress.shared_weights import distinct_state, tie_groups
from autocompress.technique import ApplyContext, ModelAndTokenizer, Plan, PlanStep, Stage, Technique
from autocompress.testing.tiny import (
    FAMILIES,
    synthetic_sentiment,
    text_inputs,
    tiny_model,
    tiny_tokenizer,
    trained_tiny_model,
    varied_inputs,
)


def largest_difference(expected: torch.Tensor, actual: torch.Tensor) -> float:
    """Largest absolute difference of two logit tensors of one shape (as float32)."""
    return float((expected.float() - actual.float()).abs().max())


class TechniqueContract:
    """Subclass as ``TestX(TechniqueContract)`` and set the class attributes below
    (docs/plugins.md, "Testing with the contract kit", explains each)."""

    technique: ClassVar[type[Technique]]
    #: Settings under which outputs must stay close to the original model's.
    mild_config: ClassVar[dict[str, Any]] = {}
    #: Settings under which parameters (and bytes, latency, as claimed) must really go down.
    strong_config: ClassVar[dict[str, Any]] = {}
    #: Each must be rejected by ``make_config`` with an error naming the technique (at least one).
    bad_configs: ClassVar[list[dict[str, Any]]] = []
    #: Claims checked under ``strong_config``; set False what the technique does not promise.
    reduces_parameters: ClassVar[bool] = True
    reduces_memory: ClassVar[bool] = True
    reduces_latency: ClassVar[bool] = True
    #: Under ``mild_config``, on a tiny model trained on the kit's task: the largest change of any
    #: logit, as a fraction of the largest logit of the original model.
    mild_tolerance: ClassVar[float] = 0.01
    #: ``mild_tolerance`` for named families where the technique legitimately moves the tiny model more
    #: (say why beside it); the others keep ``mild_tolerance``. Added in plugin API 1.5.
    mild_tolerance_for: ClassVar[dict[str, float]] = {}
    #: Model families the checks run on (``autocompress.testing.tiny.FAMILIES``: every family the
    #: built-in adapters claim); those the technique's ``unsupported_reason_for`` refuses (with the
    #: kit's WordPiece tokenizer) are left out.
    families: ClassVar[tuple[str, ...]] = FAMILIES
    #: For a third-party plugin under test: the plugin module/object to register.
    plugin: ClassVar[Any] = None

    @pytest.fixture(autouse=True)
    def _one_thread(self):
        # Tiny models gain nothing from a second thread, and on a busy machine two threads contend
        # with every other process (ten times slower). Latency is compared within one setting.
        with thread_count(1):
            yield

    # -- helpers -----------------------------------------------------------------------------
    def host(self):
        if self.plugin is None:
            return build_host()
        # The plugin under test alone with the built-ins, even when it is also installed (its entry
        # point would register the same technique a second time).
        return build_host(autoload=False, extra_plugins=[(self.technique.name + "-under-test", self.plugin)])

    def context(self, model, tmp_path: Path) -> ApplyContext:
        texts, labels = synthetic_sentiment(48)
        from autocompress.data import stratified_split

        data = stratified_split(texts, [1 if label == "pos" else 0 for label in labels], ["neg", "pos"])
        return ApplyContext(adapter=adapter_for(model, self.host().architectures),
                            tokenizer=tiny_tokenizer(tmp_path / "tokenizer"), data=data,
                            teacher=copy.deepcopy(model), max_length=32)

    def apply(self, model, values: dict[str, Any], tmp_path: Path):
        context = self.context(model, tmp_path)
        step = PlanStep(self.technique, self.technique.make_config(values))
        return apply_steps(model, [step], context), context

    def unsupported(self, family: str) -> str | None:
        """Why the technique refuses ``family``'s tiny model with the kit's tokenizer (the one every
        check applies it with), as its ``unsupported_reason_for`` says, or None."""
        model = ModelAndTokenizer(adapter_for(tiny_model(family), self.host().architectures), tiny_tokenizer())
        reason = self.technique.unsupported_reason_for(model)
        if reason is not None:
            assert isinstance(reason, str) and reason.strip(), (
                f"{self.technique.name}.unsupported_reason_for must explain itself, returned {reason!r}")
        return reason

    def supported(self, family: str) -> bool:
        return self.unsupported(family) is None

    def supported_families(self) -> list[str]:
        """The families in ``families`` the technique runs on; an AssertionError when none, so a
        technique cannot pass the kit by declaring itself unsupported everywhere."""
        reasons = {family: self.unsupported(family) for family in self.families}
        supported = [family for family, reason in reasons.items() if reason is None]
        assert supported, (f"{self.technique.name} declares itself unsupported on every family the kit checks, "
                           "so nothing could be checked: " + "; ".join(f"{f}: {r}" for f, r in reasons.items()))
        return supported

    @staticmethod
    def logits(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return model(**inputs).logits.float()

    # -- the contract ------------------------------------------------------------------------
    def test_registered_with_provenance(self):
        host = self.host()
        assert self.technique.name in host.techniques
        assert host.techniques[self.technique.name] is self.technique
        assert host.techniques.entry(self.technique.name).provenance.plugin

    def test_search_space_samples_valid_configs(self):
        space = self.technique.search_space()
        assert space, "a technique must declare at least one searchable field"
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(10):
            trial = study.ask()
            values = {field: suggest(trial, field, dist) for field, dist in space.items()}
            self.technique.make_config(values)  # must not raise
            study.tell(trial, 0.0)

    def test_default_config_exists(self):
        self.technique.make_config({})

    def test_bad_configs_raise_clear_errors(self):
        assert self.bad_configs, f"set bad_configs: values {self.technique.name}.make_config must refuse"
        for values in self.bad_configs:
            with pytest.raises(InputError, match=self.technique.name):
                self.technique.make_config(values)

    def test_output_shape_kept(self, tmp_path):
        for family in self.supported_families():
            compressed, _ = self.apply(tiny_model(family), self.strong_config, tmp_path)
            inputs = varied_inputs(compressed.get_input_embeddings().num_embeddings)
            logits = self.logits(compressed, inputs)
            assert logits.shape == (len(inputs["input_ids"]), 2), f"{family}: logits of shape {tuple(logits.shape)}"
            assert torch.isfinite(logits).all(), f"{family}: non-finite logits under {self.strong_config}"

    def test_parameters_go_down(self, tmp_path):
        if not self.reduces_parameters:
            pytest.skip(f"{self.technique.name} does not claim fewer parameters")
        for family in self.supported_families():
            model = tiny_model(family)
            before = parameter_count(model)
            compressed, _ = self.apply(copy.deepcopy(model), self.strong_config, tmp_path)
            after = parameter_count(compressed)
            print(f"{self.technique.name} {self.strong_config} on {family}: parameters {before:,} -> {after:,}")
            assert after < before, (f"{family}: parameters {before:,} -> {after:,} under {self.strong_config}: "
                                    "not fewer, though reduces_parameters is claimed")

    def test_model_bytes_go_down(self, tmp_path):
        if not self.reduces_memory:
            pytest.skip(f"{self.technique.name} does not claim less memory")
        for family in self.supported_families():
            model = tiny_model(family)
            before = model_bytes(model)
            compressed, _ = self.apply(copy.deepcopy(model), self.strong_config, tmp_path)
            after = model_bytes(compressed)
            print(f"{self.technique.name} {self.strong_config} on {family}: model bytes {before:,} -> {after:,}")
            assert after < before, (f"{family}: model bytes {before:,} -> {after:,} under {self.strong_config}: "
                                    "not fewer, though reduces_memory is claimed")

    def test_mild_settings_keep_outputs_close(self, tmp_path):
        for family in self.supported_families():
            model = trained_tiny_model(family)
            compressed, context = self.apply(copy.deepcopy(model), self.mild_config, tmp_path)
            # The kit's sentences, each encoded by the tokenizer that goes with its model (a
            # technique may replace the tokenizer, as vocabulary trimming does).
            texts = list(context.data.train.texts)
            before = self.logits(model, text_inputs(tiny_tokenizer(tmp_path / "original"), texts))
            after = self.logits(compressed, text_inputs(context.tokenizer, texts))
            change = largest_difference(before, after) / float(before.abs().max())
            tolerance = self.mild_tolerance_for.get(family, self.mild_tolerance)
            print(f"{self.technique.name} {self.mild_config} on trained {family}: largest logit change "
                  f"{change:.4f} of the largest logit (tolerance {tolerance})")
            assert change <= tolerance, (
                f"{family}: under mild_config {self.mild_config} the logits moved by {change:.4f} of the largest "
                f"logit, more than mild_tolerance {tolerance}")

    def test_save_reload_gives_identical_outputs(self, tmp_path):
        host = self.host()
        for family in self.supported_families():
            # Trained weights: a structure rebuilt wrongly (a head layout, say) changes outputs visibly.
            model = trained_tiny_model(family)
            step = PlanStep(self.technique, self.technique.make_config(self.strong_config))
            context = self.context(model, tmp_path)
            if self.technique.stage == Stage.POST:
                float_model, post = model, Plan.build([step]).to_manifest(Stage.POST)
                deployed = apply_steps(copy.deepcopy(model), [step], context)
            else:
                float_model = apply_steps(model, [step], context)
                deployed, post = float_model, []
            directory = save_candidate(tmp_path / family, float_model, context.tokenizer, post)
            reloaded, tokenizer = load_pretrained(directory, host.techniques, host.architectures)
            assert tokenizer is not None, f"{family}: no tokenizer reloaded"
            vocabulary = reloaded.get_input_embeddings().num_embeddings
            pad = getattr(reloaded.config, "pad_token_id", None)
            for name, inputs in (("random ids", varied_inputs(vocabulary, pad_id=pad if pad is not None else 0)),
                                 ("sentences", text_inputs(tokenizer, list(context.data.train.texts)[:12]))):
                expected, actual = self.logits(deployed, inputs), self.logits(reloaded, inputs)
                assert torch.equal(expected, actual), (
                    f"{family}: the reloaded model's logits differ from the saved model's by up to "
                    f"{largest_difference(expected, actual):.6g} on {name} (padded, {inputs['input_ids'].shape[0]} "
                    "rows): something the technique changed was not saved or not rebuilt on reload")

    def test_latency_goes_down(self, tmp_path):
        if not self.reduces_latency:
            pytest.skip(f"{self.technique.name} does not claim lower latency")
        # A model big enough that the matrix products dominate; interleaved runs cancel drift, and one
        # thread keeps another process on the machine (a second test worker) from stalling a timed pass.
        model = tiny_model("bert", vocab_size=1024, layers=2, hidden=256, heads=4, ffn=1024)
        compressed, _ = self.apply(copy.deepcopy(model), self.strong_config, tmp_path)
        inputs = dummy_inputs(8, 64, 1024)
        base, cand = [], []
        with thread_count(1):
            for _ in range(7):
                base += time_forward(model, inputs, warmup=1, repeats=3)
                cand += time_forward(compressed, inputs, warmup=1, repeats=3)
        before, after = statistics.median(base), statistics.median(cand)
        print(f"{self.technique.name} {self.strong_config}: median latency {before:.3f} -> {after:.3f} ms")
        assert after < before, (f"median latency {before:.3f} -> {after:.3f} ms under {self.strong_config}: "
                                "not lower, though reduces_latency is claimed")

    # -- structure: recorded in the manifest, rebuilt by the technique, shared weights once (API 1.3) --------
    #: Config entries that say where/when a model was made, not what it is.
    VOLATILE_CONFIG: ClassVar[frozenset[str]] = frozenset({"transformers_version", "_name_or_path", "architectures",
                                                           "dtype"})

    @staticmethod
    def structure_of(model) -> list[tuple]:
        """Every module path with its type, every state entry with its shape and dtype (shared paths included)."""
        modules = [(path, type(module).__name__) for path, module in model.named_modules(remove_duplicate=False)]
        state = [(name, tuple(value.shape), str(value.dtype)) for name, value in model.state_dict().items()
                 if isinstance(value, torch.Tensor)]
        return modules + state

    def structure_families(self):
        if self.technique.stage != Stage.STRUCTURE and self.technique.State is None:
            pytest.skip(f"{self.technique.name} is a {self.technique.stage.name.lower()} technique with no State: it "
                        "changes no structure")
        return self.supported_families()

    def test_structure_rebuilds_from_manifest(self, tmp_path):
        """The step is recorded in the manifest (technique, version, state) and the model is rebuilt from it
        alone: same modules, shapes, ties (``is``-identical shared tensors) and configuration."""
        for family in self.structure_families():
            compressed, context = self.apply(tiny_model(family), self.strong_config, tmp_path / family)
            directory = save_candidate(tmp_path / family / "saved", compressed, context.tokenizer, [])
            steps = json.loads((directory / MANIFEST).read_text())["structure"]["steps"]
            assert [(s["technique"], s["version"]) for s in steps] == [(self.technique.name, self.technique.version)]
            if self.technique.State is not None and self.reduces_parameters:
                assert steps[0]["state"] is not None, f"{family}: apply() changed the model but recorded no State"
            host = self.host()
            reloaded, _ = load_pretrained(directory, host.techniques, host.architectures)
            assert self.structure_of(reloaded) == self.structure_of(compressed), family
            ties = tie_groups(distinct_state(compressed)[1])
            assert tie_groups(distinct_state(reloaded)[1]) == ties, family
            for group in ties:
                tensors = [reloaded.get_parameter(n) if n in dict(reloaded.named_parameters(remove_duplicate=False))
                           else reloaded.get_buffer(n) for n in group]
                assert all(t is tensors[0] for t in tensors), (family, group)
            saved, again = compressed.config.to_dict(), reloaded.config.to_dict()
            assert {k: v for k, v in again.items() if k not in self.VOLATILE_CONFIG} == \
                {k: v for k, v in saved.items() if k not in self.VOLATILE_CONFIG}, family

    def test_shared_weights_counted_and_saved_once(self, tmp_path):
        """Parameters and bytes count each distinct tensor once; the file stores each once (and shrinks when
        memory is claimed)."""
        for family in self.structure_families():
            model = tiny_model(family)
            teacher_file = save_candidate(tmp_path / family / "teacher", model, tiny_tokenizer(tmp_path / "tok"), [])
            compressed, context = self.apply(copy.deepcopy(model), self.strong_config, tmp_path / family)
            saved = compressed.state_dict(keep_vars=True)
            tensors = {id(t): t for t in saved.values() if isinstance(t, torch.Tensor) and t.dtype != torch.long}
            # named_parameters()/buffers() list a shared tensor once: so must the count.
            distinct = [t for _, t in [*compressed.named_parameters(), *compressed.named_buffers()] if id(t) in tensors]
            assert parameter_count(compressed) == sum(t.numel() for t in distinct), family
            directory = save_candidate(tmp_path / family / "saved", compressed, context.tokenizer, [])
            size = (directory / WEIGHTS).stat().st_size
            assert 0 <= size - model_bytes(compressed) < 64 * 1024, (family, size, model_bytes(compressed))
            if self.reduces_memory:
                assert size < (teacher_file / WEIGHTS).stat().st_size, family

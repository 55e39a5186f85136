"""The technique contract kit: checks every technique must pass, built-in or third-party."""

from __future__ import annotations

import copy
import statistics
from pathlib import Path
from typing import Any, ClassVar

import optuna
import pytest
import torch

from autocompress.arch import adapter_for
from autocompress.candidate import apply_steps
from autocompress.errors import InputError
from autocompress.measure import dummy_inputs, model_bytes, parameter_count, time_forward
from autocompress.model_io import load_pretrained, save_candidate
from autocompress.plugin_manager import build_host
from autocompress.search.sampling import suggest
from autocompress.technique import ApplyContext, Plan, PlanStep, Stage, Technique
from autocompress.testing.tiny import synthetic_sentiment, tiny_model, tiny_tokenizer


class TechniqueContract:
    """Subclass as ``TestX(TechniqueContract)`` and set the class attributes below."""

    technique: ClassVar[type[Technique]]
    #: Settings under which outputs must stay close to the original model's.
    mild_config: ClassVar[dict[str, Any]] = {}
    #: Settings under which parameters (and latency, if claimed) must really go down.
    strong_config: ClassVar[dict[str, Any]] = {}
    #: Each must be rejected by ``make_config`` with an error naming the technique.
    bad_configs: ClassVar[list[dict[str, Any]]] = []
    reduces_parameters: ClassVar[bool] = True
    reduces_memory: ClassVar[bool] = True
    reduces_latency: ClassVar[bool] = True
    #: Largest allowed change of any class probability under ``mild_config``.
    mild_tolerance: ClassVar[float] = 0.2
    families: ClassVar[tuple[str, ...]] = ("bert", "distilbert")
    #: For a third-party plugin under test: the plugin module/object to register.
    plugin: ClassVar[Any] = None

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

    def supported(self, family: str) -> bool:
        model = tiny_model(family)
        reason = self.technique.unsupported_reason(adapter_for(model, self.host().architectures))
        if reason is not None:
            assert isinstance(reason, str) and reason.strip(), "unsupported_reason must explain itself"
            return False
        return True

    @staticmethod
    def probabilities(model, inputs) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(model(**inputs).logits.float(), dim=-1)

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
        for values in self.bad_configs:
            with pytest.raises(InputError, match=self.technique.name):
                self.technique.make_config(values)

    def test_output_shape_kept(self, tmp_path):
        for family in self.families:
            if not self.supported(family):
                continue
            model = tiny_model(family)
            inputs = dummy_inputs(3, 12, 128)
            compressed, _ = self.apply(model, self.strong_config, tmp_path)
            with torch.inference_mode():
                assert compressed(**inputs).logits.shape == (3, 2), family

    def test_parameters_go_down(self, tmp_path):
        if not self.reduces_parameters:
            pytest.skip(f"{self.technique.name} does not claim fewer parameters")
        for family in self.families:
            if not self.supported(family):
                continue
            model = tiny_model(family)
            before = parameter_count(model)
            compressed, _ = self.apply(copy.deepcopy(model), self.strong_config, tmp_path)
            assert parameter_count(compressed) < before, family

    def test_model_bytes_go_down(self, tmp_path):
        if not self.reduces_memory:
            pytest.skip(f"{self.technique.name} does not claim less memory")
        model = tiny_model("bert")
        compressed, _ = self.apply(copy.deepcopy(model), self.strong_config, tmp_path)
        assert model_bytes(compressed) < model_bytes(model)

    def test_mild_settings_keep_outputs_close(self, tmp_path):
        for family in self.families:
            if not self.supported(family):
                continue
            model = tiny_model(family)
            inputs = dummy_inputs(4, 16, 128)
            before = self.probabilities(model, inputs)
            compressed, _ = self.apply(copy.deepcopy(model), self.mild_config, tmp_path)
            after = self.probabilities(compressed, inputs)
            assert (after - before).abs().max() <= self.mild_tolerance, family

    def test_save_reload_gives_identical_outputs(self, tmp_path):
        for family in self.families:
            if not self.supported(family):
                continue
            model = tiny_model(family)
            step = PlanStep(self.technique, self.technique.make_config(self.strong_config))
            context = self.context(model, tmp_path)
            if self.technique.stage == Stage.POST:
                float_model, post = model, Plan.build([step]).to_manifest(Stage.POST)
                deployed = apply_steps(copy.deepcopy(model), [step], context)
            else:
                float_model = apply_steps(model, [step], context)
                deployed, post = float_model, []
            directory = save_candidate(tmp_path / family, float_model, context.tokenizer, post)
            reloaded, tokenizer = load_pretrained(directory)
            inputs = dummy_inputs(2, 10, reloaded.get_input_embeddings().num_embeddings)
            with torch.inference_mode():
                expected = deployed(**inputs).logits
                actual = reloaded(**inputs).logits
            assert torch.equal(expected, actual), family
            assert tokenizer is not None

    def test_latency_goes_down(self, tmp_path):
        if not self.reduces_latency:
            pytest.skip(f"{self.technique.name} does not claim lower latency")
        # A model big enough that the matrix products dominate; interleaved runs cancel drift.
        model = tiny_model("bert", vocab_size=1024, layers=2, hidden=256, heads=4, ffn=1024)
        compressed, _ = self.apply(copy.deepcopy(model), self.strong_config, tmp_path)
        inputs = dummy_inputs(8, 64, 1024)
        base, cand = [], []
        for _ in range(7):
            base += time_forward(model, inputs, warmup=1, repeats=3)
            cand += time_forward(compressed, inputs, warmup=1, repeats=3)
        assert statistics.median(cand) < statistics.median(base), (statistics.median(cand), statistics.median(base))

"""The contract kit itself: broken techniques fail it, with the numbers that show why.

Each broken technique below is run through the kit check that must catch it; the check has to
raise AssertionError naming what it measured. (The contract classes here are not collected by
pytest: their names do not start with ``Test``.)
"""

import re
from dataclasses import dataclass

import pytest
import torch

from autocompress import hookimpl
from autocompress.arch import get_module
from autocompress.technique import Stage, Technique
from autocompress.testing import TechniqueContract, tiny_model, trained_tiny_model, varied_inputs
from autocompress.testing.tiny import FAMILIES


@dataclass(frozen=True)
class _NoiseConfig:
    #: Standard deviation of the noise added to every weight matrix, relative to that matrix's own.
    noise: float = 0.3


class _SlightlyCorrupting(Technique):
    """Adds a little noise to every weight matrix: the kind of damage an off-by-a-little bug does."""

    name = "slightly_corrupting"
    stage = Stage.STRUCTURE
    Config = _NoiseConfig

    @classmethod
    def search_space(cls):
        from optuna.distributions import FloatDistribution

        return {"noise": FloatDistribution(0.1, 0.5)}

    def apply(self, model, config, context):
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() == 2:
                    parameter.add_(torch.randn(parameter.shape, generator=generator) * parameter.std() * config.noise)
        return model


@dataclass(frozen=True)
class _NoConfig:
    unused: int = 0


class _ForgetsHeadLayout(Technique):
    """Splits every attention head in two (8 heads of 8 instead of 4 of 16, weights unchanged) and
    records that nowhere: the config still says 4 heads, so a reloaded model computes attention
    with the old layout."""

    name = "forgets_head_layout"
    stage = Stage.STRUCTURE
    Config = _NoConfig

    @classmethod
    def search_space(cls):
        from optuna.distributions import IntDistribution

        return {"unused": IntDistribution(0, 1)}

    def apply(self, model, config, context):
        for paths in context.adapter.all_layer_paths():
            attention = get_module(model, paths.query.rpartition(".")[0])
            attention.attention_head_size //= 2
            attention.num_attention_heads *= 2
            attention.scaling = attention.attention_head_size**-0.5
        return model


class _ClaimsFewerParameters(Technique):
    """Zeroes the smaller half of every FFN input weight: a mask, not a removal. Nothing gets smaller."""

    name = "claims_fewer_parameters"
    stage = Stage.STRUCTURE
    Config = _NoConfig

    @classmethod
    def search_space(cls):
        from optuna.distributions import IntDistribution

        return {"unused": IntDistribution(0, 1)}

    def apply(self, model, config, context):
        with torch.no_grad():
            for paths in context.adapter.all_layer_paths():
                weight = context.adapter.linear(paths.ffn_in).weight
                weight[weight.abs() < weight.abs().median()] = 0.0
        return model


class _UnsupportedEverywhere(_ClaimsFewerParameters):
    name = "unsupported_everywhere"

    @classmethod
    def unsupported_reason(cls, adapter):
        return f"{adapter.model.config.model_type} is not handled"


class _RegistersOne:
    """A plugin registered in code (as a third-party test would): the kit reloads saved candidates
    through the host it builds, so the technique under test must be registered there."""

    def __init__(self, technique):
        self.technique = technique

    @hookimpl
    def autocompress_register_techniques(self, register):
        register.add(self.technique)


def _contract(technique, **attributes) -> TechniqueContract:
    attributes.setdefault("plugin", _RegistersOne(technique))
    contract = type(f"_{technique.__name__}Contract", (TechniqueContract,), {"technique": technique, **attributes})
    return contract()


def test_the_kits_inputs_use_many_ids_different_lengths_and_real_padding():
    inputs = varied_inputs(128)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    lengths = mask.sum(dim=1)
    assert len(set(lengths.tolist())) == len(lengths) and lengths.min() < ids.shape[1]
    assert (ids[mask == 0] == 0).all() and (ids[:, 0] == 2).all()  # padding id 0 past each row's end, [CLS] first
    assert len(set(ids[mask == 1].tolist())) > 80  # most of the 123 non-special ids


def test_a_trained_tiny_model_depends_on_its_weights():
    model = trained_tiny_model("bert")
    untrained = tiny_model("bert")
    inputs = varied_inputs(128)
    with torch.inference_mode():
        assert not torch.allclose(model(**inputs).logits, untrained(**inputs).logits)


def test_kit_rejects_a_technique_that_corrupts_weights_slightly(tmp_path):
    contract = _contract(_SlightlyCorrupting, mild_config={"noise": 0.3}, families=FAMILIES)
    with pytest.raises(AssertionError) as failure:
        contract.test_mild_settings_keep_outputs_close(tmp_path)
    message = str(failure.value)
    moved = float(re.search(r"the logits moved by ([0-9.]+) of the largest logit", message).group(1))
    assert moved > contract.mild_tolerance and "more than mild_tolerance 0.01" in message, message


def test_kit_rejects_a_technique_that_forgets_to_save_a_changed_shape(tmp_path):
    contract = _contract(_ForgetsHeadLayout, families=("bert",))
    with pytest.raises(AssertionError) as failure:
        contract.test_save_reload_gives_identical_outputs(tmp_path)
    message = str(failure.value)
    difference = float(re.search(r"differ from the saved model's by up to ([0-9.e+-]+)", message).group(1))
    assert difference > 0 and "was not saved or not rebuilt on reload" in message, message


def test_kit_rejects_a_technique_that_claims_fewer_parameters_but_removes_none(tmp_path, capsys):
    contract = _contract(_ClaimsFewerParameters, families=("bert",))
    expected = f"{sum(p.numel() for p in tiny_model('bert').parameters()):,}"
    with pytest.raises(AssertionError, match=rf"bert: parameters {expected} -> {expected} under .*not fewer"):
        contract.test_parameters_go_down(tmp_path)
    assert f"parameters {expected} -> {expected}" in capsys.readouterr().out  # printed, also when it passes
    with pytest.raises(AssertionError, match=r"bert: model bytes ([0-9,]+) -> \1 under .*not fewer"):
        contract.test_model_bytes_go_down(tmp_path)


@pytest.mark.parametrize("check", ["test_output_shape_kept", "test_parameters_go_down", "test_model_bytes_go_down",
                                   "test_mild_settings_keep_outputs_close", "test_save_reload_gives_identical_outputs"])
def test_kit_fails_a_technique_unsupported_on_every_family(check, tmp_path):
    contract = _contract(_UnsupportedEverywhere)
    with pytest.raises(AssertionError, match="unsupported on every family the kit checks.*bert: bert is not handled"):
        getattr(contract, check)(tmp_path)


def test_kit_passes_the_checks_above_on_a_sound_technique(tmp_path):
    """The same checks pass for a built-in technique: the failures above come from the broken ones."""
    from autocompress.plugins.ffn_pruning import FfnPruning

    contract = _contract(FfnPruning, plugin=None, mild_config={"keep_fraction": 0.9},
                         strong_config={"keep_fraction": 0.25}, families=("bert",))
    contract.test_mild_settings_keep_outputs_close(tmp_path)
    contract.test_save_reload_gives_identical_outputs(tmp_path)
    contract.test_parameters_go_down(tmp_path)

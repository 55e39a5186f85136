"""Property-based: a plan and its Optuna parameters are one encoding with a tested inverse.

``plan_params`` (what the starting points are queued as) and ``sample_plan`` (what every trial
and an isolated trial's child read) must agree: any plan of the registered techniques, encoded
and read back, is the same plan; any sampled trial's parameters, decoded and encoded again, are
the same parameters.
"""

from dataclasses import dataclass

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from autocompress.errors import InputError
from autocompress.plugin_manager import build_host
from autocompress.search.sampling import conflict_groups, plan_of_params, plan_params, plan_values, sample_plan
from autocompress.technique import Stage, Technique

TECHNIQUES = [entry.cls for entry in build_host(autoload=False).techniques]
SPACES = {cls.name: cls.search_space() for cls in TECHNIQUES}


def _value(draw, distribution):
    """A value inside ``distribution``, as the sampler could draw it."""
    if isinstance(distribution, CategoricalDistribution):
        return draw(st.sampled_from(distribution.choices))
    if isinstance(distribution, IntDistribution):
        if distribution.log:
            return draw(st.integers(distribution.low, distribution.high))
        return distribution.low + distribution.step * draw(
            st.integers(0, (distribution.high - distribution.low) // distribution.step))
    assert isinstance(distribution, FloatDistribution)
    if distribution.step is None:
        return draw(st.floats(distribution.low, distribution.high))
    steps = round((distribution.high - distribution.low) / distribution.step)
    # Optuna's samplers clip a stepped value to the range (low + k * step can overshoot high by an ulp).
    return min(distribution.high, distribution.low + distribution.step * draw(st.integers(0, steps)))


@st.composite
def plans(draw):
    """Technique name -> {searched field: value}: at most one technique of each conflict group."""
    plan = {}
    for group in conflict_groups(TECHNIQUES):
        picked = draw(st.sampled_from([None, *group]))
        if picked is not None:
            space = SPACES[picked.name]
            fields = {field: _value(draw, d) for field, d in space.items() if field not in picked.conditions}
            # A conditional field (quantization's group_size: int4 only) is in a plan only when it is used.
            fields.update({field: _value(draw, d) for field, d in space.items()
                           if field in picked.conditions and picked.uses_field(field, fields)})
            plan[picked.name] = fields
    return plan


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_a_plan_encoded_as_parameters_reads_back_as_the_same_plan(plan):
    params = plan_params(plan, TECHNIQUES, SPACES, "generated")
    decoded = plan_of_params(params, TECHNIQUES, SPACES)
    assert plan_values(decoded, SPACES) == plan
    assert [step.technique.name for step in decoded.steps] == sorted(
        plan, key=lambda name: (next(c for c in TECHNIQUES if c.name == name).stage, name))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_a_sampled_trial_encodes_back_to_its_own_parameters(seed):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    plan = sample_plan(trial, TECHNIQUES, SPACES)
    assert plan_params(plan_values(plan, SPACES), TECHNIQUES, SPACES, "sampled") == trial.params


@dataclass(frozen=True)
class _NoConfig:
    pass


class _Base(Technique):
    name = "base_step"
    stage = Stage.STRUCTURE
    Config = _NoConfig

    @classmethod
    def search_space(cls):
        return {}

    def apply(self, model, config, context):
        return model


class _NeedsBase(_Base):
    name = "needs_base"
    requires = frozenset({"base_step"})


def test_a_plan_sample_plan_could_not_pick_is_refused():
    techniques = [_Base, _NeedsBase, *TECHNIQUES]
    spaces = {**SPACES, "base_step": {}, "needs_base": {}}
    with pytest.raises(InputError, match="here: needs_base requires base_step"):
        plan_params({"needs_base": {}}, techniques, spaces, "here")
    both = plan_params({"needs_base": {}, "base_step": {}}, techniques, spaces, "here")
    assert [s.technique.name for s in plan_of_params(both, techniques, spaces).steps] == ["base_step", "needs_base"]
    with pytest.raises(InputError, match="distillation and lora conflict"):
        plan_params({"distillation": {}, "lora": {}}, TECHNIQUES, SPACES, "here")


QUANTIZATION = next(cls for cls in TECHNIQUES if cls.name == "quantization")


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_a_field_is_drawn_only_for_the_values_that_use_it(seed):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    sample_plan(trial, [QUANTIZATION], SPACES)
    if not trial.params["use.quantization"]:
        return
    dtype = trial.params["quantization.dtype"]
    assert ("quantization.group_size" in trial.params) == (dtype == "int4"), trial.params
    assert ("quantization.embeddings" in trial.params) == (dtype == "int8"), trial.params
    assert ("quantization.fallback_layers" in trial.params) == (dtype == "int8-static"), trial.params


def test_a_plan_may_not_fix_a_field_its_other_values_leave_unused():
    with pytest.raises(InputError, match=r"here: quantization.group_size is used only when dtype is int4; leave it"):
        plan_params({"quantization": {"dtype": "bf16", "group_size": 32}}, TECHNIQUES, SPACES, "here")
    assert plan_params({"quantization": {"dtype": "int4", "group_size": 32}}, TECHNIQUES, SPACES,
                       "here")["quantization.group_size"] == 32
    # dtype left to the sampler: group_size is fixed for the case it is drawn
    undecided = plan_params({"quantization": {"group_size": 64}}, TECHNIQUES, SPACES, "here")
    assert undecided["quantization.group_size"] == 64
    bf16 = plan_of_params({"use.quantization": True, "quantization.dtype": "bf16"}, [QUANTIZATION], SPACES)
    assert plan_values(bf16, SPACES) == {"quantization": {"dtype": "bf16"}}

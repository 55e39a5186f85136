"""Turning a plan into a candidate: structure -> (measure) -> recover -> post-training steps."""

from __future__ import annotations

import copy
import hashlib

import torch
from torch import nn

from autocompress.errors import TechniqueError
from autocompress.shared_weights import distinct_state
from autocompress.structure import record_step
from autocompress.technique import ApplyContext, Plan, PlanStep, Stage


def apply_steps(model: nn.Module, steps: list[PlanStep], context: ApplyContext) -> nn.Module:
    """Apply steps in order; any failure is re-raised as TechniqueError naming the technique.

    Each structure step, and each recovery step whose technique declares a ``State`` (one that adds
    parameters, e.g. soft-prompt rows), is recorded on the model (``autocompress.structure``): its
    technique, version and config, the state its ``apply`` recorded and the config changes it made,
    so a saved candidate can be rebuilt.
    """
    for step in steps:
        structural = step.technique.stage == Stage.STRUCTURE or (
            step.technique.stage == Stage.RECOVER and step.technique.State is not None)
        before = model.config.to_dict() if structural else None
        context.take_recorded()  # a state recorded outside a step belongs to no step
        source = model
        try:
            model = step.technique().apply(model, step.config, context)
        except TechniqueError:
            raise
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if type(exc).__name__ == "TrialPruned":
                raise
            raise TechniqueError(step.technique.name, f"{type(exc).__name__}: {exc}") from exc
        if model is None:
            raise TechniqueError(step.technique.name, "apply() returned None instead of the model")
        states = context.take_recorded()
        if structural:
            record_step(model, step, before, states, source)
        elif states:
            raise TechniqueError(step.technique.name, "apply() recorded a state, but it declares no State")
    return model


def deploy(model: nn.Module, plan: Plan, context: ApplyContext) -> nn.Module:
    """The deployed form: a copy of ``model`` with the plan's post-training steps applied."""
    return apply_steps(copy.deepcopy(model), plan.at(Stage.POST), context).eval()


def structure_key(model: nn.Module, plan: Plan, extra: str = "") -> str:
    """Identifies what latency and memory depend on: module types, tensor shapes/dtypes, which tensors
    are shared, post steps.

    Weight values are deliberately left out: they do not change latency or memory.
    """
    digest = hashlib.sha256(extra.encode())
    for name, module in model.named_modules():
        digest.update(f"{name}:{type(module).__name__};".encode())
    for name, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            digest.update(f"{name}:{tuple(value.shape)}:{value.dtype};".encode())
    for alias, canonical in sorted(distinct_state(model)[1].items()):
        digest.update(f"{alias}={canonical};".encode())
    for step in plan.at(Stage.POST):
        digest.update(step.describe().encode())
        digest.update(step.technique.version.encode())
    return digest.hexdigest()

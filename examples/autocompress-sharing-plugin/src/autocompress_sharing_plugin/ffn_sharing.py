"""ffn_sharing: consecutive layers share one feed-forward block."""

from dataclasses import dataclass

from optuna.distributions import IntDistribution

from autocompress import hookimpl
from autocompress.arch import get_module, set_module
from autocompress.technique import ApplyContext, Stage, Technique

AUTOCOMPRESS_PLUGIN_API = ">=1.3,<2"


@dataclass(frozen=True)
class FfnSharingConfig:
    #: Consecutive layers whose FFN is one (the first layer's of the group); 1: no sharing.
    group_size: int = 2

    def __post_init__(self):
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
            raise ValueError(f"group_size must be a whole number, got {self.group_size!r}")
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")


@dataclass(frozen=True)
class FfnSharingState:
    #: Groups of layer indices sharing one FFN, the owner first.
    groups: list[list[int]]


def share_ffns(model, context: ApplyContext, groups):
    adapter = context.adapter
    for owner, *members in groups:
        source = adapter.layer_paths(owner)
        for member in members:
            paths = adapter.layer_paths(member)
            set_module(model, paths.ffn_in, get_module(model, source.ffn_in))
            set_module(model, paths.ffn_out, get_module(model, source.ffn_out))
    return model


class FfnSharing(Technique):
    name = "ffn_sharing"
    stage = Stage.STRUCTURE
    Config = FfnSharingConfig
    State = FfnSharingState
    description = "consecutive layers share one feed-forward block (its input and output linears)"

    @classmethod
    def search_space(cls):
        return {"group_size": IntDistribution(2, 3)}

    def apply(self, model, config: FfnSharingConfig, context: ApplyContext):
        layers = context.adapter.num_layers()
        groups = [list(range(start, min(start + config.group_size, layers)))
                  for start in range(0, layers, config.group_size)]
        groups = [group for group in groups if len(group) > 1]
        if not groups:
            return model
        state = FfnSharingState(groups=groups)
        context.record(state)
        return share_ffns(model, context, state.groups)

    def rebuild(self, model, config: FfnSharingConfig, state: FfnSharingState, context: ApplyContext):
        return share_ffns(model, context, state.groups)


@hookimpl
def autocompress_register_techniques(register):
    register.add(FfnSharing)

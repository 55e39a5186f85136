"""The plugin host: built-ins, real entry points, and errors that name the plugin at fault."""

import json
import os
import subprocess
import sys
import textwrap
import types
import warnings
from dataclasses import dataclass

import pandas as pd
import pluggy
import pytest
import torch

from autocompress import hookimpl, hookspecs
from autocompress.arch import BertAdapter, adapter_for
from autocompress.errors import PluginError
from autocompress.hookspecs import PLUGIN_API_VERSION, PluginDeprecationWarning, hookspec
from autocompress.measure import Measurement, MeasureSettings, Target, measure_eager
from autocompress.plugin_manager import BUILTIN, Host, PluginInfo, build_host, register_plugin
from autocompress.search_space import parse_space, read_yaml
from autocompress.task import LoadedTask, TaskProvider
from autocompress.technique import Stage, Technique
from autocompress.testing import tiny_tokenizer
from autocompress.testing.tiny import POSITIVE
from autocompress.training import accuracy, encode


def test_builtins_are_registered_with_their_provenance():
    host = build_host(autoload=False)
    assert {"ffn_pruning", "quantization"} <= set(host.techniques.names())
    assert host.targets.names() == ["cpu", "onnxruntime", "openvino"]
    assert {"demo", "local"} <= set(host.tasks.names())
    assert {"bert", "distilbert"} <= set(host.architectures.names())
    assert host.techniques.entry("quantization").provenance.distribution == BUILTIN
    assert host.techniques.entry("quantization").provenance.plugin == "quantization"


def test_disable_blocks_a_plugin_by_name():
    host = build_host(autoload=False, disabled=["quantization"])
    assert "quantization" not in host.techniques


@dataclass(frozen=True)
class _Config:
    level: float = 0.5


def _technique(name: str, space=True):
    def search_space(cls):
        from optuna.distributions import FloatDistribution

        return {"level": FloatDistribution(0.1, 0.9)}

    attrs = {"name": name, "stage": Stage.STRUCTURE, "Config": _Config, "apply": lambda self, m, c, x: m}
    if space:
        attrs["search_space"] = classmethod(search_space)
    return type(f"T_{name}", (Technique,), attrs)


def _plugin(**hooks):
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def test_misspelled_hook_is_an_error_naming_the_plugin():
    plugin = _plugin(autocompress_register_tecniques=lambda register: None)
    with pytest.raises(PluginError, match="typo-plugin") as error:
        build_host(autoload=False, extra_plugins=[("typo-plugin", plugin)])
    assert "autocompress_register_tecniques" in str(error.value)


def test_wrong_hook_signature_is_an_error_naming_the_plugin():
    plugin = _plugin(autocompress_register_techniques=lambda registry: None)
    with pytest.raises(PluginError, match="bad-args-plugin") as error:
        build_host(autoload=False, extra_plugins=[("bad-args-plugin", plugin)])
    assert "registry" in str(error.value)


def test_duplicate_technique_name_names_both_plugins():
    Duplicate = _technique("quantization")
    plugin = _plugin(autocompress_register_techniques=lambda register: register.add(Duplicate))
    with pytest.raises(PluginError) as error:
        build_host(autoload=False, extra_plugins=[("dupe-plugin", plugin)])
    assert "dupe-plugin" in str(error.value) and "'quantization'" in str(error.value)


def test_technique_without_search_space_is_an_error_naming_the_plugin():
    NoSpace = _technique("no_space_here", space=False)
    plugin = _plugin(autocompress_register_techniques=lambda register: register.add(NoSpace))
    with pytest.raises(PluginError, match="no-space-plugin") as error:
        build_host(autoload=False, extra_plugins=[("no-space-plugin", plugin)])
    assert "search space" in str(error.value)


def _technique_with_space(name: str, space):
    return type(f"T_{name}", (Technique,), {
        "name": name, "stage": Stage.STRUCTURE, "Config": _Config, "apply": lambda self, m, c, x: m,
        "search_space": classmethod(lambda cls: space(cls)),
    })


def test_search_space_in_code_naming_a_missing_config_field_is_an_error_naming_the_plugin():
    from optuna.distributions import FloatDistribution

    Typo = _technique_with_space("typo_space", lambda cls: {"levle": FloatDistribution(0.1, 0.9)})
    plugin = _plugin(autocompress_register_techniques=lambda register: register.add(Typo))
    with pytest.raises(PluginError, match="typo-space-plugin") as error:
        build_host(autoload=False, extra_plugins=[("typo-space-plugin", plugin)])
    assert "unknown field 'levle'" in str(error.value) and "fields: level" in str(error.value)


def test_search_space_in_yaml_naming_a_missing_config_field_is_an_error_naming_the_plugin(tmp_path):
    path = tmp_path / "typo_yaml.yaml"
    path.write_text("levle: {type: float, low: 0.1, high: 0.9}\n")
    TypoYaml = _technique_with_space("typo_yaml", lambda cls: parse_space(read_yaml(path), cls, str(path)))
    plugin = _plugin(autocompress_register_techniques=lambda register: register.add(TypoYaml))
    with pytest.raises(PluginError, match="yaml-plugin") as error:
        build_host(autoload=False, extra_plugins=[("yaml-plugin", plugin)])
    assert str(path) in str(error.value) and "unknown field 'levle'" in str(error.value)


def test_search_space_values_must_be_optuna_distributions():
    Loose = _technique_with_space("loose_space", lambda cls: {"level": (0.1, 0.9)})
    plugin = _plugin(autocompress_register_techniques=lambda register: register.add(Loose))
    with pytest.raises(PluginError, match="loose-plugin.*must be an Optuna distribution"):
        build_host(autoload=False, extra_plugins=[("loose-plugin", plugin)])


def _versioned_plugin(api, technique_name):
    Versioned = _technique(technique_name)
    plugin = _plugin(autocompress_register_techniques=lambda register: register.add(Versioned))
    plugin.AUTOCOMPRESS_PLUGIN_API = api
    return plugin


def test_plugin_supporting_this_api_version_loads():
    assert PLUGIN_API_VERSION == "1.8"
    host = build_host(autoload=False, extra_plugins=[("v1-plugin", _versioned_plugin(">=1.0,<2", "v1_thing"))])
    assert "v1_thing" in host.techniques
    assert host.plugin("v1-plugin").api == ">=1.0,<2" and host.plugin("v1-plugin").error is None


@pytest.mark.parametrize("api, expected", [
    (">=2.0", "supports plugin API >=2.0, but autocompress 0.1.0 provides plugin API 1.8"),
    ("<1.0", "supports plugin API <1.0"),
    ("one point oh", "'one point oh' is not a version specifier"),
    (2, "2 is not a version specifier"),
])
def test_plugin_excluding_this_api_version_is_broken_and_the_others_load(api, expected):
    host = build_host(autoload=False, extra_plugins=[("future-plugin", _versioned_plugin(api, "future_thing")),
                                                     ("v1-plugin", _versioned_plugin(">=1", "v1_thing"))])
    assert "future_thing" not in host.techniques and "v1_thing" in host.techniques
    [broken] = host.broken
    assert broken.name == "future-plugin" and broken.distribution == "registered in code"
    assert broken.error.startswith("incompatible: ") and expected in broken.error


def _deprecation_specs():
    """Hookspecs as a future autocompress would deprecate them: an old hook, and an old argument."""
    specs = types.ModuleType("deprecated_specs")

    @hookspec(warn_on_impl=PluginDeprecationWarning(
        "autocompress_old_sections is deprecated: implement autocompress_new_sections; removed in plugin API 2.0"))
    def autocompress_old_sections(run):
        """Old name of a hook."""

    @hookspec(warn_on_impl_args={"legacy_rows": PluginDeprecationWarning(
        "argument 'legacy_rows' of autocompress_new_sections is deprecated: use 'run'; removed in plugin API 2.0")})
    def autocompress_new_sections(run, legacy_rows):
        """A hook one of whose arguments is deprecated."""

    specs.autocompress_old_sections = autocompress_old_sections
    specs.autocompress_new_sections = autocompress_new_sections
    return specs


def _host_with_deprecations() -> Host:
    pm = pluggy.PluginManager("autocompress")
    pm.add_hookspecs(hookspecs)
    pm.add_hookspecs(_deprecation_specs())
    return Host(pm)


def test_deprecated_hook_warns_at_the_plugin_function_and_is_recorded():
    def autocompress_old_sections(run):
        return []

    info = PluginInfo("old-plugin", "old-dist 1.0", "old_plugin")
    with pytest.warns(PluginDeprecationWarning, match="autocompress_old_sections is deprecated") as caught:
        register_plugin(_host_with_deprecations(), _plugin(autocompress_old_sections=autocompress_old_sections), info)
    assert caught[0].filename == __file__
    assert caught[0].lineno == autocompress_old_sections.__code__.co_firstlineno
    assert len(info.deprecations) == 1 and "removed in plugin API 2.0" in info.deprecations[0]


def test_deprecated_hook_argument_warns_only_when_the_plugin_uses_it():
    info = PluginInfo("legacy-plugin", "legacy-dist 1.0", "legacy_plugin")
    with pytest.warns(PluginDeprecationWarning, match="argument 'legacy_rows'"):
        register_plugin(_host_with_deprecations(),
                        _plugin(autocompress_new_sections=lambda run, legacy_rows: []), info)
    assert info.deprecations

    current = PluginInfo("current-plugin", "current-dist 1.0", "current_plugin")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginDeprecationWarning)
        register_plugin(_host_with_deprecations(), _plugin(autocompress_new_sections=lambda run: []), current)
    assert current.deprecations == []


class _PluginAdapter(BertAdapter):
    name = "plugin_bert"
    description = "BERT layout, registered by a test plugin"
    built = 0

    def __init__(self, model):
        super().__init__(model)
        type(self).built += 1


def test_hook_autocompress_register_architectures():
    plugin = _plugin(autocompress_register_architectures=lambda register: register.add(_PluginAdapter))
    host = build_host(autoload=False, disabled=["architectures"], extra_plugins=[("arch-plugin", plugin)])
    assert host.architectures.names() == ["plugin_bert"]
    assert host.architectures.entry("plugin_bert").provenance.plugin == "arch-plugin"
    from autocompress.testing import tiny_model

    assert isinstance(adapter_for(tiny_model("bert"), host.architectures), _PluginAdapter)


class _Oracle(torch.nn.Module):
    """A runtime that is always right on synthetic_sentiment: "pos" iff a positive word occurs
    (the tiny model it stands for scores about 0.5)."""

    def __init__(self, tokenizer):
        super().__init__()
        self.positive = torch.tensor(tokenizer.convert_tokens_to_ids(POSITIVE))

    def forward(self, input_ids, attention_mask=None, **_):
        positive = torch.isin(input_ids, self.positive).any(dim=1).float()
        return types.SimpleNamespace(logits=torch.stack([1 - positive, positive], dim=1))


class _CountingTarget(Target):
    name = "counting"
    description = "eager CPU measurement that counts its calls; its runtime is an oracle"
    measured: list[int] = []

    def measure(self, model, settings: MeasureSettings) -> Measurement:
        measurement = measure_eager(model, settings)
        type(self).measured.append(measurement.parameters)
        return measurement

    tokenizer = None  # the test sets it

    def runtime(self, model):
        return _Oracle(type(self).tokenizer)


class _InMemoryTask(TaskProvider):
    name = "in_memory"
    description = "a tiny random BERT and synthetic sentences, built in memory"
    default_trials = 2  # what a search without a trial budget runs (the search below gives none)

    def validate(self) -> None:
        if self.options.cache_dir is None:
            raise ValueError("in_memory needs cache_dir for its tokenizer")

    def load(self) -> LoadedTask:
        from autocompress.data import stratified_split
        from autocompress.testing import synthetic_sentiment, tiny_model, tiny_tokenizer

        texts, labels = synthetic_sentiment(60)
        data = stratified_split(texts, [int(label == "pos") for label in labels], ["neg", "pos"])
        return LoadedTask(tiny_model("bert"), tiny_tokenizer(self.options.cache_dir), data,
                          fingerprint="in-memory-test", description=self.description)


def test_hook_autocompress_register_targets_and_autocompress_register_tasks_drive_a_search(tmp_path):
    from autocompress.search import run_search
    from autocompress.search.settings import SearchSettings
    from autocompress.task import TaskOptions

    plugin = _plugin(autocompress_register_targets=lambda register: register.add(_CountingTarget),
                     autocompress_register_tasks=lambda register: register.add(_InMemoryTask),
                     autocompress_register_architectures=lambda register: register.add(_PluginAdapter))
    host = build_host(autoload=False, disabled=["architectures"], extra_plugins=[("provider-plugin", plugin)])
    assert host.targets.entry("counting").provenance.plugin == "provider-plugin"
    assert host.tasks.entry("in_memory").provenance.plugin == "provider-plugin"
    _CountingTarget.measured.clear()
    _CountingTarget.tokenizer = tiny_tokenizer(tmp_path / "tok")
    _PluginAdapter.built = 0
    settings = SearchSettings(task="in_memory", task_options=TaskOptions(cache_dir=tmp_path / "tok"),
                              target="counting", measure=MeasureSettings(repeats=2, warmup=0),
                              techniques=("ffn_pruning",), out=tmp_path / "run", progress=False, sampler="random",
                              free_floor=())  # settings built here, not from options: no floor unless asked
    outcome = run_search(settings, host)
    assert outcome.trials == 2
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert len(trials) == 2
    assert len(_CountingTarget.measured) >= 3  # the teacher (baseline), then each trial beside the teacher
    assert _PluginAdapter.built >= 1
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["target"] == "counting" and run["task"] == "in_memory"
    # Accuracy is scored on the target's runtime (here an oracle), the baseline's included.
    assert (run["baseline"]["val_accuracy"], run["baseline"]["test_accuracy"]) == (1.0, 1.0)
    complete = trials[trials["state"] == "COMPLETE"]
    assert len(complete) >= 1 and (complete["test_accuracy"] == 1.0).all() and (complete["val_accuracy"] == 1.0).all()
    task = _InMemoryTask(TaskOptions(cache_dir=tmp_path / "tok")).load()
    assert accuracy(task.teacher, encode(task.tokenizer, task.data.test, 64)) < 1.0  # PyTorch is no oracle


def test_hook_autocompress_trial_finished_observer_errors_are_reported_not_raised():
    seen = []

    def observer(trial_number, outcome):
        seen.append((trial_number, outcome["state"]))
        raise RuntimeError("observer broke")

    host = build_host(autoload=False, extra_plugins=[("watcher", _plugin(autocompress_trial_finished=observer))])
    errors = host.trial_finished(7, {"state": "complete"})
    assert seen == [(7, "complete")]
    assert errors and "watcher" in errors[0]


class _Wrapper:
    """Sees every call of two hooks through pluggy's wrapper protocol."""

    def __init__(self):
        self.seen = []

    @hookimpl(wrapper=True)
    def autocompress_trial_finished(self, trial_number):
        self.seen.append(("trial", trial_number))
        return (yield)

    @hookimpl(wrapper=True)
    def autocompress_register_techniques(self, register):
        self.seen.append(("register", None))
        return (yield)


def _observer(name, calls, fails=False, **opts):
    def observe(trial_number, outcome):
        calls.append(name)
        if fails:
            raise RuntimeError(f"{name} broke")

    return types.SimpleNamespace(autocompress_trial_finished=hookimpl(**opts)(observe))


def test_hooks_are_called_through_pluggy_wrappers_ordering_and_tracing_included():
    calls, wrapper, traced = [], _Wrapper(), []
    plugins = [("late", _observer("late", calls, trylast=True)), ("broken", _observer("broken", calls, fails=True)),
               ("plain", _observer("plain", calls)), ("early", _observer("early", calls, tryfirst=True)),
               ("wrapper", wrapper)]
    host = build_host(autoload=False, extra_plugins=plugins)
    # Registration went through pluggy too: the wrapper saw each technique plugin register (one call each).
    registering = [i for i in host.pm.hook.autocompress_register_techniques.get_hookimpls() if not i.wrapper]
    assert wrapper.seen == [("register", None)] * len(registering) and len(registering) >= 8
    wrapper.seen.clear()
    host.pm.add_hookcall_monitoring(lambda name, impls, kwargs: traced.append(name), lambda *args: None)

    errors = host.trial_finished(3, {"state": "COMPLETE"}, None)

    # pluggy's order: tryfirst, then the last registered first, trylast at the end; built-in trial_log after
    # the plugins registered in code (registered before them). A raising observer stops none of the others.
    assert calls == ["early", "plain", "broken", "late"]
    assert errors == ["observer plugin 'broken' failed: RuntimeError('broken broke')"]
    assert wrapper.seen == [("trial", 3)] * 5  # one call per observer (trial_log's included), each wrapped
    assert traced == ["autocompress_trial_finished"] * 5


def test_report_sections_go_through_pluggy_and_a_raising_plugin_is_named():
    order = []

    def section(name):
        def sections(run):
            order.append(name)
            if name == "bad":
                raise ValueError("no section")
            return [types.SimpleNamespace(title=name, order=1)]

        return types.SimpleNamespace(autocompress_report_sections=hookimpl(tryfirst=name == "first")(sections))

    host = build_host(autoload=False, disabled=["report_outcomes", "runtime_report"],
                      extra_plugins=[("first", section("first")), ("bad", section("bad")), ("last", section("last"))])
    found, errors = host.report_sections(run=None)
    assert order == ["first", "last", "bad"]
    assert [s.title for s in found] == ["first", "last"]
    assert errors == ["report plugin 'bad' failed: ValueError('no section')"]


PLUGIN_MODULE = '''
from dataclasses import dataclass
from optuna.distributions import FloatDistribution
from autocompress import hookimpl
from autocompress.technique import Stage, Technique


@dataclass(frozen=True)
class NoiseConfig:
    scale: float = 0.0


class Noise(Technique):
    name = "entry_point_noise"
    stage = Stage.STRUCTURE
    Config = NoiseConfig

    @classmethod
    def search_space(cls):
        return {"scale": FloatDistribution(0.0, 0.1)}

    def apply(self, model, config, context):
        return model


@hookimpl
def autocompress_register_techniques(register):
    register.add(Noise)
'''


FUTURE_PLUGIN_MODULE = PLUGIN_MODULE.replace("entry_point_noise", "future_noise") + '''
AUTOCOMPRESS_PLUGIN_API = ">=2.0,<3"
'''


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """A real distribution with three entry points (one fails to import, one needs plugin API 2),
    pip-installed into a folder."""
    root = tmp_path_factory.mktemp("dist")
    (root / "ac_tiny_plugin.py").write_text(PLUGIN_MODULE)
    (root / "ac_future_plugin.py").write_text(FUTURE_PLUGIN_MODULE)
    (root / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "ac-tiny-plugin"
        version = "0.3"
        [project.entry-points.autocompress]
        tiny = "ac_tiny_plugin"
        broken = "ac_missing_module"
        future = "ac_future_plugin"
        [tool.setuptools]
        py-modules = ["ac_tiny_plugin", "ac_future_plugin"]
    """))
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(root)],
        check=True, capture_output=True,
    )
    return site


def test_entry_point_plugin_is_discovered_with_its_distribution(installed_plugin, monkeypatch):
    monkeypatch.syspath_prepend(str(installed_plugin))
    host = build_host(autoload=True)
    entry = host.techniques.entry("entry_point_noise")
    assert entry.provenance.plugin == "tiny"
    assert entry.provenance.distribution == "ac-tiny-plugin 0.3"
    broken = {p.name: p for p in host.broken}
    assert broken["broken"].distribution == "ac-tiny-plugin 0.3"
    assert broken["broken"].error == "import failed: ModuleNotFoundError: No module named 'ac_missing_module'"
    assert broken["future"].distribution == "ac-tiny-plugin 0.3"
    assert "supports plugin API >=2.0,<3" in broken["future"].error and "plugin API 1.8" in broken["future"].error
    assert "future_noise" not in host.techniques
    assert build_host(autoload=False).techniques.get("entry_point_noise") is None


def test_cli_lists_entry_point_plugins_and_broken_ones(installed_plugin):
    env = {**os.environ, "PYTHONPATH": str(installed_plugin)}
    env.pop("AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD", None)
    result = subprocess.run([sys.executable, "-m", "autocompress.cli", "plugins", "--json"],
                            capture_output=True, text=True, env=env, check=True)
    listing = json.loads(result.stdout)
    names = {(r["kind"], r["name"]): r for r in listing["registered"]}
    assert names[("technique", "entry_point_noise")]["distribution"] == "ac-tiny-plugin 0.3"
    assert names[("technique", "quantization")]["distribution"] == BUILTIN
    broken = {b["plugin"]: b for b in listing["broken"]}
    assert sorted(broken) == ["broken", "future"]
    assert broken["broken"]["distribution"] == broken["future"]["distribution"] == "ac-tiny-plugin 0.3"
    assert "No module named 'ac_missing_module'" in broken["broken"]["error"]
    assert "incompatible: supports plugin API >=2.0,<3" in broken["future"]["error"]
    assert listing["plugin_api"] == "1.8"
    assert {p["plugin"]: p["api"] for p in listing["plugins"]}["future"] == ">=2.0,<3"


def test_cli_text_listing_shows_broken_plugins_and_why(installed_plugin):
    env = {**os.environ, "PYTHONPATH": str(installed_plugin)}
    env.pop("AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD", None)
    result = subprocess.run([sys.executable, "-m", "autocompress.cli", "plugins"],
                            capture_output=True, text=True, env=env, check=True)
    lines = result.stdout.splitlines()
    assert lines[0].endswith("plugin API 1.8")
    assert any(line.startswith("technique") and "entry_point_noise" in line and "ac-tiny-plugin 0.3" in line
               for line in lines)
    broken = [line for line in lines if line.startswith("BROKEN")]
    assert len(broken) == 2
    assert any("broken" in line and "ac-tiny-plugin 0.3" in line and "import failed" in line for line in broken)
    assert any("future" in line and ">=2.0,<3" in line for line in broken)


def test_env_var_disables_autoload(installed_plugin):
    env = {**os.environ, "PYTHONPATH": str(installed_plugin), "AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run([sys.executable, "-m", "autocompress.cli", "plugins", "--json"],
                            capture_output=True, text=True, env=env, check=True)
    assert "entry_point_noise" not in result.stdout

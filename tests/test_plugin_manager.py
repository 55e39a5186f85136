"""The plugin host: built-ins, real entry points, and errors that name the plugin at fault."""

import json
import os
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass

import pytest

from autocompress import hookimpl
from autocompress.errors import PluginError
from autocompress.plugin_manager import BUILTIN, build_host
from autocompress.technique import Stage, Technique


def test_builtins_are_registered_with_their_provenance():
    host = build_host(autoload=False)
    assert {"ffn_pruning", "quantization"} <= set(host.techniques.names())
    assert host.targets.names() == ["cpu"]
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


def test_trial_observer_errors_are_reported_not_raised():
    seen = []

    def observer(trial_number, outcome):
        seen.append((trial_number, outcome["state"]))
        raise RuntimeError("observer broke")

    host = build_host(autoload=False, extra_plugins=[("watcher", _plugin(autocompress_trial_finished=observer))])
    errors = host.trial_finished(7, {"state": "complete"})
    assert seen == [(7, "complete")]
    assert errors and "watcher" in errors[0]


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


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """A real distribution with two entry points (one broken), pip-installed into a folder."""
    root = tmp_path_factory.mktemp("dist")
    (root / "ac_tiny_plugin.py").write_text(PLUGIN_MODULE)
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
        [tool.setuptools]
        py-modules = ["ac_tiny_plugin"]
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
    assert "broken" in broken and "ac_missing_module" in broken["broken"].error
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
    assert [b["plugin"] for b in listing["broken"]] == ["broken"]


def test_env_var_disables_autoload(installed_plugin):
    env = {**os.environ, "PYTHONPATH": str(installed_plugin), "AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run([sys.executable, "-m", "autocompress.cli", "plugins", "--json"],
                            capture_output=True, text=True, env=env, check=True)
    assert "entry_point_noise" not in result.stdout

"""Structure records, version checks on load, shared-weight accounting and the structure contract itself."""

import copy
import json
import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import autocompress
from autocompress import hookimpl
from autocompress.arch import adapter_for, get_module, replace_sliced
from autocompress.candidate import apply_steps
from autocompress.errors import InputError, PluginError, TechniqueError
from autocompress.hookspecs import PluginDeprecationWarning
from autocompress.measure import dummy_inputs, model_bytes, parameter_count
from autocompress.model_io import FORMAT_VERSION, MANIFEST, WEIGHTS, load_pretrained, save_candidate
from autocompress.plugin_manager import build_host
from autocompress.plugins.ffn_pruning import FfnPruning
from autocompress.plugins.layer_drop import LayerDrop
from autocompress.plugins.layer_sharing import LayerSharing
from autocompress.shared_weights import distinct_state, tie_groups
from autocompress.structure import structure_of
from autocompress.technique import ApplyContext, PlanStep, Stage, Technique, validate_technique_class
from autocompress.testing import TechniqueContract, tiny_model, tiny_tokenizer


@dataclass(frozen=True)
class SwitchConfig:
    enabled: bool = True


def switch_space(cls):
    from optuna.distributions import CategoricalDistribution

    return {"enabled": CategoricalDistribution([True])}


class TieQueryKey(Technique):
    """Test technique: every layer's key projection becomes the query's Parameter (a parameter-level tie).

    Its ``rebuild`` recreates nothing: the tie is restored by the host from the manifest's ``ties``.
    """

    name = "tie_query_key"
    stage = Stage.STRUCTURE
    Config = SwitchConfig
    search_space = classmethod(switch_space)

    def apply(self, model, config, context):
        for paths in context.adapter.all_layer_paths():
            get_module(model, paths.key).weight = get_module(model, paths.query).weight
        return model

    def rebuild(self, model, config, state, context):
        return model


class CodePlugin:
    """Registered in code only (no entry point): the reload must use the host it is given."""

    @hookimpl
    def autocompress_register_techniques(self, register):
        register.add(TieQueryKey)


def _host():
    return build_host(autoload=False, extra_plugins=[("tie-query-key", CodePlugin())])


def _context(model, tmp_path, host=None):
    contract = TechniqueContract()
    context = contract.context(model, tmp_path)
    context.adapter = adapter_for(model, (host or _host()).architectures)
    return context


def _apply(model, tmp_path, *steps):
    context = _context(model, tmp_path)
    return apply_steps(model, [PlanStep(t, t.make_config(v)) for t, v in steps], context), context


def _save(model, context, directory):
    return save_candidate(directory, model, context.tokenizer, [])


def _logits(model, vocab=128):
    with torch.inference_mode():
        return model(**dummy_inputs(2, 9, vocab)).logits


# -- shared weights ------------------------------------------------------------------------------
def test_a_module_used_twice_is_counted_once():
    model = tiny_model("bert", layers=2)
    per_entry = sum(v.numel() for v in model.state_dict().values() if v.dtype != torch.long)
    assert parameter_count(model) == per_entry  # nothing shared yet
    layers = model.bert.encoder.layer
    one_layer = sum(p.numel() for p in layers[0].parameters())
    layers[1] = layers[0]
    assert sum(v.numel() for v in model.state_dict().values() if v.dtype != torch.long) == per_entry  # per entry
    assert parameter_count(model) == per_entry - one_layer  # per distinct tensor
    assert model_bytes(model) == 4 * (per_entry - one_layer)


def test_a_parameter_held_by_two_modules_is_counted_once():
    model = tiny_model("bert", vocab_size=128)  # 128 positions too: the tables have one shape
    before = parameter_count(model)
    embeddings = model.bert.embeddings
    embeddings.position_embeddings.weight = embeddings.word_embeddings.weight
    assert parameter_count(model) == before - 128 * 64
    _, ties = distinct_state(model)
    assert ties == {"bert.embeddings.position_embeddings.weight": "bert.embeddings.word_embeddings.weight"}


def test_int8_shared_layers_count_once_too():
    from autocompress.plugins.quantization import quantize_int8_dynamic

    model = tiny_model("bert", layers=2)
    int8 = quantize_int8_dynamic(copy.deepcopy(model))
    model.bert.encoder.layer[1] = model.bert.encoder.layer[0]
    shared = quantize_int8_dynamic(model)
    assert shared.bert.encoder.layer[0] is shared.bert.encoder.layer[1]
    assert model_bytes(shared) < model_bytes(int8)
    assert parameter_count(shared) < parameter_count(int8)


def test_a_shared_tensor_is_saved_once_and_tied_again_on_load(tmp_path):
    host = _host()
    model = tiny_model("bert")
    tied, context = _apply(model, tmp_path, (TieQueryKey, {}))
    directory = _save(tied, context, tmp_path / "saved")
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["ties"] == {f"bert.encoder.layer.{i}.attention.self.key.weight":
                                f"bert.encoder.layer.{i}.attention.self.query.weight" for i in range(2)}
    from safetensors import safe_open

    with safe_open(str(directory / WEIGHTS), framework="pt") as saved:
        assert "bert.encoder.layer.0.attention.self.key.weight" not in set(saved.keys())
    reloaded, _ = load_pretrained(directory, host.techniques, host.architectures)
    for layer in reloaded.bert.encoder.layer:
        assert layer.attention.self.key.weight is layer.attention.self.query.weight
    assert parameter_count(reloaded) == parameter_count(tied) < parameter_count(tiny_model("bert"))
    assert torch.equal(_logits(reloaded), _logits(tied))


def test_the_public_load_takes_the_host_that_knows_a_plugin_registered_in_code(tmp_path):
    tied, context = _apply(tiny_model("bert"), tmp_path, (TieQueryKey, {}))
    directory = _save(tied, context, tmp_path / "saved")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with the host that registers it: no fallback, no warning
        reloaded, _ = autocompress.load_pretrained(directory, _host())
    assert reloaded.bert.encoder.layer[0].attention.self.key.weight is \
        reloaded.bert.encoder.layer[0].attention.self.query.weight
    # Elsewhere (a process without the class), a step that recorded no state is rebuilt from the
    # saved shapes and the recorded ties: the same model, not a refusal.
    elsewhere, _ = autocompress.load_pretrained(directory, build_host(autoload=False))
    assert elsewhere.bert.encoder.layer[0].attention.self.key.weight is \
        elsewhere.bert.encoder.layer[0].attention.self.query.weight
    assert torch.equal(_logits(elsewhere), _logits(tied))


def test_a_step_with_state_needs_its_technique_on_load(tmp_path):
    dropped, context = _apply(tiny_model("bert", layers=4), tmp_path, (LayerDrop, {"keep_layers": 2}))
    directory = _save(dropped, context, tmp_path / "saved")
    with pytest.raises(InputError, match="layer_drop.*no installed plugin registers"):
        autocompress.load_pretrained(directory, build_host(autoload=False, disabled=["layer_drop"]))


# -- the record ------------------------------------------------------------------------------------
def test_steps_are_recorded_with_state_and_config_changes(tmp_path):
    model = tiny_model("bert", layers=4)
    student, context = _apply(model, tmp_path, (LayerDrop, {"keep_layers": 2, "strategy": "top"}),
                              (FfnPruning, {"keep_fraction": 0.5}))
    record = structure_of(student)
    assert record.base_config["num_hidden_layers"] == 4 and record.base_config["intermediate_size"] == 128
    drop, ffn = record.steps
    assert (drop.technique, drop.version, drop.state) == ("layer_drop", "1", {"kept_layers": [2, 3]})
    assert drop.config_changes == {"num_hidden_layers": 2}
    assert ffn.state == {"widths": [64, 64]} and ffn.config_changes == {"intermediate_size": 64}
    assert context.layer_origin == [2, 3]
    # the record travels with copies (the search deep-copies), and a reloaded model carries it again
    directory = _save(copy.deepcopy(student), context, tmp_path / "saved")
    host = _host()
    reloaded, tokenizer = load_pretrained(directory, host.techniques, host.architectures)
    assert structure_of(reloaded) == record
    again = load_pretrained(save_candidate(tmp_path / "again", reloaded, tokenizer, []), host.techniques,
                            host.architectures)[0]
    assert torch.equal(_logits(again), _logits(student))


def test_layer_origin_composes_through_two_drops(tmp_path):
    model = tiny_model("bert", layers=6)
    _, context = _apply(model, tmp_path, (LayerDrop, {"keep_layers": 4, "strategy": "top"}))
    context.adapter = adapter_for(model, _host().architectures)
    apply_steps(model, [PlanStep(LayerDrop, LayerDrop.make_config({"keep_layers": 2, "strategy": "bottom"}))], context)
    assert context.layer_origin == [2, 3]  # bottom 2 of the top 4 of 6


def test_a_technique_recording_a_foreign_state_fails_naming_it(tmp_path):
    class Liar(FfnPruning):
        name = "liar"

        def apply(self, model, config, context):
            context.record({"widths": [1]})  # a dict, not its State
            return model

    with pytest.raises(TechniqueError, match="liar.*not its State"):
        _apply(tiny_model("bert"), tmp_path, (Liar, {}))


def test_registration_refuses_a_state_without_rebuild():
    class Half(Technique):
        name = "half"
        stage = Stage.STRUCTURE
        Config = SwitchConfig
        State = SwitchConfig
        search_space = classmethod(switch_space)

        def apply(self, model, config, context):
            return model

    with pytest.raises(PluginError, match="does not implement rebuild"):
        validate_technique_class(Half)
    Half.stage = Stage.POST
    with pytest.raises(PluginError, match="a post step records no State"):
        validate_technique_class(Half)
    Half.stage = Stage.RECOVER  # a recovery step that adds parameters (soft prompts) records one too
    with pytest.raises(PluginError, match="does not implement rebuild"):
        validate_technique_class(Half)


def test_registration_refuses_conditions_on_unknown_or_conditional_fields():
    class Conditional(Technique):
        name = "conditional"
        stage = Stage.POST
        Config = SwitchConfig
        search_space = classmethod(switch_space)
        conditions = {"missing": {"enabled": (True,)}}

        def apply(self, model, config, context):
            return model

    with pytest.raises(PluginError, match="conditions name missing, not fields of its Config"):
        validate_technique_class(Conditional)
    Conditional.conditions = {"enabled": {"enabled": (True,)}}
    with pytest.raises(PluginError, match="conditional itself"):
        validate_technique_class(Conditional)
    Conditional.conditions = {}
    validate_technique_class(Conditional)


def test_extras_is_deprecated():
    context = ApplyContext(adapter=None, tokenizer=None)
    with pytest.warns(PluginDeprecationWarning, match="token_map, layer_origin"):
        context.extras["anything"] = 1


# -- version checks --------------------------------------------------------------------------------
@pytest.fixture
def saved_drop(tmp_path):
    student, context = _apply(tiny_model("bert", layers=4), tmp_path, (LayerDrop, {"keep_layers": 2}))
    return _save(student, context, tmp_path / "saved")


def _rewrite(directory, change):
    path = directory / MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_a_newer_save_format_is_refused_with_both_versions(saved_drop):
    _rewrite(saved_drop, lambda m: m.update(format=FORMAT_VERSION + 1))
    host = _host()
    with pytest.raises(InputError, match=rf"save format {FORMAT_VERSION + 1}.*formats up to {FORMAT_VERSION}"):
        load_pretrained(saved_drop, host.techniques, host.architectures)


def test_a_newer_technique_version_is_refused_naming_it(saved_drop):
    _rewrite(saved_drop, lambda m: m["structure"]["steps"][0].update(version="7"))
    host = _host()
    with pytest.raises(InputError, match="technique 'layer_drop' version 7.*installed 'layer_drop' is version 1"):
        load_pretrained(saved_drop, host.techniques, host.architectures)


def test_an_unknown_technique_version_is_refused(saved_drop):
    _rewrite(saved_drop, lambda m: m["structure"]["steps"][0].update(version="1-custom"))
    host = _host()
    with pytest.raises(InputError, match="version 1-custom"):
        load_pretrained(saved_drop, host.techniques, host.architectures)


def test_a_newer_post_step_version_is_refused(tmp_path):
    model = tiny_model("bert")
    directory = save_candidate(tmp_path / "q", model, tiny_tokenizer(tmp_path / "tok"),
                               [{"technique": "quantization", "version": "2", "config": {"dtype": "int8"}}])
    host = _host()
    with pytest.raises(InputError, match="quantization' version 2"):
        load_pretrained(directory, host.techniques, host.architectures)


def test_a_state_that_does_not_fit_is_refused_naming_the_technique(saved_drop):
    _rewrite(saved_drop, lambda m: m["structure"]["steps"][0].update(state={"layers": [0]}))
    host = _host()
    with pytest.raises(InputError, match="layer_drop.*does not fit its State"):
        load_pretrained(saved_drop, host.techniques, host.architectures)


def test_an_older_technique_version_still_loads(saved_drop):
    _rewrite(saved_drop, lambda m: m["structure"]["steps"][0].update(version="0.9"))
    host = _host()
    reloaded, _ = load_pretrained(saved_drop, host.techniques, host.architectures)
    assert len(reloaded.bert.encoder.layer) == 2


# -- before the structure contract -----------------------------------------------------------------
class LegacyPerLayerPruner(Technique):
    """Written for plugin API 1.2: narrows layer 0's FFN only, declares no State and no rebuild."""

    name = "legacy_pruner"
    stage = Stage.STRUCTURE
    Config = SwitchConfig
    search_space = classmethod(switch_space)

    def apply(self, model, config, context):
        paths = context.adapter.layer_paths(0)
        replace_sliced(model, paths.ffn_in, keep_out=torch.arange(32))
        replace_sliced(model, paths.ffn_out, keep_in=torch.arange(32))
        return model


class LegacyPlugin:
    @hookimpl
    def autocompress_register_techniques(self, register):
        register.add(LegacyPerLayerPruner)


@pytest.mark.parametrize("with_new_style_step", [False, True])
def test_a_plugin_without_rebuild_still_reloads_with_a_deprecation_warning(tmp_path, with_new_style_step):
    host = build_host(autoload=False, extra_plugins=[("legacy", LegacyPlugin())])
    model = tiny_model("bert", layers=4)
    steps = [(LegacyPerLayerPruner, {})]
    if with_new_style_step:
        steps.append((LayerSharing, {"group_size": 2, "representative": "first"}))
    student, context = _apply(model, tmp_path, *steps)
    directory = _save(student, context, tmp_path / "saved")
    with pytest.warns(PluginDeprecationWarning, match="legacy_pruner declare no State/rebuild"):
        reloaded, _ = load_pretrained(directory, host.techniques, host.architectures)
    assert reloaded.bert.encoder.layer[0].intermediate.dense.out_features == 32
    assert (reloaded.bert.encoder.layer[0] is reloaded.bert.encoder.layer[1]) == with_new_style_step
    assert torch.equal(_logits(reloaded), _logits(student))


def test_a_format_1_directory_loads_from_its_shapes(tmp_path):
    """Written before the structure record: config.json + per-module shapes, no steps, no ties."""
    student, context = _apply(tiny_model("bert"), tmp_path, (FfnPruning, {"keep_fraction": 0.5}))
    directory = _save(student, context, tmp_path / "saved")
    layer = student.bert.encoder.layer[1]
    replace_sliced(student, "bert.encoder.layer.1.intermediate.dense", keep_out=torch.arange(16))
    replace_sliced(student, "bert.encoder.layer.1.output.dense", keep_in=torch.arange(16))
    del layer
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(directory / WEIGHTS))
    _rewrite(directory, lambda m: (m.update(format=1), m.pop("structure"), m.pop("ties")))
    host = _host()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginDeprecationWarning)  # nothing to warn a plugin about
        reloaded, _ = load_pretrained(directory, host.techniques, host.architectures)
    assert reloaded.bert.encoder.layer[1].intermediate.dense.out_features == 16
    assert torch.equal(_logits(reloaded), _logits(student))


def test_nothing_unknown_is_silently_reshaped_in_format_2(tmp_path):
    """Weights that do not match the rebuilt model are an error, not a reason to reshape."""
    student, context = _apply(tiny_model("bert"), tmp_path, (FfnPruning, {"keep_fraction": 0.5}))
    directory = _save(student, context, tmp_path / "saved")
    _rewrite(directory, lambda m: m["structure"].update(steps=[]))
    host = _host()
    with pytest.raises(InputError, match="weights do not match the rebuilt model"):
        load_pretrained(directory, host.techniques, host.architectures)


def test_tie_groups_are_listed_canonical_first():
    model = tiny_model("bert", layers=3)
    model.bert.encoder.layer[2] = model.bert.encoder.layer[1]
    groups = tie_groups(distinct_state(model)[1])
    assert groups[0][0].startswith("bert.encoder.layer.1.") and groups[0][1].startswith("bert.encoder.layer.2.")
    assert all(isinstance(m, nn.Module) for m in model.bert.encoder.layer)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_every_structure_technique_at_once_reloads_identically(tmp_path, family):
    """Replay composes: each rebuild works on what the earlier ones rebuilt (pruned heads, dropped and shared
    layers, factorised linears narrowed afterwards, a trimmed vocabulary)."""
    from autocompress.technique import Plan

    host = _host()
    values = {"layer_sharing": {"group_size": 2, "representative": "first"}, "width_pruning": {"width_fraction": 0.5},
              "head_pruning": {"fraction": 0.25, "scoring": "l1"}, "low_rank": {"rank_ratio": 0.25, "layers": "both"},
              "layer_drop": {"keep_layers": 4}, "ffn_pruning": {"keep_fraction": 0.5}, "vocab_trim": {}}
    plan = Plan.build([PlanStep(host.techniques[n], host.techniques[n].make_config(v)) for n, v in values.items()])
    model = tiny_model(family, layers=6)
    context = _context(model, tmp_path, host)
    student = apply_steps(model, list(plan.steps), context)
    directory = _save(student, context, tmp_path / "saved")
    reloaded, tokenizer = load_pretrained(directory, host.techniques, host.architectures)
    assert TechniqueContract.structure_of(reloaded) == TechniqueContract.structure_of(student)
    vocab = student.get_input_embeddings().num_embeddings
    assert torch.equal(_logits(reloaded, vocab), _logits(student, vocab))
    assert parameter_count(reloaded) == parameter_count(student) < parameter_count(tiny_model(family, layers=6)) / 3


def test_a_tie_changes_the_structure_key_that_caches_measurements():
    from autocompress.candidate import structure_key
    from autocompress.technique import Plan

    model = tiny_model("bert")
    untied = structure_key(model, Plan(()))
    layer = model.bert.encoder.layer[0].attention.self
    layer.key.weight = layer.query.weight  # same modules and shapes, one tensor fewer: other memory
    assert structure_key(model, Plan(())) != untied


def test_the_manifest_names_the_model_class_it_is_rebuilt_as():
    import transformers

    from autocompress.model_io import model_class

    assert model_class({"model_class": "LlamaForCausalLM"}, "d") is transformers.LlamaForCausalLM
    assert model_class({"model_class": "BertForTokenClassification"}, "d") is transformers.BertForTokenClassification
    assert model_class({}, "d") is transformers.AutoModelForSequenceClassification  # format-1 manifests
    for bad in ("os.system", "NoSuchModelClass", "PretrainedConfig"):
        with pytest.raises(InputError, match=f"model class '{bad}'"):
            model_class({"model_class": bad}, "d")


def test_a_plan_description_leaves_out_the_fields_its_config_does_not_use():
    from autocompress.plugins.quantization import Quantization, QuantizationConfig
    from autocompress.technique import PlanStep

    assert PlanStep(Quantization, QuantizationConfig(dtype="int8")).describe() == \
        "quantization(dtype=int8, embeddings=False)"
    assert PlanStep(Quantization, QuantizationConfig(dtype="int4", group_size=64)).describe() == \
        "quantization(dtype=int4, group_size=64)"
    assert PlanStep(Quantization, QuantizationConfig(dtype="int8-static")).describe() == \
        "quantization(dtype=int8-static, fallback_layers=0, calibration_size=128)"

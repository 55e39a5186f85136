"""Every combination the search can build saves and reloads exactly; every technique exports to ONNX.

For the numbers: ``python -m pytest tests/test_combinations.py --durations=3`` (the reload matrix's
time is its fixture's setup).

The matrix, on tiny BERT and DistilBERT models: every pair of structure-stage techniques the
registry holds (built-ins, plus the example plugins' where they are installed; pairs that declare
a conflict are never built by the search and are left out), each pair with one post step (none,
int8, int8 with int8 word embeddings, bf16). The rule for the post steps (``assign_post_steps``):
on each model family, every structure technique meets every post step in at least one of its
pairs (a greedy choice per pair, plus an extra pair wherever a technique has too few partners).
So every pair of structure techniques and every technique with every post step is built and
reloaded, without the pairs x post steps product (four times as many candidates).

Each candidate is built and saved exactly as a search trial does (structure steps, ``deploy``
for the post step, ``model_io.save_candidate`` of the float model), then
``autocompress.load_pretrained`` reloads all of them in one fresh process (one process keeps it
fast), and the reloaded logits must equal the deployed model's, bit for bit, on padded batches of
varied lengths and on sentences through the saved tokenizer.

Each technique's settings are drawn from its own search space (seeded), redrawn until the
technique alone really changes the model, so a new structure technique joins the matrix with
nothing to write here. The same techniques, alone and followed by int8, are exported to ONNX and
run by ONNX Runtime, which must agree with PyTorch on padded batches (``compare_with_torch``).
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import torch
from safetensors.torch import save_file

from autocompress.arch import adapter_for
from autocompress.candidate import apply_steps, deploy
from autocompress.data import stratified_split
from autocompress.measure import thread_count
from autocompress.model_io import save_candidate
from autocompress.plugin_manager import build_host
from autocompress.search.sampling import suggest
from autocompress.shared_weights import distinct_state, tie_groups
from autocompress.technique import ApplyContext, Plan, PlanStep, Stage
from autocompress.testing import synthetic_sentiment, text_inputs, tiny_model, tiny_tokenizer, varied_inputs

FAMILIES = ("bert", "distilbert")
POST_STEPS = {"no post step": None, "int8": {"dtype": "int8"},
              "int8 + int8 embeddings": {"dtype": "int8", "embeddings": True}, "bf16": {"dtype": "bf16"}}
#: Tiny models of 4 layers and 8 heads, so that dropping layers and pruning heads have room.
MODEL = {"layers": 4, "heads": 8, "ffn": 128}
SENTENCES = ["the film was good", "a dull boring plot and a weak cast, really", "it was fine", "great music",
             "w3 w17 the ending"]


def _host():
    plugins = []
    if importlib.util.find_spec("autocompress_example_plugin") is not None:
        from autocompress_example_plugin import embedding_factorization

        plugins.append(("embedding_factorization", embedding_factorization))
    if importlib.util.find_spec("autocompress_sharing_plugin") is not None:
        from autocompress_sharing_plugin import ffn_sharing

        plugins.append(("ffn_sharing", ffn_sharing))
    return build_host(autoload=False, extra_plugins=plugins)


HOST = _host()
STRUCTURE = sorted((entry.cls for entry in HOST.techniques if entry.cls.stage == Stage.STRUCTURE),
                   key=lambda cls: cls.name)
PAIRS = [(a, b) for a, b in itertools.combinations(STRUCTURE, 2) if b.name not in a.conflicts
         and a.name not in b.conflicts]


def _data():
    texts, labels = synthetic_sentiment(64)
    return stratified_split(texts, [1 if label == "pos" else 0 for label in labels], ["neg", "pos"])


def _context(model, tokenizer, data) -> ApplyContext:
    return ApplyContext(adapter=adapter_for(model, HOST.architectures), tokenizer=tokenizer, data=data,
                        teacher=copy.deepcopy(model), max_length=32)


def _shapes(model) -> tuple[dict[str, tuple[int, ...]], list[list[str]]]:
    """Every state entry's shape, and which entries share one tensor (a tie changes the structure too)."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    return shapes, tie_groups(distinct_state(model)[1])


def biting_config(technique, family: str, tokenizer, data):
    """The first of a seeded series of samples of ``technique``'s search space under which it alone
    changes the shapes (or ties) of a tiny model of ``family``."""
    space = technique.search_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=len(technique.name)))
    model = tiny_model(family, **MODEL)
    for _ in range(30):
        trial = study.ask()
        config = technique.make_config({field: suggest(trial, field, dist) for field, dist in space.items()})
        changed = apply_steps(copy.deepcopy(model), [PlanStep(technique, config)], _context(model, tokenizer, data))
        if _shapes(changed) != _shapes(model):
            return config
    raise AssertionError(f"no sample of {technique.name}'s search space changed a tiny {family} model's shapes or ties")


@dataclass(frozen=True)
class Combination:
    family: str
    structure: tuple[str, str]
    post: str

    @property
    def name(self) -> str:
        return f"{self.family}-{'+'.join(self.structure)}-{self.post.replace(' ', '')}"


def assign_post_steps(pairs: list[tuple[str, str]], posts: list[str]) -> list[tuple[tuple[str, str], str]]:
    """(pair, post step) for every pair, chosen so that every technique of the pairs meets every post
    step at least once: each pair takes the post step that the most of its two techniques still lack
    (ties: the one used least so far, then the listed order); a technique still lacking one then gets
    an extra (pair, post step) with its first partner."""
    lacking = {name: list(posts) for pair in pairs for name in pair}
    used = dict.fromkeys(posts, 0)
    chosen = []
    for pair in pairs:
        post = max(posts, key=lambda p: (sum(p in lacking[name] for name in pair), -used[p], -posts.index(p)))
        chosen.append((pair, post))
        used[post] += 1
        for name in pair:
            if post in lacking[name]:
                lacking[name].remove(post)
    for name, missing in lacking.items():
        partner = next(pair for pair in pairs if name in pair)
        chosen += [(partner, post) for post in missing]
    return chosen


COMBINATIONS = [Combination(family, pair, post) for family in FAMILIES
                for pair, post in assign_post_steps([(a.name, b.name) for a, b in PAIRS], list(POST_STEPS))]

RELOAD = """
import json, sys
import torch
from safetensors.torch import load_file
import autocompress

torch.set_num_threads(1)
results = {}
for directory in sys.argv[1:]:
    model, tokenizer = autocompress.load_pretrained(directory)
    saved = load_file(directory + "/expected.safetensors")
    encoded = tokenizer(json.loads(open(directory + "/sentences.json").read()), padding=True, return_tensors="pt",
                        return_token_type_ids=False)
    result = {"sentence_ids_equal": torch.equal(encoded["input_ids"], saved["sentences.input_ids"])}
    for name in ("random", "sentences"):
        inputs = {key: saved[f"{name}.{key}"] for key in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            logits = model(**inputs).logits.float()
        expected = saved[f"{name}.logits"]
        result[name] = {"equal": torch.equal(logits, expected),
                        "largest_difference": float((logits - expected).abs().max())}
    results[directory] = result
print(json.dumps(results))
"""


def build_and_save(combination: Combination, configs: dict, tokenizer, data, directory: Path) -> None:
    """Build the candidate as a search trial does, save it, and store inputs and expected logits."""
    teacher = tiny_model(combination.family, **MODEL)
    student = copy.deepcopy(teacher)
    context = _context(student, tokenizer, data)
    steps = [PlanStep(HOST.techniques[name], configs[combination.family, name]) for name in combination.structure]
    post = POST_STEPS[combination.post]
    if post is not None:
        quantization = HOST.techniques["quantization"]
        steps.append(PlanStep(quantization, quantization.make_config(post)))
    plan = Plan.build(steps)
    student = apply_steps(student, plan.at(Stage.STRUCTURE), context)
    deployed = deploy(student, plan, context)
    candidate = directory / combination.name
    save_candidate(candidate, student, context.tokenizer, post_steps=plan.to_manifest(Stage.POST),
                   info={"plan": plan.to_manifest()})
    pad = student.config.pad_token_id if student.config.pad_token_id is not None else 0
    tensors = {}
    for name, inputs in (("random", varied_inputs(deployed.get_input_embeddings().num_embeddings, pad_id=pad)),
                         ("sentences", text_inputs(context.tokenizer, SENTENCES))):
        with torch.inference_mode():
            tensors[f"{name}.logits"] = deployed(**inputs).logits.float()
        tensors.update({f"{name}.{key}": value for key, value in inputs.items()})
    save_file(tensors, str(candidate / "expected.safetensors"))
    (candidate / "sentences.json").write_text(json.dumps(SENTENCES))


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory) -> dict[str, dict]:
    """Build and save every combination, then reload them all in one fresh process."""
    root = tmp_path_factory.mktemp("combinations")
    with thread_count(1):
        tokenizer, data = tiny_tokenizer(root / "_tokenizer"), _data()
        configs = {(family, cls.name): biting_config(cls, family, tokenizer, data) for family in FAMILIES
                   for cls in STRUCTURE}
        for combination in COMBINATIONS:
            build_and_save(combination, configs, tokenizer, data, root)
    directories = [str(root / c.name) for c in COMBINATIONS]
    # A fresh process as a user's: the installed plugins load (the suite turns autoloading off for itself).
    env = {**os.environ, "AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD": "0"}
    result = subprocess.run([sys.executable, "-c", RELOAD, *directories], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    return {Path(directory).name: outcome for directory, outcome in results.items()}


def test_the_matrix_covers_every_pair_and_every_technique_with_every_post_step():
    names = {cls.name for cls in STRUCTURE}
    assert {"vocab_trim", "layer_drop", "head_pruning", "ffn_pruning", "low_rank"} <= names
    assert {cls.name for pair in PAIRS for cls in pair} == names
    for family in FAMILIES:
        built = [c for c in COMBINATIONS if c.family == family]
        assert {c.structure for c in built} == {(a.name, b.name) for a, b in PAIRS}
        assert {(name, c.post) for c in built for name in c.structure} == {(n, p) for n in names for p in POST_STEPS}
    assert len({c.name for c in COMBINATIONS}) == len(COMBINATIONS) < len(FAMILIES) * len(PAIRS) * len(POST_STEPS)


def test_the_post_step_rule_covers_a_technique_with_too_few_partners():
    # c meets only a: its one pair cannot carry three post steps, so extra (pair, post step) entries do.
    chosen = assign_post_steps([("a", "b"), ("a", "c"), ("b", "d")], ["none", "int8", "bf16"])
    for name in "abcd":
        assert {post for pair, post in chosen if name in pair} == {"none", "int8", "bf16"}, (name, chosen)
    assert {pair for pair, _ in chosen} == {("a", "b"), ("a", "c"), ("b", "d")}


@pytest.mark.parametrize("combination", COMBINATIONS, ids=lambda c: c.name)
def test_a_saved_combination_reloads_in_a_fresh_process_with_identical_logits(combination, reloaded):
    outcome = reloaded[combination.name]
    assert outcome["sentence_ids_equal"], "the reloaded tokenizer encodes the sentences differently"
    for inputs in ("random", "sentences"):
        assert outcome[inputs]["equal"], (f"{combination.name}: reloaded logits differ by up to "
                                          f"{outcome[inputs]['largest_difference']:.3g} on the {inputs} inputs")


ONNX_CASES = [(cls.name, post) for cls in STRUCTURE for post in ("float", "int8")] + [("quantization", "int8")]


@pytest.mark.slow  # about ten seconds an export on 2 cores
@pytest.mark.parametrize("technique, post", ONNX_CASES, ids=[f"{t}-{p}" for t, p in ONNX_CASES])
def test_onnx_runtime_agrees_with_pytorch_on_every_technique(technique, post, tmp_path):
    from autocompress.onnx_export import compare_with_torch, export_onnx

    with thread_count(1):
        tokenizer, data = tiny_tokenizer(tmp_path / "tokenizer"), _data()
        model = tiny_model("bert", **MODEL)
        steps = []
        if technique != "quantization":
            steps.append(PlanStep(HOST.techniques[technique], biting_config(HOST.techniques[technique], "bert",
                                                                            tokenizer, data)))
        if post == "int8":
            steps.append(PlanStep(HOST.techniques["quantization"], HOST.techniques["quantization"].Config("int8")))
        plan = Plan.build(steps)
        context = _context(model, tokenizer, data)
        deployed = deploy(apply_steps(model, plan.at(Stage.STRUCTURE), context), plan, context)
        path = export_onnx(deployed, tmp_path / "model.onnx", 32)
        pad = deployed.config.pad_token_id if deployed.config.pad_token_id is not None else 0
        inputs = varied_inputs(deployed.get_input_embeddings().num_embeddings, pad_id=pad)
        check = compare_with_torch(deployed, path, inputs)  # raises ExportError naming the difference
    assert check["examples"] == len(inputs["input_ids"]) and check["int8"] == (post == "int8")
    assert check["predictions_agree"]

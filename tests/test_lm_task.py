"""The language-model task (--task lm): a causal LM compressed on its own text, quality as the mean
log-likelihood per token (shown as perplexity), searched with every LLM technique, saved, reloaded
in a fresh process and exported for AutoModelForCausalLM; bad input refused before anything loads."""

import json
import math

import pandas as pd
import pytest
import torch

from autocompress.cli import main
from autocompress.corpus import Documents, read_corpus, split_documents
from autocompress.distill import TEACHER_LOGITS, TeacherSignals
from autocompress.errors import DataError, InputError
from autocompress.language_model import IGNORE, TokenEncoded, token_distillation_loss
from autocompress.metrics import LogLikelihood, metric_named
from autocompress.testing import fresh_process_outputs, synthetic_sentiment, write_tiny_causal_lm, write_tiny_task
from autocompress.training import encode, task_loss

CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="module")
def lm_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    write_tiny_causal_lm(root / "model")
    texts, _ = synthetic_sentiment(60, seed=3)
    (root / "corpus.txt").write_text("\n".join(texts) + "\n\n", encoding="utf-8")
    return root, texts


def _lm_and_tokenizer(directory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)


def _search(model, data, out, *extra):
    return main(["search", "--task", "lm", "--model", str(model), "--data", str(data), "--out", str(out),
                 "--repeats", "3", "--warmup", "1", "--no-progress", "--free-floor", "none", *extra])


# -- reading and splitting text ---------------------------------------------------------------
def test_a_corpus_is_lines_of_text_json_lines_with_a_text_field_or_chat_messages(lm_task, tmp_path):
    root, texts = lm_task
    assert read_corpus(root / "corpus.txt").texts == texts  # one document per non-empty line
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps({"body": t, "n": 1}) for t in texts[:4]))
    assert read_corpus(tmp_path / "docs.jsonl", text_column="body").texts == texts[:4]
    chat = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(3)]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(c) for c in chat))
    corpus = read_corpus(tmp_path / "chat.jsonl")
    _, tokenizer = _lm_and_tokenizer(root / "model")
    with pytest.raises(DataError, match="chat template"):
        corpus.rendered(tokenizer)
    tokenizer.chat_template = CHAT_TEMPLATE
    assert corpus.rendered(tokenizer)[1] == "user: q1\nassistant: a1\n"


@pytest.mark.parametrize(("name", "content", "message"), [
    ("data.csv", "text\na\nb\nc\n", "unsupported file type '.csv'"),
    ("empty.txt", "\n\n  \n", "0 document"),
    ("two.txt", "one\ntwo\n", "2 document"),
    ("fields.jsonl", '{"body": "x"}\n{"body": "y"}\n{"body": "z"}\n', "line 1 has no text field 'text'"),
    ("bad.jsonl", '{"text": "x"}\nnot json\n', "line 2 is not valid JSON"),
    ("chat.jsonl", '{"messages": "hi"}\n{"messages": []}\n{"messages": []}\n', "line 1: 'messages' must be"),
])
def test_a_file_that_is_no_corpus_is_refused_naming_it(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message) as caught:
        read_corpus(tmp_path / name)
    assert name in str(caught.value)


def test_documents_split_80_10_10_seeded_and_disjoint():
    texts = [f"document {i}" for i in range(50)]
    data = split_documents(texts, seed=1)
    assert (len(data.train), len(data.validation), len(data.test)) == (40, 5, 5)
    assert sorted(data.train.texts + data.validation.texts + data.test.texts) == sorted(texts)
    assert split_documents(texts, seed=1) == data and split_documents(texts, seed=2) != data
    assert isinstance(data.validation.head(2), Documents) and isinstance(data.train.subset([0]), Documents)


# -- encoding, loss, quality ------------------------------------------------------------------
def test_documents_encode_into_windows_whose_padding_is_never_predicted(lm_task):
    root, texts = lm_task
    _, tokenizer = _lm_and_tokenizer(root / "model")
    whole = tokenizer(texts[:3])["input_ids"]
    encoded = encode(tokenizer, Documents.of(texts[:3]), max_length=4)
    assert isinstance(encoded, TokenEncoded)
    assert all(1 < len(window) <= 4 for window in encoded.input_ids)
    # Consecutive windows of each whole document: only a last window of one token (nothing to predict) goes.
    joined = [token for window in encoded.input_ids for token in window]
    assert joined == [t for ids in whole for t in (ids if len(ids) % 4 != 1 else ids[:-1])]
    inputs, labels = next(iter(encode(tokenizer, Documents.of(texts[:4]), 64).batches(4)))
    assert torch.equal(labels == IGNORE, inputs["attention_mask"] == 0)
    assert torch.equal(labels[inputs["attention_mask"] == 1], inputs["input_ids"][inputs["attention_mask"] == 1])


def test_log_likelihood_is_the_token_weighted_mean_of_transformers_own_loss(lm_task):
    root, texts = lm_task
    model, tokenizer = _lm_and_tokenizer(root / "model")
    documents = Documents.of(texts[:7])
    expected_sum, tokens = 0.0, 0
    with torch.no_grad():
        for ids in tokenizer(documents.texts)["input_ids"]:  # each document alone: no padding at all
            ids = torch.tensor([ids])
            expected_sum -= float(model(input_ids=ids, labels=ids).loss) * (ids.shape[1] - 1)
            tokens += ids.shape[1] - 1
    score = LogLikelihood().score(model, encode(tokenizer, documents, 64), batch_size=3)  # padded batches
    assert score == pytest.approx(expected_sum / tokens, rel=1e-5)
    assert metric_named("log_likelihood").display(score) == f"{math.exp(-score):.3f}"
    encoded = encode(tokenizer, documents, 64)
    inputs, labels = next(iter(encoded.batches(7)))
    with torch.no_grad():
        logits = model(**inputs).logits
    # The data's type picks the loss: next-token for documents. The same tensors read as a token
    # classifier's (one label per position, not shifted) give another loss, so shapes cannot decide.
    assert float(encoded.task_loss(logits, labels)) == pytest.approx(-expected_sum / tokens, rel=1e-5)
    with pytest.raises((RuntimeError, ValueError)):  # the one-label-per-text loss refuses these tensors
        task_loss(logits, labels)


def test_token_distillation_loss_is_zero_at_the_teacher_and_ignores_padding():
    torch.manual_seed(0)
    teacher = torch.randn(2, 5, 11)
    labels = torch.tensor([[1, 2, 3, 4, 5], [1, 2, IGNORE, IGNORE, IGNORE]])
    assert float(token_distillation_loss(teacher, teacher, labels, 2.0, 0.0)) == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(2, 5, 11)
    loss = token_distillation_loss(student, teacher, labels, 2.0, 0.5)
    changed = student.clone()
    changed[1, 1:] += 100 * torch.randn(4, 11)  # positions whose next token is padding predict nothing
    assert float(token_distillation_loss(changed, teacher, labels, 2.0, 0.5)) == pytest.approx(float(loss))
    assert float(token_distillation_loss(changed, teacher, labels, 2.0, 0.5)) > 0


def test_a_language_models_teacher_logits_are_not_cached(lm_task):
    from autocompress.arch import adapter_for
    from autocompress.plugin_manager import build_host
    from autocompress.technique import ApplyContext

    root, texts = lm_task
    model, tokenizer = _lm_and_tokenizer(root / "model")
    data = split_documents(texts, seed=0)
    context = ApplyContext(adapter=adapter_for(model, build_host(autoload=False).architectures),
                           tokenizer=tokenizer, data=data, teacher=model)
    signals = TeacherSignals(model, context, encode(tokenizer, data.train, 64))
    assert not any(entry.teacher() is model for entry in TEACHER_LOGITS.values())
    inputs, _ = next(iter(encode(tokenizer, data.validation, 64).batches(4)))
    with torch.no_grad():
        torch.testing.assert_close(signals.logits(inputs), model(**inputs).logits)


# -- the search -------------------------------------------------------------------------------
ALL_LLM_PLANS = """\
- layer_drop: {keep_layers: 2, strategy: importance}
  ffn_pruning: {keep_fraction: 0.5}
  head_pruning: {fraction: 0.5, scoring: gradient}
  distillation: {epochs: 0.5, attention_weight: 0.5, hidden_weight: 0.5}
  quantization: {dtype: int8}
- low_rank: {rank_ratio: 0.3, layers: both}
  lora: {rank: 4, epochs: 0.5, targets: both}
  quantization: {dtype: bf16}
- layer_drop: {keep_layers: 3, strategy: every_other}
  head_pruning: {fraction: 0.5, scoring: l1}
"""

RELOAD = (
    "import sys, json, torch, autocompress\n"
    "model, tok = autocompress.load_pretrained(sys.argv[1])\n"
    "batch = tok(['the film was good', 'a dull plot it was'], return_tensors='pt', padding=True)\n"
    "with torch.no_grad():\n"
    "    print(json.dumps([type(model).__name__, model(**batch).logits.tolist()]))\n"
)


@pytest.mark.slow
def test_lm_search_with_every_llm_technique_records_log_likelihood_and_reloads(lm_task, tmp_path, capsys):
    root, texts = lm_task
    plans = tmp_path / "plans.yaml"
    plans.write_text(ALL_LLM_PLANS)
    out = tmp_path / "run"
    techniques = "layer_drop,ffn_pruning,head_pruning,low_rank,distillation,lora,quantization"
    assert _search(root / "model", root / "corpus.txt", out, "--trials", "3", "--techniques", techniques,
                   "--starting-points", str(plans), "--max-perplexity-increase", "0.5") == 0
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE"] * 3, trials[["plan", "reason"]].to_string()
    run = json.loads((out / "run.json").read_text())
    assert run["quality_metric"] == "log_likelihood" and run["task_info"]["pipeline_tag"] == "text-generation"
    assert run["limits"]["max_accuracy_drop"] == pytest.approx(math.log(1.5))
    # The teacher's recorded validation figure is the log-likelihood computed here independently.
    model, tokenizer = _lm_and_tokenizer(root / "model")
    validation = split_documents(texts, seed=0).validation
    total, tokens = 0.0, 0
    with torch.no_grad():
        for ids in tokenizer(validation.texts)["input_ids"]:
            ids = torch.tensor([ids])
            total -= float(model(input_ids=ids, labels=ids).loss) * (ids.shape[1] - 1)
            tokens += ids.shape[1] - 1
    baseline = json.loads((out / "pareto.json").read_text())["baseline"]
    assert baseline["val_accuracy"] == pytest.approx(total / tokens, rel=1e-5)
    printed = capsys.readouterr().out
    assert f"validation {math.exp(-baseline['val_accuracy']):.3f}" in printed and "test perplexity" in printed
    best = json.loads((out / "pareto.json").read_text())["recommended"]
    assert best is not None
    fresh = [json.loads(output) for output in fresh_process_outputs(RELOAD, out / "best")]
    assert fresh[0] == fresh[1] and fresh[0][0] == "LlamaForCausalLM"
    import autocompress

    model, tokenizer = autocompress.load_pretrained(out / "best")
    batch = tokenizer(["the film was good", "a dull plot it was"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert model(**batch).logits.tolist() == fresh[0][1]


def test_a_uniform_lm_candidate_exports_for_auto_model_for_causal_lm(lm_task, tmp_path):
    from transformers import AutoModelForCausalLM

    import autocompress

    root, _ = lm_task
    plans = tmp_path / "plans.yaml"
    plans.write_text("- layer_drop: {keep_layers: 2, strategy: every_other}\n  ffn_pruning: {keep_fraction: 0.5}\n")
    out = tmp_path / "run"
    assert _search(root / "model", root / "corpus.txt", out, "--trials", "1", "--techniques",
                   "layer_drop,ffn_pruning", "--starting-points", str(plans), "--max-accuracy-drop", "0.9") == 0
    exported = tmp_path / "exported"
    assert main(["export", str(out), "--to", str(exported)]) == 0
    card = (exported / "README.md").read_text()
    assert "pipeline_tag: text-generation" in card and "# Compressed language model" in card
    assert "| test perplexity |" in card and "milliseconds per generated token" in card
    assert json.loads((out / "run.json").read_text())["measure"]["latency"] == "token"  # the LM task's default
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "Test perplexity" in report and "test perplexity" in report and "test accuracy" not in report
    plain = AutoModelForCausalLM.from_pretrained(exported).eval()
    ours, tokenizer = autocompress.load_pretrained(exported)
    assert plain.config.num_hidden_layers == 2 and plain.config.intermediate_size == 64
    batch = tokenizer(["the film was good"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, ours(**batch).logits)
    from transformers import pipeline

    generate = pipeline("text-generation", model=str(exported))
    assert generate("the film was", max_new_tokens=3, do_sample=False)[0]["generated_text"].startswith("the film")


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_a_qwen_or_mistral_layout_lm_gets_a_search(family, tmp_path):
    write_tiny_causal_lm(tmp_path / "model", family=family, layers=2)
    texts, _ = synthetic_sentiment(30, seed=4)
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts))
    out = tmp_path / "run"
    assert _search(tmp_path / "model", tmp_path / "docs.jsonl", out, "--trials", "1", "--techniques",
                   "layer_drop,quantization", "--starting-points", "none", "--max-perplexity-increase", "1") == 0
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE"], trials[["plan", "reason"]].to_string()


# -- bad input --------------------------------------------------------------------------------
def test_an_architecture_no_adapter_supports_exits_2_before_loading(tmp_path, capsys, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["OPTForCausalLM"], "model_type": "opt"}))
    (model / "model.safetensors").write_bytes(b"not loaded")
    (tmp_path / "corpus.txt").write_text("one\ntwo\nthree\n")
    import transformers

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the architecture was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
    assert _search(model, tmp_path / "corpus.txt", tmp_path / "run", "--trials", "1") == 2
    err = capsys.readouterr().err
    assert "model_type 'opt'" in err and "Llama-layout decoders" in err
    assert not (tmp_path / "run").exists()


def test_bad_lm_input_exits_2_naming_the_fault(lm_task, tmp_path, capsys):
    root, _ = lm_task
    (tmp_path / "data.csv").write_text("text\na\nb\nc\n")
    (tmp_path / "empty.txt").write_text("\n")
    cases = [
        ((root / "model", tmp_path / "data.csv"), "unsupported file type '.csv'"),
        ((root / "model", tmp_path / "empty.txt"), "empty.txt: 0 document"),
        ((root / "model", root / "corpus.txt", "--max-perplexity-increase", "2"), "must be a fraction in (0, 1.718)"),
        ((root / "model", root / "corpus.txt", "--max-perplexity-increase", "0.1", "--max-accuracy-drop", "0.1"),
         "give one"),
        ((root / "model", root / "corpus.txt", "--metric", "f1"), "measures perplexity"),
        ((root / "model", root / "corpus.txt", "--label-words", "a,b"), "takes no --label-words"),
    ]
    for args, message in cases:
        assert _search(*args[:2], tmp_path / "run", *args[2:]) == 2, message
        assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    classifier = tmp_path / "classifier"
    write_tiny_task(classifier, 40)
    assert _search(classifier / "model", classifier / "data.csv", tmp_path / "run", "--task", "lm") == 2
    assert "not a causal language model" in capsys.readouterr().err


def test_max_perplexity_increase_is_refused_for_a_classification_task(tmp_path, capsys):
    write_tiny_task(tmp_path, 40)
    assert main(["search", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data.csv"), "--out",
                 str(tmp_path / "run"), "--max-perplexity-increase", "0.1", "--no-progress"]) == 2
    assert "--max-perplexity-increase limits a language model's perplexity; task 'local' measures accuracy" in (
        capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_metric_named_shows_each_recorded_metric_as_people_read_it():
    assert metric_named(None).display(0.91234) == "0.9123" and metric_named("accuracy").shown_as() == "accuracy"
    assert metric_named("log_likelihood").shown_as() == "perplexity"
    assert metric_named("log_likelihood").display(-math.log(20)) == "20.000"
    assert metric_named("a_plugins_metric").shown_as() == "a_plugins_metric"
    with pytest.raises(InputError):
        from autocompress.study.limits import Limits

        Limits(max_perplexity_increase=0)


# -- latency of generation --------------------------------------------------------------------
def test_per_token_latency_times_decoding_steps_of_a_causal_lm_and_refuses_a_classifier(lm_task):
    from autocompress.errors import ExportError
    from autocompress.measure import MeasureSettings, measure_eager, time_decoding
    from autocompress.plugins.quantization import quantize_int8_dynamic
    from autocompress.testing import tiny_model

    root, _ = lm_task
    model, _ = _lm_and_tokenizer(root / "model")
    settings = MeasureSettings(seq_len=16, threads=1, warmup=1, repeats=3, latency="token")
    for candidate in (model, quantize_int8_dynamic(model)):
        measured = measure_eager(candidate, settings)
        assert measured.latency_ms > 0 and measured.memory_mb >= measured.model_mb
    calls = []
    original = model.forward

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return original(*args, **kwargs)

    model.forward = counting
    inputs = {"input_ids": torch.full((1, 16), 5), "attention_mask": torch.ones(1, 16, dtype=torch.long)}
    assert len(time_decoding(model, inputs, warmup=2, repeats=3)) == 3
    assert calls == [(1, 16)] + [(1, 1)] * 5  # the prompt once, then one token a step (the KV cache holds the rest)
    with pytest.raises(ExportError, match="keeps no KV cache"):
        measure_eager(tiny_model("bert"), settings)


def test_a_target_refuses_a_latency_it_does_not_time(tmp_path, capsys):
    from autocompress.errors import ExportError
    from autocompress.measure import MeasureSettings, Target, measure_eager
    from autocompress.testing import tiny_model

    class PromptOnly(Target):
        name = "prompt-only"

        def measure(self, model, settings):
            return measure_eager(model, settings)

    with pytest.raises(ExportError, match="times prompt latency, not token"):
        PromptOnly().measure(tiny_model("llama"), MeasureSettings(latency="token"))
    assert PromptOnly().measure(tiny_model("llama"), MeasureSettings(seq_len=8, repeats=1, warmup=0)).latency_ms > 0
    write_tiny_task(tmp_path, 40)
    assert main(["search", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data.csv"), "--out",
                 str(tmp_path / "run"), "--latency", "per-token", "--no-progress"]) == 2
    assert "latency must be one of prompt, token" in capsys.readouterr().err

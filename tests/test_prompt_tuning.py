"""prompt_tuning against the contract kit, plus what it promises: soft tokens in front of every text,
only their embedding rows trained, a teacher that never sees them, refusals with reasons."""

import copy

import pytest
import torch
from tokenizers import processors

from autocompress.arch import adapter_for
from autocompress.candidate import apply_steps
from autocompress.data import stratified_split
from autocompress.distill import teacher_inputs
from autocompress.measure import thread_count
from autocompress.plugin_manager import build_host
from autocompress.plugins.prompt_tuning import TOKEN, PromptTuning, soft_prompt_tokenizer
from autocompress.technique import ApplyContext, ModelAndTokenizer, PlanStep
from autocompress.testing import TechniqueContract, synthetic_sentiment, tiny_model, tiny_tokenizer
from autocompress.testing.tiny import DECODER_FAMILIES, tiny_bpe_tokenizer


@pytest.fixture(autouse=True)
def one_thread():
    with thread_count(1):
        yield


class TestPromptTuningContract(TechniqueContract):
    technique = PromptTuning
    mild_config = {"learning_rate": 1e-6, "epochs": 0.5, "num_tokens": 1}
    strong_config = {"learning_rate": 3e-2, "epochs": 1.0, "batch_size": 8, "num_tokens": 4}
    bad_configs = [{"num_tokens": 0}, {"num_tokens": 65}, {"num_tokens": 2.5}, {"init": "text"},
                   {"distill": "yes"}, {"distill_alpha": 1.5}, {"learning_rate": 0.0}, {"tokens": 4}]
    # Trained soft-prompt rows are added: nothing gets smaller or faster.
    reduces_parameters = False
    reduces_memory = False
    reduces_latency = False
    # One token more in front of every text moves the outputs however little it is trained: attention
    # spreads over one more position. The tiny trained decoders moved by 0.0016 (Llama) and 0.011 (GPT-2).
    mild_tolerance = 0.05


def _host():
    return build_host()


def _context(model, tokenizer, examples=48, teacher=None):
    texts, labels = synthetic_sentiment(examples)
    data = stratified_split(texts, [1 if label == "pos" else 0 for label in labels], ["neg", "pos"])
    return ApplyContext(adapter=adapter_for(model, _host().architectures), tokenizer=tokenizer, data=data,
                        teacher=teacher if teacher is not None else copy.deepcopy(model), max_length=32)


@pytest.mark.parametrize("kind", ["bert", "roberta", "template", "bytelevel", "none"])
def test_the_soft_tokens_come_first_after_the_start_token_and_survive_truncation(kind, tmp_path):
    tokenizer = tiny_tokenizer() if kind == "bert" else tiny_bpe_tokenizer()
    backend = tokenizer.backend_tokenizer
    if kind == "template":
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", tokenizer.convert_tokens_to_ids("<s>"))])
    elif kind == "bytelevel":
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
    elif kind == "none":
        backend.post_processor = None
    plain = tokenizer("good movie")["input_ids"]
    soft, ids = soft_prompt_tokenizer(tokenizer, 3)
    assert ids == list(range(len(tokenizer), len(tokenizer) + 3))
    assert soft.convert_ids_to_tokens(ids) == [TOKEN.format(i=i) for i in range(3)]
    got = soft("good movie")["input_ids"]
    starts = 1 if kind in ("bert", "roberta", "template") else 0
    assert got == plain[:starts] + ids + plain[starts:], (kind, got, plain)
    # A long text loses its own tokens to truncation, never the soft prompt.
    long = soft(" ".join(["good movie"] * 40), truncation=True, max_length=10)["input_ids"]
    assert len(long) == 10 and long[starts: starts + 3] == ids
    pair = soft("good movie", "bad film")["input_ids"]
    assert pair[starts: starts + 3] == ids and pair.count(ids[0]) == 1
    soft.save_pretrained(tmp_path)
    again = type(soft).from_pretrained(tmp_path)
    assert again("good movie")["input_ids"] == got
    with pytest.raises(ValueError, match="applied once already"):
        soft_prompt_tokenizer(soft, 2)


def test_encoders_and_causal_lms_are_refused_with_their_reason():
    architectures = _host().architectures
    encoder = ModelAndTokenizer(adapter_for(tiny_model("bert"), architectures), tiny_tokenizer())
    assert "encoder" in PromptTuning.unsupported_reason_for(encoder)
    decoder = ModelAndTokenizer(adapter_for(tiny_model("llama"), architectures), tiny_tokenizer())
    assert PromptTuning.unsupported_reason_for(decoder) is None
    from transformers import AutoModelForCausalLM, LlamaConfig

    lm = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1,
                                                      num_attention_heads=2, intermediate_size=64))
    causal = ModelAndTokenizer(adapter_for(lm, architectures), tiny_tokenizer())
    assert "documents, not prompts" in PromptTuning.unsupported_reason_for(causal)


@pytest.mark.parametrize("family", [DECODER_FAMILIES[0], "gpt2"])
def test_only_the_soft_rows_train_and_the_teacher_never_sees_them(family):
    model = tiny_model(family)
    teacher = copy.deepcopy(model)
    seen = []
    teacher.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["input_ids"].clone()),
                                      with_kwargs=True)
    tokenizer = tiny_tokenizer()
    vocabulary = model.get_input_embeddings().num_embeddings
    context = _context(model, tokenizer, teacher=teacher)
    before = copy.deepcopy(model.state_dict())  # as the adapter left it (GPT-2's Conv1D made nn.Linear)
    step = PlanStep(PromptTuning, PromptTuning.make_config({"num_tokens": 4, "learning_rate": 3e-2, "batch_size": 8}))
    tuned = apply_steps(model, [step], context)

    # The soft tokens follow the tokenizer's vocabulary; the tiny model's table has spare rows past it
    # (128 rows for fewer tokens), which they take; a table with no spare rows grows (SmolLM2's).
    first = len(tokenizer)
    soft = list(range(first, first + 4))
    table = tuned.get_input_embeddings().weight
    assert table.shape[0] == max(vocabulary, first + 4) == tuned.config.vocab_size
    key = next(name for name, value in tuned.state_dict().items() if value.shape == table.shape)
    others = [i for i in range(vocabulary) if i not in soft]
    for name, value in tuned.state_dict().items():
        if name == key:
            assert torch.equal(value[others], before[name][others]), "a row of the original vocabulary changed"
        else:
            assert torch.equal(value, before[name]), f"{name} changed; only the soft-prompt rows may train"
    assert not torch.equal(table[soft], before[key][soft]), "the soft-prompt rows did not train"
    assert seen and all(int(ids.max()) < first for ids in seen), "the teacher saw a soft-prompt token"
    assert context.tokenizer("good")["input_ids"][1:5] == soft
    assert context.token_map.tolist()[first: first + 4] == [-1] * 4
    assert all(p.requires_grad for p in tuned.parameters()), "requires_grad was not restored"


def test_the_teachers_inputs_drop_the_tokens_it_never_sees_and_refuse_uneven_rows():
    token_map = torch.tensor([0, 1, 2, 3, -1, -1])
    inputs = {"input_ids": torch.tensor([[2, 4, 5, 3, 1], [2, 4, 5, 1, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]), "labels": torch.tensor([0, 1])}
    result = teacher_inputs(inputs, token_map)
    assert result["input_ids"].tolist() == [[2, 3, 1], [2, 1, 0]]
    assert result["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert result["labels"] is inputs["labels"]
    uneven = {**inputs, "input_ids": torch.tensor([[2, 4, 5, 3, 1], [2, 4, 1, 1, 0]])}
    with pytest.raises(ValueError, match="different numbers of tokens the teacher never sees"):
        teacher_inputs(uneven, token_map)


def test_hidden_state_distillation_refuses_a_student_with_a_soft_prompt():
    from autocompress.distill import RecoverySettings, train_student

    model = tiny_model("llama")
    context = _context(model, tiny_tokenizer())
    context.token_map = torch.cat([torch.arange(model.get_input_embeddings().num_embeddings), torch.tensor([-1])])
    with pytest.raises(ValueError, match="compare positions one to one"):
        train_student(model, context, RecoverySettings(learning_rate=1e-3, epochs=0.5, batch_size=8,
                                                       hidden_weight=1.0))


@pytest.mark.slow
def test_a_prompted_search_measures_the_soft_prompt_and_its_best_model_reloads_with_it(tmp_path):
    """A search with prompt tuning alone: the candidate is measured again after recovery (its table grew
    by the soft rows), and the saved model and tokenizer put the soft prompt in front of a caller's text."""
    import json

    import pandas as pd

    from autocompress import load_pretrained
    from autocompress.cli import main
    from autocompress.testing import write_tiny_causal_lm

    write_tiny_causal_lm(tmp_path / "model")
    texts, labels = synthetic_sentiment(120, seed=3)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(tmp_path / "reviews.csv", index=False)
    plans = tmp_path / "plans.yaml"
    plans.write_text("- prompt_tuning: {num_tokens: 4, epochs: 0.5, learning_rate: 0.01}\n")
    out = tmp_path / "run"
    assert main(["search", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "reviews.csv"),
                 "--label-words", " bad, good", "--out", str(out), "--repeats", "3", "--warmup", "1", "--no-progress",
                 "--max-accuracy-drop", "0.5", "--free-floor", "none", "--trials", "1",
                 "--techniques", "prompt_tuning", "--starting-points", str(plans)]) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE"], trials.to_string()
    teacher = json.loads((out / "run.json").read_text())["baseline"]["parameters"]
    front = json.loads((out / "pareto.json").read_text())["front"]
    assert front[0]["parameters"] == teacher + 4 * 64, "the soft-prompt rows were not measured"
    model, tokenizer = load_pretrained(out / "best")
    vocabulary = len(tokenizer) - 4
    assert tokenizer("Review: good\nSentiment:")["input_ids"][1:5] == list(range(vocabulary, vocabulary + 4))
    assert model.get_input_embeddings().num_embeddings == vocabulary + 4

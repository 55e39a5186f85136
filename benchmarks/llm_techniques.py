"""Each LLM technique alone on SmolLM2-135M-Instruct, measured side by side in one run.

The causal LM itself is compressed (through the same technique classes and Llama adapter a search
uses; no recovery training) and measured the way an LLM is deployed, batch 1, 2 threads:

- time to first token: one forward pass over a 64-token prompt (prefill, KV cache on);
- ms per generated token: greedy decoding steps with the KV cache after that prompt;
- memory: the weights as stored (each tensor once) + the KV cache at 64 + 32 tokens of context;
- perplexity on held-out review sentences (the demo's test split, raw text);
- prompted sentiment accuracy: the next-token logits of " negative" / " positive" after
  ``Review: {text}\\nSentiment:`` (``autocompress.prompted``), on the same sentences.

Timings of each variant alternate with the teacher's (teacher, variant, teacher, ...) and the
ratios are medians over rounds, so a shared machine's drift hits both alike.

    python benchmarks/llm_techniques.py           # the published table (SmolLM2; tens of minutes on 2 cores)
    python benchmarks/llm_techniques.py --quick   # CI smoke run on a tiny Llama written from a config
    python benchmarks/llm_techniques.py --only int8,bf16   # some variants (the teacher is always measured)
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
from pathlib import Path

import torch

from autocompress.arch import adapter_for
from autocompress.candidate import apply_steps
from autocompress.data import TaskData
from autocompress.measure import model_bytes, parameter_count, thread_count, time_decoding, time_forward
from autocompress.plugin_manager import build_host
from autocompress.plugins.demo_llm_task import DEMO_TRAIN
from autocompress.prompted import DEFAULT_TEMPLATE, Prompt, label_token_ids
from autocompress.technique import ApplyContext, PlanStep

#: label -> [(technique, config values)], each alone at one documented setting (no recovery training).
VARIANTS = {
    "int8 dynamic": [("quantization", {"dtype": "int8"})],
    "bf16": [("quantization", {"dtype": "bf16"})],
    "half the layers (every other)": [("layer_drop", {"keep_layers": 0.5, "strategy": "every_other"})],
    "half the layers (importance)": [("layer_drop", {"keep_layers": 0.5, "strategy": "importance"})],
    "half the layers + int8": [("layer_drop", {"keep_layers": 0.5, "strategy": "every_other"}),
                               ("quantization", {"dtype": "int8"})],
    "gated MLP channels 50% (L1)": [("ffn_pruning", {"keep_fraction": 0.5})],
    "1/3 of key/value groups (L1)": [("head_pruning", {"fraction": 0.34, "scoring": "l1"})],
    "low-rank MLP 50%": [("low_rank", {"rank_ratio": 0.5, "layers": "ffn"})],
    # int4 weight-only (torchao's packed CPU kernel, bf16 activations; plugins/quantization.py). Group
    # 64: SmolLM2's hidden width, 576, is no multiple of 128. Group 32: the teacher's weights went
    # through the GGUF's Q4_1 (blocks of 32 input columns, a scale and a minimum each), so int4 with a
    # scale and a zero on the same blocks lands near the grid they already lie on.
    "int4 weight-only (torchao, group 64, bf16 activations)": [("quantization", {"dtype": "int4", "group_size": 64})],
    "int4 weight-only (torchao, group 32, bf16 activations)": [("quantization", {"dtype": "int4", "group_size": 32})],
    # The tokens of the demo-llm search's 512 training prompts (the template's words included) and the
    # merges that spell them (plugins/vocab_trim.py): the tied output head shrinks with the table.
    "vocabulary of the training prompts": [("vocab_trim", {"min_count": 1})],
    "vocabulary of the training prompts + int4 (group 32)": [("vocab_trim", {"min_count": 1}),
                                                             ("quantization", {"dtype": "int4", "group_size": 32})],
}
PROMPT_TOKENS, NEW_TOKENS = 64, 32


def load_teacher(quick: bool, workdir: Path):
    """(causal LM, tokenizer, data): SmolLM2 and the demo's reviews, or a tiny Llama and synthetic sentences."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if quick:
        from autocompress.data import TextDataset
        from autocompress.testing import synthetic_sentiment, write_tiny_causal_lm

        directory = write_tiny_causal_lm(workdir / "tiny-llama")
        texts, labels = synthetic_sentiment(96, seed=1)
        split = TextDataset(texts, [int(label == "pos") for label in labels])
        data, words = TaskData(split, split, split, ["neg", "pos"]), (" bad", " good")
    else:
        from autocompress.demo_data import default_cache_dir, load_demo_task_data
        from autocompress.smollm2 import converted_checkpoint, smollm2_gguf

        directory, _ = converted_checkpoint(smollm2_gguf(), default_cache_dir())
        full = load_demo_task_data()
        # The demo-llm search's training split (its first 64 sentences are the other techniques' sample).
        data = TaskData(full.train.head(DEMO_TRAIN), full.validation.head(300), full.test.head(300),
                        full.label_names)
        words = (" negative", " positive")
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    return model, AutoTokenizer.from_pretrained(directory), data, words


def calibration(data: TaskData) -> TaskData:
    """The training sample the techniques see (layer importance and the like): 64 sentences."""
    return TaskData(data.train.head(64), data.validation, data.test, data.label_names)


def rendered_training_prompts(data: TaskData) -> TaskData:
    """What vocab_trim counts: the texts the demo-llm search's step would, every training sentence
    rendered through the prompt template (``plugins/demo_llm_task.py``)."""
    from autocompress.data import TextDataset

    prompt = Prompt(DEFAULT_TEMPLATE)
    train = TextDataset([prompt.render(text) for text in data.train.texts], list(data.train.labels))
    return TaskData(train, data.validation, data.test, data.label_names)


def prefill_and_decode(model, prompt_ids: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """(ms for the prompt's forward pass, median ms per greedy decoding step with the KV cache): the
    search's two latency modes (``autocompress.measure``: ``--latency prompt`` / ``token``)."""
    inputs = {"input_ids": prompt_ids, "attention_mask": torch.ones_like(prompt_ids)}
    prefill = time_forward(model, inputs, warmup=0, repeats=1)[0]
    return prefill, statistics.median(time_decoding(model, inputs, warmup=0, repeats=new_tokens))


def kv_cache_bytes(model, adapter, context: int, element_bytes: int) -> int:
    """Keys and values of every layer at ``context`` tokens, as the layers now are (pruned heads included)."""
    total = 0
    for paths in adapter.all_layer_paths():
        key = model.get_submodule(paths.key)
        width = key.out_features if hasattr(key, "out_features") else key.weight().shape[0]
        total += 2 * width * context * element_bytes
    return total


def perplexity(model, tokenizer, texts: list[str], teacher_tokenizer=None) -> float:
    """Perplexity on ``texts`` as the search's ``--task lm`` scores it (``autocompress.language_model``):
    each text tokenised whole, windows of ``PROMPT_TOKENS``, token-weighted, in batches of 16.

    With ``teacher_tokenizer`` (a trimmed vocabulary spells a text in more, shorter tokens) the text's
    whole log-likelihood is divided by the number of tokens the teacher predicts on it, so the figure
    stays per teacher token and comparable (the same figure when the tokenizers agree)."""
    import math

    from autocompress.corpus import Documents
    from autocompress.language_model import encode_documents, token_scores

    scores = token_scores(model, encode_documents(tokenizer, Documents.of(texts), PROMPT_TOKENS), batch_size=16)
    tokens = scores.tokens
    if teacher_tokenizer is not None:
        windows = encode_documents(teacher_tokenizer, Documents.of(texts), PROMPT_TOKENS)
        tokens = sum(int((labels[:, 1:] != -100).sum()) for _, labels in windows.batches(64))
    return math.exp(-scores.log_likelihood / tokens)


def prompted_accuracy(model, tokenizer, texts: list[str], labels: list[int], words, batch_size: int = 16) -> float:
    """The share of ``texts`` whose label word's first token scores higher than the other's at the
    prompt's last token (batches padded on the right; the vocabulary projection only at that token)."""
    prompt = Prompt(DEFAULT_TEMPLATE, words)
    ids = torch.tensor(label_token_ids(tokenizer, prompt.words(["neg", "pos"])))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side, tokenizer.truncation_side = "right", "left"
    right = 0
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = [prompt.render(text) for text in texts[start:start + batch_size]]
            encoded = tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=128)
            hidden = model.base_model(**encoded).last_hidden_state
            last = hidden[torch.arange(len(batch)), encoded["attention_mask"].sum(1) - 1]
            predicted = model.get_output_embeddings()(last)[:, ids].argmax(-1)
            right += int((predicted == torch.tensor(labels[start:start + batch_size])).sum())
    return right / len(texts)


def compress(host, teacher, tokenizer, data, steps):
    """(the compressed model, its tokenizer: a new one when a step rewrote it)."""
    model = copy.deepcopy(teacher)
    layers = adapter_for(model, host.architectures).num_layers()
    plan = []
    for name, values in steps:
        if name == "layer_drop":  # "half" of whatever depth the model has
            values = dict(values, keep_layers=max(1, round(layers * values["keep_layers"])))
        technique = host.techniques[name]
        plan.append(PlanStep(technique, technique.make_config(values)))
    trims = any(name == "vocab_trim" for name, _ in steps)
    context = ApplyContext(adapter=adapter_for(model, host.architectures), tokenizer=tokenizer,
                           data=rendered_training_prompts(data) if trims else calibration(data),
                           teacher=teacher, max_length=PROMPT_TOKENS, seed=0)
    model = apply_steps(model, plan, context).eval()
    return model, context.tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write llm_techniques.json here")
    parser.add_argument("--only", default="", help="comma-separated words: run only the variants whose label has one")
    args = parser.parse_args()
    words = [w.strip().lower() for w in args.only.split(",") if w.strip()]
    variants = {label: steps for label, steps in VARIANTS.items()
                if not words or any(word in label.lower() for word in words)}
    rounds = 1 if args.quick else 5
    host = build_host()
    with tempfile.TemporaryDirectory() as tmp, thread_count(2):
        teacher, tokenizer, data, words = load_teacher(args.quick, Path(tmp))
        prompt_ids = torch.randint(10, len(tokenizer), (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0))
        texts, labels = data.test.texts, data.test.labels
        command = ("python benchmarks/llm_techniques.py" + (" --quick" if args.quick else "")
                   + (f" --only '{args.only}'" if args.only else ""))
        print(f"`{command}`: {type(teacher).__name__}, {parameter_count(teacher) / 1e6:.1f} M parameters; batch 1, "
              f"2 threads, prompt {PROMPT_TOKENS} tokens, {NEW_TOKENS} generated; {len(texts)} held-out sentences; "
              f"medians of {rounds} rounds alternating with the teacher; no recovery training.\n")
        print("| variant | time to first token ms | x | ms per token | x | memory MB | x | perplexity | "
              "prompted accuracy |\n|---|---|---|---|---|---|---|---|---|")
        teacher_memory = model_bytes(teacher) + kv_cache_bytes(
            teacher, adapter_for(teacher, host.architectures), PROMPT_TOKENS + NEW_TOKENS, 4)
        rows = []
        for label, steps in [("teacher fp32", []), *variants.items()]:
            model, own = compress(host, teacher, tokenizer, data, steps) if steps else (teacher, tokenizer)
            timings = []
            for _ in range(rounds):
                base = prefill_and_decode(teacher, prompt_ids, NEW_TOKENS)
                # The same 64 tokens' worth of work (ids past a trimmed table wrap: values do not change timings).
                mine = prefill_and_decode(model, prompt_ids % model.get_input_embeddings().num_embeddings, NEW_TOKENS)
                timings.append((mine[0], mine[1], base[0] / mine[0], base[1] / mine[1]))
            ttft, per_token, ttft_x, token_x = (statistics.median(t[i] for t in timings) for i in range(4))
            element = 2 if any(p.dtype == torch.bfloat16 for p in model.parameters()) else 4
            adapter = adapter_for(model, host.architectures)
            memory = model_bytes(model) + kv_cache_bytes(model, adapter, PROMPT_TOKENS + NEW_TOKENS, element)
            row = {"variant": label, "ttft_ms": ttft, "ttft_x": ttft_x, "ms_per_token": per_token,
                   "token_x": token_x, "memory_mb": memory / 2**20, "memory_x": teacher_memory / memory,
                   "perplexity": perplexity(model, own, texts, None if own is tokenizer else tokenizer),
                   "accuracy": prompted_accuracy(model, own, texts, labels, words),
                   "vocabulary": model.get_input_embeddings().num_embeddings}
            rows.append(row)
            print(f"| {label} | {ttft:.1f} | {ttft_x:.2f}x | {per_token:.2f} | {token_x:.2f}x | "
                  f"{row['memory_mb']:.1f} | {row['memory_x']:.2f}x | {row['perplexity']:.2f} | "
                  f"{row['accuracy']:.4f} |", flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "llm_techniques.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

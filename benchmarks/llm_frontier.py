"""What the search finds on the LLM demo, against what a person would do by hand and against llama.cpp.

In one run on this machine: the teacher (SmolLM2-135M-Instruct as the demo-llm task's zero-shot
prompted classifier of movie-review polarity), by-hand baselines (int8 dynamic alone; half the
layers, every other one, + distillation at a fixed recipe; the same + int8) and
``autocompress search --task demo-llm --latency token`` with the task's default budget. Every model
is saved (the search's front exported as a user would) and re-measured **in a fresh process** the
way an LLM is deployed, batch 1, 2 threads (``benchmarks/llm_techniques.py``'s measurements):

- time to first token: the forward pass over a 64-token prompt (prefill, KV cache on);
- ms per generated token: greedy decoding steps with the KV cache after that prompt;
- memory: the weights as stored (each tensor once) + the KV cache at 64 + 32 tokens of context;
- perplexity on the held-out review sentences (the task's test split, raw text);
- prompted accuracy: the saved prompted classifier's accuracy on the same sentences (what the
  search scores), as a share of the teacher's.

A saved candidate is a prompted classifier; it generates (latency, perplexity) through its own
decoder with the output head tied to its input embeddings (``autocompress.prompted.causal_lm_of``,
the search's ``--latency token`` too), so the search-time ms per token stands beside the fresh one.
The teacher also runs under llama.cpp (the shipped Q4_1 GGUF through ``llama-cpp-python``, the
``llamacpp`` extra; the row says so when it is not installed), on the same prompt token ids, with
the label words' next-token logits as its prompted classifier. Then the targets (issue 17) are
checked and printed as met or MISSED; frontier.json is written next to the models.

    python benchmarks/llm_frontier.py            # the published table (SmolLM2; an hour or more on 2 cores)
    python benchmarks/llm_frontier.py --quick    # CI smoke run: tiny Llama, synthetic sentences, 2 trials

Quick mode measures every model in one fresh process (a forked child each); the published run
starts one process per model. It has no GGUF of its tiny model, so its llama.cpp row is empty.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from frontier import (
    benchmark_parser,
    build_baselines,
    load_flagged_task,
    measure_each,
    measure_fresh,
    percent_difference,
    quick_search_flags,
    run_search,
)

#: A by-hand recipe: half the decoder layers (every other one, the first and last kept by the
#: adapter), then one epoch of distillation from the teacher on the task's training prompts
#: (soft label-word logits at temperature 2 and hard labels, half each; hidden states through the
#: layer map), as the search's distillation technique does it.
HALF_LAYERS = [("layer_drop", {"keep_layers": 0.5, "strategy": "every_other"}),
               ("distillation", {"epochs": 1.0, "temperature": 2.0, "alpha": 0.5, "hidden_weight": 1.0})]
BASELINES = {
    "int8 dynamic alone": [("quantization", {"dtype": "int8"})],
    "half the layers + distillation": HALF_LAYERS,
    "half the layers + distillation + int8": [*HALF_LAYERS, ("quantization", {"dtype": "int8"})],
}
LLAMA_CPP = "teacher under llama.cpp (Q4_1 GGUF)"
#: Issue 17's bars: generation speed-up at nearly the teacher's quality; memory at that quality.
TARGET_SPEEDUP, TARGET_SMALLER = 2.5, 4.0
MAX_PERPLEXITY_INCREASE, MIN_ACCURACY_SHARE = 0.10, 0.98
#: Timed rounds per model (each: one prefill, then the generated tokens), after one untimed round.
ROUNDS, QUICK_ROUNDS = 5, 2
#: Quick mode: recovery this long (a few optimiser steps), two trials (a post step alone; half the
#: layers + distillation + int8).
QUICK_RECOVERY_EPOCHS, QUICK_TRIALS = 0.25, 2
QUICK_STARTING_POINTS = [
    {"quantization": {"dtype": "int8"}},
    {"layer_drop": {"keep_layers": 2, "strategy": "every_other"}, "distillation": {"epochs": QUICK_RECOVERY_EPOCHS},
     "quantization": {"dtype": "int8"}},
]
QUICK_LABEL_WORDS = " bad, good"  # neg, pos as the tiny tokenizer spells them


def task_flags(quick: bool, workdir: Path) -> list[str]:
    """The ``autocompress search`` task flags of the baselines and the search: the LLM demo, or (quick)
    a tiny Llama written from a config with synthetic sentences, through the local task."""
    if not quick:
        return ["--task", "demo-llm", "--latency", "token"]
    import pandas as pd

    from autocompress.testing import synthetic_sentiment, write_tiny_causal_lm

    model = write_tiny_causal_lm(workdir / "tiny-llama")
    texts, labels = synthetic_sentiment(160, seed=3)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(workdir / "sentences.csv", index=False)
    return ["--model", str(model), "--data", str(workdir / "sentences.csv"), "--label-words", QUICK_LABEL_WORDS,
            "--latency", "token", "--repeats", "5", "--warmup", "1"]


def write_evaluation(task: Any, path: Path) -> dict[str, Any]:
    """The test split every fresh process scores, as the task renders it (prompted accuracy) and as
    raw sentences (perplexity), with the prompt: written to ``path`` once, so no fresh process has
    to load the task (and its teacher) again."""
    from autocompress.prompted import prompt_of

    prompt = prompt_of(task.teacher)
    before, after = prompt.template.split("{text}")
    texts = list(task.data.test.texts)
    raw = [text[len(before):len(text) - len(after)] for text in texts]
    evaluation = {"texts": texts, "raw": raw, "labels": [int(label) for label in task.data.test.labels],
                  "label_words": prompt.words(task.data.label_names), "template": prompt.template}
    path.write_text(json.dumps(evaluation))
    return evaluation


def _measure_here(requests: list[dict[str, Any]]) -> None:
    """The ``--measure`` process: one request measured here, or several each in a forked child;
    prints the records as one JSON list."""
    from autocompress.measure import long_lived_objects
    from autocompress.plugin_manager import build_host

    host = build_host()
    with long_lived_objects():
        records = measure_each(requests, lambda request: _measure_one(request, host))
    print(json.dumps(records))


def _measure_one(request: dict[str, Any], host: Any) -> dict[str, Any]:
    """A saved model (``request["dir"]``) reloaded and measured; with ``request["gguf"]``, the teacher
    in that directory is only the tokenizer and the model runs under llama.cpp instead."""
    import torch
    from llm_techniques import NEW_TOKENS, PROMPT_TOKENS, kv_cache_bytes, perplexity, prefill_and_decode

    from autocompress import load_pretrained
    from autocompress.arch import adapter_for
    from autocompress.data import TextDataset
    from autocompress.measure import model_bytes, parameter_count, thread_count
    from autocompress.prompted import causal_lm_of, label_token_ids
    from autocompress.training import accuracy, encode

    if request.get("missing"):
        return {"missing": request["missing"]}
    torch.manual_seed(0)
    evaluation = json.loads(Path(request["evaluation"]).read_text())
    classifier, tokenizer = load_pretrained(request["dir"], host)
    generator = causal_lm_of(classifier)
    prompt_ids = torch.randint(10, generator.config.vocab_size, (1, PROMPT_TOKENS),
                               generator=torch.Generator().manual_seed(0))
    if "gguf" in request:
        try:
            from llama_cpp import Llama
        except ImportError:
            return {"missing": "not installed (pip install llama-cpp-python)"}
        adapter = adapter_for(generator, host.architectures)
        kv_per_token = kv_cache_bytes(generator, adapter, 1, 2)  # llama.cpp keeps keys and values in f16
        labels = label_token_ids(tokenizer, evaluation["label_words"])
        measured = measure_llama_cpp(Llama, Path(request["gguf"]), prompt_ids[0].tolist(), tokenizer, evaluation,
                                     labels, kv_per_token, request["rounds"], request["max_length"])
        return {"pid": os.getpid(), **measured}
    with thread_count(2):
        prefill_and_decode(generator, prompt_ids, NEW_TOKENS)  # untimed: a fresh process's first calls are slow
        rounds = [prefill_and_decode(generator, prompt_ids, NEW_TOKENS) for _ in range(request["rounds"])]
        element = 2 if any(p.dtype == torch.bfloat16 for p in generator.parameters()) else 4
        kv = kv_cache_bytes(generator, adapter_for(generator, host.architectures), PROMPT_TOKENS + NEW_TOKENS, element)
        test = TextDataset(evaluation["texts"], evaluation["labels"])
        return {"pid": os.getpid(), "ttft_ms": statistics.median(r[0] for r in rounds),
                "ms_per_token": statistics.median(r[1] for r in rounds),
                "memory_mb": (model_bytes(generator) + kv) / 2**20, "parameters": parameter_count(generator),
                "perplexity": perplexity(generator, tokenizer, evaluation["raw"]),
                "accuracy": accuracy(classifier, encode(tokenizer, test, request["max_length"]))}


def measure_llama_cpp(llama: Any, gguf: Path, prompt_ids: list[int], tokenizer: Any, evaluation: dict[str, Any],
                      label_ids: list[int], kv_bytes_per_token: int, rounds: int, max_length: int) -> dict[str, Any]:
    """The teacher under llama.cpp (``llama`` is ``llama_cpp.Llama``), measured like the PyTorch rows:
    prefill of ``prompt_ids``, ms per greedy token after it, memory (the GGUF file + an f16 KV cache
    at the same 96-token context as the other rows), perplexity on the raw test sentences and
    prompted accuracy (the label words' next-token logits after each rendered prompt). Token ids come
    from the teacher's tokenizer, so both runtimes see the same inputs. (llama-cpp-python >= 0.3:
    ``Llama.eval`` feeds tokens to the KV cache; with ``logits_all`` every position's logits land in
    ``Llama.scores``; without it, ``Llama.sample(temp=0)`` picks the greedy token.)"""
    import numpy as np
    from llm_techniques import NEW_TOKENS, PROMPT_TOKENS

    from autocompress.corpus import Documents
    from autocompress.language_model import encode_documents

    timings = _llama_cpp_timings(llama(model_path=str(gguf), n_ctx=PROMPT_TOKENS + NEW_TOKENS, n_threads=2,
                                       n_threads_batch=2, verbose=False), prompt_ids, rounds)
    # Scoring needs every position's logits (logits_all) and room for a whole rendered prompt.
    scorer = llama(model_path=str(gguf), n_ctx=2 * max(max_length, PROMPT_TOKENS), n_threads=2, n_threads_batch=2,
                   logits_all=True, verbose=False)
    total, count = 0.0, 0
    # The windows the PyTorch rows' perplexity scores (llm_techniques.perplexity: the search's own encoding).
    for ids in encode_documents(tokenizer, Documents.of(evaluation["raw"]), PROMPT_TOKENS).input_ids:
        scorer.reset()
        scorer.eval(ids)
        logits = np.asarray(scorer.scores[:len(ids) - 1], dtype=np.float64)
        peak = logits.max(axis=1, keepdims=True)
        log_norm = (peak + np.log(np.exp(logits - peak).sum(axis=1, keepdims=True)))[:, 0]
        total += float((log_norm - logits[np.arange(len(ids) - 1), ids[1:]]).sum())
        count += len(ids) - 1
    right = 0
    for text, label in zip(evaluation["texts"], evaluation["labels"], strict=True):
        ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        scorer.reset()
        scorer.eval(ids)
        right += int(int(np.argmax(scorer.scores[len(ids) - 1, label_ids])) == label)
    return {**timings, "memory_mb": (gguf.stat().st_size + kv_bytes_per_token * (PROMPT_TOKENS + NEW_TOKENS)) / 2**20,
            "parameters": None, "perplexity": float(np.exp(total / count)),
            "accuracy": right / len(evaluation["texts"])}


def _llama_cpp_timings(llm: Any, prompt_ids: list[int], rounds: int) -> dict[str, float]:
    """Median prefill ms and median ms per greedy token over ``rounds`` rounds after an untimed one."""
    from llm_techniques import NEW_TOKENS

    def timed(call: Any) -> float:
        start = time.perf_counter()
        call()
        return (time.perf_counter() - start) * 1000.0

    timings = []
    for _ in range(rounds + 1):  # the first round untimed, as for the PyTorch rows
        llm.reset()
        prefill = timed(lambda: llm.eval(prompt_ids))
        steps = []
        for _ in range(NEW_TOKENS):
            token = llm.sample(temp=0.0)
            steps.append(timed(lambda token=token: llm.eval([token])))
        timings.append((prefill, statistics.median(steps)))
    return {"ttft_ms": statistics.median(t[0] for t in timings[1:]),
            "ms_per_token": statistics.median(t[1] for t in timings[1:])}


def main() -> None:
    parser = benchmark_parser(__doc__, "runs/llm-frontier", "search budget (default: the task's, 6 for demo-llm)")
    args = parser.parse_args()
    if args.measure:
        _measure_here(json.loads(args.measure))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    flags = task_flags(args.quick, args.out)
    task = load_flagged_task(flags)
    settings = task[1]
    evaluation = write_evaluation(task[2], args.out / "evaluation.json")
    models = build_baselines(args.out, flags, BASELINES, QUICK_RECOVERY_EPOCHS if args.quick else None, task=task)
    del task
    search_flags = quick_search_flags(args.out, QUICK_STARTING_POINTS, QUICK_RECOVERY_EPOCHS) if args.quick else []
    trials = QUICK_TRIALS if args.quick and args.trials is None else args.trials
    search = run_search(args.out, [*flags, *search_flags], trials, "cpu")
    models.update(search["found"])
    common = {"evaluation": str(args.out / "evaluation.json"), "rounds": QUICK_ROUNDS if args.quick else ROUNDS,
              "max_length": settings.task_options.max_length}
    requests = {name: {"dir": info["dir"], **common} for name, info in models.items()}
    requests[LLAMA_CPP] = {"dir": models["teacher"]["dir"], **common, **llama_cpp_source(args.quick)}
    fresh = measure_fresh(__file__, requests, [], one_process=args.quick)
    report = summarise(models, fresh, search, evaluation, args, time.perf_counter() - started)
    (args.out / "frontier.json").write_text(json.dumps(report, indent=2, default=str))
    print(report["markdown"])


def llama_cpp_source(quick: bool) -> dict[str, Any]:
    """Where the llama.cpp row's GGUF is: the shipped SmolLM2 file, or why there is none."""
    if quick:
        return {"gguf": None, "missing": "not measured in --quick (no GGUF of the tiny model)"}
    from autocompress.smollm2 import smollm2_gguf

    return {"gguf": str(smollm2_gguf())}


def summarise(models: dict[str, dict[str, Any]], fresh: dict[str, dict[str, Any]], search: dict[str, Any],
              evaluation: dict[str, Any], args: argparse.Namespace, total_s: float) -> dict[str, Any]:
    """The table, the fidelity figures and the target checks (data in ``rows``, text in ``markdown``)."""
    teacher = fresh["teacher"]
    lines = ["| model | time to first token ms | x | ms per token | x | memory MB | x | perplexity | "
             "prompted acc | % of teacher | search-time ms per token | fresh vs search |",
             "|" + "---|" * 12]
    rows = []
    for name in [*models, LLAMA_CPP]:
        f = fresh[name]
        if "missing" in f:
            rows.append({"name": name, "missing": f["missing"]})
            lines.append(f"| {name} | {f['missing']} |" + " |" * 10)
            continue
        search_row = models.get(name, {}).get("search")
        row = {"name": name, "plan": models[name]["plan"] if name in models else "the teacher's GGUF file",
               **f, "ttft_x": teacher["ttft_ms"] / f["ttft_ms"], "token_x": teacher["ms_per_token"] / f["ms_per_token"],
               "memory_x": teacher["memory_mb"] / f["memory_mb"],
               "perplexity_increase": f["perplexity"] / teacher["perplexity"] - 1,
               "pct_teacher": 100 * f["accuracy"] / teacher["accuracy"] if teacher["accuracy"] else None,
               "search_ms_per_token": search_row["latency_ms"] if search_row else None,
               "search_test_accuracy": search_row.get("test_accuracy") if search_row else None}
        row["difference_pct"] = percent_difference(f["ms_per_token"], row["search_ms_per_token"])
        rows.append(row)
        share = f"{row['pct_teacher']:.1f}%" if row["pct_teacher"] is not None else "-"
        lines.append(
            f"| {name} | {f['ttft_ms']:.1f} | {row['ttft_x']:.2f}x | {f['ms_per_token']:.2f} | {row['token_x']:.2f}x | "
            f"{f['memory_mb']:.1f} | {row['memory_x']:.2f}x | {f['perplexity']:.2f} | {f['accuracy']:.4f} | {share} | "
            + (f"{row['search_ms_per_token']:.2f} | {row['difference_pct']:+.1f}% |" if search_row else "- | - |"))
    found = [r for r in rows if r["name"] in search["found"] and "missing" not in r]
    checks = target_checks(found)
    diffs = [abs(r["difference_pct"]) for r in found if r["difference_pct"] is not None]
    checks.append("- fresh-process vs search-time ms per token: largest difference "
                  + (f"{max(diffs):.1f}%" if diffs else "n/a (no model found)"))
    markdown = "\n".join([
        *lines, "",
        f"Search: `{search['command']}`: {len(search['found'])} models on the front, {search['wall_s'] / 60:.1f} min "
        f"wall time. Whole benchmark: {total_s / 60:.1f} min. {len(evaluation['texts'])} held-out sentences; "
        "every row re-measured in a fresh process; speed-ups and memory against the PyTorch fp32 teacher.", "",
        f"Targets (found models, at <= {MAX_PERPLEXITY_INCREASE:.0%} perplexity increase and >= "
        f"{MIN_ACCURACY_SHARE:.0%} of the teacher's prompted accuracy):", *checks,
    ])
    return {"rows": rows, "markdown": markdown, "search": {k: v for k, v in search.items() if k != "pareto"},
            "total_s": total_s, "quick": args.quick, "pid": os.getpid()}


def target_checks(found: list[dict[str, Any]]) -> list[str]:
    """Issue 17's two bars over the found models, each met or MISSED with the numbers."""
    def same_quality(row: dict[str, Any]) -> bool:
        return (row["perplexity_increase"] <= MAX_PERPLEXITY_INCREASE and row["pct_teacher"] is not None
                and row["pct_teacher"] >= 100 * MIN_ACCURACY_SHARE)

    def quality(row: dict[str, Any]) -> str:
        return (f"perplexity {row['perplexity_increase']:+.1%}, {row['pct_teacher']:.1f}% of the teacher's "
                "prompted accuracy")

    good = [r for r in found if same_quality(r)]
    lines = []
    for key, bar, what in (("token_x", TARGET_SPEEDUP, "faster generation (ms per token)"),
                           ("memory_x", TARGET_SMALLER, "less memory")):
        best = max(good, key=lambda r: r[key]) if good else None
        if best is not None and best[key] >= bar:
            lines.append(f"- >= {bar:g}x {what}: met by {best['name']}: {best[key]:.2f}x ({quality(best)})")
        elif best is not None:
            lines.append(f"- >= {bar:g}x {what}: MISSED: best at that quality {best['name']} {best[key]:.2f}x "
                         f"({quality(best)})")
        else:
            nearest = max(found, key=lambda r: r[key]) if found else None
            lines.append(f"- >= {bar:g}x {what}: MISSED: no found model keeps that quality"
                         + (f"; the best {what} found, {nearest['name']}, is {nearest[key]:.2f}x at "
                            f"{quality(nearest)}" if nearest else ""))
    return lines


if __name__ == "__main__":
    main()

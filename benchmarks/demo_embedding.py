"""The demo embedding model (all-MiniLM-L6-v2, ``--task demo-embedding``) compressed by hand, side by side:
latency, memory and agreement with the teacher (cosine, recall@10 of its neighbours on the test sentences).

Rows: the teacher; int8 dynamic alone; half the layers + embedding distillation; the same + int8;
ONNX Runtime int8 of the teacher (what sentence-transformers users get for free). Latency: median of
interleaved runs (batch 1, sequence 64, 2 threads; all variants take turns, so drift of a shared
machine hits them alike); size: bytes of the PyTorch state or of the ONNX graph file.

    python benchmarks/demo_embedding.py            # the published table (distillation: minutes on 2 cores)
    python benchmarks/demo_embedding.py --quick    # smoke run: 300 training sentences, 200 test, few repeats

``--out DIR`` also writes the rows to ``DIR/demo_embedding.json``.
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
from autocompress.embedding import embed, mean_cosine, recall_at_k
from autocompress.measure import model_bytes, time_calls
from autocompress.onnx_export import OnnxRuntimeModule, example_inputs, export_onnx, onnx_session, session_feed
from autocompress.plugin_manager import build_host
from autocompress.plugins.quantization import quantize_int8_dynamic
from autocompress.task import TaskOptions, load_task
from autocompress.technique import ApplyContext
from autocompress.training import encode

#: Quick mode: training sentences distilled on and test sentences scored.
QUICK_TRAIN, QUICK_TEST = 300, 200


def half_depth_distilled(host, task, epochs: float):
    """Every other layer of the teacher kept (3 of 6), then distilled toward the teacher's embeddings."""
    model = copy.deepcopy(task.teacher)
    for name, values in (("layer_drop", {"keep_layers": task.teacher.config.num_hidden_layers // 2,
                                         "strategy": "every_other"}),
                         ("distillation", {"epochs": epochs, "eval_every": 0})):
        technique = host.techniques[name]
        context = ApplyContext(adapter=adapter_for(model, host.architectures), tokenizer=task.tokenizer,
                               data=task.data, teacher=task.teacher, max_length=64, seed=0)
        model = technique().apply(model, technique.make_config(values), context)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rounds, repeats = (2, 3) if args.quick else (10, 10)

    host = build_host()
    options = TaskOptions(train_limit=QUICK_TRAIN if args.quick else None, progress=False)
    task = load_task(host.tasks["demo-embedding"](options))
    teacher = task.teacher.eval()
    test_data = task.data.test.head(QUICK_TEST) if args.quick else task.data.test
    test = encode(task.tokenizer, test_data, 64)
    half = half_depth_distilled(host, task, epochs=1.0)
    models = {"teacher": teacher, "int8 dynamic alone": quantize_int8_dynamic(teacher),
              "half depth + distillation": half, "half depth + distillation + int8": quantize_int8_dynamic(half)}
    sizes = {label: model_bytes(model) for label, model in models.items()}
    directory = Path(tempfile.mkdtemp(prefix="embedding-onnx-"))
    graph = export_onnx(models["int8 dynamic alone"], directory / "int8.onnx", 64)
    sizes["ONNX Runtime int8 (teacher)"] = graph.stat().st_size

    inputs = example_inputs(teacher, 1, 64)
    torch.set_num_threads(2)
    runs = {label: (lambda m=model: m(**inputs)) for label, model in models.items()}
    session = onnx_session(graph, threads=2)
    feed = session_feed(session, inputs)
    runs["ONNX Runtime int8 (teacher)"] = lambda: session.run(None, feed)
    timings: dict[str, list[float]] = {label: [] for label in runs}
    with torch.inference_mode():
        for run in runs.values():  # warm-up
            time_calls(run, 5, 1)
        for _ in range(rounds):  # A B C D E A B C D E ...
            for label, run in runs.items():
                timings[label] += time_calls(run, 1, repeats)

    models["ONNX Runtime int8 (teacher)"] = OnnxRuntimeModule(onnx_session(graph))
    base = statistics.median(timings["teacher"])
    print(f"demo embedding model (all-MiniLM-L6-v2), {len(test_data)} test sentences, distilled on "
          f"{len(task.data.train)}; latency: median of {rounds}x{repeats} interleaved runs, batch 1, sequence 64, "
          "2 threads")
    print("| model | size MB | latency b1 ms | speed-up | cosine | recall@10 |")
    print("|---|---|---|---|---|---|")
    rows = []
    for label in runs:
        latency = statistics.median(timings[label])
        embeddings = embed(models[label], test)
        rows.append({"name": label, "size_mb": sizes[label] / 2**20, "latency_ms": latency, "speedup": base / latency,
                     "cosine": mean_cosine(embeddings, test.labels), "recall@10": recall_at_k(embeddings, test.labels)})
        row = rows[-1]
        print(f"| {label} | {row['size_mb']:.1f} | {latency:.2f} | {row['speedup']:.2f}x | {row['cosine']:.4f} "
              f"| {row['recall@10']:.4f} |")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "demo_embedding.json").write_text(json.dumps({"test_sentences": len(test_data),
                                                                  "train_sentences": len(task.data.train),
                                                                  "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

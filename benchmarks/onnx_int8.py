"""int8 on the onnxruntime target: the demo model in PyTorch and in ONNX Runtime, float and int8,
measured side by side in one run.

For each variant: model size (PyTorch: bytes of its state; ONNX Runtime: the graph file), median
latency of interleaved runs (batch 1, sequence 64, 2 threads; all variants take turns, so drift of
a shared machine hits them alike), speed-up over PyTorch float, test accuracy, and how often its
predictions agree with PyTorch int8's (the model the cpu target would have measured).

    python benchmarks/onnx_int8.py            # the published table (about a minute on 2 cores)
    python benchmarks/onnx_int8.py --quick    # smoke run: the small smoke teacher, few repeats, 200 sentences

``--out DIR`` also writes the rows to ``DIR/onnx_int8.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from autocompress.measure import model_bytes, time_calls
from autocompress.onnx_export import OnnxRuntimeModule, example_inputs, export_onnx, onnx_session, session_feed
from autocompress.plugin_manager import build_host
from autocompress.plugins.quantization import quantize_int8_dynamic
from autocompress.task import TaskOptions
from autocompress.testing.smoke import SMOKE_DEMO_OPTIONS
from autocompress.training import encode, predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rounds, repeats = (2, 3) if args.quick else (10, 10)

    host = build_host()
    # Quick: the smoke demo task the test suite shares (one cached teacher, fine-tuned in a minute).
    task = host.tasks["demo"](TaskOptions(**(SMOKE_DEMO_OPTIONS if args.quick else {}))).load()
    teacher = task.teacher.eval()
    test_data = task.data.test.head(200) if args.quick else task.data.test
    test = encode(task.tokenizer, test_data, 64)
    int8 = quantize_int8_dynamic(teacher)
    int8_embeddings = quantize_int8_dynamic(teacher, "bert.embeddings.word_embeddings")
    directory = Path(tempfile.mkdtemp(prefix="onnx-int8-"))
    graphs = {name: export_onnx(model, directory / f"{name}.onnx", 64)
              for name, model in (("float", teacher), ("int8", int8), ("int8-emb", int8_embeddings))}

    inputs = example_inputs(teacher, 1, 64)
    torch_inputs = {k: v for k, v in inputs.items() if k != "token_type_ids"}
    torch.set_num_threads(2)
    runs = {"PyTorch float": lambda: teacher(**torch_inputs), "PyTorch int8": lambda: int8(**torch_inputs)}
    sessions = {}
    for name, path in graphs.items():
        sessions[name] = onnx_session(path, threads=2)
        feed = session_feed(sessions[name], inputs)
        runs[f"ONNX Runtime {name}"] = lambda s=sessions[name], f=feed: s.run(None, f)
    timings: dict[str, list[float]] = {label: [] for label in runs}
    with torch.inference_mode():
        for run in runs.values():  # warm-up
            time_calls(run, 5, 1)
        for _ in range(rounds):  # A B C D E A B C D E ...
            for label, run in runs.items():
                timings[label] += time_calls(run, 1, repeats)

    models = {"PyTorch float": teacher, "PyTorch int8": int8}
    models.update({f"ONNX Runtime {name}": OnnxRuntimeModule(onnx_session(path)) for name, path in graphs.items()})
    sizes = {"PyTorch float": model_bytes(teacher), "PyTorch int8": model_bytes(int8)}
    sizes.update({f"ONNX Runtime {name}": path.stat().st_size for name, path in graphs.items()})
    predictions = {label: predict(model, test) for label, model in models.items()}
    reference = predictions["PyTorch int8"]
    base = statistics.median(timings["PyTorch float"])

    print(f"demo model, {len(test_data)} test sentences; latency: median of {rounds}x{repeats} interleaved runs, "
          "batch 1, sequence 64, 2 threads")
    print("| variant | size MB | latency b1 ms | speed-up vs PyTorch float | test acc | agrees with PyTorch int8 |")
    print("|---|---|---|---|---|---|")
    rows = []
    for label in runs:
        latency = statistics.median(timings[label])
        rows.append({"variant": label, "size_mb": sizes[label] / 2**20, "latency_ms": latency,
                     "speedup": base / latency, "accuracy": float((predictions[label] == test.labels).float().mean()),
                     "agrees_with_torch_int8": float((predictions[label] == reference).float().mean())})
        row = rows[-1]
        print(f"| {label} | {row['size_mb']:.1f} | {latency:.2f} | {row['speedup']:.2f}x | {row['accuracy']:.4f} "
              f"| {row['agrees_with_torch_int8']:.1%} |")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "onnx_int8.json").write_text(json.dumps({"test_sentences": len(test_data), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

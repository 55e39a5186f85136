"""The benchmarks still run end to end (their --quick modes), so the published tables can be redone.

The quick runs are smoke tests of the scripts: they assert what each script prints and writes; their
only timing checks are sanity ones (a batch of 16 takes longer than a batch of 1). Each is a
subprocess, and one of them alone leaves one of CI's two cores idle most of the time (imports,
conversions, Python between the timed calls), so the module starts every selected script at once,
``QUICK_CONCURRENCY`` at a time, longest first, and each test waits for its own. pytest runs this
module's tests one after another (with ``-n 2 --dist loadfile``, the other worker runs other files beside).
"""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).parent.parent
#: How many --quick scripts run at once (CI has 2 cores; AUTOCOMPRESS_QUICK_CONCURRENCY overrides).
QUICK_CONCURRENCY = int(os.environ.get("AUTOCOMPRESS_QUICK_CONCURRENCY", "2"))
#: Two scripts of 2 threads each share CI's 2 cores. OpenMP threads that spin while they wait for a
#: descheduled peer then cost a script 30x: a teacher's batch-1 pass measured 548 ms beside another
#: script, against its 17 ms alone, and slower than its batch of 16. Threads that sleep while they wait
#: (a passive wait policy) leave each script about half the machine instead.
QUICK_ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
#: Longest first (their CI times), so the last to start is a short one.
LONGEST_FIRST = ["search_efficiency.py", "demo_frontier.py", "llm_frontier.py", "embedding_frontier.py",
                 "runtimes.py", "techniques.py", "onnx_int8.py", "small_data.py"]


class QuickRuns:
    """``benchmarks/<script> --quick --out <dir>`` for every selected test of this module, started together."""

    def __init__(self, scripts: list[str], root: Path):
        self.outs = {script: root / Path(script).stem for script in scripts}
        self.results: dict[str, subprocess.CompletedProcess] = {}
        self.done = {script: threading.Event() for script in scripts}
        self.processes: list[subprocess.Popen] = []
        self.queue = sorted(scripts, key=lambda s: LONGEST_FIRST.index(s) if s in LONGEST_FIRST else len(LONGEST_FIRST))
        self.lock = threading.Lock()
        self.stopped = False
        self.workers = [threading.Thread(target=self._work, daemon=True) for _ in range(max(1, QUICK_CONCURRENCY))]
        for worker in self.workers:
            worker.start()

    def _next(self) -> str | None:
        with self.lock:
            return None if self.stopped or not self.queue else self.queue.pop(0)

    def _work(self) -> None:
        while (script := self._next()) is not None:
            command = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(self.outs[script])]
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       env=QUICK_ENV)
            with self.lock:
                self.processes.append(process)
            stdout, stderr = process.communicate()
            self.results[script] = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
            self.done[script].set()

    def result(self, script: str) -> tuple[subprocess.CompletedProcess, Path]:
        """Wait for ``script`` and require it to have succeeded: (its result, its --out folder)."""
        self.done[script].wait()
        result = self.results[script]
        assert result.returncode == 0, result.stderr[-3000:]
        return result, self.outs[script]

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            for process in self.processes:
                if process.poll() is None:
                    process.kill()


@pytest.fixture(scope="module")
def quick_runs(request, tmp_path_factory, smoke_demo_task):
    """Every --quick script this module's selected tests name (``@pytest.mark.quick_script``), started at once
    after the session's smoke demo teacher (conftest.py) is in the cache."""
    scripts = [marker.args[0] for item in request.session.items if item.module is request.module
               for marker in item.iter_markers("quick_script")]
    runs = QuickRuns(scripts, tmp_path_factory.mktemp("quick"))
    yield runs
    runs.stop()


@pytest.mark.slow
@pytest.mark.quick_script("demo_frontier.py")
def test_demo_frontier_quick_measures_every_model_again_in_a_fresh_process(quick_runs):
    result, out = quick_runs.result("demo_frontier.py")
    report = json.loads((out / "frontier.json").read_text())
    names = [row["name"] for row in report["rows"]]
    assert names[:5] == ["teacher", "int8 dynamic alone", "bf16 alone", "half depth + distillation",
                         "half depth + distillation + int8"]
    found = [row for row in report["rows"] if row["name"].startswith("search #")]
    assert found, "the search exported no model"
    for row in report["rows"]:
        assert row["b1"] > 0 and row["b16"] > row["b1"] and row["memory_mb"] > 0 and 0 < row["accuracy"] <= 1
    for row in found:  # the search-time figure is beside the fresh one
        assert row["search_b1"] > 0 and row["difference_pct"] is not None
    teacher = report["rows"][0]
    assert teacher["accuracy"] > 0.6  # a real (if briefly) fine-tuned teacher
    int8 = report["rows"][1]
    assert int8["memory_mb"] < 0.75 * teacher["memory_mb"]  # int8 linears really are smaller (embeddings stay float)
    for needle in ("| model | target | test acc |", "Targets:", "dominate each baseline",
                   "fresh-process vs search-time"):
        assert needle in result.stdout


@pytest.mark.slow
@pytest.mark.quick_script("llm_frontier.py")
def test_llm_frontier_quick_measures_every_causal_lm_again_in_a_fresh_process(quick_runs):
    result, out = quick_runs.result("llm_frontier.py")
    report = json.loads((out / "frontier.json").read_text())
    rows = {row["name"]: row for row in report["rows"]}
    names = list(rows)
    assert names[:4] == ["teacher", "int8 dynamic alone", "half the layers + distillation",
                         "half the layers + distillation + int8"]
    assert names[-1] == "teacher under llama.cpp (Q4_1 GGUF)" and "no GGUF" in rows[names[-1]]["missing"]
    found = [rows[name] for name in names[4:-1]]
    assert found and all(row["name"].startswith("search #") for row in found), names
    measured = [rows[name] for name in names[:-1]]
    for row in measured:
        assert row["ttft_ms"] > 0 and row["ms_per_token"] > 0 and row["memory_mb"] > 0, row["name"]
        assert row["perplexity"] > 1 and 0 <= row["accuracy"] <= 1, row["name"]
        assert f"| {row['name']} | " in result.stdout
    # Measured in other processes than the benchmark's, one each (quick mode: a forked child per model).
    pids = [row["pid"] for row in measured]
    assert report["pid"] not in pids and len(set(pids)) == len(pids)
    assert rows["teacher"]["memory_x"] == 1 and rows["int8 dynamic alone"]["memory_x"] > 1.3
    half, half_int8 = rows["half the layers + distillation"], rows["half the layers + distillation + int8"]
    assert half["memory_x"] > 1.3 and half_int8["memory_x"] > half["memory_x"]  # fewer layers, then int8 weights
    assert half["parameters"] < rows["teacher"]["parameters"]
    test_size = len(json.loads((out / "evaluation.json").read_text())["labels"])
    for row in found:  # the search-time figures beside the fresh ones; the reloaded model scores as it did
        assert row["search_ms_per_token"] > 0 and row["difference_pct"] is not None
        assert abs(row["accuracy"] - row["search_test_accuracy"]) <= 1 / test_size
    for needle in ("| model | time to first token ms | x | ms per token |", "Targets (found models",
                   "faster generation (ms per token): ", "less memory: ", "fresh-process vs search-time"):
        assert needle in result.stdout


@pytest.mark.slow
@pytest.mark.quick_script("search_efficiency.py")
def test_search_efficiency_quick_compares_both_samplers_seed_by_seed(quick_runs):
    result, out = quick_runs.result("search_efficiency.py")
    table = pd.read_csv(out / "search_efficiency.csv")
    runs = sorted(zip(table["sampler"], table["seed"], strict=True))
    assert runs == [("random", 0), ("tpe", 0)]
    assert (table["trials"] == 2).all() and (table["hypervolume"] >= 0).all()
    assert ((table["host_fraction"] > 0) & (table["host_fraction"] < 0.5)).all()
    # Checkpoints after each third of the budget: of 2 trials, after the first and the last.
    assert [c for c in table.columns if c.startswith("hv@")] == ["hv@1", "hv@2"]
    assert (table["work_s"] < table["optimize_s"]).all() and ((table["hv@2"] - table["hypervolume"]).abs() < 1e-9).all()
    for needle in ("| seed | default (TPE) hypervolume |", "ratio of means", "host share of optimisation wall time"):
        assert needle in result.stdout


@pytest.mark.slow
@pytest.mark.quick_script("onnx_int8.py")
def test_onnx_int8_quick_measures_onnx_runtime_int8_beside_pytorch(quick_runs):
    result, out = quick_runs.result("onnx_int8.py")
    rows = {row["variant"]: row for row in json.loads((out / "onnx_int8.json").read_text())["rows"]}
    assert list(rows) == ["PyTorch float", "PyTorch int8", "ONNX Runtime float", "ONNX Runtime int8",
                          "ONNX Runtime int8-emb"]
    for row in rows.values():
        assert row["latency_ms"] > 0 and 0.6 < row["accuracy"] <= 1 and row["agrees_with_torch_int8"] > 0.8
    # int8 weights really are in the graph: smaller files (embeddings too when asked).
    assert rows["ONNX Runtime int8"]["size_mb"] < 0.75 * rows["ONNX Runtime float"]["size_mb"]
    assert rows["ONNX Runtime int8-emb"]["size_mb"] < 0.5 * rows["ONNX Runtime int8"]["size_mb"]
    assert "| variant | size MB | latency b1 ms |" in result.stdout


@pytest.mark.slow
@pytest.mark.quick_script("techniques.py")
def test_techniques_quick_prints_section_5_of_results_md_with_a_row_per_variant(quick_runs):
    result, out = quick_runs.result("techniques.py")
    section = (out / "techniques.md").read_text()
    assert section.strip() in result.stdout  # what it prints is what it writes
    lines = section.splitlines()
    assert lines[0] == "## 5. Each technique alone on the demo model"
    assert "## 5. Each technique alone on the demo model" in (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert any(line.startswith("Machine: ") and "cores" in line for line in lines)
    header = lines.index("| variant | params x | memory x | latency b1 (ms) | speed-up b1 | latency b16 (ms) "
                         "| speed-up b16 | test acc | % of teacher | wall s |")
    rows = json.loads((out / "techniques.json").read_text())["rows"]
    assert len(lines[header + 2:]) == len(rows) == 12
    for row, line in zip(rows, lines[header + 2:], strict=True):
        assert line.startswith(f"| {row['variant']} | ") and line.count("|") == 11
        assert row["b1_ms"] > 0 and row["b16_ms"] > row["b1_ms"] and 0 < row["accuracy"] <= 1
    by_name = {row["variant"].split(" (")[0]: row for row in rows}
    assert by_name["FFN L1 pruning, keep 50%"]["params_x"] > 1  # structure techniques really remove weights
    assert by_name["int8 dynamic"]["memory_x"] > 1.3 and by_name["bf16 weights"]["memory_x"] > 1.9


@pytest.mark.quick_script("runtimes.py")
def test_runtimes_quick_puts_every_runtime_and_precision_side_by_side(quick_runs):
    result, out = quick_runs.result("runtimes.py")
    document = json.loads((out / "runtimes.json").read_text())
    assert document["cpu"]["summary"] in result.stdout  # the CPU's features are printed
    rows = {(row["model"], row["runtime"], row["precision"]): row for row in document["rows"]}
    models = {"teacher", "3 layers + vocab trim + distillation"}
    assert {model for model, _, _ in rows} == models and len(rows) == 18
    for model in models:
        for key in (("PyTorch eager", "fp32"), ("PyTorch eager", "int8 dynamic"), ("ONNX Runtime", "fp32"),
                    ("ONNX Runtime", "int8 dynamic"), ("ONNX Runtime", "int8 static"), ("OpenVINO", "f32"),
                    ("OpenVINO", "int8 static (NNCF)")):
            row = rows[(model, *key)]
            assert row["b1_ms"] > 0 and row["b16_ms"] > row["b1_ms"] and row["memory_mb"] > 0, (model, key)
            # Scored by the runtime that ran it: each runtime agrees with PyTorch fp32 on the same model.
            assert abs(row["accuracy"] - rows[(model, "PyTorch eager", "fp32")]["accuracy"]) <= 0.05, (model, key)
    teacher = rows[("teacher", "PyTorch eager", "fp32")]
    compact = rows[("3 layers + vocab trim + distillation", "PyTorch eager", "fp32")]
    assert compact["memory_mb"] < 0.5 * teacher["memory_mb"]  # vocabulary trimming really shrinks it
    assert rows[("teacher", "ONNX Runtime", "int8 static")]["memory_mb"] < 0.8 * rows[
        ("teacher", "ONNX Runtime", "fp32")]["memory_mb"]
    assert "| model | runtime | precision | b1 ms |" in result.stdout and "free floor" in result.stdout


@pytest.mark.slow
@pytest.mark.quick_script("small_data.py")
def test_small_data_quick_recovers_each_student_on_each_data_variant(quick_runs):
    result, out = quick_runs.result("small_data.py")
    section = (out / "small_data.md").read_text()
    assert section.strip() in result.stdout and section.startswith("## 8. Distillation with a quarter of the labels")
    assert "## 8. Distillation with a quarter of the labels" in (ROOT / "benchmarks" / "RESULTS.md").read_text()
    report = json.loads((out / "small_data.json").read_text())
    rows = {row["recovery"]: row for row in report["rows"]}
    assert list(rows) == ["25% labels", "+ unlabeled", "+ augmentation", "+ both", "all labels"]
    assert report["labelled"] == 50  # a quarter of the quick run's 200 training sentences
    # The sets really differ: the quarter alone, plus the other 150 texts, copies up to 200, both to 400, all 200.
    assert [row["texts"] for row in rows.values()] == [50, 200, 200, 400, 200]
    assert all(0 < row["accuracy"] <= 1 for row in rows.values())


@pytest.mark.slow
@pytest.mark.quick_script("embedding_frontier.py")
def test_embedding_frontier_quick_measures_every_embedding_model_again_in_a_fresh_process(quick_runs):
    result, out = quick_runs.result("embedding_frontier.py")
    report = json.loads((out / "frontier.json").read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows)[:5] == ["teacher", "int8 dynamic alone", "bf16 alone", "half the layers + distillation",
                              "half the layers + distillation + int8"]
    assert list(rows)[-1] == "teacher under ONNX Runtime int8"
    found = [name for name in rows if name.startswith("search #")]
    assert found == [name for name in report["search"]["found"]]  # the front, each re-measured
    assert rows["teacher"]["recall_at_10"] == pytest.approx(1.0) and rows["teacher"]["cosine"] == pytest.approx(1.0)
    measured = [row for row in rows.values() if "missing" not in row]
    assert rows["teacher under ONNX Runtime int8"]["target"] == "onnxruntime"  # dev installs onnxruntime
    for row in measured:
        assert row["latency_ms"] > 0 and row["memory_mb"] > 0 and 0 <= row["recall_at_10"] <= 1
        assert row["pid"] not in (report["pid"], None)  # measured in another process than the benchmark
    assert rows["half the layers + distillation"]["parameters"] < rows["teacher"]["parameters"]
    assert "Targets (recall@10 >= 0.95" in result.stdout and ("met by" in result.stdout or "MISSED" in result.stdout)

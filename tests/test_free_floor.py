"""The free floor, the probe and the CPU's features reach run.json, the report and the model card."""

import json

import optuna
import pytest

from autocompress.cli import main
from autocompress.cpu import cpu_features, parse_cpuinfo
from autocompress.study.floor import FLOOR_ATTR, best_free, comparison
from autocompress.testing import write_tiny_task

XEON = """processor	: 0
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
processor	: 1
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu
"""


def test_cpu_features_come_from_the_first_processors_flags():
    xeon = cpu_features(XEON, import_torch=False)
    assert xeon.model == "Intel(R) Xeon(R) Platinum 8480+" and xeon.flags_known
    assert xeon.amx_int8 and xeon.amx_bf16 and xeon.avx512_vnni and not xeon.avx_vnni
    assert (xeon.int8_acceleration, xeon.bf16_acceleration) == ("amx", "amx")
    assert xeon.summary() == ("Intel(R) Xeon(R) Platinum 8480+: AVX-512, VNNI, AVX512-BF16, AVX512-FP16, "
                              "AMX (int8, bf16)")
    old = cpu_features("model name : Old CPU\nflags : fpu sse2 avx avx2\n", import_torch=False)
    assert (old.int8_acceleration, old.bf16_acceleration) == ("none", "none")
    assert old.summary() == "Old CPU: AVX2, no AMX"
    unknown = cpu_features("", import_torch=False)
    assert not unknown.flags_known and "flags unknown" in unknown.summary()
    assert parse_cpuinfo("model name : X\n") == ("X", None)
    here = cpu_features().as_dict()
    assert here["summary"] and here["torch_capability"]


ROWS = [
    {"target": "onnxruntime", "variant": "int8 dynamic only", "val_accuracy": 0.80, "test_accuracy": 0.81,
     "speedup": 3.0},
    {"target": "openvino", "variant": "bf16 only", "val_accuracy": 0.89, "test_accuracy": 0.88, "speedup": 2.5},
    {"target": "openvino", "variant": "teacher as is", "val_accuracy": 0.90, "test_accuracy": 0.90, "speedup": 1.5},
    {"target": "onnxruntime", "variant": "bf16 only", "refused": "no bf16 kernels"},
]


def test_the_best_free_option_must_keep_accuracy_within_the_limit():
    # int8 is fastest but 10 points below the teacher: refused at a 1-point limit, chosen without a limit
    assert best_free(ROWS, 0.90, 0.01)["variant"] == "bf16 only"
    assert best_free(ROWS, 0.90, None)["variant"] == "int8 dynamic only"
    assert best_free(ROWS, 0.99, 0.01) is None
    line = comparison(ROWS, 5.0, 0.90, 0.01)
    assert line.startswith("2.00× faster than the best free option within the accuracy limit")
    assert "openvino, bf16 only (2.50× the teacher" in line
    assert comparison(ROWS[3:], 5.0, 0.90, 0.01) is None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("floor")
    write_tiny_task(root, 160, seed=4)
    out = root / "run"
    code = main(["search", "--model", str(root / "model"), "--data", str(root / "data.csv"), "--trials", "2",
                 "--out", str(out), "--repeats", "3", "--warmup", "1", "--no-progress", "--techniques", "quantization",
                 "--max-accuracy-drop", "0.5", "--free-floor", "onnxruntime,openvino"])
    assert code == 0
    return out


def test_the_floor_is_measured_on_the_named_runtimes_and_stored_with_the_study(run):
    study = optuna.load_study(study_name="local-search", storage=f"sqlite:///{run / 'study.db'}")
    rows = {(row["target"], row["variant"]): row for row in study.user_attrs[FLOOR_ATTR]}
    assert {target for target, _ in rows} == {"onnxruntime", "openvino"}
    assert set(rows) >= {("onnxruntime", "teacher as is"), ("onnxruntime", "int8 dynamic only"),
                         ("onnxruntime", "int8 static only"), ("openvino", "teacher as is"),
                         ("openvino", "int8 static only")}
    assert "bfloat16" in rows[("onnxruntime", "bf16 only")]["refused"]
    for row in rows.values():
        if "refused" not in row:
            assert row["latency_ms"] > 0 and row["speedup"] > 0 and 0 < row["test_accuracy"] <= 1
            assert row["teacher_latency_ms"] > 0 and row["memory_mb"] > 0
    probe = study.user_attrs["probe"]
    assert probe["target"] == "cpu" and {r["label"] for r in probe["rows"]} >= {"int8 dynamic only", "bf16 only"}


def test_run_json_the_report_and_the_model_card_name_the_cpus_features(run, tmp_path):
    features = json.loads((run / "run.json").read_text())["machine"]["cpu_features"]
    assert features["summary"] == cpu_features().summary() and "avx512_vnni" in features
    report = (run / "report.md").read_text()
    assert "## This machine and its runtimes" in report and "### Probe" in report and "### Free floor" in report
    assert f"| CPU features | {features['summary']} |" in report
    assert "teacher on onnxruntime, teacher as is" in report  # the free floor in the candidate table
    assert "- free floor: " in report and "faster than the best free option" in report
    html = (run / "report.html").read_text()
    assert "This machine and its runtimes" in html and "Free floor" in html
    assert main(["export", str(run), "--to", str(tmp_path / "shipped")]) == 0
    assert features["summary"] in (tmp_path / "shipped" / "README.md").read_text()

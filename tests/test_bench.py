"""The benchmark harness on tiny artifacts: columns, percentiles, failure rows, JSON, merge, plot, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeinc.bench import (
    SCHEMA,
    BenchError,
    BenchFileError,
    BenchReport,
    BenchRow,
    bench,
    measure_latency,
    merge_into,
    paper_baselines,
    pareto_front,
    read_bench_json,
    summarize_latencies,
)
from export_helpers import CLASSES, workspace

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(warmup=1, runs=3, batches=(1, 2), max_images=12)


# one session workspace (tests/export_helpers.py): its exports are made once, in one xdist worker
pytestmark = pytest.mark.xdist_group("export_workspace")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The session's tiny checkpoint, its image folders and its FP32 ONNX export (tests/export_helpers.py),
    shared with the export and runtime tests so that nothing is exported twice."""
    ws = workspace(tmp_path_factory)
    return {"root": ws.root, "run": ws.run, "data": ws.data / "val", "calib": ws.data, "labels": CLASSES,
            "onnx": ws.export("onnx", "fp32").directory, "ws": ws}


def test_latency_statistics():
    stats = summarize_latencies([0.010, 0.020, 0.030, 0.040, 0.100], batch=4)
    assert stats.runs == 5 and stats.min_ms == pytest.approx(10.0)
    assert stats.p50_ms == pytest.approx(30.0) and stats.mean_ms == pytest.approx(40.0)
    assert stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.images_per_s == pytest.approx(4 / 0.040)
    calls = []
    timed = measure_latency(lambda: calls.append(1), batch=1, warmup=3, runs=7, synchronize=lambda: calls.append(0))
    assert timed.runs == 7 and calls.count(1) == 10  # warm-up calls are not timed
    with pytest.raises(ValueError):
        summarize_latencies([], batch=1)


def test_pareto_front():
    def row(ms, top1):
        return BenchRow(artifact="a", format="onnx", status="ok", p50_ms=ms, top1=top1)

    a, b, c, d = row(10, 70.0), row(20, 75.0), row(30, 72.0), row(40, 80.0)
    assert pareto_front([d, c, b, a], lambda r: r.top1) == [a, b, d]  # c is beaten by b on both


def test_bench_checkpoint_and_onnx_rows(tiny, tmp_path):
    out = tmp_path / "report"
    report = bench([tiny["run"], tiny["onnx"]], data=tiny["data"], out=out, **FAST)
    by = {(r.format, r.backend, r.batch): r for r in report.rows}
    assert set(by) == {(f, b, n) for f, b in [("torch", "torch"), ("onnx", "onnxruntime"), ("onnx", "openvino")] for n in (1, 2)}
    for r in report.rows:
        assert r.status == "ok", r.reason
        # every column is filled (the deltas of the PyTorch row itself, its own parent, excepted)
        filled = r.model_dump(exclude={"reason", "parent", "top1_drop", "speedup", "size_ratio"})
        assert all(v is not None for v in filled.values()), filled
        assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms
        assert r.runs == 3 and r.threads >= 1 and r.peak_mem_mb > 0 and r.images_scored == 12  # --max-images
    torch_row, onnx_row = by[("torch", "torch", 1)], by[("onnx", "onnxruntime", 1)]
    assert onnx_row.parent == "torch/torch fp32" and onnx_row.speedup == pytest.approx(torch_row.mean_ms / onnx_row.mean_ms)
    assert onnx_row.top1 == pytest.approx(torch_row.top1) and onnx_row.top1_drop == pytest.approx(0.0)
    assert onnx_row.params == torch_row.params and onnx_row.macs == torch_row.macs
    assert by[("onnx", "onnxruntime", 2)].images_per_s > 0
    # files: JSON with the schema, CSV with every column, Markdown with baselines, the plot
    data = json.loads((out / "bench.json").read_text())
    assert data["schema"] == SCHEMA and len(data["rows"]) == 6
    assert data["header"]["machine"]["cpu"] and data["header"]["threads"] >= 1
    header_line = (out / "bench.csv").read_text().splitlines()[0]
    assert header_line.split(",") == list(BenchRow.model_fields)
    markdown = (out / "bench.md").read_text()
    assert "paper Table 2" in markdown and "75.20" in markdown and "Machine:" in markdown
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_broken_artifact_and_missing_runtime_become_status_rows(tiny, tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    shutil.copytree(tiny["onnx"], broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    artifact = broken / manifest["artifact"]
    artifact.write_bytes(b"this is not an ONNX graph")
    import hashlib

    manifest["artifact_sha256"] = hashlib.sha256(artifact.read_bytes()).hexdigest()  # sha matches: it just won't run
    (broken / "manifest.json").write_text(json.dumps(manifest))
    # hide OpenVINO from the measuring processes: its rows must say what to install
    hidden = tmp_path / "hide"
    hidden.mkdir()
    (hidden / "openvino.py").write_text("raise ImportError('No module named openvino (hidden by the test)')\n")
    monkeypatch.syspath_prepend(str(hidden))  # spawned children start from the parent's sys.path
    report = bench([broken, tiny["onnx"]], warmup=1, runs=2, batches=(1,))
    rows = {(r.artifact, r.backend): r for r in report.rows}
    bad = rows[(str(broken), "onnxruntime")]
    assert bad.status == "run failed" and bad.reason and bad.mean_ms is None
    missing = rows[(str(tiny["onnx"]), "openvino")]
    assert missing.status == "run failed" and "edgeinc[openvino]" in missing.reason
    assert rows[(str(tiny["onnx"]), "onnxruntime")].status == "ok"
    assert any("run failed" in n for n in report.notes())
    assert "top-1 / top-5: not measured" in report.to_markdown()


def test_tampered_artifact_is_an_error(tiny, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny["onnx"], tampered)
    manifest = json.loads((tampered / "manifest.json").read_text())
    with open(tampered / manifest["artifact"], "ab") as f:
        f.write(b"\0")
    with pytest.raises(BenchError, match="sha256"):
        bench([tampered], runs=1)


def test_bad_inputs_are_clear_errors(tiny, tmp_path):
    with pytest.raises(BenchError, match="no artifacts"):
        bench([])
    with pytest.raises(BenchError, match="no such artifact"):
        bench([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="holds no artifact"):
        bench([tmp_path / "empty"])
    other = tmp_path / "other"
    for name in ("cats", "dogs"):
        shutil.copytree(tiny["data"] / tiny["labels"][0], other / name)
    with pytest.raises(BenchError, match=r"classes \['cats', 'dogs'\] are not among the labels"):
        bench([tiny["onnx"]], data=other, runs=1)
    with pytest.raises(BenchError, match="batch sizes"):
        bench([tiny["onnx"]], batches=(0,))


def test_merge_device_rows(tiny, tmp_path):
    local = bench([tiny["onnx"]], warmup=1, runs=2, batches=(1,), backends={"onnx": ["onnxruntime"]})
    device = {
        "schema": SCHEMA,
        "header": {"machine_label": "pi5", "machine": {"cpu": "Cortex-A76", "arch": "aarch64", "cpu_flags": ["asimddp"],
                                                      "usable_cpus": 4, "gpu": None, "os": "Linux", "python": "3.11",
                                                      "libraries": {"ai-edge-litert": "2.3.0"}}},
        "rows": [{"artifact": "tflite-int8", "variant": "inception_v3_79", "format": "tflite", "backend": "litert",
                  "precision": "int8", "batch": 1, "status": "ok", "p50_ms": 5.0, "mean_ms": 5.5,
                  "parent_sha256": local.rows[0].parent_sha256, "machine": "this machine"}],
    }
    path = tmp_path / "device.json"
    path.write_text(json.dumps(device))
    merge_into(local, [path])
    merged = [r for r in local.rows if r.machine == "pi5"]
    assert len(merged) == 1 and merged[0].speedup is None  # no FP32 row measured on the Pi to compare with
    assert "Cortex-A76" in local.to_markdown()
    # a file that is not a benchmark, or a row with a wrong type: named file and field
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(BenchFileError, match="bad.json: field 'schema'"):
        read_bench_json(tmp_path / "bad.json")
    device["rows"][0]["batch"] = "one"
    (tmp_path / "badrow.json").write_text(json.dumps(device))
    with pytest.raises(BenchFileError, match=r"badrow.json: rows\[0\].batch"):
        read_bench_json(tmp_path / "badrow.json")


def test_report_without_accuracy_still_plots(tmp_path):
    rows = [BenchRow(artifact="a", variant="inception_v3_79", format="onnx", backend="onnxruntime", precision="fp32",
                     batch=1, status="ok", p50_ms=10.0, mean_ms=11.0, size_mb=4.0),
            BenchRow(artifact="b", variant="inception_v3_79", format="onnx", backend="onnxruntime", precision="int8",
                     batch=1, status="ok", p50_ms=6.0, mean_ms=6.5, size_mb=1.0)]
    header = {"machine": {"cpu": "x", "arch": "x86_64", "cpu_flags": [], "usable_cpus": 2, "gpu": None, "os": "Linux",
                          "python": "3.11", "libraries": {}}, "threads": 2, "batches": [1], "warmup": 1, "runs": 2,
              "min_time": 1.0, "data": None, "created": "now"}
    report = BenchReport(rows, header)
    files = report.write(tmp_path)
    assert files["plot"].stat().st_size > 1000
    assert [b.variant for b in paper_baselines()][:3] == ["inception_v3", "inception_v3_151", "inception_v3_79"]


def test_cli_bench(tiny, tmp_path, capsys):
    from edgeinc.cli import main

    code = main(["bench", str(tiny["onnx"]), "--runs", "2", "--warmup", "1", "--out", str(tmp_path / "cli"),
                 "--data", str(tiny["data"]), "--max-images", "6"])
    printed = capsys.readouterr().out
    assert code == 0 and "| inception_v3_79 | onnx | onnxruntime | fp32 | 1 | ok |" in printed
    assert (tmp_path / "cli" / "bench.json").is_file()
    assert main(["bench", str(tmp_path / "missing")]) == 2


def test_device_runner_rows_merge(tiny, tmp_path):
    """deploy/edgeinc_device_bench.py on a TFLite artifact (numpy + LiteRT only) -> rows bench --merge reads."""
    pytest.importorskip("ai_edge_litert")
    tflite = tmp_path / "tflite"  # a copy: the end of the test tampers with it
    shutil.copytree(tiny["ws"].export("tflite", "int8").directory, tflite)
    out = tmp_path / "device.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "edgeinc_device_bench.py"), str(tflite), "--data",
         str(tiny["data"]), "--runs", "5", "--warmup", "1", "--threads", "1", "--label", "pi", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    header, rows = read_bench_json(out)
    assert header["machine_label"] == "pi" and rows[0].precision == "int8" and rows[0].images_scored == 32  # 8 per class
    assert 0 < rows[0].p50_ms <= rows[0].p99_ms
    # the device's top-1 agrees with the workstation's LiteRT runner on the same artifact and images
    local = bench([tflite], data=tiny["data"], warmup=1, runs=2, batches=(1,))
    assert rows[0].top1 == pytest.approx(local.rows[0].top1, abs=100 / 32 + 1e-6)
    merge_into(local, [out])
    assert {r.machine for r in local.rows} == {"this machine", "pi"}
    # a tampered artifact is refused on the device too
    manifest = json.loads((tflite / "manifest.json").read_text())
    with open(tflite / manifest["artifact"], "ab") as f:
        f.write(b"\0")
    proc = subprocess.run([sys.executable, str(ROOT / "deploy" / "edgeinc_device_bench.py"), str(tflite)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "sha256" in proc.stderr
    assert np.isfinite(rows[0].mean_ms)

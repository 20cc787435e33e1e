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
from edgeinc.utils.cpu import bf16_unavailable_reason
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
    by = {(r.format, r.backend, r.precision, r.batch): r for r in report.rows}
    runs = [("torch", "torch", "fp32"), ("torch", "torch", "bf16"), ("onnx", "onnxruntime", "fp32"),
            ("onnx", "openvino", "fp32"), ("onnx", "openvino", "bf16")]
    assert set(by) == {(*run, n) for run in runs for n in (1, 2)}
    no_bf16 = bf16_unavailable_reason()
    optional = {"reason", "parent", "top1_drop", "speedup", "size_ratio", "floor_ms", "vs_floor", "below_floor", "emulated"}
    for r in report.rows:
        if r.precision == "bf16" and no_bf16:  # an AVX2-only CPU: the row says why instead of measuring
            assert r.status == "skipped" and "no native bfloat16" in r.reason and r.mean_ms is None
            continue
        assert r.status == "ok", r.reason
        assert r.executed == r.precision and r.denormals == "flushed"  # read back from the runtime
        # every column is filled (the deltas of the PyTorch row itself, its own parent, excepted)
        filled = r.model_dump(exclude=optional)
        assert all(v is not None for v in filled.values()), filled
        assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms and 0 <= r.other_cpu_share
        assert r.runs == 3 and r.threads >= 1 and r.peak_mem_mb > 0 and r.images_scored == 12  # --max-images
    torch_row, onnx_row = by[("torch", "torch", "fp32", 1)], by[("onnx", "onnxruntime", "fp32", 1)]
    assert onnx_row.parent == "torch/torch fp32" and onnx_row.speedup == pytest.approx(torch_row.mean_ms / onnx_row.mean_ms)
    assert onnx_row.top1 == pytest.approx(torch_row.top1) and onnx_row.top1_drop == pytest.approx(0.0)
    assert onnx_row.params == torch_row.params and onnx_row.macs == torch_row.macs
    assert by[("onnx", "openvino", "bf16", 1)].parent == ("onnx/openvino fp32" if not no_bf16 else None)
    assert by[("onnx", "onnxruntime", "fp32", 2)].images_per_s > 0
    # files: JSON with the schema, CSV with every column, Markdown with baselines, the plot
    data = json.loads((out / "bench.json").read_text())
    assert data["schema"] == SCHEMA and len(data["rows"]) == 10
    assert data["header"]["machine"]["cpu"] and data["header"]["threads"] >= 1
    assert data["header"]["machine"]["cpu_class"].startswith(("x86", "arm64"))
    header_line = (out / "bench.csv").read_text().splitlines()[0]
    assert header_line.split(",") == list(BenchRow.model_fields)
    markdown = (out / "bench.md").read_text()
    assert "paper Table 2" in markdown and "75.20" in markdown and "Machine:" in markdown and "| executed |" in markdown
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bf16_rows_are_skipped_with_the_reason_on_a_cpu_without_bf16(tiny, monkeypatch):
    from edgeinc.bench import core

    monkeypatch.setattr(core, "bf16_unavailable_reason", lambda: "this CPU has no native bfloat16 (test)")
    report = bench([tiny["onnx"]], warmup=1, runs=1, batches=(1,))
    rows = {(r.backend, r.precision): r for r in report.rows}
    assert rows[("openvino", "bf16")].status == "skipped" and "no native bfloat16" in rows[("openvino", "bf16")].reason
    assert rows[("openvino", "fp32")].status == "ok" and rows[("openvino", "fp32")].executed == "fp32"
    assert any("skipped" in note for note in report.notes())
    assert {r.precision for r in bench([tiny["onnx"]], warmup=1, runs=1, bf16=False).rows} == {"fp32"}


def test_a_busy_process_on_the_measured_core_marks_the_measurement_contended():
    import os
    import time

    from edgeinc.bench.contention import CONTENDED_SHARE, CpuWatch

    cpu = sorted(os.sched_getaffinity(0))[0]
    busy = subprocess.Popen([sys.executable, "-c", f"import os, time\nos.sched_setaffinity(0, {{{cpu}}})\n"
                             "end = time.time() + 3\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.5)  # let it start spinning
        with CpuWatch([cpu]) as watch:
            time.sleep(1.0)  # this process is idle: every busy tick of that core is someone else's
    finally:
        busy.kill()
        busy.wait()
    assert watch.result is not None and watch.result.share > 0.5 > CONTENDED_SHARE and watch.result.contended


def test_rows_faster_than_their_floor_are_flagged_not_given_a_ratio():
    from edgeinc.bench.floors import Floors, KernelRate, apply_floors

    floors = Floors(threads=2, measured=[KernelRate("int8", "openvino", "conv", macs=10**9, seconds=0.01),  # 100 GMAC/s
                                         KernelRate("fp32", "torch", "matmul", macs=10**9, seconds=0.02)])
    rows = [BenchRow(artifact="a", format="onnx", status="ok", batch=1, macs=10**9, p50_ms=p50, precision="int8",
                     executed=ex, executed_ops=ops)
            for p50, ex, ops in ((15.0, "int8", {"int8": 94}), (5.0, "int8", {"int8": 94}), (30.0, "fp32", {"fp32": 94}))]
    apply_floors(rows, floors)
    assert rows[0].floor_ms == pytest.approx(10.0) and rows[0].vs_floor == pytest.approx(1.5) and not rows[0].below_floor
    assert rows[1].below_floor and rows[1].vs_floor is None  # 5 ms < the 10 ms floor: a measurement error
    assert rows[2].floor_ms == pytest.approx(20.0)  # the floor of the precision the runtime executed
    markdown = BenchReport(rows, {"machine": {"cpu": "x", "arch": "x86_64", "cpu_flags": [], "usable_cpus": 2, "gpu": None,
                                              "os": "Linux", "python": "3.11", "libraries": {}},
                                  "threads": 2, "batches": [1], "warmup": 1, "runs": 1, "min_time": None,
                                  "created": "now"}).to_markdown()
    assert "below floor: measurement error" in markdown and "1.50x" in markdown


def test_isa_peak_follows_the_cpu_flags(monkeypatch):
    from edgeinc.bench import floors
    from edgeinc.utils import cpu

    monkeypatch.setattr(floors, "cpuinfo", lambda: {"cpu MHz": "2000.0"})
    monkeypatch.setattr(floors, "all_flags", lambda: frozenset({"avx2", "fma"}))
    peak = floors.isa_peak(2)
    assert peak["fp32"]["gmacs_per_s"] == pytest.approx(2 * 2.0 * 16) and "bf16" not in peak
    monkeypatch.setattr(floors, "all_flags", lambda: frozenset({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}))
    peak = floors.isa_peak(2)
    assert peak["fp32"]["gmacs_per_s"] == pytest.approx(128) and peak["int8"]["gmacs_per_s"] == pytest.approx(512)
    assert peak["bf16"]["gmacs_per_s"] == pytest.approx(256)
    monkeypatch.setattr(cpu, "all_flags", lambda: frozenset({"avx2", "fma"}))
    assert cpu.cpu_class() == "x86-avx2" and cpu.bf16_unavailable_reason() is not None


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_the_int8_floor_kernel_runs_on_int8_kernels(runtime, tmp_path):
    """A floor measured on a kernel that silently runs in float would be no int8 floor."""
    from edgeinc.bench.floors import CHAIN_LENGTH, _chain_graph
    from edgeinc.runtime.backends import openvino_executed, ort_executed

    graph = _chain_graph((1, 32, 16, 9, (1, 1)), int8=True)
    if runtime == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        executed = ort_executed(tmp_path / "optimized.onnx")
    else:
        import openvino as ov

        core = ov.Core()
        executed = openvino_executed(core.compile_model(core.read_model(graph, b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}))
    assert executed.ops == {"int8": CHAIN_LENGTH}, executed


def test_the_floor_chain_computes_what_it_counts():
    """The chained graph is the convolutions its multiply-adds count: 1x1 projections alternate with
    their way back, and each layer is a ReLU'd convolution of the previous one."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from edgeinc.bench.floors import CHAIN_LENGTH, _chain, _chain_graph, _chain_macs

    shape = (2, 8, 4, 5, (1, 1))
    assert [c[:2] for c in _chain(shape)] == [(8, 4), (4, 8)] * (CHAIN_LENGTH // 2)
    assert _chain_macs(shape) == CHAIN_LENGTH * 2 * 4 * 5 * 5 * 8
    graph = _chain_graph(shape, int8=False)
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(graph).graph.initializer}
    x = np.random.default_rng(1).random((2, 8, 5, 5), dtype=np.float32)
    expected = x
    for i in range(CHAIN_LENGTH):
        expected = np.maximum(np.einsum("oi,nihw->nohw", weights[f"w{i}"][:, :, 0, 0], expected), 0)
    got = ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


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
    assert code == 0 and "| inception_v3_79 | onnx | onnxruntime | fp32 | fp32 | 1 | ok |" in printed
    assert "| inception_v3_79 | onnx | openvino | bf16 |" in printed  # measured, or skipped with the reason
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

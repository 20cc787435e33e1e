"""ExecuTorch as a target and a runtime: the export-friendly pools, zero operators outside XNNPACK, parity,
the runner behind the runner protocol, threads, and the missing-package errors."""

from __future__ import annotations

import builtins

import pytest
import torch
from torch import nn

from edgeinc.export import ExportError
from edgeinc.export.executorch_target import AvgPoolAsDepthwiseConv, export_friendly
from edgeinc.models import create_model
from edgeinc.runtime import Runner, RuntimeUnavailableError, load_runner
from edgeinc.scoring import TOLERANCES, compare_logits
from export_helpers import CLASSES, workspace

pytestmark = pytest.mark.xdist_group("export_workspace")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    pytest.importorskip("executorch", reason="the executorch extra is installed by make")
    return workspace(tmp_path_factory)


@pytest.mark.parametrize("shape", [(2, 8, 35, 35), (1, 16, 17, 17), (3, 24, 8, 8), (1, 5, 1, 1), (2, 3, 2, 7)])
def test_the_depthwise_form_equals_the_padded_average_pool_that_counts_its_padding(shape):
    pool = nn.AvgPool2d(3, 1, padding=1)  # the Inception blocks' pool: count_include_pad=True
    x = torch.randn(*shape, dtype=torch.float64) * 10
    exact = AvgPoolAsDepthwiseConv(pool, shape[1]).double()
    exact.weight.fill_(1 / 9)  # 1/9 in float64: the same sum over the same 9 values (zeros included), / 9
    torch.testing.assert_close(exact(x), pool(x), rtol=0, atol=1e-12)
    as_exported = AvgPoolAsDepthwiseConv(pool, shape[1])  # float32: only the rounding of 1/9 differs
    torch.testing.assert_close(as_exported(x.float()), pool(x.float()), rtol=0, atol=1e-5)


def test_the_export_friendly_copy_keeps_the_weights_and_the_outputs():
    torch.manual_seed(0)
    model = create_model("inception_v3_79", num_classes=4, depth_multiplier=0.1, min_depth=8, aux_logits=False).eval()
    friendly, swapped = export_friendly(model, 79)
    assert swapped == 9 and not any(isinstance(m, nn.AvgPool2d) and m.padding for m in friendly.modules())
    assert model.state_dict().keys() == friendly.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), friendly.state_dict().values()))
    friendly.load_state_dict(model.state_dict(), strict=True)  # checkpoints load into it unchanged
    x = torch.randn(2, 3, 79, 79)
    with torch.no_grad():
        torch.testing.assert_close(friendly(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_operator_runs_in_the_xnnpack_delegate_and_parity_holds(ws, precision):
    result = ws.export("executorch", precision)
    m = result.manifest
    assert m.format == "executorch" and result.artifact.suffix == ".pte" and m.precision == precision
    settings = m.conversion.settings
    assert settings["delegate_calls"] == 1 and settings["non_delegated_ops"] == 0, settings
    assert all(check.passed for check in m.parity) and m.parity[-1].runtime == "executorch"
    assert m.input.dtype == "float32" and m.input.shape == [1, 3, 79, 79]  # INT8 quantizes inside the delegate
    if precision == "int8":
        q = m.quantization
        assert q.quantizer == "pt2e-xnnpack" and q.accuracy.int8.top1 >= 90 and q.size.ratio > 1.5
        assert {"executorch", "torchao"} <= set(m.tools)


def test_the_runner_matches_pytorch_and_cuts_batches(ws):
    from edgeinc.export.data import load_images
    from edgeinc.models import get_variant

    images = load_images(ws.data / "val", get_variant("inception_v3_79"), 8, CLASSES).images
    reference = load_runner(ws.run, threads=1).predict(images)
    runner = load_runner(ws.export("executorch", "fp32").directory, threads=1)
    assert isinstance(runner, Runner) and runner.name == "executorch" and runner.executed.main == "fp32"
    logits = runner.predict(images)  # 8 images through a batch-1 program
    assert logits.shape == (8, len(CLASSES)) and compare_logits(reference, logits, TOLERANCES["fp32"], "pte").passed


def test_the_thread_pool_is_set_once_per_process(ws):
    from edgeinc.runtime import backends

    folder = ws.export("executorch", "fp32").directory
    load_runner(folder, threads=1)
    assert backends._EXECUTORCH_THREADS == 1
    with pytest.raises(RuntimeUnavailableError, match="process-wide and already has 1 threads"):
        load_runner(folder, threads=2)


def test_bench_measures_the_pte_like_any_artifact(ws):
    from edgeinc.bench import bench

    report = bench([ws.export("executorch", "int8").directory], warmup=1, runs=2, batches=(1,), threads=1)
    (row,) = report.rows
    assert row.status == "ok" and row.backend == "executorch" and row.executed == "int8" and row.p50_ms > 0


def test_a_missing_executorch_names_the_extra(ws, monkeypatch):
    from edgeinc.export import export
    from edgeinc.runtime import backends

    real_import = builtins.__import__

    def no_executorch(name, *args, **kwargs):
        if name.startswith("executorch"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_executorch)
    with pytest.raises(ExportError, match=r"pip install 'edgeinc\[executorch\]'"):
        export(ws.run, "executorch", "fp32", out=ws.root / "none", calib_size=8)
    monkeypatch.setattr(backends, "_EXECUTORCH_THREADS", None)
    with pytest.raises(RuntimeUnavailableError, match=r"pip install 'edgeinc\[executorch\]'"):
        backends.ExecuTorchRunner(ws.root / "x.pte", load_runner(ws.export("onnx", "fp32").directory).spec)


def test_the_device_runner_runs_a_pte_as_on_the_device(ws, tmp_path):
    """deploy/edgeinc_device_bench.py on a .pte: numpy + ExecuTorch's runtime (which needs PyTorch), the
    same top-1 as edgeinc's own runner, rows that merge into a report."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from edgeinc.bench import read_bench_json

    folder = ws.export("executorch", "int8").directory
    script = Path(__file__).resolve().parents[1] / "deploy" / "edgeinc_device_bench.py"
    out = tmp_path / "device.json"
    done = subprocess.run([sys.executable, str(script), str(folder), "--data", str(ws.data / "val"), "--threads", "1",
                           "--runs", "3", "--warmup", "1", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    _, (row,) = read_bench_json(out)
    assert row.format == "executorch" and row.backend == "executorch" and row.precision == "int8"
    expected = json.loads((folder / "manifest.json").read_text())["quantization"]["accuracy"]["int8"]["top1"]
    assert row.top1 == pytest.approx(expected) and row.images_scored == 4 * 8

"""deploy/edgeinc_device_bench.py run as on the device: a Python that can import numpy, LiteRT and Pillow
and nothing else (no torch, no edgeinc), over a copied artifact folder. Flat folders of JPEG and PNG,
--threads, --dump-logits, an altered artifact, a uint8-input model, bad input, and rows that
`edgeinc bench --merge` reads. The aarch64 run of the same runner is `make arm-check` (deploy/arm_check.sh)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeinc.bench import BenchReport, merge_into, read_bench_json
from export_helpers import CLASSES, workspace

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "deploy" / "edgeinc_device_bench.py"
# Top-level modules the device has; anything else the runner imports would be missing there.
DEVICE_DISTRIBUTIONS = ("numpy", "ai-edge-litert", "pillow")
FORBIDDEN = {"torch", "torchvision", "edgeinc", "tensorflow", "onnx", "onnxruntime", "openvino", "pydantic", "yaml",
             "rich", "timm", "nncf", "onnx2tf", "tf_keras", "keras", "safetensors"}
# Runs the runner under `python -I -S`: no site-packages, no PYTHONPATH, no script folder on sys.path;
# then only the device folder and a folder of links to the three packages. At exit it records what
# was imported and what could have been.
WRAPPER = """\
import atexit, importlib.util, json, os, runpy, sys
site, runner, report = sys.argv[1:4]
sys.path[:0] = [os.path.dirname(runner), site]
def _report():
    with open(report, "w") as f:
        json.dump({"modules": sorted(sys.modules),
                   "importable": {m: importlib.util.find_spec(m) is not None for m in ("torch", "edgeinc", "numpy")}}, f)
atexit.register(_report)
sys.argv = [runner, *sys.argv[4:]]
runpy.run_path(runner, run_name="__main__")
"""

# one session workspace (tests/export_helpers.py): its exports are made once, in one xdist worker
pytestmark = pytest.mark.xdist_group("export_workspace")


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """A device's folder: the runner and copied artifact folders; a site of links to numpy, LiteRT, Pillow."""
    pytest.importorskip("ai_edge_litert")
    ws = workspace(tmp_path_factory)
    root = tmp_path_factory.mktemp("device")
    shutil.copy2(RUNNER, root / RUNNER.name)
    exports = {"fp32": ws.export("tflite", "fp32"), "int8": ws.export("tflite", "int8"),
               "uint8": ws.export("tflite", "int8", int8_io="uint8", out=ws.root / "artifacts-uint8io")}
    for name, result in exports.items():
        shutil.copytree(result.directory, root / name)
    site = root / "site"
    site.mkdir()
    for name in DEVICE_DISTRIBUTIONS:
        dist = importlib.metadata.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:  # the package, its bundled libraries (numpy.libs) and its metadata (versions)
            if not (site / top).exists():
                (site / top).symlink_to(Path(dist.locate_file(top)))
    (root / "device_python.py").write_text(WRAPPER)
    return {"root": root, "site": site, "ws": ws}


def run_device(device, *args: str, tmp: Path):
    """The runner as the device runs it; (process, the modules it had imported at exit)."""
    report = tmp / f"modules-{len(list(tmp.glob('modules-*')))}.json"
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(device["root"] / "device_python.py"), str(device["site"]),
         str(device["root"] / RUNNER.name), str(report), *args],
        cwd=device["root"], capture_output=True, text=True, timeout=120,
    )
    seen = json.loads(report.read_text())
    assert seen["importable"] == {"torch": False, "edgeinc": False, "numpy": True}, "the isolation leaked"
    imported = {m.split(".")[0] for m in seen["modules"]}
    assert not imported & FORBIDDEN, f"the runner imported {sorted(imported & FORBIDDEN)}"
    return proc


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


@pytest.fixture(scope="module")
def flat(device, tmp_path_factory):
    """A flat folder of images without labels: JPEG and PNG mixed, RGB, grayscale and RGBA."""
    folder = tmp_path_factory.mktemp("flat")
    val = device["ws"].data / "val"
    for i, name in enumerate(CLASSES):
        with Image.open(val / name / "0.png") as im:
            im.convert("RGB").save(folder / f"{name}_a.jpg", quality=90)
            im.convert("L" if i % 2 else "RGBA").save(folder / f"{name}_b.png")
    return folder


def test_flat_folder_threads_and_dump(device, flat, tmp_path):
    outs = {}
    for threads in (1, 2):
        out, dump = tmp_path / f"t{threads}.json", tmp_path / f"t{threads}.npy"
        proc = run_device(device, "int8", "--data", str(flat), "--threads", str(threads), "--warmup", "1", "--runs", "3",
                          "--out", str(out), "--dump-logits", str(dump), tmp=tmp_path)
        assert proc.returncode == 0, proc.stderr
        header, rows = read_bench_json(out)
        assert header["threads"] == rows[0].threads == threads
        assert rows[0].top1 is None and rows[0].images_scored is None  # no labels: outputs only
        meta = json.loads((tmp_path / f"t{threads}.npy.json").read_text())
        outs[threads] = np.load(dump)
        assert meta["images"] == sorted(p.name for p in flat.iterdir()) and meta["labels"] == [None] * 8
        assert outs[threads].shape == (8, len(CLASSES)) and outs[threads].dtype == np.float32
        assert meta["input"]["dtype"] == "int8" and meta["sha256"] == rows[0].sha256
        printed = dict(line.split(": ", 1) for line in proc.stdout.splitlines()[:-1])  # image: label (logit)
        assert list(printed) == meta["images"]
        assert [v.split()[0] for v in printed.values()] == [CLASSES[i] for i in outs[threads].argmax(1)]
    np.testing.assert_array_equal(outs[1], outs[2])  # --threads changes speed, not the outputs


def test_class_folders_rows_merge(device, tmp_path):
    out, dump = tmp_path / "fp32.json", tmp_path / "fp32.npy"
    val = device["ws"].data / "val"
    proc = run_device(device, "fp32", "--data", str(val), "--threads", "1", "--warmup", "1", "--runs", "3",
                      "--label", "pi5", "--out", str(out), "--dump-logits", str(dump), tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    header, rows = read_bench_json(out)
    assert rows[0].machine == header["machine_label"] == "pi5" and rows[0].images_scored == 32
    assert header["emulated"] is False and "emulated" not in header["machine"]["arch"] and rows[0].emulated is None
    meta = json.loads((tmp_path / "fp32.npy.json").read_text())
    assert meta["labels"] == [CLASSES.index(Path(p).parts[0]) for p in meta["images"]]
    assert meta["predicted"] == np.load(dump).argmax(1).tolist()
    assert rows[0].top1 == pytest.approx(100 * np.mean(np.array(meta["predicted"]) == np.array(meta["labels"])))
    # marked as emulated, the rows still merge, and the report says their latency is not a device figure
    emu = tmp_path / "emu.json"
    proc = run_device(device, "int8", "--threads", "1", "--warmup", "0", "--runs", "2", "--emulated", "--out", str(emu),
                      tmp=tmp_path)
    assert proc.returncode == 0 and "EMULATED" in proc.stdout, proc.stderr
    emu_header, emu_rows = read_bench_json(emu)
    assert emu_header["emulated"] is True and emu_header["machine"]["arch"].endswith("(emulated)")
    assert emu_rows[0].machine == emu_header["machine_label"] and emu_rows[0].machine.endswith("(emulated)")
    assert emu_rows[0].emulated is True
    report = BenchReport([], {"machine": emu_header["machine"], "threads": 1, "batches": [1], "warmup": 0, "runs": 2,
                              "min_time": None, "data": None, "created": "now"})
    merge_into(report, [out, emu])
    assert {r.machine for r in report.rows} == {"pi5", emu_rows[0].machine}
    text = report.to_markdown()
    assert "not a device figure" in text and f"{emu_rows[0].p50_ms:.2f} (emulated)" in text


def test_uint8_input_model(device, tmp_path):
    manifest = json.loads((device["root"] / "uint8" / "manifest.json").read_text())
    assert manifest["input"]["dtype"] == "uint8" and manifest["output"]["dtype"] == "uint8"
    out, dump = tmp_path / "u8.json", tmp_path / "u8.npy"
    proc = run_device(device, "uint8", "--data", str(device["ws"].data / "val"), "--threads", "1", "--warmup", "1",
                      "--runs", "2", "--out", str(out), "--dump-logits", str(dump), tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    _, rows = read_bench_json(out)
    assert rows[0].precision == "int8" and rows[0].images_scored == 32
    logits, scale = np.load(dump), manifest["output"]["quantization"]["scale"]
    steps = logits / scale  # dequantized uint8 outputs: whole steps of the output scale
    assert np.allclose(steps, np.round(steps), atol=1e-3)
    # edgeinc's own LiteRT runner, fed the same pixels, quantizes them to uint8 itself: the same outputs
    from edgeinc.runtime import load_runner

    spec = importlib.util.spec_from_file_location("device_bench", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    meta = json.loads((tmp_path / "u8.npy.json").read_text())
    pixels = np.stack([module.preprocess(device["ws"].data / "val" / p, manifest["preprocessing"]) for p in meta["images"]])
    expected = load_runner(device["root"] / "uint8", "litert", threads=1).predict(pixels)
    assert np.abs(logits - expected).max() <= scale * 1.001


def test_altered_artifact_and_bad_input(device, tmp_path):
    tampered = tmp_path / "int8"
    shutil.copytree(device["root"] / "int8", tampered)
    manifest = json.loads((tampered / "manifest.json").read_text())
    blob = tampered / manifest["artifact"]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    proc = run_device(device, str(tampered), "--runs", "1", "--out", str(tmp_path / "x.json"), tmp=tmp_path)
    assert proc.returncode == 2 and last_line(proc.stderr).startswith("error: ")
    assert str(blob) in proc.stderr and "sha256" in proc.stderr and "manifest.json" in proc.stderr
    assert not (tmp_path / "x.json").exists()

    mixed = tmp_path / "mixed"
    (mixed / "red").mkdir(parents=True)
    shutil.copy2(device["ws"].data / "val" / "red" / "0.png", mixed / "loose.png")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"not a jpeg")
    cases = [
        (["int8", "--threads", "0"], "--threads must be >= 1"),
        (["int8", "--data", str(mixed)], "holds both images and folders"),
        (["int8", "--data", str(broken), "--runs", "1"], f"{broken / 'a.jpg'}: not a readable image"),
        (["int8", "--dump-logits", str(tmp_path / "d.npy")], "--dump-logits needs --data"),
        ([str(tmp_path / "nowhere")], "no manifest.json"),
    ]
    for args, message in cases:
        proc = run_device(device, *args, "--out", str(tmp_path / "y.json"), tmp=tmp_path)
        assert proc.returncode == 2 and last_line(proc.stderr).startswith("error: "), (args, proc.stderr)
        assert message in last_line(proc.stderr), (args, proc.stderr)

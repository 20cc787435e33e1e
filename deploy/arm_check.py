"""The Python half of deploy/arm_check.sh (`make arm-check`), run by the workstation's .venv.

    arm_check.py prepare --work W --payload P [--fp32 DIR --int8 DIR --uint8 DIR --run RUN --data VAL]
    arm_check.py compare --work W --payload P --results DIR --device-out D --host-out H ...
    arm_check.py render --work W --results DIR      (the Markdown again from the recorded JSON)

`prepare` finds or makes a trained model (given artifacts; else `make demo`'s demo/; else the CLI:
edgeinc data synth, train recipes/quickstart.yaml, export tflite fp32 / int8 / int8 with uint8 IO) and
writes the payload: the device runner, the artifact folders, the images (the labelled validation split,
and a flat folder of JPEG and PNG images), and run.sh, the plan of runner calls that arm_check.sh runs
unchanged on aarch64 (qemu-user, in the chroot) and on this x86-64 machine. `compare` checks the two
sets of outputs against each other, merges the rows with `edgeinc bench --merge` and writes
benchmarks/results/arm_check.{md,json}; it exits 1 when a gating check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "deploy" / "edgeinc_device_bench.py"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
DEVICE_LABEL = "aarch64 (emulated)"
HOST_LABEL = "x86-64 workstation"
# Parity limits (issue 14): fp32 relative to the image's largest |logit|, INT8 in output quantization
# steps, and top-1 agreement over the validation images.
FP32_REL_LIMIT = 1e-4
INT8_STEP_LIMIT = 1
TOP1_AGREEMENT_LIMIT = 99.5
FLAT_PER_CLASS = 4
EMULATED_NOTE = "latency under qemu-user emulation: NOT a device figure (use a real device for latency)"
# The CPUs emulated. XNNPACK picks kernels by the features the kernel reports (qemu's CPU model) and, for
# some Cortex cores, by the core type that cpuinfo reads from /proc/cpuinfo (synthesized here, since
# qemu 7.2 shows the host's). "main" runs the whole plan; the others the INT8 model on the flat folder.
PROFILES = [
    {"name": "main", "qemu": "bookworm", "cpu": "max,sme=off", "core": None, "gating": True,
     "what": "qemu's most capable Arm CPU without SME: NEON, dotprod, i8mm, bf16, SVE2; no core type"},
    {"name": "a53", "qemu": "bookworm", "cpu": "cortex-a53", "core": (0x0, 0xD03, 4), "gating": True,
     "what": "Cortex-A53 (Raspberry Pi 3, little cores of older phones): NEON, no dotprod"},
    {"name": "a55", "qemu": "bookworm", "cpu": "cortex-a76", "core": (0x2, 0xD05, 0), "gating": True,
     "what": "Cortex-A55 core type (little cores of most phones) on qemu's cortex-a76 instruction set: NEON + dotprod"},
    {"name": "a72", "qemu": "bookworm", "cpu": "cortex-a72", "core": (0x0, 0xD08, 3), "gating": True,
     "what": "Cortex-A72 (Raspberry Pi 4): NEON, no dotprod"},
    {"name": "a76", "qemu": "bookworm", "cpu": "cortex-a76", "core": (0x4, 0xD0B, 1), "gating": True,
     "what": "Cortex-A76 (Raspberry Pi 5): NEON + dotprod"},
    {"name": "sme", "qemu": "bookworm", "cpu": "max", "core": None, "gating": False,
     "what": "qemu 7.2's default CPU, with SME: not gating - why the main profile turns SME off"},
    {"name": "sme-qemu10", "qemu": "backports", "cpu": "max", "core": None, "gating": True,
     "what": "the same CPU with SME under qemu 10 (bookworm-backports): tells qemu's bugs from LiteRT's"},
]
# What a Cortex core's /proc/cpuinfo says besides its part number (as on a Raspberry Pi 3/4/5)
CORE_FEATURES = {0xD03: "fp asimd evtstrm crc32 cpuid", 0xD08: "fp asimd evtstrm crc32 cpuid",
                 0xD05: "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
                 0xD0B: "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"}


class CheckError(Exception):
    pass


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run(cmd: list[str], what: str) -> float:
    """A CLI step in the foreground (its progress shows); seconds it took."""
    print("$ " + " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], cwd=ROOT)
    if proc.returncode != 0:
        fail(f"{what} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}")
    return time.perf_counter() - start


def manifest_of(folder: Path, what: str, fmt: str = "tflite") -> dict:
    path = folder / "manifest.json"
    if not path.is_file():
        fail(f"{what} {folder}: no manifest.json (an artifact folder that edgeinc export wrote is expected)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{path}: not a readable JSON manifest ({e})")
    if manifest.get("format") != fmt:
        fail(f"{path}: field 'format' is {manifest.get('format')!r}; {what} must be a {fmt} artifact")
    return manifest


def edgeinc_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeinc", *args]


def shown(cmd: list[str]) -> str:
    """A CLI step as a reader would type it in the repository."""
    return "edgeinc " + " ".join(shlex.quote(str(c)) for c in cmd[3:]).replace(f"{ROOT}/", "")


# -- prepare --------------------------------------------------------------------------------------------


# The recipe file where the checkout has it, else by name (edgeinc ships its recipes inside the package)
QUICKSTART = "recipes/quickstart.yaml" if (ROOT / "recipes" / "quickstart.yaml").is_file() else "quickstart"


def make_model(work: Path) -> dict:
    """Train the quickstart and export it through the CLI only, each step skipped when already done."""
    base = work / "model"
    patches, run_dir, art, art_u8 = base / "patches", base / "quickstart", base / "artifacts", base / "artifacts-uint8io"
    done_file = base / "steps.json"
    done = json.loads(done_file.read_text()) if done_file.is_file() else {}
    steps = [
        ("synth", edgeinc_cli("data", "synth", str(patches)), patches / "synth.json"),
        ("train", edgeinc_cli("train", QUICKSTART, "--set", f"data.root={patches}", "--out", str(run_dir)), None),
        ("export fp32", edgeinc_cli("export", str(run_dir), "--target", "tflite", "--precision", "fp32",
                                    "--calib", str(patches), "--out", str(art)), art / "tflite-fp32" / "manifest.json"),
        ("export int8", edgeinc_cli("export", str(run_dir), "--target", "tflite", "--precision", "int8",
                                    "--calib", str(patches), "--out", str(art)), art / "tflite-int8" / "manifest.json"),
        ("export int8 uint8-io", edgeinc_cli("export", str(run_dir), "--target", "tflite", "--precision", "int8",
                                             "--int8-io", "uint8", "--calib", str(patches), "--out", str(art_u8)),
         art_u8 / "tflite-int8" / "manifest.json"),
    ]
    base.mkdir(parents=True, exist_ok=True)
    for name, cmd, product in steps:
        if name in done and (product is None or product.exists()):
            print(f"{name}: done in an earlier run ({done[name]['seconds']:.0f} s then)")
            continue
        if name == "train" and run_dir.exists():
            shutil.rmtree(run_dir)  # an interrupted training: start over (the steps after it depend on it)
            for later in ("export fp32", "export int8", "export int8 uint8-io"):
                done.pop(later, None)
        seconds = run(cmd, name)
        done[name] = {"command": shown(cmd), "seconds": seconds}
        tmp = done_file.with_name(done_file.name + ".tmp")
        tmp.write_text(json.dumps(done, indent=2) + "\n")
        os.replace(tmp, done_file)
    commands = [shown(cmd) for _, cmd, _ in steps]
    return {"source": "made by arm-check through the CLI", "commands": commands,
            "seconds": {k: v["seconds"] for k, v in done.items()}, "fp32": art / "tflite-fp32",
            "int8": art / "tflite-int8", "uint8": art_u8 / "tflite-int8", "val": patches / "val", "run": run_dir,
            "calib": patches}


def export_uint8(work: Path, run_dir: Path, calib: Path, source_sha: str, tag: str) -> tuple[Path, dict]:
    out = work / f"{tag}-uint8io-{source_sha[:12]}"
    seconds = {}
    if not (out / "tflite-int8" / "manifest.json").is_file():
        cmd = edgeinc_cli("export", str(run_dir), "--target", "tflite", "--precision", "int8", "--int8-io", "uint8",
                          "--calib", str(calib), "--out", str(out))
        seconds["export int8 uint8-io"] = run(cmd, "the uint8-IO export")
    return out / "tflite-int8", seconds


def export_executorch(work: Path, run_dir: Path, calib: Path, source_sha: str) -> tuple[dict[str, Path], dict]:
    """The FP32 and PT2E INT8 .pte of the same run (ExecuTorch, XNNPACK delegate), made once per checkpoint."""
    out = work / f"executorch-{source_sha[:12]}"
    seconds = {}
    for precision in ("fp32", "int8"):
        if not (out / f"executorch-{precision}" / "manifest.json").is_file():
            cmd = edgeinc_cli("export", str(run_dir), "--target", "executorch", "--precision", precision,
                              "--calib", str(calib), "--out", str(out))
            seconds[f"export executorch {precision}"] = run(cmd, f"the ExecuTorch {precision} export")
    return {p: out / f"executorch-{p}" for p in ("fp32", "int8")}, seconds


def find_model(args) -> dict:
    work = Path(args.work)
    if args.fp32 or args.int8:
        if not (args.fp32 and args.int8):
            fail("give both --fp32 and --int8 artifact folders (or neither: the check then makes its own)")
        fp32, int8 = Path(args.fp32).resolve(), Path(args.int8).resolve()
        m32 = manifest_of(fp32, "--fp32")
        manifest_of(int8, "--int8")
        val = Path(args.data).resolve() if args.data else None
        root = (m32.get("recipe") or {}).get("data", {}).get("root")
        if val is None and root and (Path(root) / "val").is_dir():
            val = Path(root).resolve() / "val"
        if val is None:
            fail("--data: the labelled validation split (one folder per class) is needed with given artifacts")
        calib = val.parent if (val.parent / "train").is_dir() else val
        found = {"source": "given artifacts", "commands": [], "seconds": {}, "fp32": fp32, "int8": int8, "val": val,
                 "uint8": Path(args.uint8).resolve() if args.uint8 else None, "calib": calib,
                 "run": Path(args.run).resolve() if args.run else None}
        if found["uint8"] is None and args.run:
            found["uint8"], found["seconds"] = export_uint8(work, found["run"], calib, m32["source"]["sha256"], "given")
        return found
    demo = ROOT / "demo"
    parts = [demo / "artifacts" / "tflite-fp32" / "manifest.json", demo / "artifacts" / "tflite-int8" / "manifest.json",
             demo / "patches" / "val", demo / "quickstart" / "ema.safetensors"]
    if all(p.exists() for p in parts):
        m32 = manifest_of(demo / "artifacts" / "tflite-fp32", "demo")
        uint8, seconds = export_uint8(work, demo / "quickstart", demo / "patches", m32["source"]["sha256"], "demo")
        return {"source": "make demo's outputs (demo/)", "commands": ["make demo"], "seconds": seconds,
                "fp32": demo / "artifacts" / "tflite-fp32", "int8": demo / "artifacts" / "tflite-int8",
                "uint8": uint8, "val": demo / "patches" / "val", "run": demo / "quickstart", "calib": demo / "patches"}
    return make_model(work)


def copy_artifact(src: Path, dst: Path, fmt: str = "tflite") -> dict:
    manifest = manifest_of(src, "artifact", fmt)
    dst.mkdir(parents=True)
    for name in ("manifest.json", manifest["artifact"]):
        shutil.copy2(src / name, dst / name)
    return manifest


def flat_folder(val: Path, dst: Path) -> list[dict]:
    """FLAT_PER_CLASS images of each class, without their class folders, JPEG and PNG mixed (RGB,
    grayscale and RGBA too): outputs only."""
    from PIL import Image

    dst.mkdir(parents=True)
    made = []
    classes = sorted(d for d in val.iterdir() if d.is_dir())
    picks = [p for d in classes for p in sorted(x for x in d.iterdir() if x.suffix.lower() in IMAGE_SUFFIXES)[:FLAT_PER_CLASS]]
    for k, src in enumerate(picks):
        kind = ("jpeg-rgb", "png-rgb", "jpeg-gray", "png-rgba")[k % 4]
        name = f"img_{k:03d}.{'jpg' if kind.startswith('jpeg') else 'png'}"
        with Image.open(src) as im:
            im = im.convert({"jpeg-rgb": "RGB", "png-rgb": "RGB", "jpeg-gray": "L", "png-rgba": "RGBA"}[kind])
            if kind.startswith("jpeg"):
                im.save(dst / name, format="JPEG", quality=90)
            else:
                im.save(dst / name, format="PNG")
        made.append({"image": name, "kind": kind, "from": f"{src.parent.name}/{src.name}"})
    return made


def plan_runs(has_uint8: bool, has_pte: bool) -> list[dict]:
    """Every runner call: on the device under its profile; on x86-64 once per distinct call (host_ref). The
    .pte runs use the second Python path (site "executorch": PyTorch + ExecuTorch beside the LiteRT venv)."""
    runs = [
        # the validation split, 2 threads: parity, top-1 and the (emulated) latency rows
        {"name": "fp32_val", "artifact": "artifacts/fp32", "data": "images/val", "threads": 2, "warmup": 2, "runs": 10},
        {"name": "int8_val", "artifact": "artifacts/int8", "data": "images/val", "threads": 2, "warmup": 2, "runs": 10},
        # a flat folder of JPEG and PNG images; --threads 1 against 2 on the same images
        {"name": "int8_flat_t1", "artifact": "artifacts/int8", "data": "images/flat", "threads": 1, "warmup": 1, "runs": 2},
        {"name": "int8_flat_t2", "artifact": "artifacts/int8", "data": "images/flat", "threads": 2, "warmup": 1, "runs": 2},
        # an artifact whose bytes no longer match its manifest's sha256: exit 2 naming the file
        {"name": "sha256_mismatch", "artifact": "artifacts/int8-tampered", "data": None, "threads": 1, "warmup": 0,
         "runs": 1, "expect_rc": 2},
    ]
    if has_uint8:
        runs.insert(4, {"name": "uint8_flat_t2", "artifact": "artifacts/uint8", "data": "images/flat", "threads": 2,
                        "warmup": 1, "runs": 2})
    if has_pte:
        runs[2:2] = [{"name": f"pte_{p}_val", "artifact": f"artifacts/pte-{p}", "data": "images/val", "threads": 2,
                      "warmup": 1, "runs": 5, "site": "executorch"} for p in ("fp32", "int8")]
    for profile in PROFILES[1:]:  # the INT8 model on the other CPUs, compared with x86-64's int8_flat_t2
        runs.append({"name": f"int8_flat_{profile['name']}", "profile": profile["name"], "host_ref": "int8_flat_t2",
                     "artifact": "artifacts/int8", "data": "images/flat", "threads": 2, "warmup": 1, "runs": 2})
    for r in runs:
        r.setdefault("expect_rc", 0)
        r.setdefault("profile", "main")
        r.setdefault("host_ref", r["name"])
        r.setdefault("site", "litert")
    return runs


def run_script(runs: list[dict]) -> str:
    """One shell script for both machines: `PY=python3 [LAUNCH=qemu] [ET_PYTHONPATH=DIR] sh run.sh OUT device
    PROFILE` runs that profile's calls; `sh run.sh OUT host` every distinct call. Only the Python, its path
    for the .pte runs (PyTorch + ExecuTorch, kept out of the LiteRT runs) and the label differ."""
    lines = [
        "#!/bin/sh",
        "# Written by deploy/arm_check.py: the same runner calls on aarch64 (emulated) and on x86-64.",
        "set -u",
        'OUT=$1; MODE=$2; PROFILE=${3:-main}; LAUNCH=${LAUNCH:-}; mkdir -p "$OUT"',
        f'if [ "$MODE" = device ]; then LABEL={shlex.quote(DEVICE_LABEL)}; EMU=--emulated; '
        f"else LABEL={shlex.quote(HOST_LABEL)}; EMU=; fi",
        # what the runner's Python can import: only numpy, LiteRT and Pillow on the device (and with the
        # .pte runs' path: PyTorch and ExecuTorch besides)
        "env_json() {",
        '    PYTHONPATH=$2 $LAUNCH "$PY" -c "import importlib.util as u, json, platform, sys; print(json.dumps({\'python\': '
        "sys.version.split()[0], 'machine': platform.machine(), 'importable': {m: u.find_spec(m) is not None for m in "
        "('numpy', 'ai_edge_litert', 'PIL', 'tflite_runtime', 'torch', 'executorch', 'edgeinc', 'tensorflow', "
        "'onnxruntime')}}))\" >\"$OUT/env-$PROFILE$1.json\"",
        "}",
        'env_json "" ""',
        '[ -n "${ET_PYTHONPATH:-}" ] && env_json -executorch "$ET_PYTHONPATH"',
        "run() {",
        '    profile=$1; name=$2; ref=$3; site=$4; shift 4',
        '    if [ "$MODE" = device ] && [ "$profile" != "$PROFILE" ]; then return; fi',
        '    if [ "$MODE" = host ] && [ "$ref" != "$name" ]; then return; fi',
        '    start=$(date +%s.%N)',
        '    pp=; [ "$site" = executorch ] && pp=${ET_PYTHONPATH:-}',
        '    PYTHONPATH=$pp $LAUNCH "$PY" edgeinc_device_bench.py "$@" --label "$LABEL" $EMU >"$OUT/$name.stdout" 2>"$OUT/$name.stderr"',
        '    rc=$?',
        '    echo "$start $(date +%s.%N)" >"$OUT/$name.time"; echo $rc >"$OUT/$name.rc"',
        '    echo "  $MODE $name: exit $rc, $(tail -n 1 "$OUT/$name.stdout")$(tail -n 1 "$OUT/$name.stderr" | grep "^error:")"',
        "}",
    ]
    for r in runs:
        cmd = [r["profile"], r["name"], r["host_ref"], r["site"], r["artifact"], "--threads", str(r["threads"]),
               "--warmup", str(r["warmup"]), "--runs", str(r["runs"])]
        if r["data"]:
            cmd += ["--data", r["data"], "--dump-logits", f"$OUT/{r['name']}.npy"]
        cmd += ["--out", f"$OUT/{r['name']}.json"]
        lines.append("run " + " ".join(f'"$OUT"/{c[5:]}' if c.startswith("$OUT/") else shlex.quote(c) for c in cmd))
    return "\n".join(lines) + "\n"


def cpuinfo_file(core: tuple[int, int, int], cpus: int) -> str:
    """/proc/cpuinfo as an arm64 kernel writes it for this core (what cpuinfo reads the core type from)."""
    variant, part, revision = core
    block = (f"processor\t: {{i}}\nBogoMIPS\t: 108.00\nFeatures\t: {CORE_FEATURES[part]}\nCPU implementer\t: 0x41\n"
             f"CPU architecture: 8\nCPU variant\t: {variant:#x}\nCPU part\t: {part:#05x}\nCPU revision\t: {revision}\n")
    return "\n".join(block.format(i=i) for i in range(cpus)) + "\n"


def profiles_tsv(payload: Path) -> str:
    """name, qemu, QEMU_CPU and the synthesized cpuinfo file (or -) of each profile, for arm_check.sh."""
    rows = []
    for p in PROFILES:
        cpuinfo = "-"
        if p["core"]:
            cpuinfo = f"cpuinfo/{p['name']}"
            (payload / "cpuinfo").mkdir(exist_ok=True)
            (payload / cpuinfo).write_text(cpuinfo_file(p["core"], os.cpu_count() or 1))
        rows.append("\t".join((p["name"], p["qemu"], p["cpu"], cpuinfo)))
    return "\n".join(rows) + "\n"


def subsample(val: Path, dst: Path, max_images: int | None) -> None:
    """The labelled split, every class kept: at most max_images in all, spread over the classes."""
    classes = sorted(d for d in val.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_class = -(-max_images // len(classes)) if max_images else None
    for d in classes:
        (dst / d.name).mkdir(parents=True)
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for p in files[:per_class]:
            shutil.copy2(p, dst / d.name / p.name)


def cmd_prepare(args) -> int:
    model = find_model(args)
    payload = Path(args.payload)
    if payload.exists():
        shutil.rmtree(payload)
    payload.mkdir(parents=True)
    shutil.copy2(RUNNER, payload / RUNNER.name)
    manifests = {"fp32": copy_artifact(model["fp32"], payload / "artifacts" / "fp32"),
                 "int8": copy_artifact(model["int8"], payload / "artifacts" / "int8")}
    has_uint8 = bool(model.get("uint8"))
    if has_uint8:
        manifests["uint8"] = copy_artifact(model["uint8"], payload / "artifacts" / "uint8")
        if manifests["uint8"]["input"]["dtype"] != "uint8":
            fail(f"{model['uint8']}/manifest.json: field 'input.dtype' is {manifests['uint8']['input']['dtype']!r}, not uint8")
    # the .pte of the same checkpoint (ExecuTorch), exported here from its run
    pte_skipped = None
    if args.no_executorch:
        pte_skipped = "left out (ARM_CHECK_EXECUTORCH=0)"
    elif model.get("run"):
        ptes, seconds = export_executorch(Path(args.work), Path(model["run"]), Path(model["calib"]),
                                          manifests["fp32"]["source"]["sha256"])
        model["seconds"].update(seconds)
        for precision, folder in ptes.items():
            manifests[f"pte_{precision}"] = copy_artifact(folder, payload / "artifacts" / f"pte-{precision}", "executorch")
    else:
        pte_skipped = "no run directory to export the .pte from (give --run with --fp32 / --int8)"
    tampered = payload / "artifacts" / "int8-tampered"
    copy_artifact(model["int8"], tampered)
    blob = tampered / manifests["int8"]["artifact"]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte in the weights: the file still parses, the sha256 does not match
    blob.write_bytes(bytes(data))
    subsample(model["val"], payload / "images" / "val", args.max_images)
    flat = flat_folder(payload / "images" / "val", payload / "images" / "flat")
    runs = plan_runs(has_uint8, pte_skipped is None)
    (payload / "run.sh").write_text(run_script(runs))
    (payload / "profiles.tsv").write_text(profiles_tsv(payload))
    plan = {
        "model": {k: (str(v) if isinstance(v, Path) else v) for k, v in model.items()},
        "manifests": {k: {"artifact": m["artifact"], "sha256": m["artifact_sha256"], "precision": m["precision"],
                          "variant": m["model"]["variant"], "input": m["input"], "output": m["output"],
                          "source_sha256": m["source"].get("sha256"), "tools": m.get("tools"),
                          "export_accuracy": (m.get("quantization") or {}).get("accuracy"),
                          "conversion_backend": (m.get("conversion") or {}).get("backend"), "format": m["format"],
                          "delegation": {key: v for key, v in ((m.get("conversion") or {}).get("settings") or {}).items()
                                         if key in ("delegate_calls", "non_delegated_ops")} or None}
                      for k, m in manifests.items()},
        "val_images": sum(1 for _ in (payload / "images" / "val").rglob("*") if _.is_file()),
        "flat_images": flat, "runs": runs, "profiles": PROFILES, "executorch_skipped": pte_skipped,
    }
    (payload / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    print(f"payload: {payload} ({plan['val_images']} validation images, {len(flat)} in the flat folder, "
          f"{len(runs)} runs; model: {model['source']})")
    return 0


# -- compare --------------------------------------------------------------------------------------------


def load_side(out: Path, name: str) -> dict | None:
    """One runner call's exit status, output, JSON report and dumped logits; None when it never ran."""
    if not (out / f"{name}.rc").is_file():
        return None
    side = {"rc": int((out / f"{name}.rc").read_text()), "stdout": (out / f"{name}.stdout").read_text(),
            "stderr": (out / f"{name}.stderr").read_text()}
    start, end = map(float, (out / f"{name}.time").read_text().split())
    side["seconds"] = end - start
    if side["rc"] == 0 and (out / f"{name}.json").is_file():
        side["report"] = json.loads((out / f"{name}.json").read_text())
    if side["rc"] == 0 and (out / f"{name}.npy").is_file():
        side["logits"] = np.load(out / f"{name}.npy")
        side["meta"] = json.loads((out / f"{name}.npy.json").read_text())
    return side


def parity(dev: dict, host: dict, kind: str) -> dict:
    """aarch64 outputs against x86-64 outputs of the same file on the same images."""
    if dev["meta"]["images"] != host["meta"]["images"]:
        raise CheckError("the two machines listed different images")
    a, b = dev["logits"].astype(np.float64), host["logits"].astype(np.float64)
    top1 = 100.0 * float((a.argmax(1) == b.argmax(1)).mean())
    result = {"images": len(a), "top1_agreement_pct": top1, "max_abs_diff": float(np.abs(a - b).max()),
              "images_differing": int((np.abs(a - b).max(1) > 0).sum()),
              # a broken kernel often gives every image the same output: count the different outputs
              "distinct_outputs": {"aarch64": len(np.unique(a, axis=0)), "x86_64": len(np.unique(b, axis=0))}}
    if kind == "fp32":
        rel = np.abs(a - b).max(1) / np.maximum(np.abs(b).max(1), 1e-12)
        result.update(max_rel_diff=float(rel.max()), limit=f"max |diff| / max |logit| <= {FP32_REL_LIMIT:g} per image",
                      passed=bool(rel.max() <= FP32_REL_LIMIT))
    else:
        quantization = dev["meta"]["output"].get("quantization")
        scale = quantization["scale"] if quantization else output_step(b)
        steps = np.rint(np.abs(a - b) / scale).astype(int)
        result.update(output_scale=scale, max_steps=int(steps.max()),
                      step_histogram={str(k): int((steps.max(1) == k).sum()) for k in range(int(steps.max()) + 1)},
                      limit=f"<= {INT8_STEP_LIMIT} output quantization step", passed=bool(steps.max() <= INT8_STEP_LIMIT))
    result["passed"] = result["passed"] and top1 >= TOP1_AGREEMENT_LIMIT
    return result


def output_step(logits: np.ndarray) -> float:
    """The quantization step of float logits that an INT8 graph dequantized inside (an INT8 .pte keeps float
    output): the smallest gap between its distinct values, checked to be a grid of them."""
    values = np.unique(logits)
    if len(values) < 2:
        raise CheckError("the INT8 .pte gave a single output value: no quantization step to compare in")
    step = float(np.diff(values).min())
    off_grid = np.abs((values - values[0]) / step - np.rint((values - values[0]) / step)).max()
    if off_grid > 0.01:
        raise CheckError(f"the INT8 .pte's float logits are not on a quantization grid (off by {off_grid:.2f} steps)")
    return step


def history(results_json: Path, key: str, this_run: dict) -> list[dict]:
    """This run and the latest earlier runs of the same key: the first (root file system built) and the
    cached one, as they were measured."""
    runs = []
    if results_json.is_file():
        try:
            runs = [r for r in json.loads(results_json.read_text()).get("runs", []) if r.get("key") == key]
        except (OSError, json.JSONDecodeError):
            runs = []
    runs.append(this_run)
    keep = []
    for state in ("built", "cached"):
        same = [r for r in runs if r["rootfs"] == state]
        if same:
            keep.append(same[-1])
    return sorted(keep, key=lambda r: r["finished"])


def fmt_ms(row: dict) -> str:
    return f"{row['p50_ms']:.1f} / {row['mean_ms']:.1f}"


def cmd_compare(args) -> int:
    from edgeinc.bench import read_bench_json
    from edgeinc.bench.machine import describe, machine_info
    from edgeinc.utils.io import atomic_write_json, atomic_write_text

    payload, work = Path(args.payload), Path(args.work)
    dev_out, host_out = Path(args.device_out), Path(args.host_out)
    plan = json.loads((payload / "plan.json").read_text())
    profiles = {p["name"]: p for p in plan["profiles"]}
    skipped = dict(s.split("=", 1) for s in args.skipped)  # profile -> why it did not run
    checks: list[dict] = []

    def check(name: str, passed: bool, detail: str, gating: bool = True) -> None:
        checks.append({"check": name, "passed": bool(passed), "gating": gating, "detail": detail})
        mark = ("ok  " if passed else "FAIL") if gating else ("ok  " if passed else "seen")
        print(f"{mark} {name}: {detail}" + ("" if gating else " (not gating)"))

    runs = [r for r in plan["runs"] if r["profile"] not in skipped]
    sides = {r["name"]: (load_side(dev_out, r["name"]), load_side(host_out, r["host_ref"])) for r in runs}
    for r in runs:
        gating = profiles[r["profile"]]["gating"]
        for where, side in zip(("aarch64", "x86-64"), sides[r["name"]]):
            if where == "x86-64" and r["host_ref"] != r["name"]:
                continue
            rc = None if side is None else side["rc"]
            check(f"{r['name']} exits {r['expect_rc']} on {where}", rc == r["expect_rc"],
                  f"exit {rc}" + (f"; stderr: {side['stderr'].strip().splitlines()[-1]}" if side and side["rc"] else ""),
                  gating)

    def ok(name: str) -> bool:
        dev, host = sides.get(name, (None, None))
        return bool(dev and host and "report" in dev and "report" in host)

    # the device's Python: only numpy, LiteRT and Pillow, and really aarch64
    dev_env = json.loads((dev_out / "env-main.json").read_text())
    wanted = {"numpy": True, "ai_edge_litert": True, "PIL": True, "torch": False, "executorch": False, "edgeinc": False,
              "tensorflow": False, "onnxruntime": False}
    check("aarch64 Python imports only numpy, LiteRT and Pillow", dev_env["machine"] == "aarch64"
          and all(dev_env["importable"][m] == v for m, v in wanted.items()),
          f"machine {dev_env['machine']}, Python {dev_env['python']}, importable: "
          + ", ".join(m for m, v in dev_env["importable"].items() if v))
    if any(r["site"] == "executorch" for r in runs):
        et_env = dev_out / "env-main-executorch.json"
        et_env = json.loads(et_env.read_text()) if et_env.is_file() else {"machine": None, "importable": {}}
        importable = et_env["importable"]
        check("the .pte runs' Python adds only PyTorch and ExecuTorch", et_env["machine"] == "aarch64"
              and all(importable.get(m) for m in ("numpy", "PIL", "torch", "executorch"))
              and not any(importable.get(m) for m in ("edgeinc", "tensorflow", "onnxruntime")),
              "importable: " + ", ".join(m for m, v in importable.items() if v))

    # parity, delegation and the CPU each run saw
    parities, cpus = {}, {}
    for r in runs:
        if r["expect_rc"] != 0 or not ok(r["name"]):
            continue
        dev, host = sides[r["name"]]
        gating = profiles[r["profile"]]["gating"]
        header = dev["report"]["header"]
        cpus[r["name"]] = {"profile": r["profile"], "cpu": header["machine"]["cpu"].split(" (measured under")[0],
                           "features": header["machine"]["cpu_flags"], "interpreter": header.get("interpreter")}
        if "logits" in dev and "logits" in host:
            kind = "fp32" if r["artifact"].endswith("fp32") else "int8"  # an INT8 .pte: steps of its float output
            try:
                p = parity(dev, host, kind)
            except CheckError as e:
                check(f"{r['name']} parity", False, str(e), gating)
                continue
            p.update(profile=r["profile"], x86_run=r["host_ref"])
            parities[r["name"]] = p
            figure = (f"max rel diff {p['max_rel_diff']:.2e}" if kind == "fp32" else
                      f"max {p['max_steps']} step(s) of {p['output_scale']:.4g}, {p['images_differing']} image(s) differ")
            check(f"{r['name']} aarch64 vs x86-64", p["passed"],
                  f"{figure}; top-1 agreement {p['top1_agreement_pct']:.2f}% of {p['images']} ({p['limit']}, top-1 >= "
                  f"{TOP1_AGREEMENT_LIMIT}%)", gating)
        a, b = header.get("interpreter"), host["report"]["header"].get("interpreter")
        if r["site"] == "executorch":
            # the .pte is one XNNPACK delegate call (its manifest); the aarch64 build must register that backend
            # (a .pte whose backend is missing does not load) and run the threads asked for
            delegation = plan["manifests"][r["artifact"].rsplit("/", 1)[1].replace("-", "_")]["delegation"]
            check(f"{r['name']} runs in ExecuTorch's XNNPACK backend", bool(a and b) and "XnnpackBackend" in a["backends"]
                  and a["threads"] == b["threads"] == r["threads"] and delegation == {"delegate_calls": 1, "non_delegated_ops": 0},
                  f"aarch64 {a}, x86-64 {b}; the .pte: {delegation}", gating)
            continue
        # XNNPACK took the same graph on both CPUs (a model that fails to delegate on Arm shows here)
        delegated = "XNNPACK delegate" in dev["stderr"]
        check(f"{r['name']} delegated alike", delegated and a == b and bool(a and a["delegate_nodes"]),
              f"aarch64 {a}, x86-64 {b}; XNNPACK delegate created on aarch64: {delegated}", gating)

    # --threads: the same outputs with 1 and 2 threads on the device, and the rows say which
    if ok("int8_flat_t1") and ok("int8_flat_t2"):
        d1, d2 = sides["int8_flat_t1"][0], sides["int8_flat_t2"][0]
        same = float(np.abs(d1["logits"] - d2["logits"]).max())
        threads = (d1["report"]["rows"][0]["threads"], d2["report"]["rows"][0]["threads"])
        check("--threads 1 vs 2 on aarch64 (int8, flat folder)", same == 0.0 and threads == (1, 2),
              f"max |diff| {same:g}; rows record threads {threads[0]} and {threads[1]}")

    # the flat folder: JPEG and PNG mixed, no labels -> outputs for every image, no top-1
    if ok("int8_flat_t1"):
        flat = sides["int8_flat_t1"][0]
        kinds = sorted({Path(i).suffix for i in flat["meta"]["images"]})
        row = flat["report"]["rows"][0]
        check("flat folder of JPEG + PNG images (no labels)", kinds == [".jpg", ".png"] and row["top1"] is None
              and len(flat["meta"]["images"]) == len(plan["flat_images"]),
              f"{len(flat['meta']['images'])} images ({', '.join(kinds)}; RGB, grayscale and RGBA), outputs only "
              f"(top-1 {row['top1']})")

    # the altered artifact
    bad = sides["sha256_mismatch"][0] or {"rc": None, "stderr": ""}
    name = plan["manifests"]["int8"]["artifact"]
    last = bad["stderr"].strip().splitlines()[-1] if bad["stderr"].strip() else "no message"
    check("altered artifact refused on aarch64", bad["rc"] == 2 and "sha256" in last and name in last
          and last.startswith("error:"), last)

    # the uint8-input model
    if "uint8_flat_t2" in sides:
        dev = sides["uint8_flat_t2"][0]
        q = dev["meta"]["input"] if dev and "meta" in dev else None
        check("uint8-input model on aarch64", bool(q) and q["dtype"] == "uint8",
              f"input {q['dtype']} (scale {q['quantization']['scale']:.4g}, zero point {q['quantization']['zero_point']})"
              if q else "did not run")

    # the header says emulated, and the rows merge into edgeinc bench
    val_runs = [r["name"] for r in runs if r["data"] == "images/val"]
    dev_json = [dev_out / f"{n}.json" for n in val_runs if ok(n)]
    host_json = [host_out / f"{n}.json" for n in val_runs if ok(n)]
    for n in (n for n in val_runs if ok(n)):
        # identical logits must score identically (numpy's default sort broke ties differently on the two CPUs)
        scored = [sides[n][i]["report"]["rows"][0] for i in (0, 1)]
        check(f"{n} scores alike on both", all(scored[0][k] == scored[1][k] for k in ("top1", "top5", "images_scored")),
              "aarch64 / x86-64: " + ", ".join(f"{k} {scored[0][k]:.2f} / {scored[1][k]:.2f}" for k in ("top1", "top5")))
    merged_md, merged_rows = "", []
    if dev_json:
        header, rows = read_bench_json(dev_json[0])
        check("device header marks the emulation", header["machine"]["arch"] == DEVICE_LABEL
              and header.get("emulated") is True and rows[0].machine == DEVICE_LABEL,
              f"arch {header['machine']['arch']!r}, label {rows[0].machine!r}, emulation: {header.get('emulation')}")
        merged_dir = work / "merged"
        files = [str(p.resolve().relative_to(ROOT)) if p.resolve().is_relative_to(ROOT) else str(p) for p in dev_json + host_json]
        proc = subprocess.run(edgeinc_cli("bench", "--merge", *files, "--out", str(merged_dir)),
                              cwd=ROOT, capture_output=True, text=True)
        if (merged_dir / "bench.json").is_file():
            merged_rows = json.loads((merged_dir / "bench.json").read_text())["rows"]
        merged_md = (merged_dir / "bench.md").read_text() if (merged_dir / "bench.md").is_file() else ""
        device_rows = [r for r in merged_rows if r["machine"] == DEVICE_LABEL]
        check("rows merge with `edgeinc bench --merge`", proc.returncode == 0 and len(device_rows) == len(dev_json)
              and all(r.get("emulated") for r in device_rows)
              and f"Rows measured on **{DEVICE_LABEL}**" in merged_md and "not a device figure" in merged_md,
              f"exit {proc.returncode}; {len(dev_json + host_json)} files -> {str(merged_dir).replace(f'{ROOT}/', '')}/bench.md")

    # -- the record ------------------------------------------------------------------------------------
    finished = time.time()
    total = finished - float(args.started)
    stages = dict(s.split("=", 1) for s in args.stage)
    this_run = {"key": args.key, "rootfs": args.rootfs_state, "total_s": round(total, 1),
                "stages_s": {k: float(v) for k, v in stages.items()}, "model": plan["model"]["source"],
                "model_steps_s": {k: round(v, 1) for k, v in plan["model"]["seconds"].items()},
                "host_load_average": list(os.getloadavg()),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished))}
    results = Path(args.results)
    history_runs = history(results / "arm_check.json", args.key, this_run)
    rootfs = Path(args.rootfs)
    packages = json.loads((rootfs / ".edgeinc-packages.json").read_text())
    et_packages = json.loads(Path(args.executorch_packages).read_text()) if args.executorch_packages else []
    size = rootfs / ".edgeinc-size-mb"
    passed = all(c["passed"] for c in checks if c["gating"])
    main_dev = sides[val_runs[0]][0]["report"] if ok(val_runs[0]) else None
    record = {
        "what": "deploy/edgeinc_device_bench.py and the FP32 / full-INT8 TFLite and FP32 / INT8 ExecuTorch .pte of a "
                "trained model on aarch64 (qemu-user emulation) against x86-64 LiteRT and ExecuTorch on the same files "
                "and images",
        "script": "make arm-check (deploy/arm_check.sh, deploy/arm_check.py)", "passed": passed,
        "host": machine_info(),
        "target": {"machine": main_dev["header"]["machine"] if main_dev else None,
                   "debian": (rootfs / "etc" / "debian_version").read_text().strip(), "python": dev_env["python"],
                   "qemu": args.qemu, "qemu_new": args.qemu_new or None,
                   "packages": {p["name"]: p["version"] for p in packages}, "rootfs_key": args.key,
                   "executorch_packages": {p["name"]: p["version"] for p in et_packages},
                   "executorch_skipped": plan.get("executorch_skipped"),
                   "rootfs_size_mb": int(size.read_text()) if size.is_file() else None},
        "model": plan["model"], "artifacts": plan["manifests"], "val_images": plan["val_images"],
        "flat_images": plan["flat_images"], "profiles": plan["profiles"], "skipped_profiles": skipped,
        "limits": {"fp32_rel": FP32_REL_LIMIT, "int8_steps": INT8_STEP_LIMIT, "top1_agreement_pct": TOP1_AGREEMENT_LIMIT},
        "parity": parities, "cpus": cpus,
        "top1": {n: {"aarch64": sides[n][0]["report"]["rows"][0]["top1"], "x86_64": sides[n][1]["report"]["rows"][0]["top1"],
                     "images": sides[n][0]["report"]["rows"][0]["images_scored"]} for n in val_runs if ok(n)},
        "latency_note": EMULATED_NOTE,
        "latency_ms": {r["name"]: {"aarch64_emulated": {k: sides[r["name"]][0]["report"]["rows"][0][k]
                                                        for k in ("p50_ms", "mean_ms", "p90_ms", "runs", "threads")},
                                   "x86_64": {k: sides[r["name"]][1]["report"]["rows"][0][k]
                                              for k in ("p50_ms", "mean_ms", "p90_ms", "runs", "threads")},
                                   "profile": r["profile"]}
                       for r in runs if r["expect_rc"] == 0 and ok(r["name"])},
        "run_seconds": {r["name"]: {"aarch64": sides[r["name"]][0]["seconds"] if sides[r["name"]][0] else None,
                                    "x86_64": sides[r["name"]][1]["seconds"] if sides[r["name"]][1] else None}
                        for r in runs},
        "checks": checks, "runs": history_runs,
        "device_rows": [json.loads(p.read_text()) for p in dev_json],
    }
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results / "arm_check.json", record)
    atomic_write_text(results / "arm_check.md", markdown(record, describe, merged_md, merged_rows))
    gating = [c for c in checks if c["gating"]]
    print(f"\n{'PASSED' if passed else 'FAILED'}: {sum(c['passed'] for c in gating)}/{len(gating)} checks "
          f"(+{len(checks) - len(gating)} not gating); {total:.0f} s (root file system {args.rootfs_state}) -> "
          f"{results / 'arm_check.md'}, {results / 'arm_check.json'}")
    return 0 if passed else 1


def markdown(rec: dict, describe, merged_md: str, merged_rows: list[dict]) -> str:
    t = rec["target"]
    machine = lambda info: describe(info).split("**Machine:** ", 1)[1].replace("  \n", " ")  # noqa: E731
    lines = [
        "# The device path on aarch64 (emulated): `make arm-check`",
        "",
        f"{rec['what']}. Written by `make arm-check` (`deploy/arm_check.sh`, `deploy/arm_check.py`) from the run "
        f"it describes; **{'all gating checks passed' if rec['passed'] else 'SOME GATING CHECKS FAILED'}**.",
        "",
        f"**Host:** {machine(rec['host'])}",
        "",
        f"**Target:** {machine(t['machine']) if t['machine'] else 'n/a'}",
        f"Debian {t['debian']} arm64 (debootstrap minbase, {t['rootfs_size_mb']} MB), {t['qemu']}"
        + (f"; for the SME cross-check {t['qemu_new']}" if t["qemu_new"] else "") + ". The runner's Python "
        f"({t['python']}) holds only: " + ", ".join(f"{k} {v}" for k, v in sorted(t["packages"].items())
                                                     if k not in ("pip", "setuptools")) + ".",
        (f"The .pte runs add a second path ({len(t['executorch_packages'])} packages, installed for aarch64 by the "
         "host's pip: " + ", ".join(f"{k} {v}" for k, v in sorted(t["executorch_packages"].items())
                                    if k.startswith(("torch", "executorch"))) + ", and what they import)."
         if t.get("executorch_packages") else f"No .pte runs: {t.get('executorch_skipped') or 'not planned'}."),
        "",
        f"**Model:** {rec['artifacts']['fp32']['variant']}, {rec['model']['source']}"
        + (": " + "; ".join(f"`{c}`" for c in rec["model"]["commands"]) if rec["model"]["commands"] else "") + ".",
        "",
        "| artifact | file | input | output | sha256 |",
        "|---|---|---|---|---|",
    ]
    for k, m in rec["artifacts"].items():
        q = m["output"].get("quantization")
        lines.append(f"| {k} | `{m['artifact']}` | {m['input']['dtype']} {m['input']['shape']} | {m['output']['dtype']}"
                     + (f" (scale {q['scale']:.4g}, zero point {q['zero_point']})" if q else "") + f" | `{m['sha256'][:16]}` |")
    lines += ["", "## Parity: aarch64 (emulated) against x86-64, same files, same images, same runtime", "",
              f"Limits: FP32 max |diff| <= {rec['limits']['fp32_rel']:g} x the image's max |logit|; INT8 <= "
              f"{rec['limits']['int8_steps']} output quantization step (an INT8 .pte's float output: the step of the grid "
              "its values lie on); top-1 identical on >= "
              f"{rec['limits']['top1_agreement_pct']}% of the images.", "",
              "| run | CPU profile | images | aarch64 vs x86-64 | images differing | distinct outputs aarch64 / x86-64 "
              "| top-1 agreement | result |", "|---|---|---|---|---|---|---|---|"]
    gating_of = {p["name"]: p["gating"] for p in rec["profiles"]}
    for name, p in rec["parity"].items():
        figure = f"max rel diff {p['max_rel_diff']:.2e}" if "max_rel_diff" in p else \
            f"max {p['max_steps']} step(s) of {p['output_scale']:.4g}"
        verdict = ("pass" if p["passed"] else "FAIL") if gating_of[p["profile"]] else \
            ("pass (not gating)" if p["passed"] else "wrong (not gating)")
        distinct = p.get("distinct_outputs") or {}
        lines.append(f"| {name} | {p['profile']} | {p['images']} | {figure} | {p['images_differing']} | "
                     f"{distinct.get('aarch64', '-')} / {distinct.get('x86_64', '-')} | "
                     f"{p['top1_agreement_pct']:.2f}% | {verdict} |")
    lines += ["", f"Top-1 on the labelled validation split ({rec['val_images']} images, single central crop):", "",
              "| model | aarch64 (emulated) | x86-64 |", "|---|---|---|"]
    for name, t1 in rec["top1"].items():
        lines.append(f"| {name} | {t1['aarch64']:.2f}% | {t1['x86_64']:.2f}% |")
    lines += ["", "## The emulated CPUs", "",
              "XNNPACK picks its kernels from the CPU features the kernel reports (here qemu's CPU model) and, for "
              "some Cortex cores, from the core type in /proc/cpuinfo (synthesized for those profiles). /sys holds "
              "only the list of CPUs (cpuinfo needs it to start XNNPACK; the host's /sys is never bound).", "",
              "| profile | qemu CPU | stands for | features seen | CPU seen | delegate nodes |", "|---|---|---|---|---|---|"]
    for p in rec["profiles"]:
        seen = next((c for c in rec["cpus"].values() if c["profile"] == p["name"]), None)
        if p["name"] in rec["skipped_profiles"]:
            lines.append(f"| {p['name']} | {p['cpu']} | {p['what']} | not run: {rec['skipped_profiles'][p['name']]} | | |")
            continue
        lines.append(f"| {p['name']} | {p['cpu']} ({p['qemu']}) | {p['what']} | "
                     f"{' '.join(seen['features']) if seen else '-'} | {seen['cpu'] if seen else '-'} | "
                     f"{seen['interpreter']['delegate_nodes'] if seen and seen['interpreter'] else '-'} |")
    lines += ["", "## Checks", "", "| check | result | detail |", "|---|---|---|"]
    for c in rec["checks"]:
        verdict = ("pass" if c["passed"] else "FAIL") if c["gating"] else ("pass" if c["passed"] else "seen") + " (not gating)"
        lines.append(f"| {c['check']} | {verdict} | {c['detail'].replace('|', '/')} |")
    lines += ["", "## Latency under emulation: NOT a device figure", "",
              f"{rec['latency_note'][:1].upper()}{rec['latency_note'][1:]}. p50 / mean ms, batch 1; the x86-64 column ran on shared CPUs (load average in "
              "the next table), so it is not a quiet-machine figure either.",
              "", "| run | CPU profile | threads | aarch64 under qemu-user | x86-64 |", "|---|---|---|---|---|"]
    for name, lat in rec["latency_ms"].items():
        lines.append(f"| {name} | {lat['profile']} | {lat['aarch64_emulated']['threads']} | "
                     f"{fmt_ms(lat['aarch64_emulated'])} | {fmt_ms(lat['x86_64'])} |")
    lines += ["", "## How long it took", "", "| finished | root file system | total | stages (s) | load average |",
              "|---|---|---|---|---|"]
    for r in rec["runs"]:
        stages = ", ".join(f"{k} {v:.0f}" for k, v in r["stages_s"].items())
        steps = ", ".join(f"{k} {v:.0f}" for k, v in r["model_steps_s"].items())
        lines.append(f"| {r['finished']} | {r['rootfs']} | {r['total_s'] / 60:.1f} min | {stages}"
                     + (f" (the model's steps when they were made: {steps})" if steps else "") + " | "
                     + ", ".join(f"{x:.1f}" for x in r.get("host_load_average", [])) + " |")
    rows_on = [ln.rstrip() for ln in merged_md.splitlines() if ln.startswith("Rows measured on")]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines += ["", "## The rows in `edgeinc bench --merge`", "",
              "What `edgeinc bench --merge` made of the runner's JSON from both machines (its bench.json; the "
              "machine column added here). Each INT8 row's deltas are against the FP32 row of the same machine.", "",
              "| machine | format | precision | top-1 % | top-5 % | p50 ms | mean ms | threads | emulated | vs | top-1 drop | "
              "speed-up | size ratio |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in merged_rows:
        lines.append(f"| {r['machine']} | {r['format']} | {r['precision']} | {fmt(r['top1'], '.2f')} | {fmt(r['top5'], '.2f')} | "
                     f"{fmt(r['p50_ms'], '.2f')} | {fmt(r['mean_ms'], '.2f')} | {r['threads']} | "
                     f"{'yes: not a device figure' if r.get('emulated') else 'no'} | {r['parent'] or '-'} | "
                     f"{fmt(r['top1_drop'], '+.2f')} | {fmt(r['speedup'], '.2f')} | {fmt(r['size_ratio'], '.2f')} |")
    lines += ["", *rows_on, "",
              "Repeat: `make arm-check` (as root; the first run builds the root file system, later runs reuse it). "
              "See deploy/README.md.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--work", required=True)
    p.add_argument("--payload", required=True)
    for name in ("fp32", "int8", "uint8", "run", "data"):
        p.add_argument(f"--{name}")
    p.add_argument("--max-images", type=int)
    p.add_argument("--no-executorch", action="store_true", help="leave out the ExecuTorch .pte runs")
    c = sub.add_parser("compare")
    for name in ("work", "payload", "results", "device-out", "host-out", "rootfs", "key", "rootfs-state", "qemu", "started"):
        c.add_argument(f"--{name}", required=True)
    c.add_argument("--stage", action="append", default=[])
    c.add_argument("--skipped", action="append", default=[], help="PROFILE=why: a CPU profile that did not run")
    c.add_argument("--qemu-new", default="")
    c.add_argument("--executorch-packages", default="", help="pip list --format json of the .pte runs' Python path")
    r = sub.add_parser("render", help="write arm_check.md again from arm_check.json and the merged report")
    r.add_argument("--work", required=True)
    r.add_argument("--results", required=True)
    args = parser.parse_args(argv)
    return {"prepare": cmd_prepare, "compare": cmd_compare, "render": cmd_render}[args.command](args)


def cmd_render(args) -> int:
    """The Markdown from the recorded figures (after a change of layout; no figure is measured again)."""
    from edgeinc.bench.machine import describe
    from edgeinc.utils.io import atomic_write_text

    results, merged = Path(args.results), Path(args.work) / "merged"
    record = json.loads((results / "arm_check.json").read_text())
    merged_md = (merged / "bench.md").read_text() if (merged / "bench.md").is_file() else ""
    merged_rows = json.loads((merged / "bench.json").read_text())["rows"] if (merged / "bench.json").is_file() else []
    atomic_write_text(results / "arm_check.md", markdown(record, describe, merged_md, merged_rows))
    print(f"-> {results / 'arm_check.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Section 9's claim on the patch task: for a fixed compute budget the receptive field can shrink with
the input (299 / 151 / 79), while shrinking the network for a small input does much worse; then INT8
on the best of those models, with paired intervals, and the detection view (COCO AP, FP32 vs INT8).

    .venv/bin/python benchmarks/receptive_field.py                   # the default study, < 1 h on 2 cores
    .venv/bin/python benchmarks/receptive_field.py --device cuda --width 0.5 --epochs 30   # with a GPU
    .venv/bin/python benchmarks/receptive_field.py --smoke           # minutes: proves the pipeline runs

1. Synthetic detection scenes (edgeinc data scenes: shapes of 10-80 px among clutter), cut into ONE
   patch dataset (edgeinc data patches: each object, jittered copies, background) at each variant's
   resolution: the same boxes with the same context in scene pixels (16 px at 79, scaled with the patch
   side), so the 299 variant sees the same small objects upsampled and the 79 variant about natively.
2. Four models, one recipe and budget (same width, epochs, seed, optimizer): inception_v3 at 299,
   inception_v3_151 at 151, inception_v3_79 at 79, and the naive cheap network - the 299 graph (stride
   2 + max-pool) fed the 79-pixel patches (``model.input_size: 79``; its grids collapse to 7 -> 3 -> 1).
3. Per model: top-1 / top-5 on every validation patch (single central crop) with 95% Wilson intervals,
   parameters, multiply-adds, training time, CPU latency (fp32 and NNCF INT8, batch 1 and 64, the best
   runtime of edgeinc bench), beside the paper's Table 2. A plot of accuracy against multiply-adds.
4. INT8 of the best model on the same patches: NNCF Q/DQ ONNX (ONNX Runtime, OpenVINO), TFLite full
   integer, the TensorRT-flavour Q/DQ ONNX (in ONNX Runtime), QAT, accuracy control and ExecuTorch's PT2E
   .pte (XNNPACK), each against FP32
   on the same images (paired: the difference's 95% interval from the discordant pairs), with size ratios.
5. Detection view: edgeinc detect on the validation scenes (sliding-window proposals) with the FP32 and
   the INT8 classifier: COCO AP / AP50 and the drop.
Writes benchmarks/results/receptive_field.{md,json,png} with the machine header and how long it took.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from edgeinc.bench.machine import describe, machine_info  # noqa: E402
from edgeinc.data import synthesize_scenes  # noqa: E402
from edgeinc.detect import extract_patches  # noqa: E402
from edgeinc.scoring import top_k  # noqa: E402
from edgeinc.utils.io import atomic_write_json, atomic_write_text  # noqa: E402

# (label, registered model, input side, the patches it is fed)
MODELS = (
    ("inception_v3 (299, stride 2 + pool)", "inception_v3", 299, 299),
    ("inception_v3_151 (stride 1 + pool)", "inception_v3_151", 151, 151),
    ("inception_v3_79 (stride 1, no pool)", "inception_v3_79", 79, 79),
    ("naive: the 299 graph fed 79 px", "inception_v3", 79, 79),
)
PAPER_TOP1 = {"inception_v3": 76.6, "inception_v3_151": 76.4, "inception_v3_79": 75.2}  # Table 2, ImageNet


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion, in percent."""
    if n == 0:
        return (math.nan, math.nan)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (100 * (centre - half), 100 * (centre + half))


def paired_difference(a: np.ndarray, b: np.ndarray, z: float = 1.96) -> dict:
    """Top-1 of ``b`` minus ``a`` (boolean correctness on the same images), in points, with a 95% interval
    from the discordant pairs (the paired design: images both get right or wrong do not add noise)."""
    n = len(a)
    gained, lost = int((~a & b).sum()), int((a & ~b).sum())
    diff = (gained - lost) / n
    var = ((gained + lost) / n - diff * diff) / n
    half = z * math.sqrt(max(var, 0.0))
    return {"difference_points": 100 * diff, "interval_points": [100 * (diff - half), 100 * (diff + half)],
            "gained": gained, "lost": lost, "images": n}


def majority_share(split: Path) -> float:
    """Top-1 of always answering the most frequent class of ``split`` (class folders), in percent."""
    counts = [sum(1 for _ in folder.iterdir()) for folder in split.iterdir() if folder.is_dir()]
    return 100 * max(counts) / sum(counts)


def make_data(args, work: Path) -> dict[int, Path]:
    """Scenes, then one patch dataset per input side (the same boxes, context scaled with the side)."""
    scenes = work / "scenes"
    synthesize_scenes(scenes, train=args.train_scenes, val=args.val_scenes, size=args.scene_size, seed=args.seed,
                      workers=args.threads)
    roots = {}
    for side in sorted({m[3] for m in MODELS}):
        root = work / f"patches_{side}"
        context = round(args.context * side / 79)
        for split in ("train", "val"):
            extract_patches(scenes / "annotations" / f"{split}.json", scenes / split, root / split, size=side,
                            context=context, neg_ratio=args.neg_ratio, seed=args.seed, jitter=args.jitter)
        roots[side] = root
    return roots


def train_model(args, work: Path, label: str, name: str, side: int, data: Path) -> tuple[Path, float, bool]:
    """The run directory, its training seconds, and whether an earlier invocation trained it (reused)."""
    from edgeinc.rundir import RunDir
    from edgeinc.train import train

    run = work / "runs" / f"{name}_{side}"
    overrides = [
        f"model.name={name}", f"model.depth_multiplier={args.width}", "model.min_depth=8", f"data.root={data}",
        f"train.epochs={args.epochs}", f"train.device={args.device}", f"train.seed={args.seed}",
        f"train.batch_size={args.batch}", f"train.lr_reference_batch={args.batch}", "train.eval_every_epochs=0",
        "data.scale=[0.8, 1.0]",
    ]
    if name == "inception_v3" and side != 299:  # the naive network: the 299 graph at another input size
        overrides.append(f"model.input_size={side}")
    if (run / "timing.json").is_file() and RunDir(run).weights("ema").is_file():  # timing.json: training finished
        seconds = json.loads((run / "timing.json").read_text())["train_seconds"]
        return run, seconds, True
    start = time.perf_counter()
    print(f"training {label} ({name} at {side}) -> {run}", flush=True)
    train("quickstart", overrides, out=run, force=True)
    seconds = time.perf_counter() - start
    atomic_write_json(run / "timing.json", {"train_seconds": seconds})
    return run, seconds, False


def predictions(runner_or_path, val: Path, side_variant, backend: str | None = None, threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(correct top-1, correct top-5) per validation patch, through a runner."""
    from edgeinc.export.data import load_images
    from edgeinc.runtime import load_runner

    runner = load_runner(runner_or_path, backend, threads=threads) if not hasattr(runner_or_path, "predict") else runner_or_path
    batch = load_images(val, side_variant, None, list(runner.labels))
    logits = np.concatenate([runner.predict(batch.images[i : i + 64]) for i in range(0, len(batch.images), 64)])
    top5 = top_k(logits, min(5, logits.shape[1]))
    return top5[:, 0] == batch.labels, (top5 == batch.labels[:, None]).any(1)


def latency(run: Path, work: Path, data: Path, threads: int, min_time: float) -> dict:
    """Best p50 (ms) among the runtimes for fp32 and NNCF int8, at batch 1 and 64."""
    from edgeinc.bench import bench
    from edgeinc.export import export

    out = work / "artifacts" / run.name
    paths = [run]
    for precision in ("fp32", "int8"):
        folder = out / f"onnx-{precision}"
        if not (folder / "manifest.json").is_file():
            export(run, "onnx", precision, out=out, calib=data, threads=threads, calib_size=128, val_size=512)
        paths.append(folder)
    report = bench(paths, batches=(1, 64), threads=threads, min_time=min_time, bf16=False, retry_contended=1)
    best: dict = {}
    for row in report.rows:
        if row.status != "ok" or not row.executed_ops:
            continue
        executed = max(row.executed_ops, key=row.executed_ops.get)
        key = f"{executed}_b{row.batch}"
        if key not in best or row.p50_ms < best[key]["p50_ms"]:
            best[key] = {"p50_ms": row.p50_ms, "runtime": row.label, "contended": row.contended}
    return best


def int8_jobs(args) -> list[tuple[str, str, dict, list]]:
    """(label, target, export options, runtimes) of the INT8 study."""
    return [
        ("NNCF Q/DQ ONNX", "onnx", {}, [None, "openvino"]),
        ("TFLite full integer", "tflite", {}, [None]),
        ("TensorRT-flavour Q/DQ ONNX (in ONNX Runtime)", "tensorrt", {}, ["onnxruntime"]),
        ("QAT (Q/DQ ONNX)", "onnx", {"qat_steps": args.qat_steps}, [None]),
        ("accuracy control, max drop 0.3", "onnx", {"max_drop": 0.3}, [None]),
        ("ExecuTorch PT2E .pte (XNNPACK)", "executorch", {}, [None]),
    ]


def int8_folder(work: Path, label: str) -> Path:
    return work / "int8" / label.split()[0].lower().replace("/", "")


def scored(ok1: np.ndarray, ok5: np.ndarray, fp32_ok1: np.ndarray) -> dict:
    """A row's accuracy against FP32 on the same images (paired)."""
    return {"top1": 100 * ok1.mean(), "top1_interval": wilson(int(ok1.sum()), len(ok1)), "top5": 100 * ok5.mean(),
            "fp32_top1": 100 * fp32_ok1.mean(), "paired": paired_difference(fp32_ok1, ok1)}


def int8_study(args, work: Path, run: Path, data: Path, side: int, variant) -> list[dict]:
    """Each INT8 export of the best model (reused when its manifest names this checkpoint), scored against FP32."""
    from edgeinc.export import ManifestError, TensorRTUnavailableError, export, load_manifest
    from edgeinc.rundir import RunDir
    from edgeinc.utils.io import sha256_file

    val = data / "val"
    fp32_dir = work / "artifacts" / run.name / "onnx-fp32"
    fp32_ok1, _ = predictions(fp32_dir, val, variant, threads=args.threads)
    fp32_bytes = json.loads((fp32_dir / "manifest.json").read_text())["artifact_bytes"]
    rows = []
    source_sha = sha256_file(RunDir(run).weights("ema"))
    for label, target, options, backends in int8_jobs(args):
        folder = int8_folder(work, label) / f"{target}-int8"
        try:  # an export of this checkpoint made by an earlier, interrupted invocation
            manifest = load_manifest(folder)[0]
            if manifest.source.sha256 != source_sha:
                raise ManifestError(f"{folder}: another checkpoint")
        except ManifestError:
            try:
                export(run, target, "int8", out=folder.parent, calib=data, threads=args.threads, calib_size=256, **options)
            except TensorRTUnavailableError:
                pass  # the TensorRT-ready Q/DQ ONNX and its manifest are written; the engine needs a GPU
            manifest = load_manifest(folder)[0]
        for backend in backends:
            ref_bytes = fp32_bytes
            if target in ("tflite", "executorch") and manifest.quantization.size.fp32_bytes:
                ref_bytes = manifest.quantization.size.fp32_bytes  # the float file of the same format
            rows.append({
                "quantization": label, "runtime": backend or "default", "file": manifest.artifact,
                "directory": str(folder), **scored(*predictions(folder, val, variant, backend, args.threads), fp32_ok1),
                "size_ratio": ref_bytes / manifest.artifact_bytes, "export_s": manifest.conversion.seconds,
                "kept_in_float": len(manifest.quantization.kept_in_float) if manifest.quantization else None,
            })
            print(f"  {label} [{backend or 'default'}]: top-1 {rows[-1]['top1']:.2f} vs FP32 {rows[-1]['fp32_top1']:.2f}", flush=True)
    return rows


def detection_view(args, work: Path, run: Path, side: int) -> dict:
    """COCO AP on the validation scenes: FP32 vs INT8 classifier, the same sliding-window proposals."""
    from edgeinc.detect import detect

    images, annotations, objects = scene_subset(work / "scenes", args.detect_scenes, work / "detect" / "scenes")
    from edgeinc.detect.proposals import sliding_windows

    size = json.loads(annotations.read_text())["images"][0]
    out = {"scenes": args.detect_scenes, "objects": objects, "windows_per_scene": len(sliding_windows((size["height"], size["width"])))}
    for precision in ("fp32", "int8"):
        artifact = work / "artifacts" / run.name / f"onnx-{precision}"
        result = detect(artifact, images, proposals="sliding", out=work / "detect" / precision, eval_ann=annotations,
                        context=round(args.context * side / 79), threads=args.threads)
        out[precision] = {k: result.metrics[k] for k in ("AP", "AP50", "AP_small")}
    out["AP_drop_points"] = 100 * (out["fp32"]["AP"] - out["int8"]["AP"])
    return out


def scene_subset(scenes: Path, n: int, out: Path) -> tuple[Path, Path, int]:
    """The first n validation scenes and their COCO annotations (every sliding window cut and resized to
    299 px: about a minute per 384 px scene on two busy cores)."""
    ann = json.loads((scenes / "annotations" / "val.json").read_text())
    kept = sorted(ann["images"], key=lambda i: i["id"])[:n]
    ids = {i["id"] for i in kept}
    (out / "val").mkdir(parents=True, exist_ok=True)
    for image in kept:
        target = out / "val" / image["file_name"]
        if not target.exists():
            target.symlink_to((scenes / "val" / image["file_name"]).resolve())
    subset = {**ann, "images": kept, "annotations": [a for a in ann["annotations"] if a["image_id"] in ids]}
    atomic_write_json(out / "val.json", subset)
    return out / "val", out / "val.json", len(subset["annotations"])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for r in rows:
        lo, hi = r["top1_interval"]
        ax.errorbar(r["macs"] / 1e9, r["top1"], yerr=[[r["top1"] - lo], [hi - r["top1"]]], fmt="o", capsize=3)
        ax.annotate(r["label"], (r["macs"] / 1e9, r["top1"]), textcoords="offset points", xytext=(5, 5), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("multiply-adds per patch (G)")
    ax.set_ylabel("top-1 % on the validation patches (95% interval)")
    ax.set_title("receptive field vs accuracy at (almost) equal compute")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=HERE / "work" / "receptive_field")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--train-scenes", type=int, default=100)
    p.add_argument("--val-scenes", type=int, default=60)
    p.add_argument("--scene-size", type=int, default=384)
    p.add_argument("--context", type=int, default=16, help="context pixels at 79 (scaled with the patch side)")
    p.add_argument("--neg-ratio", type=int, default=1)
    p.add_argument("--jitter", type=int, default=2)
    p.add_argument("--width", type=float, default=0.1, help="depth multiplier of all four models")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed runs per latency row")
    p.add_argument("--qat-steps", type=int, default=200)
    p.add_argument("--detect-scenes", type=int, default=12, help="validation scenes in the detection view")
    p.add_argument("--skip-int8", action="store_true")
    p.add_argument("--int8-only", action="store_true",
                   help="keep the four models' rows of the committed JSON; redo the INT8 study and the detection view")
    p.add_argument("--render", action="store_true", help="write the .md and .png again from the committed JSON")
    p.add_argument("--smoke", action="store_true", help="tiny settings: proves the pipeline runs")
    args = p.parse_args()
    if args.smoke:
        args.train_scenes, args.val_scenes, args.scene_size, args.epochs, args.qat_steps = 6, 3, 256, 1, 2
        args.min_time = 0.1
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from edgeinc.models import count_macs, count_parameters, create_model
    from edgeinc.train import evaluate

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    work = args.work
    roots = make_data(args, work)
    previous = args.out / "receptive_field.json"
    if args.render:
        report = json.loads(previous.read_text())
        report["verdict"] = shape_verdict(report["rows"], majority_share(roots[79] / "val"))
        write(report, args.out)
        return 0
    rows = json.loads(previous.read_text())["rows"] if args.int8_only else []
    for label, name, side, data_side in [] if args.int8_only else MODELS:
        data = roots[data_side]
        run, train_s, reused = train_model(args, work, label, name, side, data)
        cached = run / "study_row.json"  # this model's row, from an earlier invocation that stopped later on
        if reused and cached.is_file():
            rows.append(json.loads(cached.read_text()))
            print(f"{label}: row reused from {cached}", flush=True)
            continue
        result = evaluate(run, data / "val", crops=1, workers=0)
        model = create_model(name, num_classes=result.classes, depth_multiplier=args.width, min_depth=8,
                             input_size=side if name == "inception_v3" else None)
        hits = round(result.top1 * result.images / 100)
        rows.append({
            "label": label, "model": name, "input": side, "top1": result.top1, "top5": result.top5,
            "top1_interval": wilson(hits, result.images), "images": result.images, "classes": result.classes,
            "params": count_parameters(model, include_aux=False), "macs": count_macs(model, side),
            "train_s": train_s, "train_reused": reused, "paper_top1": None if label.startswith("naive") else PAPER_TOP1[name],
            "run": str(run), "latency": latency(run, work, data, args.threads, args.min_time),
        })
        atomic_write_json(cached, rows[-1])
        print(f"{label}: top-1 {result.top1:.2f}% on {result.images} patches, {rows[-1]['macs'] / 1e9:.3f} GMACs", flush=True)
    equal = rows[:3]
    best = max(equal, key=lambda r: r["top1"])
    majority = majority_share(roots[79] / "val")
    int8_rows, detection = [], None
    if not args.skip_int8:
        best_run = Path(best["run"])
        variant = create_model(best["model"], num_classes=1, depth_multiplier=args.width, min_depth=8,
                               input_size=best["input"] if best["model"] == "inception_v3" else None).variant
        int8_rows = int8_study(args, work, best_run, roots[best["input"]], best["input"], variant)
        detection = detection_view(args, work, best_run, best["input"])
    minutes = (time.perf_counter() - started) / 60
    int8_rerun = None
    if args.int8_only:  # the first run's time stays the study's; this rerun's is reported beside it
        int8_rerun, minutes = minutes, json.loads(previous.read_text())["header"]["minutes"]
    verdict = shape_verdict(rows, majority)
    report = {"header": {"machine": machine_info(), "threads": args.threads, "device": args.device,
                         "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                         "minutes": minutes, "int8_rerun_minutes": int8_rerun, "command": " ".join(sys.argv)},
              "rows": rows, "verdict": verdict, "best": best["label"], "int8": int8_rows, "detection": detection}
    write(report, args.out)
    return 0


def shape_verdict(rows: list[dict], majority: float) -> str:
    """Whether the paper's shape holds, by a stated rule: nearly flat = the three equal-compute models' 95%
    intervals all overlap; much worse = the naive network's interval lies wholly below all three."""
    equal, naive = rows[:3], rows[3]
    spread = max(r["top1"] for r in equal) - min(r["top1"] for r in equal)
    flat = max(r["top1_interval"][0] for r in equal) <= min(r["top1_interval"][1] for r in equal)
    below = naive["top1_interval"][1] < min(r["top1_interval"][0] for r in equal)
    answer = "Yes" if flat and below else "No"
    return (f"{answer}: accuracy across the three receptive fields spans {spread:.2f} points, their 95% intervals "
            f"{'all overlap' if flat else 'do not all overlap'} (paper: 1.4 points, 76.6 / 76.4 / 75.2 on ImageNet); the "
            f"naive network is {min(r['top1'] for r in equal) - naive['top1']:.2f} points below the worst of them, its "
            f"interval {'wholly below' if below else 'not wholly below'} theirs (paper: \"much worse\"). Predicting the most "
            f"frequent class (background) scores {majority:.1f}%.")


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "receptive_field.json", report)
    plot(report["rows"], out / "receptive_field.png")
    atomic_write_text(out / "receptive_field.md", render(report))
    print(render(report))


def timing(report: dict) -> str:
    """How long the study took: this invocation, and what it reused from earlier (interrupted) ones."""
    h = report["header"]
    reused = [r for r in report["rows"] if r.get("train_reused")]
    if not reused:
        return f"The whole study took {h['minutes']:.0f} min"
    exports = {r["quantization"]: r["export_s"] for r in report["int8"]}
    total = h["minutes"] + sum(r["train_s"] for r in reused) / 60 + sum(exports.values()) / 60
    return (f"The invocation that wrote this took {h['minutes']:.0f} min: it reused {len(reused)} trainings "
            f"({sum(r['train_s'] for r in reused) / 60:.0f} min, timed when they ran) and the INT8 exports of earlier, "
            "interrupted invocations (a run or export is reused when its checkpoint matches; 'export s' is the time its "
            f"manifest recorded): about {total:.0f} min from scratch")


def render(report: dict) -> str:
    h = report["header"]
    s = h["settings"]
    lines = [
        "# Receptive field at equal compute, and INT8 on a model that works", "",
        describe(h["machine"]), "",
        f"**Settings:** {s['train_scenes']} training / {s['val_scenes']} validation scenes of {s['scene_size']} px, "
        f"patches with context {s['context']} px at 79 (scaled with the side), {s['neg_ratio']} background patch per "
        f"object patch, {s['jitter']} jittered copies per object; all four models at depth x{s['width']}, {s['epochs']} "
        f"epochs, batch {s['batch']}, seed {s['seed']}, the quickstart recipe's optimizer (AdamW), {s['device']}, "
        f"{s['threads']} threads. {timing(report)}"
        + (f" (then the INT8 study was run again: {h['int8_rerun_minutes']:.0f} min)" if h.get("int8_rerun_minutes") else "")
        + f". Command: `{h['command']}`.", "",
        "| model | input | top-1 % (95% interval) | top-5 % | patches | params | GMACs | train min | best fp32 ms b1 / b64 | best int8 ms b1 / b64 | paper top-1 (ImageNet) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lat = r["latency"]

        def ms(key: str) -> str:
            return f"{lat[key]['p50_ms']:.1f}" if key in lat else "-"
        lo, hi = r["top1_interval"]
        lines.append(
            f"| {r['label']} | {r['input']} | {r['top1']:.2f} ({lo:.2f}-{hi:.2f}) | {r['top5']:.2f} | {r['images']} | "
            f"{r['params']:,} | {r['macs'] / 1e9:.3f} | {r['train_s'] / 60:.1f} | {ms('fp32_b1')} / {ms('fp32_b64')} | "
            f"{ms('int8_b1')} / {ms('int8_b64')} | {r['paper_top1'] if r['paper_top1'] else '-'} |")
    lines += ["", f"**Does the paper's shape hold here?** {report['verdict']}", ""]
    if report["int8"]:
        lines += [f"## INT8 on the best model ({report['best']})", "",
                  "| quantization | runtime | top-1 % (95% interval) | FP32 top-1 % | difference (paired 95% interval), points | "
                  "gained / lost | size ratio | export s |", "|---|---|---|---|---|---|---|---|"]
        for r in report["int8"]:
            d = r["paired"]
            lo, hi = r["top1_interval"]
            lines.append(
                f"| {r['quantization']} | {r['runtime']} | {r['top1']:.2f} ({lo:.2f}-{hi:.2f}) | {r['fp32_top1']:.2f} | "
                f"{d['difference_points']:+.2f} ({d['interval_points'][0]:+.2f} to {d['interval_points'][1]:+.2f}) | "
                f"{d['gained']} / {d['lost']} | {r['size_ratio']:.2f}x | {r['export_s']:.0f} |")
    if report["detection"]:
        d = report["detection"]
        lines += ["", "## Detection view (validation scenes, sliding-window proposals)", "",
                  f"The first {d['scenes']} validation scenes ({d['objects']} objects), {d['windows_per_scene']:,} windows per scene. "
                  f"FP32 classifier: AP {100 * d['fp32']['AP']:.1f}, AP50 {100 * d['fp32']['AP50']:.1f}; INT8: AP "
                  f"{100 * d['int8']['AP']:.1f}, AP50 {100 * d['int8']['AP50']:.1f}; drop {d['AP_drop_points']:+.2f} AP points "
                  "(goal <= 1)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

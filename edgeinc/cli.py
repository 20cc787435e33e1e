"""The ``edgeinc`` command: a thin layer over the Python API (each command calls one function)."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from . import __version__
from .export.base import TARGETS

# Not a terminal (CI logs, pipes): wide enough that tables never wrap their figures.
console = Console() if sys.stdout.isatty() else Console(width=200)


class UserError(Exception):
    """An error the user can fix; printed without a traceback, exit status 2."""


def _models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--num-classes", type=int, default=1000)


def cmd_models(args: argparse.Namespace) -> int:
    from .models.summary import summarize_all

    rows = summarize_all(num_classes=args.num_classes)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    table = Table(title=f"edgeinc models (computed from the modules, {args.num_classes} classes)")
    for col in ("model", "input", "params", "params +aux", "multiply-adds", "grids", "paper top-1"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(
            r.name,
            f"{r.input_size}x{r.input_size}",
            f"{r.params:,}",
            f"{r.params_with_aux:,}",
            f"{r.macs / 1e9:.2f} G",
            " -> ".join(map(str, r.grids)),
            f"{r.paper_top1:.1f}%" if r.paper_top1 is not None else "-",
        )
    console.print(table)
    console.print("params +aux: with the BN-auxiliary head (training only); paper top-1: Table 2, ImageNet.")
    return 0


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _int_pair(text: str) -> tuple[int, int]:
    values = _int_list(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (two integers), got {text!r}")
    return values  # type: ignore[return-value]


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", help="artifact folders/manifests, folders of artifacts, run directories or weights files")
    p.add_argument("--data", help="ImageNet-layout split folder (class folders) for top-1/top-5, single central crop")
    p.add_argument("--batch", type=_int_list, default=(1,), help="batch sizes, e.g. 1,8 (default 1)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: all usable CPUs)")
    p.add_argument("--warmup", type=int, default=5)
    timing = p.add_mutually_exclusive_group()
    timing.add_argument("--runs", type=int, help="exactly this many timed runs")
    timing.add_argument("--min-time", type=float, default=3.0, help="seconds of timed runs per measurement (default 3)")
    p.add_argument("--max-images", type=int, help="score at most this many images of --data")
    p.add_argument("--out", default="bench-report", help="folder for bench.md/json/csv/png (default bench-report)")
    p.add_argument("--export", action="store_true", help="first export each run/checkpoint to every target and precision")
    p.add_argument("--calib", help="calibration images for --export (default: the recipe's training data)")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="fold in rows measured on a device (bench JSON files)")
    p.add_argument("--no-bf16", action="store_true", help="no bf16 rows (by default fp32 artifacts also run in bf16 "
                   "in OpenVINO and PyTorch where the CPU has native bf16)")
    p.add_argument("--keep-denormals", action="store_true", help="do not flush denormals to zero in the runners")
    p.add_argument("--retry-contended", type=int, default=0, metavar="N",
                   help="measure a row again, up to N times, when other processes used its cores")
    p.add_argument("--floors", action="store_true", help="measure this CPU's compute floors; add floor columns")
    p.add_argument("--allow-failed", action="store_true", help="exit 0 even when some rows failed")


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench

    report = bench(
        args.paths, data=args.data, batches=args.batch, threads=args.threads, warmup=args.warmup, runs=args.runs,
        min_time=args.min_time, out=args.out, export=args.export, calib=args.calib, merge=args.merge or [],
        max_images=args.max_images, bf16=not args.no_bf16, flush_denormals=not args.keep_denormals,
        retry_contended=args.retry_contended, floors=args.floors,
        progress=lambda msg: console.print(f"[dim]{msg}[/]", highlight=False),
    )
    print(report.to_markdown())
    for kind, path in report.files.items():
        console.print(f"{kind}: {path}", highlight=False)
    return 0 if all(r.status in ("ok", "skipped") for r in report.rows) or args.allow_failed else 1


def _data_synth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output folder (new or empty; rerun with the same options to finish an interrupted run)")
    p.add_argument("--classes", type=int, default=5, help="K object classes (plus 'background'), default 5")
    p.add_argument("--train", type=int, default=200, help="training images per class (default 200)")
    p.add_argument("--val", type=int, default=50, help="validation images per class (default 50)")
    p.add_argument("--size", type=int, default=96, help="patch side in pixels (default 96)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="processes drawing images (output is the same)")


def cmd_data_synth(args: argparse.Namespace) -> int:
    from .data import synthesize_patch_task

    info = synthesize_patch_task(args.out, classes=args.classes, train=args.train, val=args.val, size=args.size,
                                 seed=args.seed, workers=args.workers)
    table = Table(title="synthetic patch task")
    for col in ("class", "train", "val"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name in info.classes:
        table.add_row(name, str(info.counts["train"][name]), str(info.counts["val"][name]))
    table.add_row("total", *(str(sum(info.counts[s].values())) for s in ("train", "val")))
    console.print(table)
    reused = f" ({info.reused} already there)" if info.reused else ""
    console.print(f"wrote {info.written} {args.size}x{args.size} PNG images{reused} (seed {args.seed}) in "
                  f"{info.seconds:.1f} s to {info.root / 'train'} and "
                  f"{info.root / 'val'}; labels in {info.root / 'classes.json'}, parameters in "
                  f"{info.root / 'synth.json'}", highlight=False, soft_wrap=True)
    return 0


def _data_scenes_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output folder (new or empty; rerun with the same options to finish an interrupted run)")
    p.add_argument("--train", type=int, default=100, help="training scenes (default 100)")
    p.add_argument("--val", type=int, default=20, help="validation scenes (default 20)")
    p.add_argument("--size", type=int, default=512, help="scene side in pixels (default 512)")
    p.add_argument("--classes", type=int, default=5, help="K shape categories (default 5)")
    p.add_argument("--objects", type=_int_pair, default=(4, 12), metavar="MIN,MAX",
                   help="objects drawn per scene, inclusive (default 4,12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="processes drawing scenes (output is the same)")


def cmd_data_scenes(args: argparse.Namespace) -> int:
    from .data import synthesize_scenes

    info = synthesize_scenes(args.out, train=args.train, val=args.val, size=args.size, classes=args.classes,
                             seed=args.seed, objects=args.objects, workers=args.workers)
    table = Table(title="synthetic detection scenes")
    for col in ("split", "images", "objects", "annotations"):
        table.add_column(col, justify="left" if col in ("split", "annotations") else "right")
    for split, count in info.counts.items():
        table.add_row(split, str(count["images"]), str(count["objects"]), str(info.annotations[split]))
    console.print(table)
    reused = f" ({info.reused} already there)" if info.reused else ""
    console.print(f"wrote {info.written} {args.size}x{args.size} scenes{reused} (seed {args.seed}, categories "
                  f"{', '.join(info.categories)}) in {info.seconds:.1f} s to {info.root}; parameters in "
                  f"{info.root / 'scenes.json'}", highlight=False, soft_wrap=True)
    return 0


def _data_patches_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coco", required=True, help="COCO detection annotations (e.g. annotations/train.json)")
    p.add_argument("--images", required=True, help="folder holding the images the COCO file lists (file_name)")
    p.add_argument("--out", required=True, help="the SPLIT folder to write, e.g. DATA/train; run again with "
                   "val.json into DATA/val so that DATA is a training root")
    p.add_argument("--size", type=int, default=79, help="patch side in pixels: the model's input size (default 79)")
    p.add_argument("--context", type=int, default=16, help="context pixels per side at the patch scale (default 16)")
    p.add_argument("--neg-ratio", type=int, default=3, help="background patches per positive patch, per image (default 3)")
    p.add_argument("--jitter", type=int, default=2, help="jittered copies (IoU >= 0.7) per ground-truth box (default 2)")
    p.add_argument("--seed", type=int, default=0)


def cmd_data_patches(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .detect import extract_patches

    if not Path(args.images).is_dir():
        raise UserError(f"--images {args.images}: no such folder (it should hold the images of {args.coco})")
    info = extract_patches(args.coco, args.images, args.out, size=args.size, context=args.context,
                           neg_ratio=args.neg_ratio, seed=args.seed, jitter=args.jitter)
    table = Table(title=f"patches of {Path(args.coco).name}")
    table.add_column("class")
    table.add_column("patches", justify="right")
    for name in info.classes:
        table.add_row(name, str(info.counts[name]))
    table.add_row("total", str(sum(info.counts.values())))
    console.print(table)
    reused = f" ({info.reused} already there)" if info.reused else ""
    notes = [f"{info.objects} boxes ({info.clipped} clipped to their image)",
             f"skipped: {info.skipped['crowd']} crowd, {info.skipped['no_area']} without area"]
    if any(info.shortfall.values()):
        notes.append(f"not found: {info.shortfall['jittered']} jittered copies, {info.shortfall['negatives']} negatives")
    if info.empty_categories:
        notes.append(f"categories without patches: {', '.join(info.empty_categories)}")
    console.print(f"wrote {info.written} {args.size}x{args.size} patches{reused} from {info.images} images to "
                  f"{info.root} in {info.seconds:.1f} s; " + "; ".join(notes) + f". Labels in "
                  f"{info.root / 'classes.json'}, boxes in {info.root / 'boxes.csv'}", highlight=False, soft_wrap=True)
    return 0


def _data_baseline_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="dataset root holding train/ and val/")
    p.add_argument("--bins", type=int, default=8, help="histogram bins per channel (default 8)")
    p.add_argument("--joint", action="store_true", help="joint RGB histogram (bins^3 features) instead of per channel")
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_data_baseline(args: argparse.Namespace) -> int:
    from .data import colour_histogram_baseline, find_split

    r = colour_histogram_baseline(find_split(args.root, "train"), find_split(args.root, "val"), bins=args.bins,
                                  joint=args.joint)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    console.print(f"colour baseline ({r['features']}, logistic regression): top-1 {100 * r['top1']:.1f}% on "
                  f"{r['n_val']} val images (train {100 * r['train_top1']:.1f}%, chance {100 * r['chance']:.1f}%)",
                  highlight=False, soft_wrap=True)
    return 0


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="a recipe YAML, a shipped recipe's name (paper, lowres, mid151, quickstart), "
                   "or a run directory to resume")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a recipe key")
    p.add_argument("--resume", action="store_true", help="continue the run in the run directory from its checkpoint")
    p.add_argument("--force", action="store_true", help="start a new run in a run directory that holds one, replacing it")
    p.add_argument("--out", help="run directory (default runs/<recipe name>)")
    p.add_argument("--json", action="store_true", help="print the result as JSON at the end")


def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainingError, train

    try:
        result = train(args.recipe, args.set, out=args.out, resume=args.resume, force=args.force, console=console)
    except TrainingError as e:
        raise UserError(str(e)) from None
    if result.status == "interrupted":
        return 128 + (result.stop_signal or 2)
    if args.json and result.rank == 0:
        print(json.dumps(result.to_dict(), indent=2))
    return 0


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="run directory or .safetensors weights file")
    p.add_argument("--data", required=True, help="dataset root (its val/ is used) or a split folder <class>/<image>")
    p.add_argument("--crops", type=int, choices=(1, 12, 144), default=1, help="1: central 87.5%% crop; 12/144: Table 4")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights of a run directory")
    p.add_argument("--batch-size", type=int, default=64, help="crops per forward pass")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_eval(args: argparse.Namespace) -> int:
    from .train import evaluate

    r = evaluate(args.source, args.data, crops=args.crops, prefer=args.weights, batch_size=args.batch_size,
                 workers=args.workers, device=args.device)
    if args.json:
        print(r.to_json())
        return 0
    console.print(
        f"top-1 {r.top1:.2f}%  top-5 {r.top5:.2f}%  ({r.images} images of {r.data}, {r.crops} crop"
        f"{'s' if r.crops > 1 else ''}, {r.model} {r.weights})", highlight=False,
    )
    return 0


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="run directory or .safetensors weights file")
    p.add_argument("--target", required=True, choices=TARGETS.names(),
                   help=" | ".join(f"{e.name} ({'/'.join(e.meta.precisions)})" for e in TARGETS))
    p.add_argument("--precision", default="fp32", choices=sorted({str(q) for e in TARGETS for q in e.meta.precisions}),
                   help="default fp32")
    p.add_argument("--calib", help="calibration images: a folder (class folders or loose images) or an ImageNet-layout "
                   "root (its train/; default: the recipe's data.root/train)")
    p.add_argument("--calib-size", type=int, default=128, help="calibration images used (default 128)")
    p.add_argument("--val", help="labelled validation split for INT8 accuracy (default: val/ beside the calibration data)")
    p.add_argument("--val-size", type=int, help="validation images used (default: all)")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, help="fixed batch size")
    batch.add_argument("--dynamic-batch", action="store_true", help="dynamic batch axis (the default)")
    p.add_argument("--out", help="parent folder; the export goes to OUT/<target>-<precision>/ (default artifacts/<run>)")
    p.add_argument("--max-drop", type=float, help="int8: accuracy-controlled quantization, max top-1 drop in points")
    p.add_argument("--qat-steps", type=int, help="onnx int8: quantization-aware fine-tuning for this many steps")
    p.add_argument("--qat-lr", type=float, help="QAT learning rate (default 1e-5)")
    p.add_argument("--int8-io", choices=("int8", "uint8"), help="tflite int8: input/output dtype (default int8)")
    p.add_argument("--tflite-backend", choices=("auto", "flatbuffer_direct", "tf_converter"),
                   help="onnx2tf back end (default auto: flatbuffer_direct for fp32, tf_converter otherwise)")
    p.add_argument("--threads", type=int, help="threads for the parity/accuracy runs")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")


def cmd_export(args: argparse.Namespace) -> int:
    from .export import TensorRTUnavailableError, export

    options = {"int8_io": args.int8_io, "tflite_backend": args.tflite_backend, "qat_steps": args.qat_steps,
               "qat_lr": args.qat_lr, "threads": args.threads}
    try:
        result = export(
            args.source, args.target, args.precision, calib=args.calib, calib_size=args.calib_size, val=args.val,
            val_size=args.val_size, batch=None if args.dynamic_batch else args.batch, out=args.out,
            max_drop=args.max_drop, **options,
        )
    except TensorRTUnavailableError as e:
        console.print(f"[bold yellow]incomplete:[/] {e}", highlight=False)
        return 3
    m = result.manifest
    if args.json:
        print(json.dumps(m.model_dump(mode="json"), indent=2))
        return 0
    table = Table(title=f"edgeinc export: {m.model.variant} -> {m.target} {m.precision}")
    table.add_column("")
    table.add_column("")
    table.add_row("artifact", str(result.artifact))
    table.add_row("manifest", str(result.manifest_path))
    table.add_row("size", f"{m.artifact_bytes / 1e6:.2f} MB")
    table.add_row("input", f"{m.input.name} {m.input.shape} {m.input.layout} {m.input.dtype}"
                  + (f" (scale {m.input.quantization.scale:.4g}, zero point {m.input.quantization.zero_point})"
                     if m.input.quantization else ""))
    for check in m.parity:
        table.add_row("parity", f"{check.check}: max abs error {check.max_abs_error:.3g} (max |logit| "
                      f"{check.reference_max_abs_logit:.3g}), top-1 agreement {check.top1_agreement:.3f} on "
                      f"{check.images} images, in {check.runtime}")
    if m.quantization:
        q = m.quantization
        acc = q.accuracy
        table.add_row("accuracy", f"FP32 top-1 {acc.fp32.top1:.2f} / top-5 {acc.fp32.top5:.2f}  ->  INT8 top-1 "
                      f"{acc.int8.top1:.2f} / top-5 {acc.int8.top5:.2f}  ({acc.split.images} images)")
        if q.size.ratio:
            table.add_row("size ratio", f"{q.size.ratio:.2f}x smaller than FP32")
        if q.kept_in_float:
            table.add_row("kept in float", ", ".join(q.kept_in_float))
    table.add_row("conversion", f"{m.conversion.seconds:.1f} s")
    console.print(table)
    return 0


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo", help="folder for the data and the run")


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    cmd_models(argparse.Namespace(json=False, num_classes=1000))
    return 0 if run_demo(args.out, console).passed else 1


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return values


def _detect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="the patch classifier: run directory, .safetensors weights file or exported artifact")
    p.add_argument("images", help="an image file or a folder of images (searched recursively)")
    p.add_argument("--proposals", default="sliding", metavar="sliding|selective-search|FILE.json",
                   help="sliding windows (default), OpenCV's selective search, or your detector's boxes as a COCO "
                   "results file (image_id or file_name, bbox [x, y, w, h], score)")
    p.add_argument("--out", required=True, help="folder for detections.json, detect.json, annotated/ and metrics.json")
    p.add_argument("--score-thr", type=float, default=0.3, help="drop detections scoring below this (default 0.3)")
    p.add_argument("--nms-iou", type=float, default=0.5, help="per-class NMS IoU (default 0.5)")
    p.add_argument("--max-det", type=int, default=100, help="detections kept per image (default 100)")
    p.add_argument("--eval", metavar="ANN.json", help="COCO annotations of the images: COCO AP/AR (pycocotools)")
    p.add_argument("--backend", help="runner: torch, onnxruntime, openvino, litert, tensorrt (default: by the artifact)")
    p.add_argument("--context", type=int, default=16, help="context pixels per side, as the training patches "
                   "were cut (edgeinc data patches --context; default 16)")
    p.add_argument("--threads", type=int, help="runner threads")
    p.add_argument("--batch-size", type=int, help="patches per runner call (default 64)")
    p.add_argument("--score-rule", choices=("object", "argmax", "per-class"), default="object",
                   help="object: best non-background class and its probability (default); argmax: drop boxes "
                   "whose argmax is background; per-class: every box for every class (R-CNN)")
    p.add_argument("--class-agnostic-nms", action="store_true", help="NMS over all classes instead of per class")
    p.add_argument("--inside-thr", type=float, help="also drop detections lying more than this fraction inside a "
                   "larger one (off by default)")
    # defaults resolved in cmd_detect: the parser must not import the detector (PyTorch) to start
    p.add_argument("--window-sizes", type=_float_list, metavar="PX,PX,...",
                   help="sliding window sides (default edgeinc.detect.proposals.SLIDING_SIZES: 12 to 96 px)")
    p.add_argument("--window-ratios", type=_float_list, metavar="R,...",
                   help="sliding window aspect ratios, width / height (default 1)")
    p.add_argument("--window-stride", type=float, help="sliding window step, a fraction of the window (default 0.5)")
    p.add_argument("--json", action="store_true", help="print detect.json (and the metrics) as JSON")


def cmd_detect(args: argparse.Namespace) -> int:
    from .detect import SlidingWindows, detect

    default = SlidingWindows()
    windows = SlidingWindows(args.window_sizes or default.sizes, args.window_ratios or default.aspect_ratios,
                             default.stride if args.window_stride is None else args.window_stride)
    try:
        result = detect(
            args.source, args.images, proposals=args.proposals, out=args.out, score_thr=args.score_thr,
            nms_iou=args.nms_iou, max_det=args.max_det, eval_ann=args.eval, backend=args.backend, context=args.context,
            threads=args.threads, batch_size=args.batch_size, score_rule=args.score_rule,
            class_agnostic_nms=args.class_agnostic_nms, inside_thr=args.inside_thr, windows=windows,
            progress=None if args.json else (lambda msg: console.print(f"[dim]{msg}[/]", highlight=False)),
        )
    except ImportError as e:  # an optional extra (pycocotools, OpenCV contrib): the message says what to install
        raise UserError(str(e)) from None
    if args.json:
        summary = result.summary()
        if result.metrics is not None:
            summary["metrics"] = result.metrics.to_dict()
            summary["metrics"]["class_agnostic"] = result.agnostic.stats
        print(json.dumps(summary, indent=2))
        return 0
    c = result.counts
    console.print(f"{c['detections']} detections in {c['images']} images from {c['proposals']} proposals "
                  f"({c['not_valid']} not valid) in {result.seconds['total']:.1f} s "
                  f"({result.seconds['classify']:.1f} s classifying); {', '.join(f'{k}: {v}' for k, v in result.files.items())}",
                  highlight=False, soft_wrap=True)
    if result.metrics is not None:
        m = result.metrics
        print(m.summary)
        table = Table(title=f"COCO box metrics ({m.evaluator}) on {m.images} images, {m.ground_truth} objects")
        for col in ("", "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100"):
            table.add_column(col, justify="left" if not col else "right")
        for label, stats in (("per class", m.stats), ("class-agnostic", result.agnostic.stats)):
            table.add_row(label, *("-" if stats[k] is None else f"{100 * stats[k]:.1f}%"
                                   for k in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100")))
        console.print(table)
    return 0


# The command table: (name, help, arguments, handler), or (name, help, a table of sub-commands).
DATA_COMMANDS = (
    ("synth", "write the synthetic patch task as OUT/{train,val}/<class>/*.png", _data_synth_arguments, cmd_data_synth),
    ("scenes", "write synthetic detection scenes: OUT/{train,val}/*.png and COCO OUT/annotations/{train,val}.json",
     _data_scenes_arguments, cmd_data_scenes),
    ("patches", "cut a COCO detection split into an ImageNet-layout patch folder OUT/<category>/*.png + "
     "OUT/background/*.png (one split per run)", _data_patches_arguments, cmd_data_patches),
    ("baseline", "colour-histogram logistic regression on ROOT/train, scored on ROOT/val", _data_baseline_arguments,
     cmd_data_baseline),
)
COMMANDS = (
    ("models", "table of the registered Inception-v3 variants", _models_arguments, cmd_models),
    ("data", "data tools: the synthetic patch task, the colour baseline, detection scenes and patches", DATA_COMMANDS),
    ("bench", "latency, size, parameters, multiply-adds and accuracy of artifacts", _bench_arguments, cmd_bench),
    ("train", "train from a recipe (torchrun --nproc_per_node=N -m edgeinc train ... for DDP)", _train_arguments, cmd_train),
    ("eval", "top-1/top-5 of a run (EMA weights) or weights file on a data folder", _eval_arguments, cmd_eval),
    ("export", "export a run/checkpoint to ONNX, TFLite or TensorRT (fp32/fp16/int8) + manifest.json",
     _export_arguments, cmd_export),
    ("demo", "synthesize the patch task, train quickstart on it, evaluate (what `make demo` runs)", _demo_arguments,
     cmd_demo),
    ("detect", "detect objects: proposals -> patch classifier -> NMS -> COCO results, annotated PNGs (+ COCO mAP)",
     _detect_arguments, cmd_detect),
)


def _add_commands(parser: argparse.ArgumentParser, table: tuple, dest: str) -> None:
    sub = parser.add_subparsers(dest=dest, required=True)
    for name, help_text, *rest in table:
        p = sub.add_parser(name, help=help_text)
        if len(rest) == 1:  # a group: its own sub-commands
            _add_commands(p, rest[0], f"{name}_command")
        else:
            arguments, handler = rest
            arguments(p)
            p.set_defaults(func=handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeinc", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edgeinc {__version__}")
    _add_commands(parser, COMMANDS, "command")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error argparse already printed (status 2)
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.func(args)
    except (UserError, ValueError, FileNotFoundError) as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        return 2
    except OSError as e:  # a full disk, a read-only or vanished folder: what failed, not a traceback
        where = f"{e.filename}: " if e.filename else ""
        console.print(f"[bold red]error:[/] {where}{e.strerror or e} (files are written atomically: nothing "
                      f"half-written was left)", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130

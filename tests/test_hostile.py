"""Hostile input and faults: bad recipes, data, images, checkpoints, artifacts, signals and a full disk.

Every case asserts the exit status, that the message names the file or flag at fault (and never shows a
traceback or advises ``weights_only=False``), and that nothing already written changed (sha256 of every
file before and after).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edgeinc.cli import main
from edgeinc.models import save_weights
from export_helpers import workspace

pytestmark = pytest.mark.xdist_group("export_workspace")

TINY = """\
model: {name: inception_v3_79, depth_multiplier: 0.1, min_depth: 8}
data: {root: DATA, workers: 0}
train: {epochs: 1, batch_size: 6, lr_reference_batch: 6, checkpoint_every_steps: 1, log_every_steps: 1, device: cpu,
        optimizer: adamw, lr: 0.002}
"""


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file below ``roots``."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def fails(args: list[str], capsys, *expected: str, code: int = 2) -> str:
    """``edgeinc ARGS`` exits ``code`` with every ``expected`` text in its message and no traceback."""
    got = main(args)
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert got == code, text
    assert "Traceback" not in text and "weights_only=False" not in text, text
    for part in expected:
        assert part in text, f"{part!r} not in: {text}"
    return text


def cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # stdin from /dev/null: a pytest-xdist worker's own stdin is its channel to the controller
    return subprocess.Popen([sys.executable, "-m", "edgeinc", *args], env=env, text=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def caught_signals(pid: int) -> int:
    """The signals a process has handlers for (SigCgt of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> dict:
    from edgeinc.data import synthesize_patch_task

    root = tmp_path_factory.mktemp("hostile")
    synthesize_patch_task(root / "data", classes=2, train=6, val=3, size=48, seed=1)
    recipe = root / "tiny.yaml"
    recipe.write_text(TINY.replace("DATA", str(root / "data")))
    run = root / "run"
    assert main(["train", str(recipe), "--out", str(run)]) == 0
    return {"root": root, "data": root / "data", "recipe": recipe, "run": run}


# -- recipes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("model: {name: inception_v3_79}\ndata: {root: d}\ntrain: {bach_size: 4}\n", "train.bach_size: unknown key; did you mean 'batch_size'?"),
    ("model: {name: inception_v3_79}\ndata: {root: d}\ntrain: {lr: fast}\n", "train.lr: Input should be a valid number"),
    ("model: {name: inception_v3_78}\ndata: {root: d}\n", "model.name: unknown model 'inception_v3_78'; did you mean 'inception_v3_79'"),
    ("model: {name: inception_v3_79}\ndata: {root: d}\ntrain: {lr: .inf}\n", "train.lr: Input should be a finite number"),
    ("model: {name: inception_v3_79}\ndata: {root: d}\ntrain: {batch_size: 4, micro_batch_size: 8}\n",
     "train.micro_batch_size must be between 1 and train.batch_size (4)"),
    ("model: [1, 2\n", "not valid YAML"),
    ("- just\n- a list\n", "a recipe is a mapping of sections"),
], ids=["unknown-key", "wrong-type", "unknown-model", "infinite-lr", "micro-batch", "yaml-syntax", "not-a-mapping"])
def test_bad_recipe_files_name_the_file_and_the_key(tmp_path, capsys, text, expected):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    before = snapshot(tmp_path)
    fails(["train", str(recipe), "--out", str(tmp_path / "run")], capsys, str(recipe), expected)
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


def test_a_recipe_that_is_not_utf8_names_the_file(tmp_path, capsys):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("model: {name: caf\xe9}\n".encode("latin-1"))
    fails(["train", str(recipe)], capsys, str(recipe), "not a text file in UTF-8")


def test_a_base_chain_that_loops_names_the_files(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    fails(["train", str(tmp_path / "a.yaml")], capsys, "'base' chain loops", "a.yaml", "b.yaml")


@pytest.mark.parametrize(("flag", "expected"), [
    ("train.lr=.inf", "--set train.lr=.inf: train.lr: Input should be a finite number"),
    ("train.lr=nan", "--set train.lr=nan: train.lr: Input should be a finite number"),
    ("train.bach_size=3", "--set train.bach_size=3: train.bach_size: unknown key; did you mean 'batch_size'?"),
    ("train.lr", "--set train.lr: expected section.key=value"),
    ("model.depth_multiplier=0", "--set model.depth_multiplier=0: model.depth_multiplier: Input should be greater than 0"),
])
def test_bad_set_flags_are_blamed_on_the_flag_not_the_recipe(task, capsys, flag, expected):
    before = snapshot(task["run"])
    text = fails(["train", str(task["recipe"]), "--set", flag, "--out", str(task["root"] / "never")], capsys, expected)
    assert f"{task['recipe']}:" not in text and snapshot(task["run"]) == before


def test_an_unknown_shipped_recipe_name_lists_them(capsys):
    fails(["train", "lowrez"], capsys, "lowrez: no such recipe file", "did you mean 'lowres'?")


# -- run directories --------------------------------------------------------------------------------


def test_a_finished_run_is_never_overwritten(task, tmp_path, capsys):
    before = snapshot(task["run"])
    fails(["train", str(task["recipe"]), "--out", str(task["run"])], capsys, str(task["run"]), "already holds a run", "--force")
    assert snapshot(task["run"]) == before


def test_resume_without_the_checkpoint_refuses_to_overwrite_trained_weights(task, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(task["run"], run)
    shutil.rmtree(run / "checkpoints")
    before = snapshot(run)
    fails(["train", str(run), "--resume"], capsys, f"cannot resume {run}", "model.safetensors", "--force")
    assert snapshot(run) == before


def test_a_new_run_into_a_directory_with_weights_but_no_checkpoint_is_refused(task, tmp_path, capsys):
    run = tmp_path / "weights-only"
    run.mkdir()
    shutil.copy(task["run"] / "model.safetensors", run / "model.safetensors")
    before = snapshot(run)
    fails(["train", str(task["recipe"]), "--out", str(run)], capsys, str(run), "already holds a run", "model.safetensors")
    assert snapshot(run) == before


def test_out_naming_a_file_is_an_error(task, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    fails(["train", str(task["recipe"]), "--out", str(target)], capsys, f"--out {target} is a file")
    assert target.read_text() == "keep me"


def test_resume_of_a_missing_directory_says_so(tmp_path, capsys):
    fails(["train", str(tmp_path / "nowhere"), "--resume"], capsys, f"{tmp_path / 'nowhere'}: no such run directory to resume")


def test_an_edited_resolved_recipe_is_refused_with_the_way_out(task, tmp_path, capsys):
    run = tmp_path / "edited"
    shutil.copytree(task["run"], run)
    resolved = run / "recipe.resolved.yaml"
    resolved.write_text(resolved.read_text().replace("lr: 0.002", "lr: 0.1"))
    before = snapshot(run)
    text = fails(["train", str(run), "--resume"], capsys, "the recipe differs from the run's (train.lr: 0.002 -> 0.1)",
                 "undoing the edit to recipe.resolved.yaml")
    assert snapshot(run) == before and "--out" in text


def test_a_pickled_code_checkpoint_is_refused_unread(task, tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    run = tmp_path / "evil"
    shutil.copytree(task["run"], run)
    torch.save({"format": "edgeinc.train/1", "x": Evil()}, run / "checkpoints" / "last.pt")
    fails(["train", str(run), "--resume"], capsys, str(run / "checkpoints" / "last.pt"), "refused unread")
    assert not (tmp_path / "pwned").exists()


# -- checkpoints given to eval / export / bench ------------------------------------------------------


@pytest.fixture(scope="module")
def nan_weights(task, tmp_path_factory) -> Path:
    from edgeinc.models import load_weights

    model = load_weights(task["run"] / "ema.safetensors")
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    path = tmp_path_factory.mktemp("nan") / "diverged.safetensors"
    save_weights(model, path, {"edgeinc.labels": json.dumps(["background", "circle", "triangle"])})
    return path


@pytest.mark.parametrize("command", ["eval", "export", "bench"])
def test_nan_weights_are_never_scored_exported_or_benchmarked(nan_weights, task, tmp_path, capsys, command):
    args = {"eval": ["eval", str(nan_weights), "--data", str(task["data"]), "--workers", "0"],
            "export": ["export", str(nan_weights), "--target", "onnx", "--calib", str(task["data"]), "--out", str(tmp_path)],
            "bench": ["bench", str(nan_weights), "--runs", "1", "--out", str(tmp_path / "b")]}[command]
    fails(args, capsys, str(nan_weights), "hold NaN or inf", "fc.weight")
    assert not list(tmp_path.rglob("manifest.json"))


def test_weights_from_another_variant_in_a_run_directory_are_refused(task, tmp_path, capsys):
    from edgeinc.models import create_model

    run = tmp_path / "mixed"
    shutil.copytree(task["run"], run)
    other = create_model("inception_v3_151", num_classes=3, depth_multiplier=0.1, min_depth=8)
    save_weights(other, run / "ema.safetensors", {"edgeinc.labels": json.dumps(["background", "circle", "triangle"])})
    fails(["eval", str(run), "--data", str(task["data"]), "--workers", "0"], capsys,
          "holds inception_v3_151 weights", "trains inception_v3_79", str(run / "recipe.resolved.yaml"))


@pytest.mark.parametrize(("content", "expected"), [
    (b"not a safetensors file", "not a readable safetensors file"),
    (b"", "not a readable safetensors file"),
])
def test_corrupt_weights_files_name_the_file(tmp_path, capsys, content, expected):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    fails(["export", str(path), "--target", "onnx", "--calib", str(tmp_path)], capsys, str(path), expected)


def test_a_pickle_given_as_weights_is_refused_unread(tmp_path, capsys):
    from edgeinc.models import read_state_dict
    from edgeinc.models.weights import CheckpointError

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"fc.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused unread") as e:
        read_state_dict(tmp_path / "evil.pth")
    assert "weights_only=False" not in str(e.value) and not (tmp_path / "pwned").exists()


# -- data --------------------------------------------------------------------------------------------


def test_missing_data_root_gives_the_way_out(task, tmp_path, capsys):
    fails(["train", str(task["recipe"]), "--set", f"data.root={tmp_path / 'nowhere'}", "--out", str(tmp_path / "r")],
          capsys, f"no train split at {tmp_path / 'nowhere' / 'train'}", "edgeinc data synth")


def test_an_empty_class_folder_names_the_folder(task, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(task["data"], data)
    for image in (data / "train" / "circle").iterdir():
        image.unlink()
    fails(["train", str(task["recipe"]), "--set", f"data.root={data}", "--out", str(tmp_path / "r")], capsys,
          f"class folder {data / 'train' / 'circle'} holds no images")


def test_a_corrupt_image_with_on_bad_image_fail_names_the_file(task, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(task["data"], data)
    bad = next((data / "train" / "circle").iterdir())
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    fails(["train", str(task["recipe"]), "--set", f"data.root={data}", "--set", "data.on_bad_image=fail",
           "--out", str(tmp_path / "r")], capsys, f"cannot read image {bad}")


def test_validation_classes_that_training_lacks_name_the_folder(task, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(task["data"], data)
    shutil.copytree(data / "val" / "circle", data / "val" / "square")
    fails(["train", str(task["recipe"]), "--set", f"data.root={data}", "--out", str(tmp_path / "r")], capsys,
          str(data / "val" / "square"), "not in the class list")


@pytest.mark.parametrize("loops", [1, 2])
def test_symlink_loops_in_a_dataset_neither_hang_nor_relabel_images(task, tmp_path, caplog, loops):
    from edgeinc.data import ImageFolder

    data = tmp_path / "data"
    shutil.copytree(task["data"], data)
    train = data / "train"
    counts = {c.name: len(list(c.iterdir())) for c in train.iterdir()}
    (train / "circle" / "loop").symlink_to("..")  # circle/loop -> train: every class again, as circle
    if loops == 2:
        (train / "triangle" / "loop").symlink_to("../circle")
    folder = ImageFolder(train)  # a hang would time the test suite out
    assert {name: sum(1 for _, label in folder.samples if folder.classes[label] == name) for name in counts} == counts
    assert "skipping" in caplog.text and "loop" in caplog.text
    before = snapshot(data)
    assert main(["train", str(task["recipe"]), "--set", f"data.root={data}", "--out", str(tmp_path / "r"),
                 "--set", "train.epochs=1"]) == 0
    assert snapshot(data) == before


def test_a_calibration_folder_without_images_names_it(ws, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(["export", str(ws.run), "--target", "onnx", "--calib", str(empty), "--out", str(tmp_path / "o")], capsys,
          f"{empty}: holds no images")


def test_a_corrupt_calibration_image_names_the_file(ws, tmp_path, capsys):
    calib = tmp_path / "calib"
    shutil.copytree(ws.data / "train", calib)
    bad = next((calib / "red").iterdir())
    bad.write_bytes(b"garbage")
    fails(["export", str(ws.run), "--target", "onnx", "--calib", str(calib), "--out", str(tmp_path / "o")], capsys, str(bad))
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("manifest.json"))


# -- artifacts ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifact(ws) -> Path:
    return ws.export("onnx", "fp32").directory


def _copy(artifact: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "artifact"
    shutil.copytree(artifact, copy)
    return copy


def test_a_tampered_artifact_is_caught_by_its_sha256(artifact, tmp_path, capsys):
    copy = _copy(artifact, tmp_path)
    onnx_file = next(copy.glob("*.onnx"))
    with open(onnx_file, "ab") as f:
        f.write(b"\0")
    fails(["bench", str(copy), "--runs", "1", "--out", str(tmp_path / "b")], capsys, str(onnx_file), "sha256")


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda m: "{not json", "not a readable JSON manifest"),
    (lambda m: json.dumps({**m, "schema_version": 1}), "field 'schema_version' is 1, written by an older edgeinc"),
    (lambda m: json.dumps({k: v for k, v in m.items() if k != "input"}), "field 'input': Field required"),
    (lambda m: json.dumps({**m, "precision": "int4"}), "field 'precision'"),
    (lambda m: json.dumps({**m, "artifact": "gone.onnx"}), "its artifact"),
], ids=["not-json", "old-schema", "missing-field", "bad-precision", "missing-artifact"])
def test_bad_manifests_name_the_file_and_the_field(artifact, tmp_path, capsys, edit, expected):
    copy = _copy(artifact, tmp_path)
    manifest = copy / "manifest.json"
    manifest.write_text(edit(json.loads(manifest.read_text())))
    fails(["bench", str(copy), "--runs", "1", "--out", str(tmp_path / "b")], capsys, str(manifest if "artifact" not in expected else copy), expected)


def test_a_merge_file_that_is_not_a_bench_report_names_the_field(artifact, tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rows": []}))
    fails(["bench", "--merge", str(other), "--out", str(tmp_path / "b")], capsys, str(other), "field 'schema'")


def test_an_interrupted_export_leaves_the_previous_artifact_intact(ws, tmp_path):
    from edgeinc.export import export

    out = tmp_path / "out"
    first = export(ws.run, "onnx", "fp32", out=out, calib_size=8, threads=1)
    before = snapshot(first.directory)
    proc = cli("export", str(ws.run), "--target", "onnx", "--out", str(out), "--calib-size", "8", "--threads", "1")
    deadline = time.monotonic() + 120
    while not list(out.glob(".onnx-fp32.partial-*")):  # killed while the new export is being staged
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert snapshot(first.directory) == before  # the good artifact it was replacing: untouched
    export(ws.run, "onnx", "fp32", out=out, calib_size=8, threads=1)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # the killed export's staging: cleaned


# -- signals -----------------------------------------------------------------------------------------


def test_ctrl_c_while_the_command_line_is_still_importing_exits_quietly(task):
    # Started with SIGINT ignored (as under pytest-xdist, whose workers ignore it: a fixed sleep then sent the
    # signal before edgeinc's handler existed, and it was lost), so the handler is the only catcher: the
    # signal goes the moment /proc shows it caught, while PyTorch is still being imported.
    proc = cli("train", str(task["recipe"]), "--out", str(task["root"] / "ctrl-c"),
               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 60
    while not caught_signals(proc.pid) & (1 << (signal.SIGINT - 1)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in out, out


def test_sigterm_during_training_saves_and_exits_143(task, tmp_path):
    run = tmp_path / "term"
    proc = cli("train", str(task["recipe"]), "--out", str(run), "--set", "train.epochs=5")
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "last.pt").is_file():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in out and "--resume" in out


# -- the disk ----------------------------------------------------------------------------------------


def _in_a_small_tmpfs(size: str, script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """``script`` (sh) in a private mount namespace where $DISK is a tmpfs of ``size``: a full disk without root."""
    disk = tmp_path / "disk"
    disk.mkdir()
    cmd = ["unshare", "-r", "-m", "sh", "-c", f'mount -t tmpfs -o size={size} tmpfs "$DISK" && {script}']
    env = {**os.environ, "DISK": str(disk), "OMP_NUM_THREADS": "1", "PY": sys.executable}
    probe = subprocess.run(["unshare", "-r", "-m", "sh", "-c", f'mount -t tmpfs -o size=1m tmpfs "{disk}"'],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"private mount namespaces are not allowed here: {probe.stderr.decode().strip()}")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_a_full_disk_while_checkpointing_is_a_clear_error_and_the_last_checkpoint_survives(task, tmp_path):
    # one checkpoint of the tiny model fits (~4 MB), writing the second beside it does not
    script = ('"$PY" -m edgeinc train ' + str(task["recipe"]) + ' --out "$DISK/run" --set train.epochs=3; echo "exit=$?"; '
              '"$PY" -c "from edgeinc.train.checkpoint import load_checkpoint_state as l; import sys; '
              "s = l(sys.argv[1]); print('saved step', s['position']['global_step'])\" \"$DISK/run/checkpoints/last.pt\"; "
              'ls -a "$DISK/run" "$DISK/run/checkpoints"')
    done = _in_a_small_tmpfs("7m", script, tmp_path)
    out = " ".join((done.stdout + done.stderr).split())
    assert "exit=2" in out and "Traceback" not in out, out
    assert "the disk is full" in out and "the last good checkpoint" in out and "--resume" in out, out
    assert "saved step 1" in out or "saved step 2" in out, out
    assert ".tmp" not in out  # no half-written file left


def test_a_full_disk_while_exporting_leaves_nothing_behind(ws, tmp_path):
    script = (f'"$PY" -m edgeinc export {ws.run} --target onnx --calib {ws.data} --calib-size 8 --out "$DISK/out"; '
              'echo "exit=$?"; find "$DISK" -mindepth 1 | head')
    done = _in_a_small_tmpfs("300k", script, tmp_path)
    out = " ".join((done.stdout + done.stderr).split())
    assert "exit=2" in out and "Traceback" not in out and "No space left" in out, out
    assert "manifest.json" not in out and ".partial" not in out, out


# -- the detector stage ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    from edgeinc.data import synthesize_scenes

    root = tmp_path_factory.mktemp("scenes") / "scenes"
    synthesize_scenes(root, train=2, val=1, size=160, objects=(2, 3))
    return root


def test_a_bad_box_is_refused_by_index_when_strict(ws):
    import numpy as np

    from edgeinc.detect import PatchClassifier

    classifier = PatchClassifier.load(ws.run)
    image = np.zeros((64, 64, 3), np.uint8)
    boxes = [[1, 1, 30, 30], [5, 5, float("nan"), 20], [10, 10, 5, 40]]
    with pytest.raises(ValueError, match=r"box 1 .*(NaN|finite)"):
        classifier.classify(image, boxes, strict=True)
    result = classifier.classify(image, boxes)
    assert result.valid.tolist() == [True, False, False]


def test_patches_from_a_coco_file_with_missing_images_names_them_and_writes_nothing(scenes, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(scenes / "train", images)
    missing = sorted(images.iterdir())[0]
    missing.unlink()
    out = tmp_path / "patches"
    fails(["data", "patches", "--coco", str(scenes / "annotations" / "train.json"), "--images", str(images),
           "--out", str(out)], capsys, missing.name, "missing")
    assert not out.exists() or not any(out.rglob("*.png"))


def test_a_malformed_coco_file_names_the_file_and_the_field(scenes, tmp_path, capsys):
    data = json.loads((scenes / "annotations" / "train.json").read_text())
    data["annotations"][0]["bbox"] = [1, 2, 3]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    fails(["data", "patches", "--coco", str(bad), "--images", str(scenes / "train"), "--out", str(tmp_path / "p")],
          capsys, str(bad), "annotations[0]", "bbox")


@pytest.mark.parametrize(("content", "expected"), [("{not json", "not"), ('[{"image_id": 1, "bbox": [1, 2]}]', "bbox")])
def test_detect_with_an_unreadable_proposal_file_names_it(ws, scenes, tmp_path, capsys, content, expected):
    proposals = tmp_path / "boxes.json"
    proposals.write_text(content)
    fails(["detect", str(ws.run), str(scenes / "val"), "--proposals", str(proposals), "--out", str(tmp_path / "d")],
          capsys, str(proposals), expected)


def test_detect_on_missing_images_is_a_clear_error(ws, tmp_path, capsys):
    fails(["detect", str(ws.run), str(tmp_path / "nowhere"), "--out", str(tmp_path / "d")], capsys,
          str(tmp_path / "nowhere"))

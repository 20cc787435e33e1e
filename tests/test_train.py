"""Training: the optimizer's TF semantics, the schedule, EMA, data order, exact resume after SIGKILL,
SIGTERM, non-finite loss, 2-process DDP with SyncBN, evaluation crops, the CLI, the quickstart."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeinc.config import TrainSection, load_recipe
from edgeinc.models import create_model, get_variant, load_source, read_state_dict
from edgeinc.train import LRSchedule, MultiCrop, TrainingError, build_optimizer, evaluate, scaled_lr, train
from edgeinc.train.checkpoint import checkpoint_path, load_checkpoint_state
from edgeinc.train import build_ema
from edgeinc.train.sampling import SeededSamples, TrainBatchSampler

# A run small enough for 2 shared cores: 3 classes x 6 images, global batch 6 -> 3 steps per epoch.
TINY_RECIPE = """\
model: {name: inception_v3_79, depth_multiplier: 0.1, min_depth: 8}
data: {root: DATA, workers: 1, scale: [0.5, 1.0]}
train:
  epochs: 3
  batch_size: 6
  lr: 0.045
  lr_reference_batch: 6
  lr_decay_epochs: 1.0        # the decay steps inside the run
  warmup_epochs: 0.5
  bn_momentum: 0.1
  checkpoint_every_steps: 1
  log_every_steps: 1
  device: cpu
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    from edgeinc.data import synthesize_patch_task

    root = tmp_path_factory.mktemp("tiny")
    synthesize_patch_task(root / "data", classes=2, train=6, val=3, size=48, seed=1)
    recipe = root / "tiny.yaml"
    recipe.write_text(TINY_RECIPE.replace("DATA", str(root / "data")))
    return {"root": root, "data": root / "data", "recipe": recipe}


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models gain nothing from a second thread, and on a busy 2-core machine two threads per
    # process wait on each other (10x slower). Exact resume compares runs with the same setting.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cli(*args: str, cwd: Path | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "edgeinc", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def run_cli(*args: str, timeout: float = 600) -> str:
    proc = cli(*args)
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def saved_step(run: Path) -> int:
    try:
        return load_checkpoint_state(checkpoint_path(run))["position"]["global_step"]
    except Exception:  # not there yet
        return -1


def wait_for_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while saved_step(run) < step:
        assert proc.poll() is None, f"the run ended before step {step}:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def assert_same_run(a: Path, b: Path) -> None:
    """Bit for bit: weights, EMA, optimizer state, and the metrics that do not measure time."""
    for name in ("model.safetensors", "ema.safetensors"):
        assert_same_state(read_state_dict(a / name), read_state_dict(b / name))
    sa, sb = load_checkpoint_state(checkpoint_path(a)), load_checkpoint_state(checkpoint_path(b))
    assert sa["position"] == sb["position"]
    for (ka, va), (kb, vb) in zip(sa["optimizer"]["state"].items(), sb["optimizer"]["state"].items()):
        assert ka == kb and all(torch.equal(va[k], vb[k]) for k in va)
    timeless = [{k: v for k, v in row.items() if k not in ("epoch_time_s", "images_per_s")} for row in sa["history"]]
    assert timeless == [{k: v for k, v in row.items() if k not in ("epoch_time_s", "images_per_s")} for row in sb["history"]]


# ------------------------------------------------------------------------------------------------
# The method, against hand computations
# ------------------------------------------------------------------------------------------------


def test_rmsprop_tf_two_steps_match_the_formulas():
    cfg = TrainSection(lr=0.1, lr_reference_batch=1600, batch_size=1600, weight_decay=0.01)
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -1.0]]))
        layer.bias.fill_(0.25)
    opt = build_optimizer(layer, cfg)
    grads = [(torch.tensor([[0.3, -2.0]]), torch.tensor([0.7])), (torch.tensor([[-0.1, 0.4]]), torch.tensor([-1.5]))]
    w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    ms_w, ms_b = torch.ones_like(w), torch.ones_like(b)  # TF: the mean square starts at 1
    mom_w, mom_b = torch.zeros_like(w), torch.zeros_like(b)
    for gw, gb in grads:
        layer.weight.grad, layer.bias.grad = gw.clone(), gb.clone()
        opt.step()
        gw = gw + 0.01 * w  # L2 on weights only, added to the gradient
        ms_w, ms_b = ms_w + 0.1 * (gw**2 - ms_w), ms_b + 0.1 * (gb**2 - ms_b)
        mom_w = 0.9 * mom_w + 0.1 * gw / torch.sqrt(ms_w + 1.0)  # eps inside the sqrt, lr inside the momentum
        mom_b = 0.9 * mom_b + 0.1 * gb / torch.sqrt(ms_b + 1.0)
        w, b = w - mom_w, b - mom_b
        torch.testing.assert_close(layer.weight.detach(), w, rtol=0, atol=1e-7)
        torch.testing.assert_close(layer.bias.detach(), b, rtol=0, atol=1e-7)
    # torch.optim.RMSprop (eps outside the sqrt, mean square from 0) would land elsewhere
    ref = nn.Linear(2, 1)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor([[0.5, -1.0]]))
    torch_rms = torch.optim.RMSprop([ref.weight], lr=0.1, alpha=0.9, eps=1.0, momentum=0.9)
    for gw, _ in grads:
        ref.weight.grad = gw.clone()
        torch_rms.step()
    assert (ref.weight.detach() - w).abs().max() > 1e-2


def test_momentum_ablation_is_tf_momentum():
    cfg = TrainSection(optimizer="momentum", lr=0.1, batch_size=1600, weight_decay=0.0)
    p = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        p.weight.fill_(1.0)
    opt = build_optimizer(p, cfg)
    for g in (2.0, -1.0):
        p.weight.grad = torch.tensor([[g]])
        opt.step()
    # accum = 0.9 * accum + g; w -= lr * accum:  1 - 0.1*2 - 0.1*(0.9*2 - 1)
    assert p.weight.item() == pytest.approx(1 - 0.2 - 0.08, abs=1e-7)
    adamw = build_optimizer(p, TrainSection(optimizer="adamw", lr=0.002, batch_size=1600))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.9, 0.999)


def test_schedule_decays_094_every_2_epochs_scales_with_batch_and_warms_up():
    assert scaled_lr(TrainSection()) == pytest.approx(0.045)
    assert scaled_lr(TrainSection(batch_size=3200)) == pytest.approx(0.09)
    assert scaled_lr(TrainSection(batch_size=32)) == pytest.approx(0.045 * 32 / 1600)
    s = LRSchedule(base_lr=0.045, steps_per_epoch=10)
    assert [s(i) for i in (0, 19)] == [0.045, 0.045]
    assert s(20) == pytest.approx(0.045 * 0.94) and s(39) == pytest.approx(0.045 * 0.94)
    assert s(40) == pytest.approx(0.045 * 0.94**2) and s(1000) == pytest.approx(0.045 * 0.94**50)
    smooth = LRSchedule(base_lr=0.045, steps_per_epoch=10, staircase=False)
    assert smooth(10) == pytest.approx(0.045 * 0.94**0.5)
    warm = LRSchedule(base_lr=1.0, steps_per_epoch=10, warmup_epochs=1.0)
    assert [warm(i) for i in (0, 4, 9, 10)] == pytest.approx([0.1, 0.5, 1.0, 1.0])
    assert LRSchedule(base_lr=1.0, steps_per_epoch=1, warmup_epochs=0.5)(0) == 1.0  # never above the rate


def test_ema_decay_warms_up_and_averages_params_and_bn_statistics():
    t = TrainSection(ema_decay=0.9999, ema_warmup_power=0.75)
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = build_ema(net, t)
    assert ema.get_decay(1) == 0.0  # the first update copies
    assert ema.get_decay(100) == pytest.approx(1 - 100**-0.75)
    assert ema.get_decay(10**9) == 0.9999
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for v in net.state_dict().values():
            if v.is_floating_point():
                v.add_(1.0)
    ema.update(net, step=100)
    d = 1 - 100**-0.75
    for k, v in ema.module.state_dict().items():
        if v.is_floating_point():  # running_mean / running_var too
            torch.testing.assert_close(v, d * before[k] + (1 - d) * net.state_dict()[k])


def test_data_order_is_a_function_of_seed_epoch_and_step():
    one = TrainBatchSampler(20, 8, rank=0, world_size=1, seed=3, epoch=0)
    batches = list(one)
    assert len(batches) == 2 and all(len(b) == 8 for b in batches)  # the partial last batch is dropped
    assert len({i for b in batches for _, i in b}) == 16
    shards = [list(TrainBatchSampler(20, 8, rank=r, world_size=2, seed=3, epoch=0)) for r in (0, 1)]
    for k in range(2):  # two ranks together see exactly the single process's global batch
        assert sorted(shards[0][k] + shards[1][k]) == sorted(batches[k])
    assert list(TrainBatchSampler(20, 8, 0, 1, seed=3, epoch=0, start_step=1)) == batches[1:]
    assert list(TrainBatchSampler(20, 8, 0, 1, seed=3, epoch=1)) != batches
    with pytest.raises(ValueError, match="not divisible"):
        TrainBatchSampler(20, 7, 0, 2, 0, 0)


def test_augmentation_depends_on_the_sample_not_on_the_process_rng(tiny):
    from edgeinc.data import ImageFolder, build_transform

    ds = SeededSamples(ImageFolder(tiny["data"] / "train", build_transform("inception_v3_79", train=True)), seed=0)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = ds[(0, 4)][0]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's stream is untouched
    torch.manual_seed(999)
    assert torch.equal(ds[(0, 4)][0], a)
    assert not torch.equal(ds[(1, 4)][0], a)  # another epoch, another crop


# ------------------------------------------------------------------------------------------------
# Runs: reference, SIGKILL + resume, SIGTERM + resume, non-finite loss
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_run(tiny) -> Path:
    run = tiny["root"] / "reference"
    out = run_cli("train", str(tiny["recipe"]), "--out", str(run))
    assert "epoch 3/3" in out
    return run


def test_reference_run_writes_the_run_directory_contract(reference_run, tiny):
    for name in ("recipe.resolved.yaml", "classes.json", "model.safetensors", "ema.safetensors", "metrics.csv"):
        assert (reference_run / name).is_file(), name
    assert list((reference_run / "tb").glob("events.out.tfevents.*"))
    assert load_recipe(reference_run / "recipe.resolved.yaml") == load_recipe(tiny["recipe"])
    src = load_source(reference_run)
    assert src.weights_path.name == "ema.safetensors"
    assert src.labels == ["background", "circle", "triangle"] and src.recipe["train"]["batch_size"] == 6
    state = load_checkpoint_state(checkpoint_path(reference_run))  # weights_only=True
    assert state["position"] == {"epoch": 3, "step_in_epoch": 0, "global_step": 9}
    lines = (reference_run / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,global_step,lr,train_loss") and len(lines) == 4
    raw, ema = read_state_dict(reference_run / "model.safetensors"), read_state_dict(reference_run / "ema.safetensors")
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)


def test_sigkill_at_any_moment_then_resume_gives_the_same_weights_bit_for_bit(reference_run, tiny):
    run = tiny["root"] / "killed"
    proc = cli("train", str(tiny["recipe"]), "--out", str(run))
    wait_for_step(proc, run, 4)  # in epoch 2, mid-step or mid-checkpoint: whatever the moment is
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert 4 <= saved_step(run) < 9
    out = run_cli("train", str(run), "--resume")
    assert "resumed" in out
    assert_same_run(reference_run, run)


def test_sigterm_saves_exits_cleanly_and_resumes_exactly(reference_run, tiny):
    run = tiny["root"] / "terminated"
    proc = cli("train", str(tiny["recipe"]), "--out", str(run))
    wait_for_step(proc, run, 2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "Traceback" not in out and "checkpoint saved" in out and f"edgeinc train {run} --resume" in out
    assert 2 <= saved_step(run) < 9
    run_cli("train", str(tiny["recipe"]), "--out", str(run), "--resume")
    assert_same_run(reference_run, run)


def test_a_run_directory_is_not_overwritten_and_resume_refuses_another_recipe(reference_run, tiny):
    with pytest.raises(TrainingError, match="already holds a run.*--resume"):
        train(tiny["recipe"], out=reference_run)
    with pytest.raises(TrainingError, match=r"recipe differs from the run's \(train.lr: 0.045 -> 0.1\)"):
        train(tiny["recipe"], ["train.lr=0.1"], out=reference_run, resume=True)


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch, capsys):
    import edgeinc.train.setup as setup
    from edgeinc import cli as edgeinc_cli

    real_create = setup.create_model

    def poisoned(*args, **kwargs):  # the logits turn NaN at the 3rd training forward pass
        model = real_create(*args, **kwargs)
        calls = {"n": 0}

        def hook(module, _inp, out):
            if module.training:
                calls["n"] += 1
                return out * float("nan") if calls["n"] >= 3 else out
            return out

        model.fc.register_forward_hook(hook)
        return model

    monkeypatch.setattr(setup, "create_model", poisoned)
    run = tmp_path / "nan"
    code = edgeinc_cli.main(["train", str(tiny["recipe"]), "--out", str(run), "--set", "data.workers=0"])
    out = capsys.readouterr().out
    assert code == 2 and "Traceback" not in out
    assert "non-finite loss nan at epoch 1, step 3 (global step 3)" in " ".join(out.split())
    state = load_checkpoint_state(checkpoint_path(run))
    assert state["position"]["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    with pytest.raises(TrainingError, match="last good checkpoint .* is kept"):
        train(tiny["recipe"], ["data.workers=0"], out=run, resume=True)


def test_missing_data_is_a_clear_error_with_the_way_out(tmp_path, monkeypatch, capsys):
    from edgeinc import cli as edgeinc_cli

    monkeypatch.chdir(tmp_path)
    assert edgeinc_cli.main(["train", "lowres"]) == 2  # a shipped recipe, by name
    out = " ".join(capsys.readouterr().out.split())
    assert "Traceback" not in out and "no train split at data/imagenet/train" in out
    assert "--set data.root=" in out and "edgeinc data synth" in out and "edgeinc train quickstart" in out


# ------------------------------------------------------------------------------------------------
# Distributed: 2 processes (gloo, CPU SyncBN) against 1 with the same global batch
# ------------------------------------------------------------------------------------------------


def test_two_process_ddp_with_sync_bn_matches_one_process(tiny):
    # Dropout off: its masks are per-rank random streams; everything else must agree. fp64: in float32
    # the rounding differences of summing in another order grow ~2x per block of this deep BN network
    # at init (1e-7 -> 1e-2 in some gradients), which would hide a real difference.
    common = ["--set", "train.epochs=1", "--set", "train.sync_bn=true", "--set", "model.dropout=0",
              "--set", "data.workers=0", "--set", "train.checkpoint_every_steps=0", "--set", "train.precision=fp64"]
    one, two = tiny["root"] / "ddp1", tiny["root"] / "ddp2"
    run_cli("train", str(tiny["recipe"]), "--out", str(one), *common)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "edgeinc", "train", str(tiny["recipe"]), "--out", str(two), *common]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("edgeinc train inception_v3_79") == 1  # only rank 0 talks
    assert "2 x cpu" in done.stdout
    a, b = read_state_dict(one / "model.safetensors"), read_state_dict(two / "model.safetensors")
    torch.manual_seed(0)  # the trainer's initial weights
    init = create_model("inception_v3_79", num_classes=3, depth_multiplier=0.1, min_depth=8, dropout=0.0)
    init = init.double().state_dict()
    moved = max((a[k] - init[k]).abs().max().item() for k in a if a[k].is_floating_point())
    assert moved > 1e-2
    for k in a:
        if a[k].is_floating_point():
            assert a[k].dtype == torch.float64
            torch.testing.assert_close(b[k], a[k], rtol=1e-9, atol=1e-10, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k
    assert len(list((two / "tb").glob("events.out.tfevents.*"))) == 1


def _trainer(tiny, tmp_path, *overrides: str):
    from rich.console import Console

    from edgeinc.train.distributed import init_distributed
    from edgeinc.train.trainer import Trainer

    recipe = load_recipe(tiny["recipe"], ["train.precision=fp64", "model.dropout=0", "data.workers=0", *overrides])
    return Trainer(recipe, tmp_path / "unused", init_distributed("cpu"), False, Console(quiet=True))


def test_accumulated_micro_batches_give_the_update_of_one_batch(tiny, tmp_path):
    """The paper's global batch on one device: N micro-batches accumulate to the update of one batch
    (BatchNorm aside: it normalises each micro-batch, so it runs on its statistics here)."""
    whole, micro = _trainer(tiny, tmp_path), _trainer(tiny, tmp_path, "train.micro_batch_size=2")
    assert (whole.micro_batch, micro.micro_batch) == (6, 2)
    images, labels = next(iter(whole.train_loader()))
    for trainer in (whole, micro):
        trainer.model.train()
        for m in trainer.net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        step, loss, n = trainer.train_step(images.clone(), labels.clone())
        assert step == 1 and n == 6
    a, b = whole.net.state_dict(), micro.net.state_dict()
    moved = max((a[k] - init).abs().max().item() for k, init in _trainer(tiny, tmp_path).net.state_dict().items()
                if a[k].is_floating_point())
    assert moved > 1e-4
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-9, atol=1e-12, msg=k)
    torch.testing.assert_close(micro.ema.module.state_dict()["fc.weight"], whole.ema.module.state_dict()["fc.weight"],
                               rtol=1e-9, atol=1e-12)


def test_sigkill_then_resume_is_exact_with_accumulated_micro_batches(tiny):
    common = ["--set", "train.micro_batch_size=4", "--set", "train.epochs=2"]
    reference = tiny["root"] / "micro-reference"
    run_cli("train", str(tiny["recipe"]), "--out", str(reference), *common)
    run = tiny["root"] / "micro-killed"
    proc = cli("train", str(tiny["recipe"]), "--out", str(run), *common)
    wait_for_step(proc, run, 3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    run_cli("train", str(run), "--resume")
    assert_same_run(reference, run)


def _rank_pid(agent: subprocess.Popen, rank: int, timeout: float = 120) -> int:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(agent.pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank) and "edgeinc" in " ".join(child.cmdline()):
                    return child.pid
            except psutil.Error:
                continue
        time.sleep(0.1)
    raise AssertionError("rank not found")


@pytest.mark.parametrize("delay", [0.0, 0.7])
def test_a_signal_on_one_rank_stops_every_rank_after_the_same_step(tiny, tmp_path, delay):
    """SIGTERM to one DDP rank only: the request travels in the step's all-reduced flags, every rank stops
    after the same step and rank 0 saves a checkpoint; deciding per rank would hang the others."""
    run = tmp_path / f"ddp-stop-{delay}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "edgeinc", "train",
           str(tiny["recipe"]), "--out", str(run), "--set", "data.workers=0", "--set", "train.epochs=30"]
    agent = subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_step(agent, run, 1)
        time.sleep(delay)  # lands in another phase of a step: forward, backward, the flag exchange, a save
        os.kill(_rank_pid(agent, 1), signal.SIGTERM)
        out, _ = agent.communicate(timeout=180)  # a disagreement would hang until the 30-minute timeout
    finally:
        if agent.poll() is None:
            agent.kill()
    state = load_checkpoint_state(checkpoint_path(run))
    assert 1 <= state["position"]["global_step"] < 90, out
    assert "checkpoint saved" in out and "Continue with" in out


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------


def test_multi_crop_views():
    from PIL import Image

    v = get_variant("inception_v3_79")
    image = Image.fromarray(torch.randint(0, 255, (90, 140, 3), dtype=torch.uint8).numpy())
    twelve, many = MultiCrop(v, 12)(image), MultiCrop(v, 144)(image)
    assert twelve.shape == (12, 3, 79, 79) and many.shape == (144, 3, 79, 79)
    for views in (twelve, many):  # the second half mirrors the first
        half = len(views) // 2
        assert torch.equal(views[half:], views[:half].flip(-1))
    # 12 = the 144 scheme at its first scale (S x 256/224 = S / 0.875) and the centre square
    assert torch.equal(twelve[:6], many[6:12]) and torch.equal(twelve[6:], many[72 + 6 : 72 + 12])
    assert not torch.equal(many[5], many[11])  # left and centre squares of a landscape image differ


def test_eval_single_crop_reproduces_the_training_metric_and_checks_classes(reference_run, tiny, tmp_path):
    r = evaluate(reference_run, tiny["data"], crops=1, workers=0)
    last = load_checkpoint_state(checkpoint_path(reference_run))["history"][-1]
    assert r.images == 9 and r.classes == 3 and r.weights.endswith("ema.safetensors")
    assert r.top1 == pytest.approx(last["val_top1_ema"]) and r.top5 == pytest.approx(last["val_top5_ema"])
    raw = evaluate(reference_run, tiny["data"] / "val", crops=1, prefer="model", workers=0)
    assert raw.top1 == pytest.approx(last["val_top1"])
    multi = evaluate(reference_run, tiny["data"], crops=12, workers=0)
    assert multi.crops == 12 and multi.images == 9 and 0 <= multi.top1 <= 100  # percent
    other = tmp_path / "other"
    for name in ("background", "circle", "square"):
        (other / name).mkdir(parents=True)
        (other / name / "a.png").write_bytes((tiny["data"] / "val" / "background" / "000000.png").read_bytes())
    from edgeinc.data import DataError

    with pytest.raises(DataError, match="does not fit the model .*square"):
        evaluate(reference_run, other, workers=0)


def test_eval_cli_prints_json(reference_run, tiny):
    import json

    out = run_cli("eval", str(reference_run), "--data", str(tiny["data"]), "--crops", "1", "--json", "--workers", "0")
    result = json.loads(out[out.index("{"):])
    assert result["crops"] == 1 and result["images"] == 9


# ------------------------------------------------------------------------------------------------
# The quickstart (the demo's training) and the GPU path
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_quickstart_beats_its_bar_and_the_colour_baseline(tmp_path):
    from edgeinc.demo import QUICKSTART_TOP1_BAR, run_demo

    torch.set_num_threads(os.cpu_count() or 1)  # as `make demo` runs it (the fixture restores one thread)
    result = run_demo(tmp_path, bench=False)
    assert result.top1 >= QUICKSTART_TOP1_BAR
    # not solvable by colour alone: the colour-histogram baseline stays far below the network
    assert result.top1 >= 2 * result.colour_baseline_top1 and result.passed


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_decode_on_the_device(tiny, tmp_path):
    result = train(tiny["recipe"], ["train.device=cuda", "data.decode=gpu", "train.epochs=1"], out=tmp_path / "gpu-decode")
    assert result.status == "completed" and math.isfinite(result.metrics["train_loss"])
    assert result.metrics["val_top1_ema"] is not None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_bf16_channels_last_compiled_training(tiny, tmp_path):
    import io

    from rich.console import Console

    log = io.StringIO()
    result = train(tiny["recipe"], ["train.device=cuda", "train.compile=true", "train.epochs=2", "data.workers=2"],
                   out=tmp_path / "gpu", console=Console(file=log, width=200))
    assert "1 x cuda (bf16, channels_last, compiled)" in log.getvalue()
    assert result.status == "completed" and math.isfinite(result.metrics["train_loss"])
    state = load_checkpoint_state(checkpoint_path(tmp_path / "gpu"))  # loads without CUDA too
    assert all(v.device.type == "cpu" for v in state["model"].values())
    assert load_source(tmp_path / "gpu").model.fc.weight.dtype == torch.float32

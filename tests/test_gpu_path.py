"""The CUDA training data path, checked on the CPU where it can run: uint8 from the workers normalised by
the trainer, the GPU-decode path's per-sample crops (drawn in the workers like the CPU path's), the
prefetcher's ordering, the persistent loader. The CUDA-only parts (side stream, nvJPEG) are marked gpu."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from edgeinc.config import DataSection, ModelSection, Recipe, TrainSection
from edgeinc.data import ImageFolder, build_transform, collate_skip_bad, find_split, gpu_decode_batch
from edgeinc.data.folder import EncodedBatch
from edgeinc.data.transforms import CropParams
from edgeinc.train.checkpoint import TrainingError
from edgeinc.train.distributed import init_distributed
from edgeinc.train.sampling import SeededSamples, TrainBatchSampler
from edgeinc.train.setup import train_dataset
from edgeinc.train.trainer import Prefetcher, Trainer


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine: a second thread only waits
    yield
    torch.set_num_threads(threads)


def _photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """Smooth colour fields (JPEG-friendly, unlike pure noise) of ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """train/<class>/ with PNGs and JPEGs of several sizes and aspects (one extreme: RandomResizedCrop's
    fallback), 12 images, 2 classes."""
    root = tmp_path_factory.mktemp("gpu-path")
    sizes = [(90, 70), (64, 64), (120, 200), (300, 40), (100, 80), (75, 75)]
    for i, size in enumerate(sizes * 2):
        folder = root / "train" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        if i % 3 == 0:
            _photo(i, size).save(folder / f"{i:02d}.jpg", quality=90)
        else:
            _photo(i, size).save(folder / f"{i:02d}.png")
    return root


def _trainer(root: Path, precision: str = "fp32", workers: int = 0, epochs: int = 1) -> Trainer:
    recipe = Recipe(
        model=ModelSection(name="inception_v3_79", depth_multiplier=0.1, min_depth=8, dropout=0.0),
        data=DataSection(root=str(root), workers=workers, scale=(0.3, 1.0)),
        train=TrainSection(epochs=epochs, batch_size=4, lr=0.045, lr_reference_batch=4, device="cpu",
                           precision=precision, checkpoint_every_steps=0, bn_momentum=0.1),
    )
    return Trainer(recipe, root / "unused-run", init_distributed("cpu"), False, Console(quiet=True))


def _keys(n: int) -> list[tuple[int, int]]:
    return [(epoch, index) for epoch in range(3) for index in range(n)]


def test_the_gpu_decode_path_draws_the_cpu_paths_crop_and_flip_for_each_sample(data):
    """For the same (seed, epoch, index) the GPU-decode path (run on the CPU) crops and flips exactly as
    the CPU path: the same box and flip, and the same pixels (PNG exactly; JPEG within the decoders'
    tolerance, which here - the CPU's libjpeg-turbo on both sides - is exact too)."""
    split = find_split(data, "train")
    transform = build_transform("inception_v3_79", train=True, scale=(0.3, 1.0), normalize=False)
    cpu = SeededSamples(ImageFolder(split, transform), seed=7)
    crop_params = CropParams("inception_v3_79", scale=(0.3, 1.0))
    encoded = SeededSamples(ImageFolder(split, decode="none", crop_params=crop_params), seed=7)
    keys = _keys(len(cpu))
    batch, labels = collate_skip_bad([encoded[k] for k in keys])
    expected, expected_labels = collate_skip_bad([cpu[k] for k in keys])
    assert isinstance(batch, EncodedBatch) and torch.equal(labels, expected_labels)
    assert 0 < int(batch.params[:, 4].sum()) < len(keys)  # flipped and not flipped samples
    out = gpu_decode_batch(batch, "inception_v3_79", train=True, device="cpu", normalize=False)
    assert out.shape == expected.shape == (len(keys), 3, 79, 79) and out.dtype == torch.uint8
    paths = [encoded.dataset.samples[i][0] for _, i in keys]
    png = [j for j, p in enumerate(paths) if p.endswith(".png")]
    jpeg = [j for j, p in enumerate(paths) if p.endswith(".jpg")]
    assert png and jpeg
    assert torch.equal(out[png], expected[png])  # the same box and flip, the same decoder: identical
    diff = (out[jpeg].int() - expected[jpeg].int()).abs()
    assert diff.max() <= 3 and diff.float().mean() < 0.5  # JPEG decoders may round a level or two apart
    # a sample's draws do not depend on what else is in the batch or which process reads it
    alone = collate_skip_bad([encoded[keys[5]]])[0]
    assert torch.equal(alone.params[0], batch.params[5])


@pytest.mark.parametrize("precision", ["fp32", "fp64"])
def test_the_cpu_training_batch_is_bit_identical_to_float_workers(data, precision):
    """Workers now ship uint8 and the trainer normalises the batch (``_prepare``): the model sees exactly
    the tensor that float32 workers (the previous pipeline) gave it."""
    trainer = _trainer(data, precision)
    images, labels = next(iter(trainer.train_loader()))
    assert images.dtype == torch.uint8
    prepared, prepared_labels = trainer._prepare(images, labels)
    floats = SeededSamples(ImageFolder(find_split(data, "train"), build_transform("inception_v3_79", train=True,
                                                                                  scale=(0.3, 1.0))), seed=0)
    keys = next(iter(TrainBatchSampler(len(floats), 4, 0, 1, seed=0, epoch=0)))
    expected, expected_labels = collate_skip_bad([floats[k] for k in keys])
    assert prepared.dtype == trainer.dtype and torch.equal(prepared, expected.to(trainer.dtype))
    assert torch.equal(prepared_labels, expected_labels)
    synthetic = torch.randn(2, 3, 79, 79)  # float batches are taken as normalised: no decoding, no scaling
    assert torch.equal(trainer._prepare(synthetic, torch.zeros(2, dtype=torch.long))[0], synthetic.to(trainer.dtype))
    with pytest.raises(TrainingError, match="without their crops"):  # they would come from the process's RNG
        trainer._prepare([torch.zeros(3, dtype=torch.uint8)], torch.zeros(1, dtype=torch.long))


def test_the_gpu_decode_path_on_the_cpu_trains_bit_for_bit_like_the_cpu_path(tmp_path):
    """Two steps on PNGs: the trainer fed encoded files (decoded and augmented in ``_prepare``, batches
    prepared one ahead by the Prefetcher) ends with the same weights as the one fed by CPU workers."""
    from edgeinc.data import synthesize_patch_task

    synthesize_patch_task(tmp_path / "patches", classes=2, train=4, val=1, size=48, seed=1)
    reference, encoded = _trainer(tmp_path / "patches"), _trainer(tmp_path / "patches")
    split = find_split(tmp_path / "patches", "train")
    encoded.train_set = train_dataset(split, encoded.variant, encoded.recipe.data, True, encoded.classes)
    for batch in reference.train_batches():
        reference.train_step(*batch)
    calls = []

    def prepare(images, labels):
        calls.append(type(images))
        return encoded._prepare(images, labels)

    for batch in Prefetcher(encoded.train_loader(), prepare, torch.device("cpu")):
        encoded.train_step(*batch)
    assert calls and all(c is EncodedBatch for c in calls)
    assert reference.global_step == encoded.global_step == reference.steps_per_epoch >= 2
    a, b = reference.net.state_dict(), encoded.net.state_dict()
    assert any(not torch.equal(a[k], v) for k, v in _trainer(tmp_path / "patches").net.state_dict().items())
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_the_prefetcher_keeps_order_defers_errors_and_empties_to_none():
    prepared: list[int] = []

    def prepare(images, labels):
        if images == "broken":
            raise ValueError("cannot decode this one")
        prepared.append(images)
        return torch.full((2,), images), (torch.zeros(0) if images == 3 else torch.ones(2))

    batches = [(1, None), None, (3, None), (4, None), ("broken", None), (6, None)]
    it = iter(Prefetcher(batches, prepare, torch.device("cpu")))
    first = next(it)
    assert first[0].tolist() == [1, 1] and prepared == [1]  # nothing prepared beyond the next batch
    assert next(it) is None  # a batch whose files were all unreadable
    assert next(it) is None and prepared == [1, 3, 4]  # no image survived decoding: also None
    assert next(it)[0].tolist() == [4, 4]  # the error of the batch after it waits for its turn...
    with pytest.raises(ValueError, match="cannot decode"):
        next(it)  # ...and is raised when that batch is due
    assert list(Prefetcher([], prepare, torch.device("cpu"))) == []


def test_the_loader_persists_across_epochs_and_resumes_at_the_same_batches(data):
    """One DataLoader for the run (its worker process kept between epochs); each epoch and a resume in
    the middle of one give the batches of the per-(seed, epoch, index) samples, as a fresh loader would."""
    trainer = _trainer(data, workers=1, epochs=3)
    loader = trainer.train_loader()
    assert loader.persistent_workers
    epoch0 = list(loader)
    workers = [w.pid for w in loader._iterator._workers]
    trainer.epoch = 1
    assert trainer.train_loader() is loader
    epoch1 = list(loader)
    assert [w.pid for w in loader._iterator._workers] == workers  # the same process, not a new one
    resumed = _trainer(data, workers=0, epochs=3)
    resumed.epoch, resumed.step_in_epoch = 1, 1
    assert len(epoch0) == len(epoch1) == 3
    for (a, la), (b, lb) in zip(epoch1[1:], resumed.train_loader(), strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(epoch0, epoch1))  # another epoch, other crops
    trainer._close_loader()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_prefetched_cuda_batches_equal_the_batches_prepared_in_the_step(data, decode):
    """On CUDA the Prefetcher prepares each batch on a side stream; what the step gets must equal what
    ``_prepare`` makes on the current stream from the same loader batch."""
    recipe = Recipe(
        model=ModelSection(name="inception_v3_79", depth_multiplier=0.1, min_depth=8),
        data=DataSection(root=str(data), workers=2, scale=(0.3, 1.0), decode=decode),
        train=TrainSection(epochs=1, batch_size=4, lr_reference_batch=4, device="cuda", checkpoint_every_steps=0),
    )
    trainer = Trainer(recipe, data / "unused-run", init_distributed("cuda"), False, Console(quiet=True))
    prefetched = [b for b in trainer.train_batches()]
    direct = [trainer._prepare(*b) for b in trainer.train_loader()]
    torch.cuda.synchronize()
    assert len(prefetched) == len(direct) == trainer.steps_per_epoch
    for (a, la), (b, lb) in zip(prefetched, direct):
        assert a.is_cuda and a.dtype == torch.float32 and a.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a, b) and torch.equal(la, lb)
    # and the CUDA batch agrees with the CPU path's (same crops; CUDA's resize kernels round differently)
    cpu = _trainer(data)
    cpu_batch = cpu._prepare(*next(iter(cpu.train_loader())))[0]
    assert (prefetched[0][0].float().cpu() - cpu_batch).abs().mean() < 0.03

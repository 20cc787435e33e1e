"""Data order and augmentation randomness that depend only on (seed, epoch, position).

Two rules make a resumed run see exactly the batches an uninterrupted one would, whatever the number
of loader workers and wherever it was killed:

* The order is a permutation drawn from (seed, epoch); global batch ``k`` is the block
  ``perm[k*B:(k+1)*B]`` and rank ``r`` of ``W`` takes every W-th element of it (like
  ``DistributedSampler``), so the union over ranks is the same set for any W. Resuming at step ``k``
  just starts from block ``k``. The last partial global batch of an epoch is dropped.
* Each sample's augmentation (random-resized crop, flip) runs under an RNG seeded from
  (seed, epoch, index), isolated from the process's own RNG streams. Worker seeding, prefetching and
  the loader's own generator (seeded from (seed, epoch, rank)) then do not matter.
"""

from __future__ import annotations

import contextlib
import random
import signal
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

SampleKey = tuple[int, int]  # (epoch, dataset index)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (NumPy's SeedSequence hashing: no collisions in practice)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator, ``random`` and NumPy for a block, then put their states back."""
    torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    torch.random.default_generator.manual_seed(seed)  # CPU only: CUDA generators stay untouched
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(py_state)
        np.random.set_state(np_state)


class SeededSamples(Dataset):
    """``dataset[index]`` evaluated under an RNG seeded from (seed, epoch, index); keys are (epoch, index)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: SampleKey) -> Any:
        epoch, index = key
        with isolated_rng(mix_seed(self.seed, epoch, index)):
            return self.dataset[index]


class TrainBatchSampler(Sampler[list[SampleKey]]):
    """This rank's share of every global batch of one epoch, from step ``start_step`` on."""

    def __init__(
        self, num_samples: int, global_batch: int, rank: int, world_size: int, seed: int, epoch: int, start_step: int = 0
    ) -> None:
        if global_batch % world_size:
            raise ValueError(f"train.batch_size {global_batch} is not divisible by the {world_size} processes")
        self.steps_per_epoch = num_samples // global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"train.batch_size {global_batch} is larger than the {num_samples} training images")
        self.num_samples, self.global_batch = num_samples, global_batch
        self.rank, self.world_size = rank, world_size
        self.seed, self.epoch, self.start_step = seed, epoch, start_step

    def move_to(self, epoch: int, start_step: int = 0) -> None:
        """Continue from another (epoch, step): a DataLoader kept across epochs (persistent workers) reads
        its batch sampler anew at every pass, so moving it is all a new epoch or a resume needs."""
        self.epoch, self.start_step = epoch, start_step

    def permutation(self) -> list[int]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        return torch.randperm(self.num_samples, generator=g).tolist()

    def __iter__(self) -> Iterator[list[SampleKey]]:
        perm, b = self.permutation(), self.global_batch
        for k in range(self.start_step, self.steps_per_epoch):
            yield [(self.epoch, i) for i in perm[k * b : (k + 1) * b][self.rank :: self.world_size]]

    def __len__(self) -> int:
        return max(self.steps_per_epoch - self.start_step, 0)


class ShardSampler(Sampler[int]):
    """Evaluation: rank ``r`` takes indices r, r+W, ... in order; no padding, so every image counts once."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices: Sequence[int] = range(rank, num_samples, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def worker_init(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the main process saves a checkpoint and stops the
    # loader, so workers must not die on their own first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def loader_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The loader's generator (it seeds the workers): re-derived each epoch, so nothing to checkpoint."""
    return torch.Generator().manual_seed(mix_seed(seed, epoch, rank, 1))

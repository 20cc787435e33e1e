"""Processes and devices: one process per device, started by ``torchrun`` (single or multi-node).

``torchrun --nproc_per_node=N -m edgeinc train RECIPE`` sets RANK / WORLD_SIZE / LOCAL_RANK; without
them the run is a single process. NCCL on GPUs, gloo on CPUs. Only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_objects(self, obj: object) -> list[object]:
        """``obj`` from every rank, in rank order (a one-element list in a single process)."""
        if not self.distributed:
            return [obj]
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``train.device`` -> a device; ``cuda`` (and ``auto`` with a GPU) is the local rank's GPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"train.device={spec} but no CUDA device is available; use --set train.device=cpu")
    index = local_rank if spec == "cuda" else int(spec.split(":")[1])
    if index >= torch.cuda.device_count():
        raise ValueError(f"train.device: cuda:{index} does not exist ({torch.cuda.device_count()} CUDA devices)")
    return torch.device("cuda", index)


def init_distributed(device_spec: str) -> DistContext:
    """Join the process group torchrun describes in the environment (if any); pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1 and device_spec.startswith("cuda:"):
        raise ValueError(f"train.device={device_spec} names one GPU; with torchrun use train.device=cuda "
                         f"(one GPU per rank)")
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":
        # also for one process on cuda:N: kernels, NCCL and the caching allocator then use that GPU
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kwargs)
    return DistContext(rank, world_size, local_rank, device)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------
# SyncBatchNorm on CPU
# ------------------------------------------------------------------------------------------------


class CPUSyncBatchNorm(_BatchNorm):
    """Batch norm whose statistics cover the whole global batch, for CPU process groups (gloo).

    ``torch.nn.SyncBatchNorm`` only runs on GPUs (its kernels are CUDA-only), so CPU training with
    ``train.sync_bn`` uses this. The sums go through torch's differentiable functional
    ``all_reduce``, whose backward all-reduces the gradients, so autograd yields what torch's
    SyncBatchNorm computes by hand. Two passes (mean, then squared deviations) keep the
    variance free of the cancellation of E[x^2] - E[x]^2.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed._functional_collectives import all_reduce as functional_all_reduce

        def all_reduce(t: torch.Tensor) -> torch.Tensor:
            return functional_all_reduce(t, "sum", dist.group.WORLD)

        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, x.size(1)] + [1] * (x.dim() - 2)
        count = all_reduce(x.new_tensor([x.numel() // x.size(1)], dtype=torch.float64)).to(x.dtype)
        mean = all_reduce(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dims)) / count  # biased: what normalizes the batch
        if self.track_running_stats:
            with torch.no_grad():
                n = count.item()
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach() * (n / max(n - 1, 1)), self.momentum)  # unbiased
                self.num_batches_tracked.add_(1)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module`` synchronised across ranks (in place; state-dict names unchanged)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        out.to(device=module.running_mean.device if module.running_mean is not None else None)
        with torch.no_grad():
            if module.affine:
                out.weight = module.weight
                out.bias = module.bias
            if module.track_running_stats:
                out.running_mean = module.running_mean
                out.running_var = module.running_var
                out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out

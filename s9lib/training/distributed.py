"""Several processes, one run: what ``fit`` needs from ``torch.distributed`` under ``torchrun``.

Why this shape: ``torchrun --nproc_per_node=N -m s9lib train ...`` starts N copies of the same
command and tells each its place through environment variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). ``fit`` reads them here, joins the process
group (NCCL on GPUs, gloo on CPUs) and wraps the model in ``DistributedDataParallel``, which
averages gradients across processes in every backward pass. A plain ``python -m s9lib train``
sees no such variables and runs exactly as before.

Every rank sees the same shuffled order of the epoch (it comes from the recipe's seed) and
takes its own slice of each global batch, so N processes make the same steps, with the same
global batch size and learning rate, as one process would.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Distributed", "from_environment", "GlobalBatchNorm2d", "sync_batchnorm", "all_sum",
           "TIMEOUT_SECONDS"]

#: How long a collective waits for a missing rank before the job fails (``S9LIB_DIST_TIMEOUT``
#: overrides it): a crashed rank brings the others down with an error instead of a hang.
TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job. ``rank`` 0 writes files and shows progress."""

    rank: int
    world_size: int
    local_rank: int
    backend: str  # "nccl" or "gloo"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        """One GPU per process (``LOCAL_RANK``), or the CPU with gloo."""
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def from_environment(device: torch.device | str | None = None) -> Distributed | None:
    """Join the process group ``torchrun`` describes in the environment; None without one.

    The backend follows the device: NCCL for CUDA, gloo otherwise. When the caller already
    initialised a process group, it is used as it is.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    wants_cuda = (torch.device(device).type == "cuda" if device is not None
                  else torch.cuda.is_available())
    backend = "nccl" if wants_cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if wants_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        timeout = int(os.environ.get("S9LIB_DIST_TIMEOUT", TIMEOUT_SECONDS))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank,
                       dist.get_backend())


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """The sum over all ranks of each value (float64), e.g. correct predictions per rank."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) that autograd can differentiate: the gradient of a sum over ranks,
    seen from each rank, is the sum over ranks of the incoming gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose batch statistics are those of the global batch, on any device.

    ``torch.nn.SyncBatchNorm`` works on GPUs only; this one sums per-channel counts and sums,
    then sums of squared deviations from the global mean (two passes: one-pass
    ``E[x^2] - mean^2`` loses digits when the mean is large), with a differentiable
    all-reduce, so gradients also flow through the other ranks' statistics, as in one
    process. Same parameters and buffers as ``BatchNorm2d``: a checkpoint loads into the
    plain model. Outside training, or without a process group, it is plain ``BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # bf16 autocast: float32 statistics
        count = torch.full((1,), xf.numel() / xf.shape[1], dtype=xf.dtype, device=x.device)
        sums = _SumOverRanks.apply(torch.cat([xf.sum((0, 2, 3)), count]))
        n = sums[-1]
        mean = (sums[:-1] / n)[None, :, None, None]
        var = _SumOverRanks.apply(((xf - mean) ** 2).sum((0, 2, 3))) / n
        with torch.no_grad():  # running estimates as BatchNorm2d keeps them (unbiased var)
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.flatten(), m)
            self.running_var.lerp_(var * n / (n - 1).clamp_min(1), m)
        y = (xf - mean) * torch.rsqrt(var + self.eps)[None, :, None, None]
        return (y * self.weight[None, :, None, None] + self.bias[None, :, None, None]).to(x.dtype)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d of ``model`` computing global-batch statistics across the ranks:
    ``torch.nn.SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm2d` elsewhere. In place."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                 child.track_running_stats).to(child.weight.device, child.weight.dtype)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            sync_batchnorm(child, device)
    return model


def finish() -> None:
    """Wait for every rank, then leave the process group (the next ``fit`` joins anew)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

"""`imkd train` under torchrun: the process group, the rank, and BatchNorm synchronised across
ranks, so that N processes x batch b train as one process x batch N*b.

    torchrun --nproc_per_node=2 -m imkd_core.cli train teacher --dataroot D --out runs/t

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and the rendezvous, MASTER_ADDR/PORT); without
them (a plain `imkd train`) this is one process and nothing here does anything. The backend is
nccl on CUDA (one GPU per process, `cuda:LOCAL_RANK`) and gloo on the CPU.

Why BatchNorm is synchronised: with batch 1 per rank a plain BatchNorm normalises each sample
by its own statistics, which is not what batch 2 in one process does (and trains differently).
On CUDA that is torch's `SyncBatchNorm`; torch's implementation refuses CPU tensors, so on
gloo `CpuSyncBatchNorm` does the same maths with two all-reduces (the mean, then the variance
around it), both differentiable: backward sums the statistics' gradients over the ranks.
The losses' batch normalisers are made global in `device.batch_normaliser` for the same reason.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

# Ranks other than 0 wait at the epoch end while rank 0 evaluates (the whole val split): the
# default collective timeout (10 min for nccl) would kill a long evaluation.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=4)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank 0 of 1 when not under torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run directory, logs and evaluates."""
        return self.rank == 0


def from_environment() -> Dist:
    """The rank and world size torchrun gives this process (its environment variables)."""
    return Dist(rank=int(os.environ.get("RANK", 0)),
                world_size=int(os.environ.get("WORLD_SIZE", 1)),
                local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the torchrun job (if any): the process group and this rank's device."""
    env = from_environment()
    if not env.enabled or dist.is_initialized():
        return env, device
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            timeout=COLLECTIVE_TIMEOUT)
    return env, device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: Dist) -> None:
    if env.enabled:
        dist.barrier()


def mean_over_ranks(values: torch.Tensor, env: Dist) -> torch.Tensor:
    """The mean of a (detached) tensor over all ranks, for the log."""
    if not env.enabled:
        return values
    values = values.detach().clone()
    dist.all_reduce(values)
    return values / env.world_size


class _AllReduceSum(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: the gradient of a sum shared by every rank is the
    sum of the ranks' gradients."""

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


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the whole batch across the ranks (the
    CPU counterpart of `nn.SyncBatchNorm`); in eval mode, or in one process, plain BatchNorm.
    Same parameters, buffers and state_dict keys as the BatchNorm it replaces."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype)
        sums = _AllReduceSum.apply(torch.cat([x.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply(centred.pow(2).sum(dims)) / n  # biased, as BatchNorm normalises
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None \
                    else self.momentum
                unbiased = var.detach() * n.detach() / (n.detach() - 1).clamp(min=1)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(unbiased, momentum)
        return y


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm in `module` synchronised across the ranks (call before DDP wraps it)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and \
            not isinstance(module, CpuSyncBatchNorm):
        new = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias  # the same Parameters
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child))
    return module


__all__ = ["COLLECTIVE_TIMEOUT", "CpuSyncBatchNorm", "Dist", "barrier", "from_environment",
           "mean_over_ranks", "setup", "sync_batchnorm", "teardown"]

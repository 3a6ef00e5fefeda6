"""Where a model runs: the device a `device="auto"` setting picks, and the module inside a
DistributedDataParallel / DataParallel wrapper, and the divisor of a loss normalised over the
batch under DDP. Inference (`pipeline`), checkpoints (`checkpoint`), the losses and the trainer
share these, so none of them imports another to place a model.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu' / 'cuda' / 'cuda:1' as given."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return dev


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model itself, also when it is wrapped for DistributedDataParallel / DataParallel."""
    return getattr(model, "module", model)


def batch_normaliser(count: torch.Tensor, minimum: float = 0.0) -> torch.Tensor:
    """The divisor of a loss normalised over the batch (positives, weight sums, selected
    cells): `count.clamp(min=minimum)` alone, and under DistributedDataParallel the count
    summed over all ranks, clamped, divided by the number of ranks. DDP averages gradients over
    ranks, so a per-rank `sum / global_count * world_size` makes N processes x batch b train
    as one process x batch N*b; a per-rank count would weight each rank's positives
    differently. Detached: the count is a constant of the loss, as without DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return count.clamp(min=minimum)
    total = count.detach().clone()
    dist.all_reduce(total)
    return total.clamp(min=minimum) / dist.get_world_size()

"""Where a model runs: the device a `device="auto"` setting picks, and the module inside a
DistributedDataParallel / DataParallel wrapper. Inference (`pipeline`), checkpoints
(`checkpoint`) and the trainer share these, so none of them imports another to place a model.
"""

from __future__ import annotations

import torch
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

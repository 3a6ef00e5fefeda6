"""Model checkpoints: one file format for the trainer that writes them and the inference
pipeline and node that read them.

A checkpoint carries its `ModelConfig`, so the weights load without the YAML they were trained
from, and its model kind ("student" or "teacher"), so `DetectorPipeline.from_checkpoint` builds
the right network. Files load with `weights_only=True`: no pickled code runs on loading.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imkd_core.atomic import write_atomic
from imkd_core.config import ModelConfig
from imkd_core.device import unwrap_model

CHECKPOINT_FORMAT = "imkd_ros-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: ModelConfig,
                    extra: dict | None = None) -> None:
    """Atomically write {format, version, kind, config, state_dict, extra}. `extra` must hold
    plain values (numbers, strings, lists, dicts, tensors): checkpoints load with
    `weights_only=True`."""
    model = unwrap_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": getattr(model, "kind", "student"),
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    write_atomic(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """The payload `save_checkpoint` wrote; refuses other files and newer format versions
    with a ValueError naming the file (a missing file stays FileNotFoundError)."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as exc:  # junk, truncated, not torch
        raise ValueError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0]})") \
            from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an imkd_ros checkpoint")
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {payload['version']} is newer than this "
                         f"code ({CHECKPOINT_VERSION})")
    return payload


def release_checkpoint(source: str | os.PathLike, out: str | os.PathLike,
                       provenance: dict | None = None) -> dict[str, Any]:
    """Write `source`'s weights and config to `out` without its training state (optimizer,
    scheduler, RNG: two thirds of a trainer's file, and nothing inference reads). `extra` keeps
    where the weights came from: the source's training position and `provenance` (plain
    values, e.g. the recipe and its metrics). Returns that `extra`."""
    payload = load_checkpoint(source)
    trained = payload.get("extra", {})
    extra = {"released_from": {"position": trained.get("position", {}),
                               "run": trained.get("run", {})},
             **(provenance or {})}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    released = {key: payload[key] for key in ("format", "version", "kind", "config",
                                              "state_dict")}
    write_atomic(out, lambda tmp: torch.save({**released, "extra": extra}, tmp))
    return extra

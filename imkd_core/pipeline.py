"""Inference API shared by the ROS node and the offline evaluator: Sample -> ego-frame Boxes.

Both paths call exactly `DetectorPipeline.__call__` (= `preprocess` -> `infer` ->
`postprocess`), so the same preprocessing, model and decoding run in both; detections agree to
float tolerance on the same data. Checkpoints carry their `ModelConfig`, so the node needs no
YAML next to the weights.

    pipe = DetectorPipeline.from_checkpoint("outputs/student.pt", device="auto")
    boxes = pipe(sample)            # Boxes with scores, labels index CLASSES

A teacher checkpoint works too (it then reads `sample.lidar`), which is how the teacher is
evaluated offline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imkd_core.config import ModelConfig, config_from_dict, load_model_config
from imkd_core.models.detector import build_model
from imkd_core.models.head import decode
from imkd_core.preprocess import PreparedImage, Preprocessor, collate, to_device
from imkd_core.sample import Boxes, Sample

CHECKPOINT_FORMAT = "imkd_ros-checkpoint"
CHECKPOINT_VERSION = 1

__all__ = ["DetectorPipeline", "load_checkpoint", "load_model_config", "resolve_device",
           "save_checkpoint"]


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


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel / DataParallel


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: ModelConfig,
                    extra: dict | None = None) -> None:
    """Atomically write {format, version, kind, config, state_dict, extra}. `extra` must hold
    plain values (numbers, strings, lists, dicts, tensors): checkpoints load with
    `weights_only=True`."""
    model = _unwrap(model)
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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an imkd_ros checkpoint")
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {payload['version']} is newer than this "
                         f"code ({CHECKPOINT_VERSION})")
    return payload


class DetectorPipeline:
    """Preprocess -> model -> decode for one Sample at a time (batch of 1)."""

    def __init__(self, model: nn.Module, config: ModelConfig, device: str | torch.device = "auto"):
        self.config = config
        self.device = resolve_device(device)
        self.model = _unwrap(model).to(self.device).eval()
        self.kind = getattr(self.model, "kind", "student")
        self.preprocessor = Preprocessor(config, train=False, with_lidar=self.kind == "teacher",
                                         device=self.device)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "auto") -> DetectorPipeline:
        payload = load_checkpoint(path, map_location="cpu")
        config = config_from_dict(payload["config"])
        model = build_model(payload.get("kind", "student"), config)
        model.load_state_dict(payload["state_dict"])
        return cls(model, config, device)

    @classmethod
    def from_config(cls, config: ModelConfig, device: str = "auto", seed: int = 0,
                    kind: str = "student") -> DetectorPipeline:
        """A freshly initialised model (deterministic for a given seed)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(kind, config)
        return cls(model, config, device)

    def prepare_image(self, image: np.ndarray) -> PreparedImage:
        """One camera image's model input, made ahead of `preprocess` (see `Preprocessor`)."""
        return self.preprocessor.prepare_image(image)

    def preprocess(self, sample: Sample, prepared: Mapping[str, PreparedImage] | None = None
                   ) -> dict[str, torch.Tensor]:
        """`prepared`: camera name -> `prepare_image(that camera's image)`, made earlier."""
        return to_device(collate([self.preprocessor(sample, prepared=prepared)]), self.device)

    @torch.inference_mode()
    def infer(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's outputs: head maps (heatmap, offset, z, size, rot, vel) and the BEV
        features/intensity logits, without gradient."""
        return self.model(batch)

    @torch.inference_mode()
    def postprocess(self, outputs: dict[str, torch.Tensor]) -> Boxes:
        det = decode(outputs, self.config.bev_grid, self.config.head, self.config.classes)[0]
        return Boxes(params=det["boxes"].double().cpu().numpy().reshape(-1, 9),
                     labels=det["labels"].cpu().numpy().astype(np.int64),
                     scores=det["scores"].float().cpu().numpy())

    def __call__(self, sample: Sample) -> Boxes:
        return self.postprocess(self.infer(self.preprocess(sample)))

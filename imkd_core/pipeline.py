"""Inference API shared by the ROS node and the offline evaluator: Sample -> ego-frame Boxes.

Both paths call exactly `DetectorPipeline.__call__` (= `preprocess` -> `infer` ->
`postprocess`), so the same preprocessing, model and decoding run in both; detections agree to
float tolerance on the same data. Checkpoints (`imkd_core.checkpoint`) carry their
`ModelConfig`, so the node needs no YAML next to the weights.

    pipe = DetectorPipeline.from_checkpoint("outputs/student.pt", device="auto")
    boxes = pipe(sample)            # Boxes with scores, labels index CLASSES

A teacher checkpoint works too (it then reads `sample.lidar`), which is how the teacher is
evaluated offline.

`infer` runs a backend (`imkd_core.backends`): the eager model, or a file of `imkd export`
(ONNX Runtime, TorchScript) that carries its config; `from_file` takes either kind of file:

    pipe = DetectorPipeline.from_file("student.onnx", backend="onnxruntime", device="cpu")
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from imkd_core.backends import BACKENDS, Backend, TorchBackend, open_exported
from imkd_core.checkpoint import load_checkpoint
from imkd_core.config import ModelConfig, config_from_dict
from imkd_core.device import resolve_device, unwrap_model
from imkd_core.export import ExportError, export_kind
from imkd_core.models.detector import build_model
from imkd_core.models.head import decode
from imkd_core.preprocess import PreparedImage, Preprocessor, collate, to_device
from imkd_core.sample import Boxes, Sample

__all__ = ["DetectorPipeline"]


class DetectorPipeline:
    """Preprocess -> model -> decode for one Sample at a time (batch of 1)."""

    def __init__(self, model: nn.Module | None, config: ModelConfig,
                 device: str | torch.device = "auto", backend: Backend | None = None):
        """`model` (run eagerly), or `backend` (then `model` is None) with its config."""
        self.config = config
        if backend is None:
            self.model = unwrap_model(model).to(resolve_device(device)).eval()
            backend = TorchBackend(self.model, resolve_device(device))
        else:
            self.model = None
        self.backend = backend
        self.device = backend.device
        self.kind = backend.kind
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
    def from_file(cls, path: str | os.PathLike, device: str = "auto", backend: str = "torch",
                  cameras: Sequence[str] | None = None) -> DetectorPipeline:
        """A checkpoint (backend "torch") or an exported file: ONNX (backend "onnxruntime"),
        TorchScript (backend "torch"). `cameras`: the cameras the caller will feed; an
        exported file, fixed to its camera set, refuses others. Errors name the file."""
        if backend not in BACKENDS:
            raise ExportError(f"backend must be one of {list(BACKENDS)}, not {backend!r}")
        if backend == "torch" and export_kind(path) == "checkpoint":
            return cls.from_checkpoint(path, device)
        exported = open_exported(path, backend, device)
        extra = sorted(set(cameras or ()) - set(exported.info.cameras))
        if extra:
            raise ExportError(f"{path}: exported for cameras {list(exported.info.cameras)}; "
                              f"{extra} are not among them (export from a config that "
                              "has them)")
        return cls(None, exported.info.config, backend=exported)

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
        features/intensity logits (torch eager only), without gradient."""
        return self.backend(batch)

    @torch.inference_mode()
    def postprocess(self, outputs: dict[str, torch.Tensor]) -> Boxes:
        det = decode(outputs, self.config.bev_grid, self.config.head, self.config.classes)[0]
        return Boxes(params=det["boxes"].double().cpu().numpy().reshape(-1, 9),
                     labels=det["labels"].cpu().numpy().astype(np.int64),
                     scores=det["scores"].float().cpu().numpy())

    def __call__(self, sample: Sample) -> Boxes:
        return self.postprocess(self.infer(self.preprocess(sample)))

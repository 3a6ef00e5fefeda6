"""`imkd export`: the student as one self-describing file for a fast inference backend.

What is exported is the network from its input tensors to the head maps; preprocessing and
decoding stay the shared torch/numpy code (`DetectorPipeline.preprocess` / `postprocess`), so
every backend decodes the same way. The exported graph takes flat tensors in a fixed order
(`INPUTS`, batch 1) and returns the head maps in `OUTPUTS` order:

    images (1, N, 3, H, W) f32     the preprocessed camera images (N, H, W fixed per export)
    intrinsics (1, N, 3, 3) f32    K with the image transform folded in (`Preprocessor`)
    cam2ego (1, N, 4, 4) f32       camera -> keyframe ego
    cam_valid (1, N) bool          False: a missing camera (zero image), contributes nothing
    radar_points (1, P, 7) f32     RADAR_MODEL_COLUMNS; P is dynamic
    radar_mask (1, P) bool
    splat_keep, splat_pix, splat_cells (S,) i64   the lift-splat index tables of the
                                   calibration (`LiftSplat.geometry`, compact); S is dynamic

The lift-splat tables are camera geometry computed on the host, once per calibration (the same
cached function the torch path runs), so the graph holds no matrix inverse and no
data-dependent shape; the splat itself (gather + scatter-add) and the radar pillars' max
(`ScatterElements` reduction max, opset 18) are standard ONNX operators: no custom operators.

The file carries everything the node needs (`ExportInfo`): the format and its version, the
model config (JSON), the checkpoint's SHA-256, the camera names and image size, the input and
output names and the opset. ONNX keeps it in `metadata_props`, TorchScript in the `_extra_files`
entry `imkd.json`. `read_export` refuses a file of another format version, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imkd_core import __version__
from imkd_core.atomic import write_atomic
from imkd_core.checkpoint import load_checkpoint
from imkd_core.config import ModelConfig, config_from_dict
from imkd_core.models.camera_branch import LiftSplat
from imkd_core.models.detector import Student, build_model
from imkd_core.models.head import REG_KEYS

EXPORT_FORMAT = "imkd_ros-export"
EXPORT_VERSION = 1
ONNX_OPSET = 18  # ScatterElements with reduction "max" (the pillar encoder) needs 18
FORMATS = ("onnx", "torchscript")
INPUTS = ("images", "intrinsics", "cam2ego", "cam_valid", "radar_points", "radar_mask",
          "splat_keep", "splat_pix", "splat_cells")
OUTPUTS = ("heatmap", *(name for name, _ in REG_KEYS))
TORCHSCRIPT_META = "imkd.json"  # the `_extra_files` entry


class ExportError(ValueError):
    """An export that cannot be made or a file that cannot be used; the text names the file."""


@dataclass(frozen=True)
class ExportInfo:
    """What an exported file says about itself."""

    format: str  # "onnx" | "torchscript"
    config: ModelConfig
    checkpoint_sha256: str
    opset: int | None = None  # ONNX only
    version: int = EXPORT_VERSION
    package_version: str = __version__
    torch_version: str = torch.__version__

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.config.image.cameras)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.config.image.height, self.config.image.width

    def to_metadata(self) -> dict[str, str]:
        return {
            "imkd.format": EXPORT_FORMAT, "imkd.version": str(self.version),
            "imkd.export_format": self.format, "imkd.kind": "student",
            "imkd.config": json.dumps(self.config.to_dict(), sort_keys=True),
            "imkd.checkpoint_sha256": self.checkpoint_sha256,
            "imkd.cameras": json.dumps(list(self.cameras)),
            "imkd.image_size": json.dumps(list(self.image_size)),
            "imkd.inputs": json.dumps(list(INPUTS)), "imkd.outputs": json.dumps(list(OUTPUTS)),
            "imkd.opset": str(self.opset or ""), "imkd.package_version": self.package_version,
            "imkd.torch_version": self.torch_version,
        }

    @classmethod
    def from_metadata(cls, path: str | os.PathLike, meta: dict[str, str]) -> ExportInfo:
        if meta.get("imkd.format") != EXPORT_FORMAT:
            raise ExportError(f"{path}: not an imkd_ros export (no '{EXPORT_FORMAT}' metadata)")
        version = int(meta.get("imkd.version", "0"))
        if version != EXPORT_VERSION:
            raise ExportError(f"{path}: export format version {version}, this code reads "
                              f"version {EXPORT_VERSION} (written by imkd "
                              f"{meta.get('imkd.package_version', '?')}): export it again "
                              "from its checkpoint")
        for key, expected in (("imkd.inputs", list(INPUTS)), ("imkd.outputs", list(OUTPUTS))):
            if json.loads(meta.get(key, "[]")) != expected:
                raise ExportError(f"{path}: {key} {meta.get(key)} differ from this code's "
                                  f"{expected}: export it again from its checkpoint")
        try:
            config = config_from_dict(json.loads(meta["imkd.config"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"{path}: its model config does not load here: {exc}") from exc
        opset = meta.get("imkd.opset") or None
        return cls(format=meta.get("imkd.export_format", ""), config=config,
                   checkpoint_sha256=meta.get("imkd.checkpoint_sha256", ""),
                   opset=int(opset) if opset else None, version=version,
                   package_version=meta.get("imkd.package_version", ""),
                   torch_version=meta.get("imkd.torch_version", ""))


class ExportableStudent(nn.Module):
    """The student with flat tensor inputs and outputs (`INPUTS` -> `OUTPUTS`): the same
    stage methods as `Student.forward`, the lift-splat tables given instead of computed."""

    def __init__(self, student: Student):
        super().__init__()
        self.student = student.eval()
        self.eval()

    def forward(self, images: torch.Tensor, intrinsics: torch.Tensor, cam2ego: torch.Tensor,
                cam_valid: torch.Tensor, radar_points: torch.Tensor, radar_mask: torch.Tensor,
                splat_keep: torch.Tensor, splat_pix: torch.Tensor, splat_cells: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        s = self.student
        batch = {"images": images, "intrinsics": intrinsics, "cam2ego": cam2ego,
                 "cam_valid": cam_valid, "radar_points": radar_points, "radar_mask": radar_mask}
        if s.camera is not None:
            cam_bev, _ = s.camera.view_transform(s.image_features(batch), intrinsics, cam2ego,
                                                 cam_valid, (splat_keep, splat_pix, splat_cells))
        else:
            cam_bev, _ = s.camera_bev(None, batch)
        radar_bev, intensity_logits = s.radar_bev(batch)
        _, bev = s.fuse(cam_bev, radar_bev, intensity_logits)
        out = s.head(bev)
        return tuple(out[name] for name in OUTPUTS)


def geometry_lift(config: ModelConfig) -> LiftSplat:
    """A weightless LiftSplat of `config`, to compute the index tables on the host."""
    c = config.camera
    return LiftSplat(config.bev_grid, (config.image.height, config.image.width), c.stride,
                     c.depth.d_min, c.depth.d_step, c.depth.num_bins).eval()


def flat_inputs(batch: dict[str, torch.Tensor], lift: LiftSplat) -> dict[str, torch.Tensor]:
    """A `DetectorPipeline.preprocess` batch -> the exported graph's inputs, by name."""
    keep, pix, cells = lift.cached_geometry(batch["intrinsics"], batch["cam2ego"])
    return {"images": batch["images"], "intrinsics": batch["intrinsics"],
            "cam2ego": batch["cam2ego"], "cam_valid": batch["cam_valid"],
            "radar_points": batch["radar_points"], "radar_mask": batch["radar_mask"],
            "splat_keep": keep, "splat_pix": pix, "splat_cells": cells}


def example_batch(config: ModelConfig, radar_points: int = 64, seed: int = 0
                  ) -> dict[str, torch.Tensor]:
    """A plausible batch of 1 for tracing: the cameras in a ring looking out horizontally,
    random images and radar points inside the grid (only shapes and dtypes matter)."""
    gen = torch.Generator().manual_seed(seed)
    H, W, N = config.image.height, config.image.width, len(config.image.cameras)
    K = torch.tensor([[W / 2, 0.0, (W - 1) / 2], [0.0, W / 2, (H - 1) / 2], [0.0, 0.0, 1.0]])
    optical = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    Ts = []
    for k in range(N):
        a = 2 * math.pi * k / N
        T = torch.eye(4)
        T[:3, :3] = torch.tensor([[math.cos(a), -math.sin(a), 0.0],
                                  [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]]) @ optical
        T[:3, 3] = torch.tensor([1.0, 0.0, 1.5])
        Ts.append(T)
    g = config.bev_grid
    pts = torch.rand((1, radar_points, 7), generator=gen)
    pts[..., 0] = g.x_min + pts[..., 0] * (g.x_max - g.x_min)
    pts[..., 1] = g.y_min + pts[..., 1] * (g.y_max - g.y_min)
    pts[..., 6] *= 0.5
    return {"images": torch.randn((1, N, 3, H, W), generator=gen),
            "intrinsics": K.expand(1, N, 3, 3).contiguous(),
            "cam2ego": torch.stack(Ts)[None], "cam_valid": torch.ones((1, N), dtype=torch.bool),
            "radar_points": pts, "radar_mask": torch.ones((1, radar_points), dtype=torch.bool)}


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_student(checkpoint: str | os.PathLike) -> tuple[Student, ModelConfig]:
    payload = load_checkpoint(checkpoint, map_location="cpu")
    if payload.get("kind", "student") != "student":
        raise ExportError(f"{checkpoint}: a {payload['kind']} checkpoint; only the student "
                          "(what the node runs) is exported")
    config = config_from_dict(payload["config"])
    model = build_model("student", config)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), config


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike
                      ) -> ExportInfo:
    """Write the student of `checkpoint` to `out` as `fmt` ("onnx" or "torchscript")."""
    if fmt not in FORMATS:
        raise ExportError(f"export format must be one of {list(FORMATS)}, not {fmt!r}")
    student, config = load_student(checkpoint)
    info = ExportInfo(format=fmt, config=config, checkpoint_sha256=file_sha256(checkpoint),
                      opset=ONNX_OPSET if fmt == "onnx" else None)
    wrapper = ExportableStudent(student)
    inputs = flat_inputs(example_batch(config), geometry_lift(config))
    args = tuple(inputs[name] for name in INPUTS)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        proto = _onnx_proto(wrapper, args)
        import onnx

        for key, value in info.to_metadata().items():
            proto.metadata_props.add(key=key, value=value)
        write_atomic(out, lambda tmp: onnx.save(proto, str(tmp)))
    else:
        with torch.no_grad():
            traced = torch.jit.trace(wrapper, args, check_trace=False)
        extra = {TORCHSCRIPT_META: json.dumps(info.to_metadata())}
        write_atomic(out, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))
    return info


def _onnx_proto(wrapper: nn.Module, args: tuple[torch.Tensor, ...]) -> Any:
    """The ONNX ModelProto of `wrapper` (torch.export-based exporter, opset ONNX_OPSET) with
    the radar point count and the lift-splat table length dynamic."""
    from torch.export import Dim

    points, splat = Dim("radar_points", min=1), Dim("splat_points", min=1)
    dynamic = {name: None for name in INPUTS}
    dynamic.update(radar_points={1: points}, radar_mask={1: points}, splat_keep={0: splat},
                   splat_pix={0: splat}, splat_cells={0: splat})
    with torch.no_grad():
        program = torch.onnx.export(wrapper, args, input_names=list(INPUTS),
                                    output_names=list(OUTPUTS), opset_version=ONNX_OPSET,
                                    dynamo=True, dynamic_shapes=dynamic, external_data=False,
                                    verbose=False)
    return program.model_proto


def export_kind(path: str | os.PathLike) -> str:
    """"onnx", "torchscript" or "checkpoint": what kind of file `path` is (by content)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no such file", str(path))
    if zipfile.is_zipfile(path):  # torch.save and torch.jit.save both write zip archives
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith(f"/extra/{TORCHSCRIPT_META}") for n in names):
            return "torchscript"
        if any(n.endswith("/constants.pkl") for n in names):  # TorchScript without our entry
            raise ExportError(f"{path}: a TorchScript file without imkd metadata "
                              "(not written by `imkd export`)")
        return "checkpoint"
    return "onnx"


def read_export(path: str | os.PathLike) -> ExportInfo:
    """The `ExportInfo` of an exported file; ExportError naming the file when it is not one."""
    kind = export_kind(path)
    if kind == "checkpoint":
        raise ExportError(f"{path}: a checkpoint, not an exported model")
    if kind == "torchscript":
        extra = {TORCHSCRIPT_META: ""}
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        meta = json.loads(extra[TORCHSCRIPT_META] or "{}")
    else:
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
            raise ExportError(f"{path}: neither a checkpoint nor an ONNX file "
                              f"({type(exc).__name__})") from exc
        meta = {p.key: p.value for p in proto.metadata_props}
    info = ExportInfo.from_metadata(path, meta)
    if info.format != kind:
        raise ExportError(f"{path}: metadata says {info.format!r}, the file is {kind!r}")
    return info

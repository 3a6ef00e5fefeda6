"""Typed model + training configuration, loaded from YAML (`config/model/*.yaml`).

Every block of the student/teacher and every IMKD stage and loss has its own dataclass here, and
every loss has a switch (`enabled`) and a `weight`, so the training issue can run ablations by
overriding single keys (`apply_overrides(cfg, ["fusion.mode=concat"])`). The BEV grid is the one
`imkd_core.geometry.BEVGrid` every branch, target and loss uses (`ModelConfig.bev_grid`).

Loading is strict: an unknown key is an error that names its dotted path, and values are checked
against the field types (ints where ints are wanted, lists of the right length for tuples), so a
typo in a YAML file fails loudly instead of silently falling back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imkd_core.geometry import BEVGrid
from imkd_core.sample import CAMERA_NAMES, CLASSES

STAGE2_LEVELS = ("input", "output")  # distill.stage2.levels
INTENSITY_SOURCES = ("reflectance", "teacher_features")  # distill.intensity_map.source


# ----------------------------------------------------------------------------------- sections
@dataclass
class ImageConfig:
    """Model input images. Each camera image is resized so its width matches `width`
    (times a random factor in training) and then cropped/padded to `height` x `width`; the
    vertical window is placed by `crop_anchor_v` (1.0 keeps the bottom: the sky is dropped)."""

    height: int = 128
    width: int = 352
    cameras: list[str] = field(default_factory=lambda: list(CAMERA_NAMES))
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    crop_anchor_v: float = 1.0


@dataclass
class AugmentConfig:
    """Training-time augmentation. Image augmentation changes K; BEV augmentation is one 4x4
    matrix applied to every point cloud, box and camera extrinsic of the sample."""

    enabled: bool = True
    image_scale: tuple[float, float] = (0.94, 1.06)  # extra resize factor range
    image_crop_jitter: float = 0.05  # crop offset jitter, fraction of the output size
    image_flip: float = 0.5  # probability of a horizontal flip (all cameras together)
    bev_rotation_deg: float = 22.5  # uniform in [-r, r]
    bev_scale: tuple[float, float] = (0.95, 1.05)
    bev_flip_x: float = 0.5  # probability of x -> -x
    bev_flip_y: float = 0.5  # probability of y -> -y
    # Modality dropout: a sensor taken away as the node takes an absent one (a camera out:
    # blank image, `cam_valid` False; radars out: no radar points), so the student learns not
    # to lean on one modality alone. Probability per camera, and per sample for all radars.
    camera_dropout: float = 0.0
    radar_dropout: float = 0.0


@dataclass
class BackboneConfig:
    depth: int = 18  # 18 | 34 | 50
    base_width: int = 64  # channels of the stem; stages use 1x, 2x, 4x, 8x (x4 for bottlenecks)


@dataclass
class DepthConfig:
    """Depth bins along the optical axis: [d_min, d_max) in steps of d_step (bin centres used)."""

    d_min: float = 2.0
    d_max: float = 58.0
    d_step: float = 0.5
    mid_channels: int = 128
    camera_aware: bool = True  # SE-modulate depth/context by an MLP over K and extrinsics

    @property
    def num_bins(self) -> int:
        return round((self.d_max - self.d_min) / self.d_step)


@dataclass
class CameraBranchConfig:
    enabled: bool = True
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck_channels: int = 256  # FPN channels; the neck outputs one map at `stride`
    stride: int = 16
    depth: DepthConfig = field(default_factory=DepthConfig)
    context_channels: int = 64  # channels lifted into BEV
    bev_channels: int = 64  # after the BEV conv that follows lift-splat


@dataclass
class PillarConfig:
    """PointPillars-style encoder: per-point MLP, max-pooled per BEV cell (and z slice)."""

    max_points: int = 4096  # per sample; extra points are subsampled (random in training)
    channels: int = 32
    layers: int = 1
    z_bins: int = 1  # >1: height-sliced pillars (voxels), stacked as channels


@dataclass
class RadarBranchConfig:
    enabled: bool = True
    pillars: PillarConfig = field(default_factory=lambda: PillarConfig(max_points=2048))
    channels: int = 64  # radar BEV feature channels
    encoder_layers: int = 2  # 3x3 convs after scattering (spread the sparse returns)
    max_dt: float = 1.0  # seconds; older sweeps are dropped
    intensity_channels: int = 32  # hidden channels of the intensity-prediction head


@dataclass
class BEVBackboneConfig:
    """SECOND-style: stages at the given strides, each upsampled back to the grid, concatenated."""

    channels: list[int] = field(default_factory=lambda: [64, 128])
    layers: list[int] = field(default_factory=lambda: [2, 2])
    strides: list[int] = field(default_factory=lambda: [1, 2])
    out_channels: int = 128


@dataclass
class LidarTeacherConfig:
    pillars: PillarConfig = field(
        default_factory=lambda: PillarConfig(max_points=60000, channels=64, layers=1, z_bins=1))
    max_dt: float = 0.6
    # >1: pillars on cells this many times finer than the BEV grid (more geometry per cell),
    # brought to the grid by a strided conv before the backbone, so the teacher's features,
    # head and targets stay on the student's grid (what the distillation losses compare)
    pillar_subdivision: int = 1
    # Points below this height (m, ego frame: the ground is z ~ 0) are the first to go when a
    # sweep has more than max_points: ~65 % of a nuScenes-like sweep is road, and a uniform
    # subsample keeps as few object returns as it keeps road. null: uniform subsampling.
    ground_below: float | None = None
    bev_backbone: BEVBackboneConfig = field(default_factory=BEVBackboneConfig)


@dataclass
class FusionConfig:
    """Stage 3. `mode: intensity` = intensity-guided gating + cross-modal attention;
    `mode: concat` = the ablation (concatenate, convolve)."""

    mode: str = "intensity"  # intensity | concat
    channels: int = 64
    gate: bool = True  # gates that see camera, radar and predicted intensity
    attention: bool = True  # cross-modal windowed attention
    intensity_weighting: bool = True  # radar attention weights multiplied by predicted intensity
    heads: int = 4
    window: int = 3  # attention window (cells) around each BEV cell
    detach_intensity: bool = True  # the fusion reads the intensity prediction, doesn't train it


@dataclass
class HeadConfig:
    """CenterPoint-style head on the BEV grid; regression code = offset(2) z(1) log-size(3)
    sin/cos yaw(2) velocity(2)."""

    channels: int = 64
    branch_channels: int = 64
    branch_convs: int = 1  # 3x3 convs per regression branch before the 1x1 output
    min_radius: int = 2  # Gaussian radius floor (cells)
    gaussian_overlap: float = 0.1
    heatmap_weight: float = 1.0
    bbox_weight: float = 0.25
    code_weights: list[float] = field(
        default_factory=lambda: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2])
    score_threshold: float = 0.1
    pre_nms_top_k: int = 500
    max_detections: int = 300
    nms: str = "circle"  # circle | none
    # Circle-NMS centre distance per class (metres), CLASSES order: the square roots of
    # CenterPoint's nuScenes thresholds (its circle_nms compares them to squared distances).
    nms_radius: list[float] = field(
        default_factory=lambda: [2.0, 3.5, 1.0, 3.2, 3.5, 1.0, 0.9, 0.9, 0.4, 0.4])


@dataclass
class LossSwitch:
    enabled: bool = True
    weight: float = 1.0


@dataclass
class IntensityMapConfig:
    """The BEV intensity map I: per-cell max of LiDAR reflectance, normalised, dilated."""

    normalizer: float = 255.0  # raw reflectance / normalizer, clipped to [0, 1]
    gamma: float = 0.5  # imap = (clip(r / normalizer))**gamma lifts the many weak returns
    dilation: int = 1  # max-pool radius in cells (0 = none)
    min_height: float | None = None  # ignore returns below this ego z (e.g. 0.3: drop the road)
    # What "intensity" is (the paper leaves it open): `reflectance` = the LiDAR returns' raw
    # reflectance rasterised in BEV (the fields above); `teacher_features` = the teacher BEV
    # feature's activation magnitude (channel L2 norm / its per-sample max, then ** gamma and
    # the dilation), as RadarDistill and CRKD weight their feature losses.
    source: str = "reflectance"  # reflectance | teacher_features


@dataclass
class Stage1Config:
    """LiDAR -> radar: adaptor(radar BEV) vs teacher BEV, squared error weighted by I."""

    enabled: bool = True
    weight: float = 1.0
    intensity_weighted: bool = True  # False: uniform weight (ablation)
    normalize_teacher: bool = True  # divide teacher features by their RMS (per sample)


@dataclass
class Stage2Config:
    """LiDAR -> fused: adaptor(first `channels` fused channels) vs teacher BEV, weighted by
    I x (soft GT heatmap + floor)."""

    enabled: bool = True
    weight: float = 1.0
    channels: int = 64  # how many of the student's fused BEV channels are distilled
    floor: float = 0.1
    intensity_weighted: bool = True
    label_guided: bool = True  # use the soft GT heatmap term (False: weight = I)
    normalize_teacher: bool = True
    # Where the student is distilled: `output` = the first `channels` of the BEV backbone's
    # output (the head's input), `input` = the fusion output (the BEV backbone's input, every
    # channel). Both: per-level distillation, one adaptor each, same target and weights.
    levels: list[str] = field(default_factory=lambda: ["output"])


@dataclass
class DistillConfig:
    intensity_map: IntensityMapConfig = field(default_factory=IntensityMapConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    intensity_prediction: LossSwitch = field(default_factory=LossSwitch)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    response: LossSwitch = field(default_factory=lambda: LossSwitch(enabled=False, weight=0.5))
    depth: LossSwitch = field(default_factory=lambda: LossSwitch(enabled=True, weight=3.0))


@dataclass
class TrainConfig:
    """Defaults for the training commands (the training issue owns their meaning)."""

    batch_size: int = 2
    lr: float = 2e-4  # peak, reached after the warm-up; then cosine down to lr * min_lr_ratio
    weight_decay: float = 1e-2
    warmup_steps: int = 200  # linear warm-up from 0 (capped at a tenth of the run)
    min_lr_ratio: float = 0.01
    grad_clip: float = 35.0  # max global grad norm (0: no clipping)
    ema_decay: float = 0.0  # >0: checkpoints hold an exponential moving average of the weights
    teacher_epochs: int = 20
    student_epochs: int = 20
    num_workers: int = 0
    seed: int = 0
    amp: bool = False  # CUDA only: autocast (float16) + GradScaler; ignored on the CPU


@dataclass
class ModelConfig:
    name: str = "tiny"
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    grid: BEVGrid = field(default_factory=BEVGrid)  # the YAML `grid:` section
    image: ImageConfig = field(default_factory=ImageConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    camera: CameraBranchConfig = field(default_factory=CameraBranchConfig)
    radar: RadarBranchConfig = field(default_factory=RadarBranchConfig)
    lidar: LidarTeacherConfig = field(default_factory=LidarTeacherConfig)
    bev_backbone: BEVBackboneConfig = field(default_factory=BEVBackboneConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def bev_grid(self) -> BEVGrid:
        return self.grid

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def validate(self) -> ModelConfig:
        """Cross-field checks; returns self so it chains."""
        unknown = [c for c in self.classes if c not in CLASSES]
        if unknown:
            raise ValueError(f"classes: unknown nuScenes detection classes {unknown}")
        bad_cams = [c for c in self.image.cameras if c not in CAMERA_NAMES]
        if bad_cams:
            raise ValueError(f"image.cameras: unknown cameras {bad_cams}")
        if self.fusion.mode not in ("intensity", "concat"):
            raise ValueError(
                f"fusion.mode must be 'intensity' or 'concat', not {self.fusion.mode!r}")
        if self.head.nms not in ("circle", "none"):
            raise ValueError(f"head.nms must be 'circle' or 'none', not {self.head.nms!r}")
        if len(self.head.code_weights) != 10:
            raise ValueError("head.code_weights needs 10 entries (offset2 z1 size3 rot2 vel2)")
        if len(self.head.nms_radius) != len(CLASSES):
            raise ValueError(f"head.nms_radius needs {len(CLASSES)} entries (CLASSES order)")
        if self.camera.backbone.depth not in (18, 34, 50):
            raise ValueError("camera.backbone.depth must be 18, 34 or 50")
        if self.camera.stride not in (8, 16, 32):
            raise ValueError("camera.stride must be 8, 16 or 32")
        for name, bb in (("bev_backbone", self.bev_backbone),
                         ("lidar.bev_backbone", self.lidar.bev_backbone)):
            if not (len(bb.channels) == len(bb.layers) == len(bb.strides)):
                raise ValueError(f"{name}: channels, layers and strides need equal lengths")
            total = math.prod(bb.strides)
            ny, nx = self.bev_grid.shape
            if ny % total or nx % total:
                raise ValueError(f"{name}: the BEV grid {ny}x{nx} is not divisible by the "
                                 f"backbone's total stride {total}")
        if self.image.height % self.camera.stride or self.image.width % self.camera.stride:
            raise ValueError("image height and width must be multiples of camera.stride")
        if self.distill.stage2.channels > self.bev_backbone.out_channels:
            raise ValueError("distill.stage2.channels exceeds bev_backbone.out_channels")
        levels = self.distill.stage2.levels
        if not levels or set(levels) - set(STAGE2_LEVELS) or len(set(levels)) != len(levels):
            raise ValueError(f"distill.stage2.levels must be distinct entries of "
                             f"{list(STAGE2_LEVELS)}, not {levels}")
        if self.distill.intensity_map.source not in INTENSITY_SOURCES:
            raise ValueError(f"distill.intensity_map.source must be one of "
                             f"{list(INTENSITY_SOURCES)}, not "
                             f"{self.distill.intensity_map.source!r}")
        for key in ("camera_dropout", "radar_dropout"):
            p = getattr(self.augment, key)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"augment.{key} is a probability in [0, 1], not {p}")
        if self.fusion.mode == "intensity" and self.fusion.channels % self.fusion.heads:
            raise ValueError("fusion.channels must be divisible by fusion.heads")
        if self.fusion.window % 2 != 1:
            raise ValueError("fusion.window must be odd")
        if self.camera.depth.num_bins < 1:
            raise ValueError("camera.depth: no depth bins")
        return self


# --------------------------------------------------------------------------- dict <-> dataclass
def to_plain(obj: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists: what YAML and `torch.save(weights_only)` accept."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError(f"{path}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise TypeError("; ".join(errors))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{path}: expected a list, got {type(value).__name__}")
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{path}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{path}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass `cls` from a (partial) nested dict; missing keys keep their defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        where = path or cls.__name__
        raise KeyError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _convert(hints[key], value, f"{path}.{key}" if path else key)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    return from_dict(ModelConfig, data).validate()


def apply_overrides(config: ModelConfig, overrides: list[str] | dict[str, Any]) -> ModelConfig:
    """A copy of `config` with dotted-key overrides, e.g. `["fusion.mode=concat",
    "distill.stage1.weight=0.5"]` or `{"fusion.mode": "concat"}`; values parse as YAML."""
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for text in overrides:
            if "=" not in text:
                raise ValueError(f"override {text!r} is not key=value")
            key, value = text.split("=", 1)
            items.append((key.strip(), yaml.safe_load(value)))
    data = config.to_dict()
    for key, value in items:
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"override {key!r}: no section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise KeyError(f"override {key!r}: unknown key {parts[-1]!r}")
        node[parts[-1]] = value
    return config_from_dict(data)


# ----------------------------------------------------------------------------------- YAML files
def model_config_dirs() -> list[Path]:
    """Where named configs live: the source tree, then every ament prefix's share directory."""
    dirs = [Path(__file__).resolve().parents[1] / "config" / "model"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share" / "imkd_ros" / "config" / "model")
    return dirs


def load_model_config(path_or_name: str | os.PathLike) -> ModelConfig:
    """A YAML file, or a name (`tiny` -> `config/model/tiny.yaml`), as a validated ModelConfig."""
    candidate = Path(path_or_name)
    if not candidate.is_file():
        name = str(path_or_name)
        if not name.endswith((".yaml", ".yml")):
            name += ".yaml"
        for directory in model_config_dirs():
            if (directory / name).is_file():
                candidate = directory / name
                break
        else:
            raise FileNotFoundError(
                f"model config {path_or_name!r}: not a file, and no {name} in "
                f"{[str(d) for d in model_config_dirs()]}")
    with open(candidate) as fh:
        data = yaml.safe_load(fh) or {}
    try:
        return config_from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{candidate}: {exc}") from exc

"""The detector node's parameters: the one table of names, types, defaults, rules and words.

`DetectorParams` is that table: a field's name, annotation and default are the parameter's, and
its `Spec` (field metadata) holds the description and the rules (range, choices, not empty, an
existing file, topic-safe names). Everything else is made from it, so nothing can drift:
- `declare(node)`: declares each parameter with a `ParameterDescriptor` (description, the rules
  in words as `additional_constraints`, `integer_range` / `floating_point_range` where the rule
  is a closed range), so `ros2 param describe /imkd_detector <name>` explains it, reads the
  values into a `DetectorParams` and checks them: a bad value is a `ParameterError` that names
  the parameter, the value and the rule broken;
- `json_schema()`: config/detector.schema.json, in Autoware's layout (a schema per node next to
  its parameter file, `definitions.<node>.properties.<name>`);
- `markdown_table()`: the parameter table in README.md.
config/detector.yaml repeats the defaults because `--params-file` needs a file; the tests check
that it, the schema file and the README table agree with this table.

    python -m imkd_ros.parameters --schema > config/detector.schema.json
    python -m imkd_ros.parameters --markdown    # the README table

Rules owned elsewhere are imported, not restated: the trigger modes and missing-camera policies
are `imkd_ros.sync`'s, the reader-side defaults (sweeps, filter, sensors) `ReaderOptions`', the
frames `imkd_core.wire.names`'. The node's values are checked here once; `SyncConfig` and
`ReaderOptions` built from checked values keep their own invariant checks as library APIs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from imkd_core.backends import BACKENDS
from imkd_core.data.image_codec import DECODE_BYTES_PER_PIXEL, DEFAULT_MAX_PIXELS
from imkd_core.data.options import ReaderOptions
from imkd_core.sample import RADAR_NAMES
from imkd_core.wire.names import BASE_FRAME, MAP_FRAME
from imkd_ros.sync import MISSING_CAMERA_POLICIES, TRIGGERS, SyncConfig

NODE_NAME = "imkd_detector"
NS = 1_000_000_000
DEVICES = ("auto", "cpu", "cuda")
RADAR_FILTERS = ("nuscenes", "all")  # the names `RadarFilter.from_spec` knows
INT64_MAX = 2**63 - 1


# The student shipped with the package (models/, installed under share/imkd_ros/models).
SHIPPED_STUDENT = "package://imkd_ros/models/imkd_tiny_student.pt"
PACKAGE_URI = "package://"


def resolve_package_uri(value: str) -> str:
    """`package://<pkg>/<path>` -> `<pkg's share directory>/<path>`, the ROS convention of
    `camera_info_url` and robot meshes; any other value is returned as it is. Raises
    LookupError naming the package when no prefix on AMENT_PREFIX_PATH has it."""
    if not value.startswith(PACKAGE_URI):
        return value
    package, _, relative = value[len(PACKAGE_URI):].partition("/")
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        share = Path(get_package_share_directory(package))
    except (PackageNotFoundError, ValueError, OSError) as exc:  # OSError: no AMENT_PREFIX_PATH
        # The prefix this interpreter runs from is an ament prefix too when the package was
        # installed into it (a venv's `make setup`, run without `source .venv/bin/activate`).
        share = Path(sys.prefix) / "share" / package
        marker = Path(sys.prefix) / "share" / "ament_index" / "resource_index" / "packages"
        if not (marker / package).is_file():
            raise LookupError(f"package {package!r} is not installed on AMENT_PREFIX_PATH "
                              f"or in {sys.prefix}") from exc
    return str(share / relative)


class ParameterError(ValueError):
    """A parameter value the node cannot start with; the text names the parameter."""


@dataclass(frozen=True)
class Rule:
    """One rule a value must follow: in words (`says`, shown by `ros2 param describe`), as a
    test, and what a value that breaks it is told (`fails`, when not `says`)."""

    says: str
    holds: Callable[[Any], bool]
    fails: str = ""


@dataclass(frozen=True)
class Spec:
    """What the table says of a parameter besides its name, type and default."""

    description: str
    minimum: float | None = None  # inclusive
    maximum: float | None = None  # inclusive
    above: float | None = None  # exclusive minimum
    choices: tuple[str, ...] = ()
    required: bool = False  # no usable default: the value must be given (not empty)
    non_empty: bool = False  # a string or list that must not be empty
    existing_file: bool = False  # when set, a path to an existing file
    names: bool = False  # unique, non-empty names without '/' (they become topic names)

    def rules(self) -> list[Rule]:
        rules = []
        if self.required:
            rules.append(Rule("required", lambda v: len(v) > 0))
        if self.non_empty:
            rules.append(Rule("must not be empty", lambda v: len(v) > 0))
        if self.existing_file:
            rules.append(Rule("must be an existing file when set",
                              lambda v: not v or Path(v).is_file(), "no such file"))
        if self.names:
            rules.append(Rule("names must be unique, non-empty and without '/'",
                              lambda v: len(set(v)) == len(v) and all(n and "/" not in n
                                                                      for n in v)))
        if self.choices:
            *rest, last = self.choices
            rules.append(Rule(f"must be {', '.join(rest)} or {last}",
                              lambda v: v in self.choices))
        if self.minimum is not None and self.maximum is not None:
            rules.append(Rule(f"must be in [{self.minimum:g}, {self.maximum:g}]",
                              lambda v: self.minimum <= v <= self.maximum))
        elif self.minimum is not None:
            rules.append(Rule(f"must be >= {self.minimum:g}", lambda v: v >= self.minimum))
        if self.above is not None:
            rules.append(Rule(f"must be > {self.above:g}", lambda v: v > self.above))
        return rules


def param(default: Any, description: str, **rules: Any) -> Any:
    """A `DetectorParams` field: its default and its `Spec`."""
    return field(default=default, metadata={"spec": Spec(description, **rules)})


@dataclass(frozen=True)
class DetectorParams:
    """The node's parameters (times in seconds); construction checks every rule."""

    checkpoint: str = param(SHIPPED_STUDENT, "Model checkpoint (.pt) written by "
                                             "imkd_core.checkpoint.save_checkpoint, or a file "
                                             "of `imkd export` (.onnx for backend onnxruntime, "
                                             "TorchScript for torch): its model config travels "
                                             "inside. package://<pkg>/<path>: a file of an "
                                             "installed package's share directory; default: "
                                             "the shipped student (models/README.md)",
                            required=True, existing_file=True)
    device: str = param("auto", "Torch device: auto (cuda if available), cpu or cuda",
                        choices=DEVICES)
    backend: str = param("torch", "Inference backend: torch (eager checkpoint or TorchScript "
                                  "export) or onnxruntime (an ONNX export; device cuda uses "
                                  "its CUDA, or TensorRT, execution provider)",
                         choices=BACKENDS)
    cameras: tuple[str, ...] = param(
        ReaderOptions.cameras, "Camera names (at least one: camera sets trigger detection); "
                               "each gets ~/input/<name>/image and ~/input/<name>/camera_info. "
                               "Names of the model's cameras; one it has but is not given "
                               "runs blank (mode degraded)", non_empty=True, names=True)
    radars: tuple[str, ...] = param(
        ReaderOptions.radars, "Radar names; each gets ~/input/<name>/points. [] or none: "
                              "camera-only; a nuScenes radar not given is absent (mode "
                              "degraded). Like cameras, also a comma-separated string "
                              "(-p radars:=RADAR_FRONT,RADAR_BACK_LEFT)", names=True)
    compressed_images: bool = param(False, "Subscribe sensor_msgs/CompressedImage (JPEG/PNG) "
                                           "instead of sensor_msgs/Image")
    rectified_images: bool = param(False, "The images are rectified already (image_proc's "
                                          "image_rect): their K is CameraInfo P's 3x3 and a "
                                          "distorted lens is not undistorted again; false: "
                                          "images with non-zero D are rectified")
    reliable_inputs: bool = param(False, "Subscribe the sensor inputs reliable instead of "
                                         "best-effort (keep-last either way, then ~1 s deep "
                                         "so a replay loses nothing while the node catches "
                                         "up): for bags, and large raw images on transports "
                                         "that lose fragments")
    trigger: str = param("cameras", "cameras: run on every complete camera set (live); "
                                    "keyframes: run on the records of ~/input/keyframes "
                                    "(nuscenes2bag's /imkd/keyframes), exactly the offline "
                                    "keyframes", choices=TRIGGERS)
    camera_tolerance: float = param(0.06, "Max spread of the camera stamps in one set (s)",
                                    minimum=0.0)
    radar_sweeps: int = param(ReaderOptions.radar_sweeps, "Radar sweeps per sensor fed to the "
                                                          "model, newest included (as the "
                                                          "offline reader's radar_sweeps)",
                              minimum=1)
    radar_max_age: float = param(0.6, "Radar sweeps older than this before the trigger are "
                                      "unused (s)", minimum=0.0)
    radar_filter: str = param(ReaderOptions.radar_filter, "Radar return filter: nuscenes "
                                                          "(devkit default) or all",
                              choices=RADAR_FILTERS)
    max_radar_points: int = param(10000, "A PointCloud2 with more points is dropped as "
                                         "malformed (an ARS 408 sends at most 125)", minimum=1)
    max_image_pixels: int = param(DEFAULT_MAX_PIXELS, "An image declaring more pixels (width x "
                                                      "height, read from a compressed image's "
                                                      "header before decoding) is dropped; a "
                                                      "decode needs at most "
                                                      f"{DECODE_BYTES_PER_PIXEL} bytes per "
                                                      "pixel of this", minimum=1)
    stale_timeout: float = param(1.0, "A sensor silent this long (s, sensor time) is stale",
                                 minimum=0.0)
    max_stamp_jump: float = param(10.0, "A camera stamp this far (s) ahead of the newest one "
                                        "is a clock jump: state resets as for a bag loop, and "
                                        "again if the stamps come back (at least a "
                                        "second: less would take frames for jumps)",
                                  minimum=1.0)
    missing_camera: str = param("blank", "Stale camera: blank (run with a zero image) or skip "
                                         "(no detections until it is back)",
                                choices=MISSING_CAMERA_POLICIES)
    score_threshold: float = param(0.2, "Detections below this score are not published",
                                   minimum=0.0, maximum=1.0)
    map_frame: str = param(MAP_FRAME, "Fixed frame of the ego pose on /tf", non_empty=True)
    base_frame: str = param(BASE_FRAME, "Ego frame; detections are published in it",
                            non_empty=True)
    tf_hold: float = param(0.05, "Use the nearest /tf ego pose up to this far outside its span "
                                 "(s)", minimum=0.0)
    tf_wait: float = param(0.1, "Wait this long (s, wall clock) for a /tf ego pose newer than "
                                "a sensor stamp before holding the last one", minimum=0.0)
    calibration_file: str = param("", "Optional YAML of sensor extrinsics {frame: "
                                      "{translation: [x,y,z], rotation: [w,x,y,z]}} "
                                      "(base_frame <- frame); else /tf_static",
                                  existing_file=True)
    queue_size: int = param(1, "Frame sets waiting for the model; when full the oldest is "
                               "dropped", minimum=1)
    marker_lifetime: float = param(0.0, "Marker lifetime (s); 0: two periods of the detection "
                                        "rate", minimum=0.0)
    status_period: float = param(1.0, "Seconds between ~/debug/status messages (wall clock)",
                                 above=0.0)
    warn_throttle: float = param(5.0, "Seconds between repeated warnings of one topic and "
                                      "reason", above=0.0)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            for rule in f.metadata["spec"].rules():
                if not rule.holds(value):
                    shown = list(value) if isinstance(value, tuple) else value
                    raise ParameterError(f"parameter '{f.name}' = {shown!r}: "
                                         f"{rule.fails or rule.says}")

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> DetectorParams:
        """From ROS parameter values (the string arrays as `string_list` takes them)."""
        arrays = {name for name, kind, *_ in _table() if kind == "tuple[str, ...]"}
        files = {name for name, _, _, spec in _table() if spec.existing_file}
        values = {k: string_list(k, v) if k in arrays else v for k, v in values.items()}
        for name in files & values.keys():
            try:
                values[name] = resolve_package_uri(values[name])
            except LookupError as exc:
                raise ParameterError(f"parameter '{name}' = {values[name]!r}: {exc}") from None
        return cls(**values)

    def sync_config(self) -> SyncConfig:
        return SyncConfig(
            cameras=self.cameras, radars=self.radars,
            camera_tolerance_ns=int(self.camera_tolerance * NS), radar_sweeps=self.radar_sweeps,
            radar_max_age_ns=int(self.radar_max_age * NS),
            stale_timeout_ns=int(self.stale_timeout * NS), missing_camera=self.missing_camera,
            trigger=self.trigger, radar_queue=max(16, self.radar_sweeps + 4),
            max_jump_ns=int(self.max_stamp_jump * NS))

    def configured_without(self, model_cameras: Sequence[str]) -> str:
        """What the configured sensor subset leaves out of what the model was trained with, in
        words ("" when nothing; the node then reports mode degraded): the model's cameras not
        configured (they run blank, as a stale one does) and, when fewer radars are configured
        than the model was trained with (the nuScenes five: every model trains on them), the
        nuScenes radars not configured (absent: the model takes all radars' points as one
        input, so a radar of another name counts too). A configured camera the model has no
        input for is a `ParameterError`: its images would be ignored."""
        cameras, radars = self.cameras, self.radars
        unknown = [c for c in cameras if c not in model_cameras]
        if unknown:
            raise ParameterError(f"parameter 'cameras' = {list(cameras)!r}: "
                                 f"{', '.join(unknown)} not among the model's cameras "
                                 f"{list(model_cameras)}")
        parts = []
        if len(cameras) < len(model_cameras):
            parts.append("cameras " + ", ".join(c for c in model_cameras if c not in cameras))
        if len(radars) < len(RADAR_NAMES):
            parts.append("radars " + (", ".join(r for r in RADAR_NAMES if r not in radars)
                                      if set(radars) <= set(RADAR_NAMES) else
                                      f"({len(radars)} of {len(RADAR_NAMES)})"))
        return f"configured without {' and '.join(parts)}" if parts else ""

    def reader_options(self) -> ReaderOptions:
        """How the node assembles a `Sample`: as the offline readers do, without LiDAR."""
        return ReaderOptions(radar_sweeps=self.radar_sweeps, radar_filter=self.radar_filter,
                             cameras=self.cameras, radars=self.radars, load_lidar=False)


def string_list(name: str, value: Any) -> tuple[str, ...]:
    """A string-array parameter's value as given: a list, or a string of comma-separated names
    ("none", "" or "[]": none; brackets allowed), or unset. rcl reads an empty list (`-p
    radars:=[]`, `radars: []` in a YAML file) as no value at all, and a typed array parameter
    cannot be set to one, so these parameters take any type (`descriptor`) and are read here."""
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1].strip()
        return () if text.lower() in ("", "none") else tuple(n.strip() for n in text.split(","))
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ParameterError(f"parameter '{name}' = {value!r}: must be a list of names or a "
                         "string of comma-separated names")


# ------------------------------------------------------------------------- what the table makes
_TYPES = {  # annotation -> (ROS parameter type, JSON Schema type, README type)
    "str": (Parameter.Type.STRING, "string", "string"),
    "bool": (Parameter.Type.BOOL, "boolean", "bool"),
    "int": (Parameter.Type.INTEGER, "integer", "int"),
    "float": (Parameter.Type.DOUBLE, "number", "float"),
    "tuple[str, ...]": (Parameter.Type.STRING_ARRAY, "array", "string[]"),
}


def _table() -> list[tuple[str, str, Any, Spec]]:
    """(name, annotation, default, spec) per parameter, in declaration order."""
    hints = get_type_hints(DetectorParams)
    return [(f.name, _annotation(hints[f.name]), f.default, f.metadata["spec"])
            for f in fields(DetectorParams)]


def _annotation(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint)


def _ros_value(default: Any) -> Any:
    return list(default) if isinstance(default, tuple) else default


def descriptor(name: str, ranges: bool = True) -> ParameterDescriptor:
    """The ROS descriptor of parameter `name`; `ranges`: with its closed range, if any."""
    _, kind, _, spec = next(row for row in _table() if row[0] == name)
    ros_type = _TYPES[kind][0]
    desc = ParameterDescriptor(name=name, type=ros_type.value, description=spec.description,
                               additional_constraints="; ".join(r.says for r in spec.rules()),
                               dynamic_typing=ros_type == Parameter.Type.STRING_ARRAY)
    if not ranges or spec.minimum is None:
        return desc
    if ros_type == Parameter.Type.INTEGER:
        top = INT64_MAX if spec.maximum is None else int(spec.maximum)
        desc.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=top, step=0)]
    else:
        top = math.inf if spec.maximum is None else float(spec.maximum)
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec.minimum),
                                                        to_value=top, step=0.0)]
    return desc


def declare(node: Node) -> DetectorParams:
    """Declare every parameter on `node`, read and check them; raises ParameterError (a bad
    value) or rclpy's ParameterException (a value of the wrong type), both naming it.

    The ranges join the descriptors once the values have passed: rclpy would refuse an
    out-of-range value at declaration in its own words, and this table's say more."""
    for name, _, default, _ in _table():
        node.declare_parameter(name, _ros_value(default), descriptor(name, ranges=False))
    params = DetectorParams.from_values(
        {name: node.get_parameter(name).value for name, *_ in _table()})
    for name, *_ in _table():
        node.set_descriptor(name, descriptor(name))
    return params


def json_schema() -> dict:
    """config/detector.schema.json: JSON Schema (draft-07) of config/detector.yaml."""
    properties = {}
    for name, kind, default, spec in _table():
        prop: dict[str, Any] = {"type": _TYPES[kind][1], "description": spec.description,
                                "default": _ros_value(default)}
        if kind.startswith("tuple"):
            prop["items"] = {"type": "string", "pattern": "^[^/]+$"} if spec.names else {
                "type": "string"}
            if spec.names:
                prop["uniqueItems"] = True
            if spec.non_empty:
                prop["minItems"] = 1
        elif spec.non_empty:  # not `required`: its default is a placeholder the YAML keeps
            prop["minLength"] = 1
        if spec.choices:
            prop["enum"] = list(spec.choices)
        if spec.minimum is not None:
            prop["minimum"] = spec.minimum
        if spec.maximum is not None:
            prop["maximum"] = spec.maximum
        if spec.above is not None:
            prop["exclusiveMinimum"] = spec.above
        properties[name] = prop
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": f"Parameters for the {NODE_NAME} node (imkd_ros detector)",
        "type": "object",
        "definitions": {NODE_NAME: {"type": "object", "properties": properties,
                                    "required": list(properties),
                                    "additionalProperties": False}},
        "properties": {"/**": {
            "type": "object",
            "properties": {"ros__parameters": {"$ref": f"#/definitions/{NODE_NAME}"}},
            "required": ["ros__parameters"], "additionalProperties": False}},
        "required": ["/**"],
        "additionalProperties": False,
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


def markdown_table() -> str:
    """The README's parameter table."""
    lines = ["| name | type | default | rules | description |",
             "| --- | --- | --- | --- | --- |"]
    for name, kind, default, spec in _table():
        rules = "; ".join(r.says for r in spec.rules())
        lines.append(f"| `{name}` | {_TYPES[kind][2]} | `{json.dumps(_ros_value(default))}` "
                     f"| {rules} | {spec.description} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print what the parameter table makes.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--schema", action="store_true", help="config/detector.schema.json")
    what.add_argument("--markdown", action="store_true", help="the README parameter table")
    args = parser.parse_args(argv)
    sys.stdout.write(schema_text() if args.schema else markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())

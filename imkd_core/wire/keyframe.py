"""The `/imkd/keyframes` record: which message of each sensor makes a keyframe, and its boxes.

Nothing in the standard messages says which sweep is a keyframe, what the sample token is, or
carries a box's velocity, attribute, visibility and point counts. So `nuscenes2bag` writes one
`std_msgs/String` per keyframe holding `KeyframeRecord.to_json()`:

    {"format": "imkd-keyframe/1", "token": ..., "scene": ..., "scene_start": <log ns>,
     "timestamp": <ns>, "data": {"CAM_FRONT": <stamp ns>, ..., "LIDAR_TOP": <stamp ns>},
     "gt": {"params": [[x, y, z, l, w, h, yaw, vx, vy], ...], "labels": ["car", ...],
            "scores": null, "attributes": [...], "visibility": [...], "num_lidar_pts": [...],
            "num_radar_pts": [...], "instance_tokens": [...]}}

`data` names, per sensor, the stamp of the keyframe's message on that sensor's topic; floats
are written with `repr` precision, so the boxes come back bit-exact. `scene_start` is the log
time of the scene's first message: sweeps before it belong to another scene (nuScenes' `prev`
chains end at a scene's start). The bag reader rebuilds each keyframe's `Sample` from these
records and the node's `keyframes` trigger runs on them; any other `ros2 bag play` consumer
can ignore the topic.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from imkd_core.sample import CLASS_INDEX, CLASSES, Boxes
from imkd_core.wire.fields import WireError

KEYFRAME_FORMAT = "imkd-keyframe/1"


@dataclass
class KeyframeRecord:
    """One keyframe of a bag (see the module docstring); stamps and log times in ns."""

    token: str
    scene: str
    scene_start: int
    timestamp: int
    data: dict[str, int] = field(default_factory=dict)  # sensor -> stamp of its message
    gt: Boxes | None = None

    def to_json(self) -> str:
        return json.dumps({"format": KEYFRAME_FORMAT, "token": self.token, "scene": self.scene,
                           "scene_start": self.scene_start, "timestamp": self.timestamp,
                           "data": self.data, "gt": boxes_to_json(self.gt)})

    @classmethod
    def from_json(cls, text: str) -> KeyframeRecord:
        """Parse a record; anything that is not one (not JSON, too large or deep, a field of
        the wrong type, a stamp outside int64 nanoseconds, boxes that do not line up) raises
        `WireError` saying what is wrong."""
        if not isinstance(text, str | bytes):
            raise WireError(f"not text but {type(text).__name__}")
        if len(text) > MAX_RECORD_CHARS:
            raise WireError(f"{len(text)} characters exceed the cap of {MAX_RECORD_CHARS}")
        try:
            record = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
            raise WireError(f"not JSON ({type(exc).__name__}: {str(exc)[:100]})") from None
        if not isinstance(record, dict):
            raise WireError(f"not a JSON object but {type(record).__name__}")
        if record.get("format") != KEYFRAME_FORMAT:
            raise WireError(f"format {str(record.get('format'))!r:.80}, expected "
                            f"{KEYFRAME_FORMAT!r}")
        for name in ("token", "scene", "scene_start", "timestamp", "data"):
            if name not in record:
                raise WireError(f"no field {name!r}")
        if not isinstance(record["data"], dict):
            raise WireError(f"field 'data' must be an object, got "
                            f"{type(record['data']).__name__}")
        try:
            return cls(token=str(record["token"]), scene=str(record["scene"]),
                       scene_start=_stamp(record["scene_start"], "scene_start"),
                       timestamp=_stamp(record["timestamp"], "timestamp"),
                       data={str(k): _stamp(v, f"data.{k}") for k, v in record["data"].items()},
                       gt=boxes_from_json(record.get("gt")))
        except WireError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise WireError(f"malformed field ({type(exc).__name__}: {str(exc)[:100]})") from None


MAX_RECORD_CHARS = 16 << 20  # a record with a few hundred boxes is tens of kB


def _stamp(value, what: str) -> int:
    """A JSON number that is an integral int64 nanosecond stamp (no bools, NaN or fractions)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireError(f"{what} must be an integer stamp, got {type(value).__name__}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise WireError(f"{what} must be an integer stamp, got {value!r}")
    if not 0 <= value < 2**63:
        raise WireError(f"{what} {value} outside [0, 2^63) ns")
    return int(value)


def boxes_to_json(boxes: Boxes | None) -> dict | None:
    """Boxes -> a JSON-able dict (floats keep full precision through json's repr)."""
    if boxes is None:
        return None

    def ints(values):
        return None if values is None else [int(v) for v in values]

    return {
        "params": [[float(v) for v in row] for row in np.asarray(boxes.params)],
        "labels": [CLASSES[int(i)] for i in boxes.labels],
        "scores": None if boxes.scores is None else [float(s) for s in boxes.scores],
        "attributes": list(boxes.attributes),
        "visibility": ints(boxes.visibility),
        "num_lidar_pts": ints(boxes.num_lidar_pts),
        "num_radar_pts": ints(boxes.num_radar_pts),
        "instance_tokens": list(boxes.instance_tokens),
    }


def boxes_from_json(data: dict | None) -> Boxes | None:
    """The inverse of `boxes_to_json`; an unknown class name raises KeyError."""
    if data is None:
        return None

    def ints(values):
        return None if values is None else np.asarray(values, dtype=np.int64).reshape(-1)

    if not isinstance(data, dict):
        raise TypeError(f"gt must be an object, got {type(data).__name__}")
    params = np.asarray(data["params"], dtype=np.float64).reshape(-1, 9)
    if len(data["labels"]) != len(params):
        raise ValueError(f"{len(params)} boxes but {len(data['labels'])} labels")
    return Boxes(
        params=params,
        labels=np.asarray([CLASS_INDEX[n] for n in data["labels"]], dtype=np.int64),
        scores=None if data.get("scores") is None else np.asarray(data["scores"], np.float32),
        attributes=list(data.get("attributes") or []),
        visibility=ints(data.get("visibility")),
        num_lidar_pts=ints(data.get("num_lidar_pts")),
        num_radar_pts=ints(data.get("num_radar_pts")),
        instance_tokens=list(data.get("instance_tokens") or []),
    )

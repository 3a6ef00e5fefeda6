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
        """Parse a record; anything that is not one raises `WireError` saying what is wrong."""
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise WireError(f"not JSON ({exc})") from None
        if not isinstance(record, dict):
            raise WireError(f"not a JSON object but {type(record).__name__}")
        if record.get("format") != KEYFRAME_FORMAT:
            raise WireError(f"format {record.get('format')!r}, expected {KEYFRAME_FORMAT!r}")
        try:
            return cls(token=str(record["token"]), scene=str(record["scene"]),
                       scene_start=int(record["scene_start"]),
                       timestamp=int(record["timestamp"]),
                       data={str(k): int(v) for k, v in record["data"].items()},
                       gt=boxes_from_json(record.get("gt")))
        except KeyError as exc:
            raise WireError(f"no field {exc}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise WireError(f"malformed field ({exc})") from None


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

    params = np.asarray(data["params"], dtype=np.float64).reshape(-1, 9)
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

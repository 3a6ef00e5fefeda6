"""Sensor extrinsics from a YAML file, for setups without /tf_static (`calibration_file`).

    CAM_FRONT: {translation: [1.70, 0.02, 1.51], rotation: [0.50, -0.50, 0.50, -0.50]}

maps each frame to T_base_frame (rotation as a w, x, y, z quaternion). Errors are
`ParameterError`s that name the parameter, the file and the entry.
"""

from __future__ import annotations

import numpy as np
import yaml

from imkd_core.geometry import make_transform
from imkd_ros.parameters import ParameterError


def load_calibration(path: str) -> dict[str, np.ndarray]:
    """Extrinsics YAML -> {frame: (4, 4) T_base_frame}."""
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ParameterError(f"parameter 'calibration_file': {path} is not a mapping of frames")
    out = {}
    for frame, entry in data.items():
        try:
            out[str(frame)] = make_transform(np.asarray(entry["rotation"], dtype=np.float64),
                                             np.asarray(entry["translation"], dtype=np.float64))
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(f"parameter 'calibration_file': {path}: entry {frame!r} needs "
                                 f"translation [x,y,z] and rotation [w,x,y,z] ({exc})") from exc
    return out

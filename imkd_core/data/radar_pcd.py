"""nuScenes radar point clouds: binary PCD v0.7 with 18 fields (Continental ARS 408 objects).

Read and written here, once, for the reader, the world generator and the bag converter. Fields
and their binary types follow the nuScenes files (see `NUSCENES_RADAR_FIELDS`); reading returns
a float32 (N, 18) array in file column order, in the radar's own frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imkd_core.sample import NUSCENES_RADAR_FIELDS

# Per-field (size, type) as in the nuScenes radar files: F = float, I = signed int.
_RADAR_BINARY_TYPES: tuple[tuple[int, str], ...] = (
    (4, "F"), (4, "F"), (4, "F"), (1, "I"), (2, "I"), (4, "F"), (4, "F"), (4, "F"), (4, "F"),
    (4, "F"), (1, "I"), (1, "I"), (1, "I"), (1, "I"), (1, "I"), (1, "I"), (1, "I"), (1, "I"),
)
_NUMPY_TYPE = {("F", 4): "<f4", ("F", 8): "<f8", ("I", 1): "i1", ("I", 2): "<i2",
               ("I", 4): "<i4", ("U", 1): "u1", ("U", 2): "<u2", ("U", 4): "<u4"}


class RadarPcdError(ValueError):
    """A radar PCD file that cannot be read; the message names the file and the problem."""


def _dtype(fields, sizes, types) -> np.dtype:
    return np.dtype([(f, _NUMPY_TYPE[(t, int(s))]) for f, s, t in zip(fields, sizes, types)])


RADAR_DTYPE = _dtype(NUSCENES_RADAR_FIELDS, *zip(*[(s, t) for s, t in _RADAR_BINARY_TYPES]))


def read_radar_pcd(path: str | Path) -> np.ndarray:
    """Read a binary radar PCD -> (N, 18) float32 in `NUSCENES_RADAR_FIELDS` order."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RadarPcdError(f"{path}: cannot read radar PCD ({exc.strerror or exc})") from exc
    header: dict[str, list[str]] = {}
    offset = 0
    while True:
        end = raw.find(b"\n", offset)
        if end < 0:
            raise RadarPcdError(f"{path}: PCD header ends before a DATA line")
        line = raw[offset:end].decode("ascii", errors="replace").strip()
        offset = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        header[key.upper()] = values
        if key.upper() == "DATA":
            break
    try:
        fields, sizes, types = header["FIELDS"], header["SIZE"], header["TYPE"]
        count = int(header["POINTS"][0])
    except (KeyError, IndexError, ValueError) as exc:
        raise RadarPcdError(f"{path}: PCD header lacks FIELDS/SIZE/TYPE/POINTS ({exc})") from exc
    if header["DATA"] != ["binary"]:
        raise RadarPcdError(f"{path}: DATA {' '.join(header['DATA'])} unsupported, need binary")
    missing = [f for f in NUSCENES_RADAR_FIELDS if f not in fields]
    if missing:
        raise RadarPcdError(f"{path}: not a nuScenes radar PCD, fields missing: {missing}")
    try:
        dtype = _dtype(fields, sizes, types)
    except KeyError as exc:
        raise RadarPcdError(f"{path}: unsupported PCD field type {exc}") from exc
    need = count * dtype.itemsize
    if len(raw) - offset < need:
        raise RadarPcdError(
            f"{path}: truncated: header announces {count} points ({need} bytes) but only "
            f"{len(raw) - offset} bytes of data follow")
    records = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    return np.stack([records[f].astype(np.float32) for f in NUSCENES_RADAR_FIELDS], axis=1)


def encode_radar_pcd(points: np.ndarray) -> bytes:
    """(N, 18) array in `NUSCENES_RADAR_FIELDS` order -> the bytes of a binary radar PCD."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != len(NUSCENES_RADAR_FIELDS):
        raise ValueError(f"radar points must be (N, 18), got {points.shape}")
    records = np.empty(len(points), dtype=RADAR_DTYPE)
    for i, name in enumerate(NUSCENES_RADAR_FIELDS):
        column = points[:, i]
        if RADAR_DTYPE[name].kind == "i":
            column = np.rint(column)
        records[name] = column
    sizes, types = zip(*_RADAR_BINARY_TYPES)
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\n"
        "VERSION 0.7\n"
        f"FIELDS {' '.join(NUSCENES_RADAR_FIELDS)}\n"
        f"SIZE {' '.join(map(str, sizes))}\n"
        f"TYPE {' '.join(types)}\n"
        f"COUNT {' '.join('1' for _ in sizes)}\n"
        f"WIDTH {len(points)}\n"
        "HEIGHT 1\n"
        "VIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {len(points)}\n"
        "DATA binary\n"
    )
    # nuscenes-devkit's reader requires at least one byte after the last point.
    return header.encode("ascii") + records.tobytes() + b"\n"

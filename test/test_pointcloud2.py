"""PointCloud2 byte layouts <-> numpy (imkd_core.wire.pointcloud2): round trips for every
datatype, padded and big-endian layouts, and clear errors for malformed clouds."""

from __future__ import annotations

import array
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imkd_core.data.radar_pcd import read_radar_pcd
from imkd_core.sample import NUSCENES_RADAR_FIELDS
from imkd_core.wire.pointcloud2 import (
    DATATYPE_NAMES,
    FLOAT32,
    FLOAT64,
    INT8,
    INT16,
    UINT8,
    UINT16,
    UINT32,
    PointCloud2Error,
    datatype_size,
    decode_pointcloud2,
    decode_pointcloud2_structured,
    encode_pointcloud2,
)

ALL_TYPES = sorted(DATATYPE_NAMES)


def _decode(fields, data, n, point_step, names=None, **kw):
    return decode_pointcloud2(fields, data, n, 1, point_step, n * point_step, False, names, **kw)


def test_float_xyz_intensity_round_trip():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(1000, 4)).astype(np.float32)
    fields, data, step = encode_pointcloud2(pts, ["x", "y", "z", "intensity"])
    assert step == 16
    assert fields == [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1),
                      ("intensity", 12, FLOAT32, 1)]
    assert len(data) == 16_000
    np.testing.assert_array_equal(_decode(fields, data, 1000, step), pts)
    # subset and reordering of columns
    np.testing.assert_array_equal(_decode(fields, data, 1000, step, ["intensity", "x"]),
                                  pts[:, [3, 0]])


@pytest.mark.parametrize("datatype", ALL_TYPES)
def test_every_datatype_round_trips_exactly(datatype):
    dtype = np.dtype({INT8: "i1", UINT8: "u1", INT16: "i2", UINT16: "u2", 5: "i4",
                      UINT32: "u4", FLOAT32: "f4", FLOAT64: "f8"}[datatype])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.array([info.min, 0, 1, info.max], dtype=np.float64)
    else:
        values = np.array([-1.5, 0.0, np.finfo(dtype).max, np.finfo(dtype).tiny], dtype=dtype)
    points = values.reshape(-1, 1)
    fields, data, step = encode_pointcloud2(points, ["v"], datatype)
    assert step == datatype_size(datatype) == dtype.itemsize
    out = _decode(fields, data, len(values), step, dtype=np.float64)
    np.testing.assert_array_equal(out[:, 0], values.astype(dtype).astype(np.float64))
    records = decode_pointcloud2_structured(fields, data, len(values), 1, step, len(data))
    assert records.dtype["v"] == dtype.newbyteorder("<")


def test_nuscenes_radar_fields_keep_their_pcd_types(tmp_path):
    from imkd_core.data.radar_pcd import encode_radar_pcd
    from imkd_core.wire.names import RADAR_DATATYPES

    rng = np.random.default_rng(1)
    raw = np.zeros((30, 18), np.float32)
    raw[:, :3] = rng.normal(size=(30, 3)) * 30
    raw[:, 3] = rng.integers(0, 8, 30)
    raw[:, 4] = np.arange(30)
    raw[:, 5:10] = rng.normal(size=(30, 5))
    raw[:, 10:] = rng.integers(0, 30, (30, 8))
    path = tmp_path / "r.pcd"
    path.write_bytes(encode_radar_pcd(raw))
    points = read_radar_pcd(path)
    fields, data, step = encode_pointcloud2(points, NUSCENES_RADAR_FIELDS, RADAR_DATATYPES)
    assert [f[0] for f in fields] == list(NUSCENES_RADAR_FIELDS)
    assert step == 43  # the nuScenes PCD record size: same types, packed
    np.testing.assert_array_equal(_decode(fields, data, 30, step, NUSCENES_RADAR_FIELDS),
                                  points)


def test_structured_array_encoding():
    records = np.zeros(5, dtype=[("x", "<f4"), ("ring", "<u2"), ("t", "<f8")])
    records["x"] = np.arange(5)
    records["ring"] = [0, 1, 31, 2, 65535]
    records["t"] = np.linspace(0, 1, 5)
    fields, data, step = encode_pointcloud2(records)
    assert fields == [("x", 0, FLOAT32, 1), ("ring", 4, UINT16, 1), ("t", 6, FLOAT64, 1)]
    back = decode_pointcloud2_structured(fields, data, 5, 1, step, 5 * step)
    for name in ("x", "ring", "t"):
        np.testing.assert_array_equal(back[name], records[name])


def test_padded_rows_organised_cloud_and_big_endian():
    """A hand-made layout as drivers send it: padding inside the point (x y z _ intensity),
    row padding, height > 1, big-endian, and a field with count 2."""
    width, height, point_step, row_step = 3, 2, 24, 80
    dtype = np.dtype({"names": ["x", "y", "z", "intensity", "pair"],
                      "formats": [">f4", ">f4", ">f4", ">f4", (">i2", (2,))],
                      "offsets": [0, 4, 8, 16, 20], "itemsize": point_step})
    records = np.zeros((height, width), dtype=dtype)
    records["x"] = np.arange(6).reshape(2, 3)
    records["intensity"] = 100 + np.arange(6).reshape(2, 3)
    records["pair"] = np.arange(12).reshape(2, 3, 2) - 5
    buf = bytearray(row_step * height)
    for r in range(height):
        row = records[r].tobytes()
        buf[r * row_step: r * row_step + len(row)] = row
    fields = [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1),
              ("intensity", 16, FLOAT32, 1), ("pair", 20, INT16, 2)]
    out = decode_pointcloud2(fields, bytes(buf), width, height, point_step, row_step, True,
                             ["x", "intensity", "pair"])
    assert out.shape == (6, 4)
    np.testing.assert_array_equal(out[:, 0], np.arange(6))
    np.testing.assert_array_equal(out[:, 1], 100 + np.arange(6))
    np.testing.assert_array_equal(out[:, 2:], np.arange(12).reshape(6, 2) - 5)
    # default column order follows the offsets
    assert decode_pointcloud2(fields, bytes(buf), width, height, point_step, row_step,
                              True).shape == (6, 6)


def test_accepts_bytes_like_payloads_and_message_field_objects():
    pts = np.arange(12, dtype=np.float32).reshape(4, 3)
    fields, data, step = encode_pointcloud2(pts, ["x", "y", "z"])
    objects = [SimpleNamespace(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields]
    for payload in (data, bytearray(data), memoryview(data), array.array("B", data),
                    np.frombuffer(data, np.uint8)):
        np.testing.assert_array_equal(_decode(objects, payload, 4, step), pts)


def test_empty_cloud():
    fields, data, step = encode_pointcloud2(np.zeros((0, 2), np.float32), ["x", "y"])
    assert data == b"" and step == 8
    assert _decode(fields, data, 0, step).shape == (0, 2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(ALL_TYPES), min_size=1, max_size=6),
       st.integers(0, 50), st.integers(0, 2**32 - 1))
def test_random_layouts_round_trip(datatypes, n, seed):
    rng = np.random.default_rng(seed)
    columns = []
    for dt in datatypes:
        if dt in (FLOAT32, FLOAT64):
            columns.append(rng.normal(size=n).astype(np.float32))
        else:
            size = datatype_size(dt)
            signed = dt in (INT8, INT16, 5)
            lo, hi = (-(2 ** (8 * size - 1)), 2 ** (8 * size - 1) - 1) if signed else (
                0, 2 ** (8 * size) - 1)
            columns.append(rng.integers(lo, hi, n, endpoint=True).astype(np.float64))
    points = np.stack(columns, axis=1) if n else np.zeros((0, len(datatypes)))
    names = [f"f{i}" for i in range(len(datatypes))]
    fields, data, step = encode_pointcloud2(points, names, datatypes)
    out = _decode(fields, data, n, step, dtype=np.float64)
    np.testing.assert_array_equal(out, points)


# ---------------------------------------------------------------------------- malformed input
XYZ = [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1)]


@pytest.mark.parametrize("fields, data, width, height, point_step, row_step, match", [
    (XYZ, b"\0" * 23, 2, 1, 12, 24, "truncated: 23 bytes"),
    (XYZ, b"\0" * 25, 2, 1, 12, 24, "trailing bytes"),
    (XYZ, b"\0" * 24, 2, 1, 12, 20, "row_step 20 is shorter"),
    (XYZ, b"\0" * 20, 2, 1, 10, 20, "does not fit in point_step 10"),
    ([("x", 0, 9, 1)], b"\0" * 8, 2, 1, 4, 8, "unknown PointField datatype 9"),
    ([("x", 0, 0, 1)], b"\0" * 8, 2, 1, 4, 8, "unknown PointField datatype 0"),
    ([("x", 0, FLOAT32, 1), ("x", 4, FLOAT32, 1)], b"\0" * 16, 2, 1, 8, 16, "appears twice"),
    ([("x", -4, FLOAT32, 1)], b"\0" * 8, 2, 1, 4, 8, "does not fit"),
    ([("x", 0, FLOAT32, -1)], b"\0" * 8, 2, 1, 4, 8, "negative count"),
    (XYZ, b"", 0, 1, 0, 0, "point_step must be > 0"),
    (XYZ, "text", 1, 1, 12, 12, "bytes-like"),
    (XYZ, np.zeros(3, np.float32), 1, 1, 12, 12, "uint8"),
])
def test_malformed_clouds_raise_clear_errors(fields, data, width, height, point_step, row_step,
                                             match):
    with pytest.raises(PointCloud2Error, match=match):
        decode_pointcloud2(fields, data, width, height, point_step, row_step)


def test_missing_field_names_the_ones_available():
    fields, data, step = encode_pointcloud2(np.zeros((2, 3), np.float32), ["x", "y", "z"])
    with pytest.raises(PointCloud2Error, match=r"\['intensity'\] not in the cloud.*'x', 'y'"):
        _decode(fields, data, 2, step, ["x", "intensity"])


@pytest.mark.parametrize("values, datatype, match", [
    ([[0.5]], UINT8, "not an integer"),
    ([[256.0]], UINT8, r"not an integer in \[0, 255\]"),
    ([[-1.0]], UINT16, "not an integer"),
    ([[np.nan]], INT16, "not an integer"),
    ([[1.0]], 42, "unknown PointField datatype 42"),
])
def test_encoding_refuses_lossy_integer_fields(values, datatype, match):
    with pytest.raises(PointCloud2Error, match=match):
        encode_pointcloud2(np.asarray(values), ["v"], datatype)


def test_encoding_checks_names_and_shapes():
    with pytest.raises(PointCloud2Error, match="one name per column"):
        encode_pointcloud2(np.zeros((2, 3)), ["x", "y"])
    with pytest.raises(PointCloud2Error, match="repeated"):
        encode_pointcloud2(np.zeros((2, 2)), ["x", "x"])
    with pytest.raises(PointCloud2Error, match=r"\(N, K\)"):
        encode_pointcloud2(np.zeros(3), ["x"])
    with pytest.raises(PointCloud2Error, match="2 datatypes for 3 fields"):
        encode_pointcloud2(np.zeros((2, 3)), ["x", "y", "z"], [FLOAT32, FLOAT32])
    with pytest.raises(PointCloud2Error, match=r"UINT8 but values span \[300, 300\]"):
        encode_pointcloud2(np.array([[300]], dtype=np.int64), ["v"], UINT8)

"""Our PointCloud2 codec (imkd_core.wire.pointcloud2) against the reference, ROS's own
`sensor_msgs_py.point_cloud2`: the same values from the same message on every datatype, on
padded points, organised (height > 1) clouds, fields with count > 1 and big-endian data, and
the same bytes when encoding.

Row padding (row_step > width * point_step) is not compared: the reference reads the buffer as
`width * height` back-to-back points and ignores row_step (test_pointcloud2.py checks ours on a
hand-made padded layout)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

point_cloud2 = pytest.importorskip(
    "sensor_msgs_py.point_cloud2",
    reason="sensor_msgs_py is not importable (setup installs it into .venv from a wheel)")

from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from imkd_core.wire import fields as wire_fields  # noqa: E402
from imkd_core.wire.pointcloud2 import (  # noqa: E402
    DATATYPE_NAMES,
    FLOAT32,
    FLOAT64,
    INT8,
    INT16,
    INT32,
    UINT8,
    UINT16,
    UINT32,
    decode_pointcloud2,
    decode_pointcloud2_structured,
    encode_pointcloud2,
    numpy_dtype,
)

ALL_TYPES = sorted(DATATYPE_NAMES)


def values_for(datatype: int, n: int, rng) -> np.ndarray:
    """n values spanning the datatype's range, its extremes included."""
    dtype = numpy_dtype(datatype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, n, endpoint=True, dtype=np.int64)
        values[:2] = info.min, info.max
        return values.astype(dtype)
    values = rng.normal(scale=1e3, size=n).astype(dtype)
    values[:2] = np.finfo(dtype).max, np.finfo(dtype).tiny
    return values


def cloud(layout, records: np.ndarray, width: int, height: int, big: bool) -> PointCloud2:
    """A PointCloud2 holding `records` (a structured array in the byte order `big` says)."""
    msg = PointCloud2(height=height, width=width, point_step=records.dtype.itemsize,
                      row_step=records.dtype.itemsize * width, is_bigendian=big)
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in layout]
    msg.data = records.tobytes()
    return msg


def random_records(layout, point_step: int, n: int, big: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = np.dtype({"names": [f[0] for f in layout],
                      "formats": [numpy_dtype(d, big) if c == 1 else (numpy_dtype(d, big), (c,))
                                  for _, _, d, c in layout],
                      "offsets": [f[1] for f in layout], "itemsize": point_step})
    records = np.zeros(n, dtype)
    for name, _, datatype, count in layout:
        records[name] = values_for(datatype, n * count, rng).reshape(records[name].shape)
    return records


def reference_columns(msg: PointCloud2, layout) -> np.ndarray:
    """The reference's values as float64 columns, in layout order (a field with count c is
    c columns: the reference names them <name>_0 .. <name>_<c-1>)."""
    points = point_cloud2.read_points(copy.deepcopy(msg))  # it byteswaps the buffer in place
    columns = []
    for name, _, _, count in layout:
        names = [name] if count == 1 else [f"{name}_{i}" for i in range(count)]
        columns += [points[n].astype(np.float64) for n in names]
    return np.stack(columns, axis=1)


def assert_same_as_reference(msg: PointCloud2, layout) -> None:
    ours = decode_pointcloud2(msg.fields, msg.data, msg.width, msg.height, msg.point_step,
                              msg.row_step, msg.is_bigendian, [f[0] for f in layout],
                              dtype=np.float64)
    np.testing.assert_array_equal(ours, reference_columns(msg, layout))
    # the node's path (float32) agrees with the reference's values cast the same way
    with np.errstate(over="ignore"):  # FLOAT64's max is inf in float32, in both
        expected = reference_columns(msg, layout).astype(np.float32)
    np.testing.assert_array_equal(wire_fields.pointcloud2_array(msg, [f[0] for f in layout]),
                                  expected)


@pytest.mark.parametrize("big", [False, True], ids=["little", "big"])
@pytest.mark.parametrize("datatype", ALL_TYPES, ids=[DATATYPE_NAMES[t] for t in ALL_TYPES])
def test_every_datatype_decodes_as_the_reference(datatype, big):
    layout = [("v", 0, datatype, 1)]
    step = numpy_dtype(datatype).itemsize
    records = random_records(layout, step, 64, big, seed=datatype)
    assert_same_as_reference(cloud(layout, records, 64, 1, big), layout)


MIXED = [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1),
         ("intensity", 16, FLOAT32, 1),  # 4 bytes of padding before it, as PCL's PointXYZI
         ("ring", 20, UINT16, 1), ("t", 24, FLOAT64, 1), ("flag", 32, INT8, 1),
         ("label", 33, UINT8, 1), ("id", 36, INT32, 1), ("mask", 40, UINT32, 1),
         ("pair", 44, INT16, 2)]  # count 2


@pytest.mark.parametrize("big", [False, True], ids=["little", "big"])
@pytest.mark.parametrize("width, height", [(50, 1), (8, 6)], ids=["dense", "organised"])
def test_padded_mixed_clouds_decode_as_the_reference(width, height, big):
    records = random_records(MIXED, 64, width * height, big, seed=width)  # 16 bytes at the end
    msg = cloud(MIXED, records, width, height, big)
    assert_same_as_reference(msg, MIXED)
    ours = decode_pointcloud2_structured(msg.fields, msg.data, width, height, 64, msg.row_step,
                                         big)
    reference = point_cloud2.read_points(copy.deepcopy(msg))
    for name in ("x", "ring", "t", "mask"):
        np.testing.assert_array_equal(ours[name], reference[name])


@pytest.mark.parametrize("datatype", ALL_TYPES, ids=[DATATYPE_NAMES[t] for t in ALL_TYPES])
def test_encoding_gives_the_reference_bytes(datatype):
    rng = np.random.default_rng(datatype)
    names = ["a", "b", "c"]
    columns = [values_for(datatype, 20, rng), values_for(FLOAT32, 20, rng),
               values_for(datatype, 20, rng)]
    layout, data, step = encode_pointcloud2(np.stack(columns, 1).astype(np.float64), names,
                                            [datatype, FLOAT32, datatype])
    point_fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in layout]
    records = np.zeros(20, point_cloud2.dtype_from_fields(point_fields, step))
    for name, column in zip(names, columns):
        records[name] = column
    reference = point_cloud2.create_cloud(Header(), point_fields, records)
    assert reference.point_step == step and reference.row_step == 20 * step
    assert bytes(reference.data) == data
    assert not reference.is_bigendian  # ours is always little-endian; so is the reference's here


def test_organised_cloud_from_the_reference_decodes():
    """create_cloud's 2-D input (width x height) read back by our decoder, point for point."""
    point_fields = [PointField(name="x", offset=0, datatype=FLOAT32, count=1),
                    PointField(name="i", offset=4, datatype=UINT16, count=1)]
    records = np.zeros((5, 3), point_cloud2.dtype_from_fields(point_fields, 8))
    records["x"] = np.arange(15).reshape(5, 3) * 0.5
    records["i"] = np.arange(15).reshape(5, 3) + 1000
    msg = point_cloud2.create_cloud(Header(), point_fields, records, point_step=8)
    assert (msg.width, msg.height) == (5, 3)
    ours = wire_fields.pointcloud2_array(msg, ["x", "i"])
    np.testing.assert_array_equal(ours[:, 0], records["x"].reshape(-1))
    np.testing.assert_array_equal(ours[:, 1], records["i"].reshape(-1))

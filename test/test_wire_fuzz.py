"""Hostile input to the message decoders (imkd_core.wire, data.image_codec): whatever the header
of a PointCloud2, an Image, a CompressedImage, a CameraInfo, a TFMessage or a keyframe record
says, a decoder returns a valid value or raises `WireError` (its one documented error), and it
checks the declared sizes before it does the work they ask for."""

from __future__ import annotations

import io
import json
import struct
import time
import tracemalloc
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imkd_core.sample import NUSCENES_RADAR_FIELDS
from imkd_core.wire import fields
from imkd_core.wire.camera_model import CameraModel, camera_info_intrinsics
from imkd_core.wire.fields import WireError
from imkd_core.wire.keyframe import KeyframeRecord
from imkd_core.wire.names import RADAR_DATATYPES
from imkd_core.wire.pointcloud2 import FLOAT32, FLOAT64, INT16, UINT8, encode_pointcloud2

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SMALL_PIXELS = 1 << 16  # max_pixels in these tests: a refused size is cheap to reach

# Integers a header field may hold: small ones (valid layouts), the edges of int32/uint32 and
# beyond (ROS fields are uint32; duck-typed rosbags values need not be).
EDGE_INTS = st.one_of(st.integers(0, 64), st.sampled_from(
    [-1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63, -(2**31)]), st.integers(-2**40, 2**40))


def cloud_msg(fields_, data, width, height, point_step, row_step, big=False):
    names = [SimpleNamespace(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields_]
    return SimpleNamespace(fields=names, data=data, width=width, height=height,
                           point_step=point_step, row_step=row_step, is_bigendian=big)


field_strategy = st.tuples(st.sampled_from(["x", "y", "z", "i", "", "x "]),
                           st.one_of(st.integers(0, 40), EDGE_INTS),
                           st.one_of(st.integers(0, 10), EDGE_INTS),
                           st.one_of(st.integers(0, 4), EDGE_INTS))


@st.composite
def clouds(draw):
    """Consistent layouts (data as long as the header says) and arbitrary ones."""
    layout = draw(st.lists(field_strategy, max_size=6))
    big = draw(st.booleans())
    if draw(st.booleans()):  # consistent sizes: the decode itself is exercised
        width, height = draw(st.integers(0, 16)), draw(st.integers(0, 4))
        point_step = draw(st.integers(1, 48))
        row_step = width * point_step + draw(st.integers(0, 8))
        data = draw(st.binary(min_size=row_step * height, max_size=row_step * height))
    else:
        width, height, point_step, row_step = (draw(EDGE_INTS) for _ in range(4))
        data = draw(st.binary(max_size=256))
    return cloud_msg(layout, data, width, height, point_step, row_step, big)


@FUZZ
@given(clouds())
def test_pointcloud2_decode_returns_points_or_wire_error(msg):
    try:
        points = fields.pointcloud2_array(msg)
    except WireError:
        return
    assert points.dtype == np.float32 and points.ndim == 2
    assert points.shape[0] == msg.width * msg.height


@FUZZ
@given(clouds(), st.integers(1, 100))
def test_radar_decode_returns_18_columns_or_wire_error(msg, max_points):
    msg.fields = msg.fields + [SimpleNamespace(name=n, offset=0, datatype=FLOAT32, count=1)
                               for n in NUSCENES_RADAR_FIELDS]
    try:
        points, dropped = fields.radar_points(msg, max_points)
    except WireError:
        return
    assert points.shape[1] == len(NUSCENES_RADAR_FIELDS) and np.isfinite(points).all()
    assert len(points) + dropped == msg.width * msg.height <= max_points


def test_cloud_header_products_are_checked_before_any_work():
    """Products that overflow 32 or 64 bits, or that ask for more than the caps, are refused
    from the header alone, in microseconds."""
    xyz = [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1)]
    cases = [
        (cloud_msg(xyz, b"", 2**32 - 1, 2**32 - 1, 12, 2**32 - 1), "exceed the cap"),
        (cloud_msg(xyz, b"\0" * 12, 2**20, 2, 12, 0), "row_step 0 is shorter"),
        # width * point_step wraps to 0 in uint32 arithmetic: not in Python integers
        (cloud_msg([("x", 0, UINT8, 1)], b"\0" * 16, 2**26, 1, 64, 16), "row_step 16 is shorter"),
        (cloud_msg([("x", 2**32 - 4, FLOAT32, 2**30)], b"", 0, 0, 16, 0), "does not fit"),
        (cloud_msg(xyz, b"", 1, 1, 2**20, 2**20), "point_step 1048576 exceeds the cap"),
        (cloud_msg(xyz, b"", 1, 1, 12.5, 12), "point_step must be an integer"),
        (cloud_msg([(f"f{i}", 0, UINT8, 1) for i in range(5000)], b"", 0, 0, 1, 0),
         "5000 fields exceed"),
        (cloud_msg(xyz, b"\0" * 24, 2, 1, 12, 24), None),
    ]
    for msg, match in cases:
        start = time.perf_counter()
        if match is None:
            assert fields.pointcloud2_array(msg).shape == (2, 3)
            continue
        with pytest.raises(WireError, match=match):
            fields.pointcloud2_array(msg)
        assert time.perf_counter() - start < 0.05


def test_big_endian_clouds_decode_to_the_right_values():
    values = np.array([[1.5, -2.0, 300.0], [7.25, 0.0, -1e6]])
    dtype = np.dtype([("x", ">f4"), ("t", ">f8"), ("ring", ">i2")])
    records = np.zeros(2, dtype)
    records["x"], records["t"], records["ring"] = values[:, 0], values[:, 1], [300, -2]
    layout = [("x", 0, FLOAT32, 1), ("t", 4, FLOAT64, 1), ("ring", 12, INT16, 1)]
    msg = cloud_msg(layout, records.tobytes(), 2, 1, 14, 28, big=True)
    np.testing.assert_array_equal(fields.pointcloud2_array(msg),
                                  [[1.5, -2.0, 300], [7.25, 0.0, -2]])
    msg.is_bigendian = False  # the same bytes read as little-endian are other numbers
    assert not np.array_equal(fields.pointcloud2_array(msg)[:, 0], [1.5, 7.25])


def test_radar_field_with_count_above_one_is_refused():
    points = np.zeros((3, len(NUSCENES_RADAR_FIELDS)), np.float32)
    layout, data, step = encode_pointcloud2(points, NUSCENES_RADAR_FIELDS, RADAR_DATATYPES)
    layout = [("x", 0, FLOAT32, 3) if f[0] == "x" else f for f in layout]  # x, y, z as one
    layout = [f for f in layout if f[0] not in ("y", "z")]
    with pytest.raises(WireError, match=r"not in the cloud"):
        fields.radar_points(cloud_msg(layout, data, 3, 1, step, 3 * step), 100)
    layout = [(n, o, d, 3 if n == "rcs" else c) for n, o, d, c in
              encode_pointcloud2(points, NUSCENES_RADAR_FIELDS)[0]]
    step = 4 * len(NUSCENES_RADAR_FIELDS) + 8
    with pytest.raises(WireError, match="radar fields need count 1"):
        fields.radar_points(cloud_msg(layout, b"\0" * 3 * step, 3, 1, step, 3 * step), 100)


# ------------------------------------------------------------------------------------ images
def raw_msg(encoding, height, width, step, data):
    return SimpleNamespace(encoding=encoding, height=height, width=width, step=step, data=data)


@FUZZ
@given(st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "RGB8", "", "x"]),
       EDGE_INTS, EDGE_INTS, EDGE_INTS, st.binary(max_size=512), st.booleans())
def test_raw_image_decode_returns_rgb_or_wire_error(encoding, height, width, step, data, fit):
    if fit and 0 < height * step <= 4096:  # a consistent header, so decoding happens
        data = bytes(height * step)
    try:
        image = fields.image_from_msg(raw_msg(encoding, height, width, step, data), SMALL_PIXELS)
    except WireError:
        return
    assert image.shape == (height, width, 3) and image.dtype == np.uint8


def _png(mode="RGB", size=(4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(mode="RGB", size=(4, 3), progressive=False) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "JPEG", progressive=progressive)
    return buffer.getvalue()


def png_declaring(width: int, height: int, mode: str = "RGB") -> bytes:
    """A small PNG whose IHDR (CRC fixed up) declares another size."""
    data = bytearray(_png(mode))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def jpeg_declaring(width: int, height: int, progressive: bool = False) -> bytes:
    """A small JPEG whose start-of-frame segment declares another size."""
    data = bytearray(_jpeg(progressive=progressive))
    sof = next(i for i in range(2, len(data) - 9) if data[i] == 0xFF and data[i + 1] in
               (0xC0, 0xC2))
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


SEEDS = [_png(m) for m in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16")] + [
    _jpeg("L"), _jpeg("RGB"), _jpeg("CMYK"), _jpeg(progressive=True)]


@st.composite
def compressed(draw):
    kind = draw(st.integers(0, 3))
    if kind == 0:
        side = st.one_of(st.integers(0, 300),
                         st.sampled_from([30000, 65535, 2**31 - 1, 2**32 - 1]))
        return png_declaring(draw(side), draw(side), draw(st.sampled_from(["RGB", "L", "P"])))
    if kind == 1:
        side = st.one_of(st.integers(0, 300), st.sampled_from([30000, 65535]))
        return jpeg_declaring(draw(side), draw(side), draw(st.booleans()))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    if kind == 2:  # flipped bytes anywhere, then perhaps truncated
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data[:draw(st.integers(0, len(data)))])
    return bytes(data[:8]) + draw(st.binary(max_size=200))  # a valid magic, then junk


@FUZZ
@given(compressed(), st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "bmp"]))
def test_compressed_image_decode_returns_rgb_or_wire_error(data, fmt):
    msg = SimpleNamespace(format=fmt, data=data)
    try:
        image = fields.image_from_msg(msg, SMALL_PIXELS)
    except WireError:
        return
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    assert image.shape[0] * image.shape[1] <= SMALL_PIXELS


@pytest.mark.parametrize("data", [png_declaring(30000, 30000), jpeg_declaring(30000, 30000),
                                  png_declaring(2**31 - 1, 2**31 - 1)],
                         ids=["png", "jpeg", "png_max"])
def test_decompression_bomb_is_refused_from_its_header(data):
    """A few hundred bytes declaring 30000 x 30000 (PIL raised DecompressionBombError for it,
    which ended the node): refused with the declared size, without decoding or allocating."""
    tracemalloc.start()
    try:
        with pytest.raises(WireError, match=r"exceeds max_image_pixels=16777216"):
            fields.image_from_msg(SimpleNamespace(format="png", data=data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_image_modes_are_converted_to_rgb():
    grey16 = Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    buffer = io.BytesIO()
    grey16.save(buffer, "PNG")
    image = fields.image_from_msg(SimpleNamespace(format="png", data=buffer.getvalue()))
    np.testing.assert_array_equal(image[..., 0], (np.arange(12).reshape(3, 4) * 5000) >> 8)
    assert (image[..., 0] == image[..., 2]).all()
    buffer = io.BytesIO()
    Image.new("CMYK", (5, 3), (0, 255, 0, 0)).save(buffer, "JPEG", quality=100)
    cmyk = fields.image_from_msg(SimpleNamespace(format="jpeg", data=buffer.getvalue()))
    assert cmyk.shape == (3, 5, 3) and cmyk[1, 2, 1] < 10 < cmyk[1, 2, 0]  # magenta
    for mode in ("1", "LA", "P", "RGBA"):
        assert fields.image_from_msg(SimpleNamespace(format="png", data=_png(mode))).shape == (
            3, 4, 3)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3)).save(buffer, "GIF")
    with pytest.raises(WireError, match="neither JPEG nor PNG"):
        fields.image_from_msg(SimpleNamespace(format="png", data=buffer.getvalue()))


def test_raw_image_size_is_checked_before_reading_data():
    with pytest.raises(WireError, match="exceeds max_image_pixels=65536"):
        fields.image_from_msg(raw_msg("rgb8", 30000, 30000, 90000, b""), SMALL_PIXELS)
    with pytest.raises(WireError, match="height must be an integer"):
        fields.image_from_msg(raw_msg("rgb8", 2.0, 2, 6, bytes(12)))


# --------------------------------------------------------------------------- CameraInfo, /tf
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, 1.0, 500.0, 320.0, 240.0]))


@FUZZ
@given(st.lists(FLOATS, max_size=12), st.lists(FLOATS, max_size=16), st.lists(FLOATS, max_size=14),
       EDGE_INTS, EDGE_INTS,
       st.sampled_from(["", "plumb_bob", "rational_polynomial", "equidistant", "fisheye"]),
       st.booleans())
def test_camera_info_gives_a_model_or_wire_error(k, p, d, width, height, distortion, pinhole):
    if len(k) >= 9 and pinhole:  # often a plausible pinhole, so the later checks run
        k[:9] = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    msg = SimpleNamespace(k=k, p=p, d=d, r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], width=width,
                          height=height, distortion_model=distortion, binning_x=0,
                          binning_y=0)
    try:
        K = camera_info_intrinsics(msg)
        model = CameraModel.from_msg(msg)
    except WireError:
        return
    assert K.shape == (3, 3) and np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0
    try:
        model.for_image(model.width // 2, model.height // 2)
    except WireError:
        pass


def tf_msg(parent, child, quat, trans):
    ts = SimpleNamespace(
        header=SimpleNamespace(frame_id=parent, stamp=SimpleNamespace(sec=1, nanosec=0)),
        child_frame_id=child,
        transform=SimpleNamespace(rotation=SimpleNamespace(x=quat[0], y=quat[1], z=quat[2],
                                                           w=quat[3]),
                                  translation=SimpleNamespace(x=trans[0], y=trans[1],
                                                              z=trans[2])))
    return SimpleNamespace(transforms=[ts])


@FUZZ
@given(st.sampled_from(["map", "", "/", "base_link", "/map"]),
       st.sampled_from(["base_link", "", "map", "CAM_FRONT"]),
       st.lists(FLOATS, min_size=4, max_size=4), st.lists(FLOATS, min_size=3, max_size=3))
def test_tf_gives_unit_rotations_or_reasons(parent, child, quat, trans):
    transforms, problems = fields.tf_message_to_list(tf_msg(parent, child, quat, trans))
    assert len(transforms) + len(problems) == 1
    for _, _, _, T in transforms:
        assert np.isfinite(T).all()
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)


def test_tf_refuses_non_unit_quaternions_and_self_parents():
    _, problems = fields.tf_message_to_list(tf_msg("map", "base_link", [0, 0, 0, 2.0], [0] * 3))
    assert "unit quaternion" in problems[0]
    _, problems = fields.tf_message_to_list(tf_msg("map", "map", [0, 0, 0, 1.0], [0] * 3))
    assert "its own parent" in problems[0]
    good, problems = fields.tf_message_to_list(tf_msg("map", "base_link", [0, 0, 0, 1.001],
                                                      [1, 2, 3]))
    assert not problems and np.allclose(good[0][3][:3, 3], [1, 2, 3])  # tf2's tolerance


# ---------------------------------------------------------------------------- keyframe JSON
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@st.composite
def keyframe_texts(draw):
    record = {"format": "imkd-keyframe/1", "token": "t", "scene": "s", "scene_start": 0,
              "timestamp": 10, "data": {"CAM_FRONT": 10},
              "gt": {"params": [[0.0] * 9], "labels": ["car"]}}
    for key in draw(st.lists(st.sampled_from(sorted(record)), max_size=3)):
        if draw(st.booleans()):
            record[key] = draw(JSON)
        else:
            record.pop(key, None)
    return json.dumps(record) if draw(st.booleans()) else json.dumps(draw(JSON))


@FUZZ
@given(keyframe_texts())
def test_keyframe_json_gives_a_record_or_wire_error(text):
    try:
        record = KeyframeRecord.from_json(text)
    except WireError:
        return
    assert isinstance(record.timestamp, int) and 0 <= record.timestamp < 2**63
    assert all(isinstance(v, int) for v in record.data.values())


@pytest.mark.parametrize("text, match", [
    ("[" * 100_000 + "]" * 100_000, "not JSON"),
    ('"' + "x" * (17 << 20) + '"', "exceed the cap"),
    ('{"format": "imkd-keyframe/1", "token": 1, "scene": 1, "scene_start": 0, '
     '"timestamp": Infinity, "data": {}}', "integer stamp"),
    ('{"format": "imkd-keyframe/1", "token": 1, "scene": 1, "scene_start": 0, '
     '"timestamp": 1e300, "data": {}}', r"outside \[0, 2\^63\)"),
    ('{"format": "imkd-keyframe/1", "token": 1, "scene": 1, "scene_start": 0, '
     '"timestamp": 5, "data": []}', "'data' must be an object"),
    ('{"format": "imkd-keyframe/1", "token": 1, "scene": 1, "scene_start": 0, '
     '"timestamp": 5, "data": {}, "gt": {"params": [[0,0,0,0,0,0,0,0,0]], "labels": []}}',
     "1 boxes but 0 labels"),
])
def test_bad_keyframe_records_name_the_problem(text, match):
    with pytest.raises(WireError, match=match):
        KeyframeRecord.from_json(text)

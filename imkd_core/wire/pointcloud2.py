"""PointCloud2 payloads <-> numpy, without ROS.

`sensor_msgs/PointCloud2` is a list of fields `(name, offset, datatype, count)` describing one
point record of `point_step` bytes; `height` rows of `width` points each start `row_step` bytes
apart in `data` (rows may carry padding after `width * point_step` bytes). This module turns
such a byte layout into numpy arrays through one structured dtype (no per-point Python) and
back. It takes plain values, not message objects; `imkd_core.wire.fields.pointcloud2_array`
reads them off a message, a rosbags one (bags) or an rclpy one (the node) alike.

Validation is strict and comes before any work: every header value must be an integer in its
ROS range (uint32), and every product of width, height, point_step, row_step, field offsets and
counts is checked in Python integers (no overflow) against the data length and against the
absolute caps below. A field that sticks out of its point, a point that sticks out of its row,
a buffer that is shorter or longer than `row_step * height`, an unknown datatype, a repeated or
missing field name, a layout over a cap all raise `PointCloud2Error` with the numbers that do
not add up. A big-endian cloud (`is_bigendian`) is read with big-endian dtypes: its values
come out right on any host, never as little-endian bytes.

Memory is bounded by the input: the decoded records are a view of `data` (or, with row padding,
a copy no larger than it), and `decode_pointcloud2` refuses an output array over `max_bytes`
(default `MAX_DECODE_BYTES`) before allocating it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np

# sensor_msgs/PointField datatype constants.
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = 1, 2, 3, 4, 5, 6, 7, 8
DATATYPE_NAMES = {INT8: "INT8", UINT8: "UINT8", INT16: "INT16", UINT16: "UINT16",
                  INT32: "INT32", UINT32: "UINT32", FLOAT32: "FLOAT32", FLOAT64: "FLOAT64"}
_NUMPY_CHAR = {INT8: "i1", UINT8: "u1", INT16: "i2", UINT16: "u2",
               INT32: "i4", UINT32: "u4", FLOAT32: "f4", FLOAT64: "f8"}
_FROM_NUMPY = {np.dtype(v).newbyteorder("=").str[1:]: k for k, v in _NUMPY_CHAR.items()}

Field = tuple[str, int, int, int]  # (name, offset, datatype, count)

# Absolute caps, far above any real sensor (an Ouster or Velodyne point is <= 64 bytes, a few
# dozen fields), so that a header alone cannot ask for absurd work.
UINT32_MAX = 2**32 - 1  # width, height, point_step, row_step, offset, count are uint32
MAX_FIELDS = 1024
MAX_POINT_STEP = 1 << 16  # bytes per point
MAX_POINTS = 1 << 27  # width * height
MAX_DECODE_BYTES = 1 << 30  # the (N, K) array decode_pointcloud2 may allocate


class PointCloud2Error(ValueError):
    """A PointCloud2 layout or payload that cannot be decoded or encoded as asked."""


def datatype_size(datatype: int) -> int:
    """Bytes of one element of a PointField datatype."""
    try:
        return np.dtype(_NUMPY_CHAR[int(datatype)]).itemsize
    except KeyError:
        raise PointCloud2Error(
            f"unknown PointField datatype {datatype!r} (known: "
            f"{', '.join(f'{k}={v}' for k, v in DATATYPE_NAMES.items())})") from None


def numpy_dtype(datatype: int, is_bigendian: bool = False) -> np.dtype:
    """The numpy scalar dtype of a PointField datatype in the given byte order."""
    datatype_size(datatype)  # validates
    return np.dtype(("<", ">")[bool(is_bigendian)] + _NUMPY_CHAR[int(datatype)])


def datatype_of(dtype) -> int:
    """The PointField datatype of a numpy scalar dtype (bool -> UINT8)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return UINT8
    try:
        return _FROM_NUMPY[dtype.newbyteorder("=").str[1:]]
    except KeyError:
        raise PointCloud2Error(f"numpy dtype {dtype} has no PointField datatype") from None


def _integer(value, what: str) -> int:
    """A header value as a Python int (ints, numpy integers; no floats, no strings)."""
    try:
        return operator.index(value)
    except TypeError:
        raise PointCloud2Error(f"{what} must be an integer, got {value!r:.40}") from None


def _uint32(value, what: str) -> int:
    """A header value as a Python int in the uint32 range ROS gives it, or `PointCloud2Error`."""
    number = _integer(value, what)
    if not 0 <= number <= UINT32_MAX:
        raise PointCloud2Error(f"{what} {number} outside the uint32 range [0, {UINT32_MAX}]")
    return number


def _normalise_fields(fields) -> list[Field]:
    try:
        fields = list(fields)
    except TypeError:
        raise PointCloud2Error(f"fields must be a sequence, got {type(fields).__name__}") from None
    if len(fields) > MAX_FIELDS:
        raise PointCloud2Error(f"{len(fields)} fields exceed the cap of {MAX_FIELDS}")
    out = []
    for i, f in enumerate(fields):
        try:
            if isinstance(f, tuple | list):
                name, offset, datatype, count = f
            else:  # a PointField-like object (rosbags or rclpy message)
                name, offset, datatype, count = f.name, f.offset, f.datatype, f.count
        except (ValueError, TypeError, AttributeError):
            raise PointCloud2Error(f"field {i} is not (name, offset, datatype, count): "
                                   f"{f!r:.80}") from None
        if not isinstance(name, str):
            raise PointCloud2Error(f"field {i}: name must be a string, got {name!r:.40}")
        count = _integer(count, f"field {name!r}: count")
        if count < 0:
            raise PointCloud2Error(f"field {name!r}: negative count {count}")
        # offset and count are range-checked against point_step in structured_dtype
        out.append((name, _integer(offset, f"field {name!r}: offset"),
                    _integer(datatype, f"field {name!r}: datatype"), count))
    return out


def structured_dtype(fields, point_step: int, is_bigendian: bool = False) -> np.dtype:
    """One point record as a numpy structured dtype; validates the field layout.

    A field with count > 1 becomes a sub-array; a field with count 0 is ignored (it occupies
    no bytes, as in ROS).
    """
    fields = _normalise_fields(fields)
    if isinstance(point_step, int | np.integer) and point_step <= 0:
        raise PointCloud2Error(f"point_step must be > 0, got {point_step}")
    point_step = _uint32(point_step, "point_step")
    if point_step > MAX_POINT_STEP:
        raise PointCloud2Error(f"point_step {point_step} exceeds the cap of {MAX_POINT_STEP}")
    names, formats, offsets = [], [], []
    seen: set[str] = set()
    for name, offset, datatype, count in fields:
        if count == 0:
            continue
        if name in seen:
            raise PointCloud2Error(f"field {name!r} appears twice")
        seen.add(name)
        size = datatype_size(datatype) * count
        if offset < 0 or offset + size > point_step:
            raise PointCloud2Error(
                f"field {name!r} ({DATATYPE_NAMES[datatype]} x{count}, {size} bytes at offset "
                f"{offset}) does not fit in point_step {point_step}")
        scalar = numpy_dtype(datatype, is_bigendian)
        names.append(name)
        formats.append(scalar if count == 1 else (scalar, (count,)))
        offsets.append(offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": point_step})


def _as_bytes_array(data) -> np.ndarray:
    """Any bytes-like payload (bytes, memoryview, array.array, uint8 ndarray) as a flat uint8
    array, without copying where possible."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise PointCloud2Error(f"data must be uint8, got {data.dtype}")
        return np.ascontiguousarray(data).reshape(-1)
    try:
        view = memoryview(data)
        return np.frombuffer(view.cast("B") if view.ndim != 1 or view.format != "B" else view,
                             dtype=np.uint8)
    except (TypeError, ValueError) as exc:  # not a buffer, or a non-contiguous one
        raise PointCloud2Error(f"data must be bytes-like and contiguous, got "
                               f"{type(data).__name__} ({exc})") from None


def decode_pointcloud2_structured(fields, data, width: int, height: int, point_step: int,
                                  row_step: int, is_bigendian: bool = False) -> np.ndarray:
    """The points as a 1-D structured array of `width * height` records (a view when no row
    padding needs removing; read-only when `data` is bytes)."""
    dtype = structured_dtype(fields, point_step, is_bigendian)
    if isinstance(width, int | np.integer) and isinstance(height, int | np.integer) and (
            width < 0 or height < 0):
        raise PointCloud2Error(f"width {width} and height {height} must be >= 0")
    width, height = _uint32(width, "width"), _uint32(height, "height")
    row_step, point_step = _uint32(row_step, "row_step"), dtype.itemsize
    if width * height > MAX_POINTS:
        raise PointCloud2Error(f"width * height = {width} * {height} points exceed the cap of "
                               f"{MAX_POINTS}")
    if row_step < width * point_step:
        raise PointCloud2Error(
            f"row_step {row_step} is shorter than width * point_step = {width} * {point_step}")
    buffer = _as_bytes_array(data)
    nbytes = buffer.size
    expected = row_step * height
    if nbytes != expected:
        what = "truncated" if nbytes < expected else "has trailing bytes"
        raise PointCloud2Error(
            f"data {what}: {nbytes} bytes, but row_step * height = {row_step} * {height} = "
            f"{expected}")
    if width * height == 0:
        return np.zeros(0, dtype=dtype)
    if row_step == width * point_step:
        return buffer.view(dtype)
    raw = buffer.reshape(height, row_step)
    rows = np.ascontiguousarray(raw[:, : width * point_step])
    return rows.view(dtype).reshape(-1)


def decode_pointcloud2(fields, data, width: int, height: int, point_step: int, row_step: int,
                       is_bigendian: bool = False, names: Sequence[str] | None = None,
                       dtype=np.float32, max_bytes: int = MAX_DECODE_BYTES) -> np.ndarray:
    """The points as a (width * height, K) array of `dtype`, one column per name in `names`
    (default: every field, in offset order; a field with count c gives c columns).

    A name that is not among the fields raises `PointCloud2Error` listing the ones there are;
    so does an output array of more than `max_bytes`, before it is allocated. A value outside
    `dtype`'s range becomes +-inf (float) as numpy casts it, without a warning.
    """
    records = decode_pointcloud2_structured(fields, data, width, height, point_step, row_step,
                                            is_bigendian)
    available = records.dtype.names or ()
    if names is None:
        names = sorted(available, key=lambda n: records.dtype.fields[n][1])
    missing = [n for n in names if n not in available]
    if missing:
        raise PointCloud2Error(f"fields {missing} not in the cloud (it has {list(available)})")
    widths = [math.prod(records.dtype.fields[n][0].shape) for n in names]
    out_dtype = np.dtype(dtype)
    need = len(records) * sum(widths) * out_dtype.itemsize
    if need > max_bytes:
        raise PointCloud2Error(f"decoding {len(records)} points x {sum(widths)} values as "
                               f"{out_dtype} needs {need} bytes, over the budget of {max_bytes}")
    out = np.empty((len(records), sum(widths)), dtype=out_dtype)
    start = 0
    with np.errstate(over="ignore", invalid="ignore"):  # FLOAT64 beyond float32: +-inf
        for name, w in zip(names, widths):
            out[:, start:start + w] = records[name].reshape(len(records), w)
            start += w
    return out


def encode_pointcloud2(points, names: Sequence[str] | None = None,
                       datatype: int | Sequence[int] = FLOAT32,
                       ) -> tuple[list[Field], bytes, int]:
    """Points -> `(fields, data, point_step)` for a dense (height 1, little-endian) cloud.

    `points` is either an (N, K) array with one name per column in `names` and `datatype` one
    PointField datatype for all columns or one per column, or a 1-D structured array (its own
    field names and types; `names`/`datatype` must then be left out). Fields are packed in the
    given order without padding; `row_step = N * point_step`. Columns that go into integer
    fields must hold integral values inside the type's range (no silent rounding or wrapping).
    """
    points = np.asarray(points)
    if points.dtype.names is not None:
        if names is not None or datatype != FLOAT32:
            raise PointCloud2Error("a structured array carries its own names and datatypes")
        if points.ndim != 1:
            raise PointCloud2Error(f"a structured point array must be 1-D, got {points.shape}")
        names = list(points.dtype.names)
        datatypes = []
        for n in names:
            base, shape = points.dtype.fields[n][0].base, points.dtype.fields[n][0].shape
            if shape:
                raise PointCloud2Error(f"field {n!r}: sub-array fields are not supported")
            datatypes.append(datatype_of(base))
        columns = [points[n] for n in names]
        n_points = len(points)
    else:
        if points.ndim != 2:
            raise PointCloud2Error(f"points must be (N, K) or structured, got {points.shape}")
        if names is None or len(names) != points.shape[1]:
            raise PointCloud2Error(
                f"need one name per column: {points.shape[1]} columns, names {names}")
        if len(set(names)) != len(names):
            raise PointCloud2Error(f"repeated field names in {list(names)}")
        if isinstance(datatype, int | np.integer):
            datatypes = [int(datatype)] * len(names)
        else:
            datatypes = [int(d) for d in datatype]
            if len(datatypes) != len(names):
                raise PointCloud2Error(
                    f"{len(datatypes)} datatypes for {len(names)} fields")
        columns = [points[:, i] for i in range(points.shape[1])]
        n_points = points.shape[0]
    fields: list[Field] = []
    offset = 0
    for name, dt in zip(names, datatypes):
        size = datatype_size(dt)
        fields.append((str(name), offset, dt, 1))
        offset += size
    point_step = offset
    if point_step == 0:
        raise PointCloud2Error("a cloud needs at least one field")
    dtype = structured_dtype(fields, point_step)
    records = np.empty(n_points, dtype=dtype)
    for (name, _, dt, _), column in zip(fields, columns):
        target = dtype.fields[name][0]
        if target.kind in "iu" and column.dtype.kind not in "iub":
            column = np.asarray(column, dtype=np.float64)
            info = np.iinfo(target)
            bad = ~np.isfinite(column) | (column != np.round(column)) | (column < info.min) | (
                column > info.max)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise PointCloud2Error(
                    f"field {name!r} is {DATATYPE_NAMES[dt]} but point {i} holds {column[i]!r} "
                    f"(not an integer in [{info.min}, {info.max}]); {int(bad.sum())} such values")
        elif target.kind in "iu":
            info = np.iinfo(target)
            if len(column) and (column.min() < info.min or column.max() > info.max):
                raise PointCloud2Error(
                    f"field {name!r} is {DATATYPE_NAMES[dt]} but values span "
                    f"[{column.min()}, {column.max()}]")
        records[name] = column
    return fields, records.tobytes(), point_step

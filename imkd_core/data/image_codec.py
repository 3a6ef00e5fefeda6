"""Camera image decoding shared by every path that turns bytes into a `CameraData.image`.

Message-agnostic and ROS-free (like `pointcloud2.py`): the nuScenes reader (image files), the
bag reader (rosbags messages) and the ROS node (rclpy messages) pass the fields in, so all three
give the same pixels for the same bytes. Output is always (H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# sensor_msgs/Image encoding -> (bytes per pixel, indices that give RGB from the stored order)
RAW_ENCODINGS: dict[str, tuple[int, list[int]]] = {
    "rgb8": (3, [0, 1, 2]),
    "bgr8": (3, [2, 1, 0]),
    "rgba8": (4, [0, 1, 2]),
    "bgra8": (4, [2, 1, 0]),
    "mono8": (1, [0, 0, 0]),
}


class ImageDecodeError(ValueError):
    """Image bytes that cannot be decoded; the message says what is wrong with them."""


def decode_raw_image(encoding: str, height: int, width: int, step: int, data) -> np.ndarray:
    """The fields of a sensor_msgs/Image -> (H, W, 3) uint8 RGB. Row padding (step > width x
    bytes per pixel) is removed; for unpadded rgb8 the result is a view of `data`."""
    key = encoding.lower()
    if key not in RAW_ENCODINGS:
        raise ImageDecodeError(f"unsupported encoding {encoding!r} "
                               f"(supported: {', '.join(RAW_ENCODINGS)})")
    channels, order = RAW_ENCODINGS[key]
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"empty image {width}x{height}")
    if step < width * channels:
        raise ImageDecodeError(f"step {step} < width {width} x {channels} bytes per pixel")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size != step * height:
        raise ImageDecodeError(f"data has {buffer.size} bytes, step x height = {step * height}")
    pixels = buffer.reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if channels == 3 and order == [0, 1, 2]:
        return np.ascontiguousarray(pixels)
    return np.ascontiguousarray(pixels[..., order])


def decode_compressed_image(data: bytes, fmt: str | None = None) -> np.ndarray:
    """JPEG or PNG bytes -> (H, W, 3) uint8 RGB, decoded by PIL. `fmt` is a CompressedImage
    `format` string; when given it must name JPEG or PNG."""
    if fmt is not None and not any(kind in fmt.lower() for kind in ("jpeg", "jpg", "png")):
        raise ImageDecodeError(f"unsupported compressed format {fmt!r} (JPEG or PNG)")
    if not data:
        raise ImageDecodeError("empty compressed image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.array(image.convert("RGB"))
    except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError, truncated data
        raise ImageDecodeError(f"cannot decode {len(data)} bytes as {fmt or 'an image'}: "
                               f"{exc}") from exc

"""Camera image decoding shared by every path that turns bytes into a `CameraData.image`.

Message-agnostic and ROS-free (like `pointcloud2.py`): the nuScenes reader (image files), the
bag reader (rosbags messages) and the ROS node (rclpy messages) pass the fields in, so all three
give the same pixels for the same bytes. Output is always (H, W, 3) uint8 RGB.

Every input that cannot be decoded raises `ImageDecodeError` and nothing else, whatever the
decoder underneath raised (PIL raises OSError, SyntaxError, struct.error, ValueError,
DecompressionBombError, ... on hostile bytes). Limits come before work: the declared size (a
raw image's width x height, a JPEG/PNG header's size, read without decoding) is checked against
`max_pixels` before any pixel is touched, per call, not through PIL's process-wide
`MAX_IMAGE_PIXELS`. That bounds a decode's memory: every accepted mode needs at most
`DECODE_BYTES_PER_PIXEL` bytes per declared pixel (the decoder's buffer of <= 4 bytes, the RGB
result of 3, a 16-bit image's scaling), so one decode never needs more than
`max_pixels * DECODE_BYTES_PER_PIXEL` bytes (256 MiB at the default).

Repaired, not refused: palette, 1-bit, grey, grey + alpha, RGBA and CMYK images are converted
to RGB (alpha dropped, as for rgba8); 16-bit grey PNGs are scaled to 8 bits (>> 8).
"""

from __future__ import annotations

import io
import operator

import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin

# sensor_msgs/Image encoding -> (bytes per pixel, indices that give RGB from the stored order)
RAW_ENCODINGS: dict[str, tuple[int, list[int]]] = {
    "rgb8": (3, [0, 1, 2]),
    "bgr8": (3, [2, 1, 0]),
    "rgba8": (4, [0, 1, 2]),
    "bgra8": (4, [2, 1, 0]),
    "mono8": (1, [0, 0, 0]),
}
DEFAULT_MAX_PIXELS = 4096 * 4096  # 16.8 MP: a nuScenes image is 1.4 MP, 8K UHD 33 MP
DECODE_BYTES_PER_PIXEL = 16  # upper bound for any accepted mode, see the module docstring
# Compressed formats by their magic bytes -> the PIL plugin that reads them; nothing else is
# tried, so no other of PIL's parsers ever sees message bytes.
_FORMATS = ((b"\xff\xd8\xff", "JPEG", JpegImagePlugin.JpegImageFile),
            (b"\x89PNG\r\n\x1a\n", "PNG", PngImagePlugin.PngImageFile))
_TO_RGB = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I")  # PNG 16-bit grey


class ImageDecodeError(ValueError):
    """Image bytes that cannot be decoded; the message says what is wrong with them."""


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"empty image {width}x{height}")
    if width * height > max_pixels:
        raise ImageDecodeError(f"image {width}x{height} = {width * height} pixels exceeds "
                               f"max_image_pixels={max_pixels}")


def _int(value, what: str) -> int:
    try:
        return operator.index(value)  # ints and numpy integers only
    except TypeError:
        raise ImageDecodeError(f"{what} must be an integer, got {value!r:.40}") from None


def decode_raw_image(encoding: str, height: int, width: int, step: int, data,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The fields of a sensor_msgs/Image -> (H, W, 3) uint8 RGB. Row padding (step > width x
    bytes per pixel) is removed; for unpadded rgb8 the result is a view of `data`. Sizes are
    checked (Python integers) against `max_pixels` and the data length first."""
    key = str(encoding).lower()
    if key not in RAW_ENCODINGS:
        raise ImageDecodeError(f"unsupported encoding {str(encoding)!r:.60} "
                               f"(supported: {', '.join(RAW_ENCODINGS)})")
    channels, order = RAW_ENCODINGS[key]
    height, width = _int(height, "height"), _int(width, "width")
    step = _int(step, "step")
    _check_pixels(width, height, max_pixels)
    if step < width * channels:
        raise ImageDecodeError(f"step {step} < width {width} x {channels} bytes per pixel")
    try:
        buffer = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise ImageDecodeError(f"data is not a byte buffer ({exc})") from None
    if buffer.size != step * height:
        raise ImageDecodeError(f"data has {buffer.size} bytes, step x height = {step * height}")
    pixels = buffer.reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if channels == 3 and order == [0, 1, 2]:
        return np.ascontiguousarray(pixels)
    return np.ascontiguousarray(pixels[..., order])


def _open(data: bytes) -> Image.Image:
    """The lazily opened image (header parsed, pixels not decoded)."""
    for magic, name, plugin in _FORMATS:
        if data.startswith(magic):
            try:
                return plugin(io.BytesIO(data))
            except Exception as exc:  # any parser failure is a broken header
                raise ImageDecodeError(f"cannot decode {len(data)} bytes: broken {name} header "
                                       f"({type(exc).__name__}: {exc})") from None
    raise ImageDecodeError(f"cannot decode {len(data)} bytes: neither JPEG nor PNG "
                           f"(they start {bytes(data[:8])!r})")


def decode_compressed_image(data: bytes, fmt: str | None = None,
                            max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """JPEG or PNG bytes -> (H, W, 3) uint8 RGB, decoded by PIL. `fmt` is a CompressedImage
    `format` string; when given it must name JPEG or PNG. The size in the header is checked
    against `max_pixels` before decoding."""
    if fmt is not None and not any(kind in str(fmt).lower() for kind in ("jpeg", "jpg", "png")):
        raise ImageDecodeError(f"unsupported compressed format {str(fmt)!r:.60} (JPEG or PNG)")
    if not data:
        raise ImageDecodeError("empty compressed image")
    image = _open(data)
    try:
        width, height = image.size
        _check_pixels(width, height, max_pixels)
        mode = image.mode
        if mode not in _TO_RGB and mode not in _SIXTEEN_BIT:
            raise ImageDecodeError(f"{image.format} {width}x{height}: unsupported mode {mode!r}")
        try:
            image.load()
            if mode in _SIXTEEN_BIT:  # scale to 8 bits: convert("RGB") would clip at 255
                grey = (np.clip(np.asarray(image), 0, 65535) >> 8).astype(np.uint8)
                rgb = np.repeat(grey[..., None], 3, axis=2)
            else:
                rgb = np.array(image.convert("RGB"))  # writable, as every decoded image
        except Exception as exc:  # truncated, corrupt or hostile data: whatever PIL raised
            raise ImageDecodeError(f"cannot decode {len(data)} bytes as {image.format} "
                                   f"{width}x{height}: {type(exc).__name__}: {exc}") from None
    finally:
        image.close()
    if rgb.shape != (height, width, 3) or rgb.dtype != np.uint8:
        raise ImageDecodeError(f"{image.format} {width}x{height} decoded to {rgb.shape} "
                               f"{rgb.dtype}")
    return np.ascontiguousarray(rgb)

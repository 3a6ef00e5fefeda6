"""sensor_msgs/CameraInfo -> a checked camera model, and the pinhole view of one image size.

The model takes pinhole images with their K, as nuScenes provides them. A real camera's
CameraInfo may describe a distorted lens, or a calibration made at another resolution than the
images that arrive. `CameraModel.from_msg` checks every field it uses and raises `WireError`
with the reason; `CameraModel.for_image(width, height)` gives the `PinholeView` for images of
that size:
- the calibrated size: K as is;
- a uniform resize of it (the same aspect within a pixel's rounding, e.g. 1600x900 -> 800x450):
  K scaled per axis as image_proc's resize scales it (fx, cx by width ratio; fy, cy by height
  ratio); distortion coefficients live in normalised coordinates and stay;
- any other size: `WireError` naming both sizes (a K for another image must not be applied).
A distorted camera (plumb_bob, rational_polynomial, equidistant with any non-zero D) is
rectified with OpenCV's undistort maps, made once per view and cached with it; the rectified
image's K is P's left 3x3 (as image_proc's image_rect: camera_calibration chooses P so that the
rectified image holds only valid pixels) or K when P is unset. R (the stereo rectification
rotation) is not applied: the rectified image stays in the camera's own optical frame, the one
/tf_static gives, so the extrinsics stay right. All-zero D needs no rectification: no map is
made and `rectify` returns its input. Images rectified already (image_rect, whose CameraInfo
still carries the raw lens' D) are read with `from_msg(..., rectified=True)`: P's K, no maps.

Duck-typed like `imkd_core.wire.fields`: rosbags and rclpy messages alike. ROS-free.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from imkd_core.wire.fields import WireError

# distortion_model -> the D lengths OpenCV takes for it (REP-104 names; "" = none given)
DISTORTION_MODELS: dict[str, tuple[int, ...]] = {
    "plumb_bob": (5,),
    "rational_polynomial": (8, 12, 14),
    "equidistant": (4,),
}
MAX_SIDE = 16384  # pixels: a larger calibrated image is a corrupt message, not a camera


class PinholeView:
    """A camera model seen through images of one size: their pinhole K and the rectification
    that makes them pinhole (`rectify`; the identity for an undistorted camera)."""

    def __init__(self, K: np.ndarray, size: tuple[int, int], maps: tuple | None) -> None:
        self.K = K  # (3, 3) float64: the intrinsics of what `rectify` returns
        self.size = size  # (width, height)
        self._maps = maps  # cv2.remap maps, None when no rectification is needed

    @property
    def rectifies(self) -> bool:
        return self._maps is not None

    def rectify(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) image of this view's size -> its pinhole (rectified) version."""
        if self._maps is None:
            return image
        return cv2.remap(image, *self._maps, interpolation=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT)


class CameraModel:
    """One CameraInfo's calibration, checked (module docstring). Two models of equal fields
    compare equal, so a caller that keeps the first keeps its cached views."""

    def __init__(self, width: int, height: int, distortion_model: str, D: np.ndarray,
                 K: np.ndarray, P: np.ndarray) -> None:
        self.width, self.height = width, height
        self.distortion_model = distortion_model
        self.D, self.K, self.P = D, K, P
        self.distorted = bool(np.any(D != 0))
        self._key = (width, height, distortion_model, D.tobytes(), K.tobytes(), P.tobytes())
        self._views: dict[tuple[int, int], PinholeView] = {}
        self._lock = threading.Lock()  # views are made from any callback thread

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CameraModel) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    @classmethod
    def from_msg(cls, msg, rectified: bool = False) -> CameraModel:
        """sensor_msgs/CameraInfo -> CameraModel; `WireError` says which field is unusable.
        `rectified`: the images are rectified already (image_proc's image_rect), so their K is
        P's 3x3 (K when P is unset) and nothing is undistorted again."""
        K = _floats(msg.k, 9, "K").reshape(3, 3)
        if not np.all(np.isfinite(K)):
            raise WireError("K has non-finite entries")
        if K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] != 1.0 or np.any(K[2, :2] != 0) or (
                K[1, 0] != 0):
            raise WireError(f"K is not a pinhole matrix (fx={K[0, 0]}, fy={K[1, 1]}, "
                            f"K[2,2]={K[2, 2]}); uncalibrated camera?")
        width, height = int(msg.width), int(msg.height)
        if width <= 0 or height <= 0:
            raise WireError(f"calibrated image size {width}x{height} is empty: a CameraInfo "
                            "must say which image size its K is for")
        if width > MAX_SIDE or height > MAX_SIDE:
            raise WireError(f"calibrated image size {width}x{height} exceeds {MAX_SIDE} "
                            "pixels a side")
        if not (0 < K[0, 2] < width and 0 < K[1, 2] < height):
            raise WireError(f"principal point ({K[0, 2]}, {K[1, 2]}) lies outside the "
                            f"calibrated {width}x{height} image: K is for another size")
        model = str(msg.distortion_model)
        D = np.asarray(msg.d, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(D)):
            raise WireError(f"D has non-finite entries ({D.tolist()})")
        if model == "":
            if np.any(D != 0):
                raise WireError(f"D = {D.tolist()} without a distortion_model")
        elif model not in DISTORTION_MODELS:
            raise WireError(f"distortion_model {model!r} is not supported (one of "
                            f"{', '.join(DISTORTION_MODELS)})")
        elif len(D) not in DISTORTION_MODELS[model]:
            raise WireError(f"distortion_model {model!r} takes "
                            f"{' or '.join(map(str, DISTORTION_MODELS[model]))} coefficients, "
                            f"D has {len(D)}")
        P = _floats(msg.p, 12, "P").reshape(3, 4)
        if np.any(P != 0):  # all zero: unset (an uncalibrated driver), K is used
            if not np.all(np.isfinite(P)) or P[0, 0] <= 0 or P[1, 1] <= 0 or P[2, 2] != 1.0:
                raise WireError(f"P is not a projection matrix (fx'={P[0, 0]}, "
                                f"fy'={P[1, 1]}, P[2,2]={P[2, 2]})")
        if rectified:
            K, D = (P[:, :3].copy() if np.any(P != 0) else K), np.zeros_like(D)
        return cls(width, height, model, D, K, P)

    @property
    def pinhole_k(self) -> np.ndarray:
        """(3, 3) K of the pinhole images at the calibrated size (module docstring)."""
        if self.distorted and np.any(self.P != 0):
            return self.P[:, :3].copy()
        return self.K.copy()

    def for_image(self, width: int, height: int) -> PinholeView:
        """The view for images of `width` x `height` (made once, then cached); `WireError`
        when such an image is not a uniform resize of the calibrated one."""
        size = (int(width), int(height))
        with self._lock:
            view = self._views.get(size)
            if view is None:
                view = self._views[size] = self._make_view(*size)
        return view

    def _make_view(self, width: int, height: int) -> PinholeView:
        sx, sy = width / self.width, height / self.height
        # uniform: each side within a pixel's rounding of the other side's ratio
        if abs(self.height * sx - height) > 1.0 or abs(self.width * sy - width) > 1.0:
            raise WireError(f"image is {width}x{height} but CameraInfo is calibrated for "
                            f"{self.width}x{self.height}, and the image is not a uniform resize "
                            "of it: its K cannot be used")
        scale = np.diag([sx, sy, 1.0])  # image_proc's resize: K rows by the axis ratios
        K_out = self.pinhole_k if (sx, sy) == (1.0, 1.0) else scale @ self.pinhole_k
        if not self.distorted:
            return PinholeView(K_out, (width, height), None)
        K_in = self.K if (sx, sy) == (1.0, 1.0) else scale @ self.K
        R = np.eye(3)
        if self.distortion_model == "equidistant":
            maps = cv2.fisheye.initUndistortRectifyMap(K_in, self.D, R, K_out,
                                                       (width, height), cv2.CV_16SC2)
        else:
            maps = cv2.initUndistortRectifyMap(K_in, self.D, R, K_out, (width, height),
                                               cv2.CV_16SC2)
        return PinholeView(K_out, (width, height), maps)


def _floats(values, count: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size != count:
        raise WireError(f"{name} has {array.size} entries, not {count}")
    return array


def camera_info_intrinsics(msg) -> np.ndarray:
    """sensor_msgs/CameraInfo -> the (3, 3) float64 pinhole K of images at its calibrated
    size (rectified ones for a distorted camera), every field checked (`CameraModel`)."""
    return CameraModel.from_msg(msg).pinhole_k

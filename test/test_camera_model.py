"""CameraInfo -> camera model: every bad field refused with its reason, K scaled for a uniformly
resized image and refused for any other size, distorted cameras rectified so that a point lands
where the rectified pinhole model projects it, and no rectification work for an all-zero D."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from imkd_core.wire import camera_model
from imkd_core.wire.camera_model import CameraModel, camera_info_intrinsics
from imkd_core.wire.fields import WireError
from imkd_core.wire.messages import camera_info_msg

K_NUSC = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])
D_OF = {"plumb_bob": [-0.28, 0.07, 0.001, -0.0005, 0.0],
        "rational_polynomial": [0.6, -0.1, 0.001, 0.0005, 0.01, 0.95, 0.0, 0.02],
        "equidistant": [-0.02, 0.01, -0.005, 0.001]}


def info(width=640, height=480, model="plumb_bob", D=None, K=None, P=None):
    K = np.array([[500.0, 0, 322.5], [0, 505.0, 241.0], [0, 0, 1]]) if K is None else K
    D = [0.0] * 5 if D is None else D
    if P is None:
        P = np.zeros((3, 4))
        P[:, :3] = K
    return SimpleNamespace(width=width, height=height, distortion_model=model, d=list(D),
                           k=np.ravel(K).tolist(), r=np.eye(3).ravel().tolist(),
                           p=np.ravel(P).tolist())


def test_all_zero_d_is_the_calibrated_k_and_no_rectification_work(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no undistort map for an undistorted camera")

    monkeypatch.setattr(cv2, "initUndistortRectifyMap", refuse)
    monkeypatch.setattr(cv2, "remap", refuse)
    msg = camera_info_msg(K_NUSC, 1600, 900, 0, "CAM_FRONT")  # a nuscenes2bag CameraInfo
    model = CameraModel.from_msg(msg)
    view = model.for_image(1600, 900)
    assert not model.distorted and not view.rectifies
    np.testing.assert_array_equal(view.K, K_NUSC)  # bit for bit: the offline K
    image = np.zeros((900, 1600, 3), np.uint8)
    assert view.rectify(image) is image
    np.testing.assert_array_equal(camera_info_intrinsics(msg), K_NUSC)


def test_uniform_resize_scales_k_and_any_other_size_is_refused():
    model = CameraModel.from_msg(info(1600, 900, K=K_NUSC))
    half = model.for_image(800, 450).K
    np.testing.assert_allclose(half, [[633.2, 0, 408.15], [0, 633.2, 245.75], [0, 0, 1]])
    # 1000 x 562.5 rounds to 562 or 563: the same aspect within a pixel's rounding
    for height in (562, 563):
        K = model.for_image(1000, height).K
        assert K[0, 0] == pytest.approx(1266.4 * 1000 / 1600)
        assert K[1, 1] == pytest.approx(1266.4 * height / 900)
    for width, height in ((640, 640), (1600, 1200), (1000, 565)):
        with pytest.raises(WireError, match=f"image is {width}x{height} but CameraInfo is "
                                            "calibrated for 1600x900"):
            model.for_image(width, height)


def test_already_rectified_images_take_p_and_no_maps():
    """image_rect comes with the raw calibration's CameraInfo (D non-zero): with `rectified`
    its K is P's 3x3 and it is not undistorted a second time."""
    P = np.zeros((3, 4))
    P[:, :3] = [[380.0, 0, 320.0], [0, 385.0, 240.0], [0, 0, 1]]
    msg = info(model="plumb_bob", D=D_OF["plumb_bob"], P=P)
    view = CameraModel.from_msg(msg, rectified=True).for_image(320, 240)
    assert not view.rectifies
    np.testing.assert_allclose(view.K, np.diag([0.5, 0.5, 1]) @ P[:, :3])
    assert CameraModel.from_msg(msg, rectified=True) != CameraModel.from_msg(msg)


def test_views_and_maps_are_made_once():
    model = CameraModel.from_msg(info(model="plumb_bob", D=D_OF["plumb_bob"]))
    assert model.for_image(640, 480) is model.for_image(640, 480)
    assert model.for_image(640, 480).rectifies
    again = CameraModel.from_msg(info(model="plumb_bob", D=D_OF["plumb_bob"]))
    assert again == model and hash(again) == hash(model)  # a caller keeps the first one
    assert CameraModel.from_msg(info()) != model


@pytest.mark.parametrize("fields, message", [
    (dict(K=np.full((3, 3), np.nan)), "K has non-finite entries"),
    (dict(K=np.zeros((3, 3))), "K is not a pinhole matrix"),
    (dict(K=[[-500.0, 0, 320], [0, 500, 240], [0, 0, 1]]), r"K is not a pinhole matrix \(fx=-500"),
    (dict(K=np.eye(3)[:2], P=np.zeros((3, 4))), "K has 6 entries, not 9"),
    (dict(width=0, height=0), "calibrated image size 0x0 is empty"),
    (dict(width=100_000, height=480), "exceeds 16384"),
    (dict(width=320, height=240), r"principal point \(322.5, 241.0\) lies outside"),
    (dict(model="plumb_bob", D=[0.1, 0.0, 0.0]), "'plumb_bob' takes 5 coefficients, D has 3"),
    (dict(model="equidistant", D=[0.0] * 5), "'equidistant' takes 4 coefficients, D has 5"),
    (dict(model="rational_polynomial", D=[0.0] * 5), "takes 8 or 12 or 14 coefficients"),
    (dict(model="kannala_brandt", D=[0.0] * 4), "distortion_model 'kannala_brandt' is not "
                                               "supported"),
    (dict(model="", D=[0.1]), r"D = \[0.1\] without a distortion_model"),
    (dict(D=[np.inf, 0, 0, 0, 0]), "D has non-finite entries"),
    (dict(P=np.ones((3, 4)) * -1), "P is not a projection matrix"),
])
def test_bad_fields_are_refused_with_the_reason(fields, message):
    with pytest.raises(WireError, match=message):
        CameraModel.from_msg(info(**fields))


def test_uncalibrated_style_messages_that_are_still_usable():
    """No distortion_model and no D (the default message), P unset: K is the pinhole."""
    K = [[400.0, 0, 320], [0, 400, 240], [0, 0, 1]]
    msg = info(model="", D=[], P=np.zeros((3, 4)), K=K)
    np.testing.assert_array_equal(CameraModel.from_msg(msg).for_image(640, 480).K, K)


def _project_distorted(model: str, K: np.ndarray, D: np.ndarray, points: np.ndarray):
    rvec = tvec = np.zeros(3)
    if model == "equidistant":
        uv, _ = cv2.fisheye.projectPoints(points[:, None, :], rvec, tvec, K, D)
    else:
        uv, _ = cv2.projectPoints(points, rvec, tvec, K, D)
    return uv.reshape(-1, 2)


def _render_dots(uv: np.ndarray, width: int, height: int, sigma: float = 1.2) -> np.ndarray:
    """Gaussian dots centred exactly (sub-pixel) at `uv`, pixel centres at integers."""
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width), np.float64)
    for u, v in uv:
        image += np.exp(-((xs - u) ** 2 + (ys - v) ** 2) / (2 * sigma**2))
    return np.repeat((255 * np.clip(image, 0, 1)).astype(np.uint8)[..., None], 3, axis=2)


def _centroid(image: np.ndarray, near: np.ndarray, radius: int = 6) -> np.ndarray:
    u0, v0 = np.round(near).astype(int)
    patch = image[v0 - radius:v0 + radius + 1, u0 - radius:u0 + radius + 1, 0].astype(float)
    ys, xs = np.mgrid[v0 - radius:v0 + radius + 1, u0 - radius:u0 + radius + 1]
    return np.array([(xs * patch).sum(), (ys * patch).sum()]) / patch.sum()


@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.parametrize("model", list(D_OF))
def test_rectified_point_lands_where_the_pinhole_model_projects_it(model, scale):
    """3D points through a distorted camera (OpenCV's projection with D), drawn as dots,
    rectified: each dot is where the rectified pinhole K projects the point."""
    width, height = 640, 480
    K = np.array([[420.0, 0, 318.0], [0, 425.0, 243.0], [0, 0, 1]])
    P = np.zeros((3, 4))
    P[:, :3] = [[380.0, 0, 320.0], [0, 385.0, 240.0], [0, 0, 1]]  # as camera_calibration's
    cam = CameraModel.from_msg(info(width, height, model, D_OF[model], K, P))
    w, h = int(width * scale), int(height * scale)
    view = cam.for_image(w, h)
    assert view.rectifies
    np.testing.assert_allclose(view.K, np.diag([scale, scale, 1]) @ P[:, :3])
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-2.4, 2.4, 12), rng.uniform(-1.8, 1.8, 12),
                              np.full(12, 4.0)])
    K_image = np.diag([scale, scale, 1]) @ K  # the distorted camera at the image's size
    distorted = _project_distorted(model, K_image, np.asarray(D_OF[model]), points)
    pinhole = (view.K @ points.T).T
    pinhole = pinhole[:, :2] / pinhole[:, 2:]
    margin = 8 * scale + 6
    keep = np.all((pinhole > margin) & (pinhole < [w - margin, h - margin]), axis=1) & np.all(
        (distorted > margin) & (distorted < [w - margin, h - margin]), axis=1)
    assert keep.sum() >= 6
    moved = np.linalg.norm(distorted[keep] - pinhole[keep], axis=1)
    assert moved.max() > 3 * scale  # the lens really moves the dots: the test can fail
    rectified = view.rectify(_render_dots(distorted[keep], w, h))
    assert rectified.shape == (h, w, 3)
    found = np.array([_centroid(rectified, p) for p in pinhole[keep]])
    np.testing.assert_allclose(found, pinhole[keep], atol=0.25)


def test_camera_info_intrinsics_is_the_checked_k():
    K = [1266.4, 0.0, 816.3, 0.0, 1266.4, 491.5, 0.0, 0.0, 1.0]
    msg = info(1600, 900, K=np.reshape(K, (3, 3)))
    np.testing.assert_array_equal(camera_info_intrinsics(msg), np.reshape(K, (3, 3)))
    with pytest.raises(WireError, match="not a pinhole"):
        camera_info_intrinsics(info(K=np.zeros((3, 3))))
    assert camera_model.MAX_SIDE >= 8192  # a 8K sensor is a camera, not a corrupt message

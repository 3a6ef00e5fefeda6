"""The reader and our geometry against the one real nuScenes keyframe in test/data.

test/data/nuscenes_real (CC BY-NC-SA 4.0, see test/data/LICENSE.md) has 9 of the 13 tables
(trimmed: no prev/next) plus the mmdet3d info with the keyframe's 69 ground-truth boxes;
`real_root` completes it in a temporary copy as its SOURCE.md describes. Checks: the reader's
output (images, calibration, ego pose, LiDAR); LiDAR points projected with
`geometry.project_to_image` agree with nuscenes-devkit's `map_pointcloud_to_image` to 0.5 px; the
69 boxes, converted to the ego frame, hold the LiDAR points the annotation says they hold and
project onto the 2D boxes the info records; and an overlay PNG (6 cameras with the projected boxes)
is written for a person to look at.

Box convention of the info file, as verified here (SOURCE.md agrees): `bbox_3d` is
`[x, y, z, l, w, h, yaw]` in the LIDAR_TOP frame with (x, y, z) the box's GEOMETRIC centre
(mmdet3d >= 1.0 stores the devkit's `box.center` and converts to bottom centre only when the
dataset loads it, `origin=(0.5, 0.5, 0.5)`), and yaw about z from the LiDAR x axis. Treating z as
the bottom puts every box h/2 too high (1 in 5 boxes then holds none of its LiDAR points); the
old yaw' = -yaw - pi/2 convention matches the point counts worse.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from nuscenes_minimal import loadable_real_copy
from PIL import Image, ImageDraw

from imkd_core.data.nuscenes import NuScenesReader, read_lidar_bin
from imkd_core.data.options import ReaderOptions
from imkd_core.geometry import (
    box_corners,
    invert_transform,
    points_in_boxes,
    project_to_image,
    transform_points,
)
from imkd_core.sample import CAMERA_NAMES, CLASSES, LIDAR_NAME

TOKEN = "ca9a282c9e77460f8360f564131a8af5"
INFO = "infos/mmdet3d_info_v1.0-mini_ca9a282c.json"
OVERLAY = Path(os.environ.get("IMKD_OVERLAY_REAL", "/tmp/imkd_overlay_real.png"))


@pytest.fixture(scope="session")
def real_root(real_nuscenes_dir, tmp_path_factory) -> Path:
    """A loadable copy: the tracked keyframe plus the 4 tables and the map PNG it lacks."""
    return loadable_real_copy(real_nuscenes_dir,
                              tmp_path_factory.mktemp("nuscenes_real") / "nuscenes")


@pytest.fixture(scope="session")
def reader(real_root) -> NuScenesReader:
    # One sweep, nothing removed: the LiDAR rows stay 1:1 with the file, as the devkit reads it.
    return NuScenesReader(real_root, "v1.0-test", options=ReaderOptions(
        lidar_sweeps=1, lidar_min_distance=0.0))


@pytest.fixture(scope="session")
def sample(reader):
    return reader.get_sample(TOKEN)


@pytest.fixture(scope="session")
def info(real_root) -> dict:
    return json.loads((real_root / INFO).read_text())["data_list"][0]


@pytest.fixture(scope="session")
def info_categories(real_root) -> dict[int, str]:
    categories = json.loads((real_root / INFO).read_text())["metainfo"]["categories"]
    return {index: name for name, index in categories.items()}


def info_boxes_to_ego(bbox_3d, T_ego_lidar, z_is_bottom=False, old_yaw=False) -> np.ndarray:
    """mmdet3d info boxes (LiDAR frame) -> internal (N, 9) ego boxes (velocity left 0).

    Defaults are the verified convention; the flags give the two misreadings the tests rule out.
    """
    b = np.asarray(bbox_3d, dtype=np.float64).reshape(-1, 7).copy()
    if old_yaw:  # mmdet3d < 1.0: yaw' = -yaw - pi/2 with l and w swapped
        b[:, 6] = -b[:, 6] - np.pi / 2
        b[:, [3, 4]] = b[:, [4, 3]]
    centre = b[:, :3].copy()
    if z_is_bottom:
        centre[:, 2] += b[:, 5] / 2
    heading = np.stack([np.cos(b[:, 6]), np.sin(b[:, 6]), np.zeros(len(b))], axis=1)
    heading = heading @ np.asarray(T_ego_lidar)[:3, :3].T
    boxes = np.zeros((len(b), 9))
    boxes[:, :3] = transform_points(T_ego_lidar, centre)
    boxes[:, 3:6] = b[:, 3:6]
    boxes[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
    return boxes


@pytest.fixture(scope="session")
def ego_boxes(info, sample) -> np.ndarray:
    return info_boxes_to_ego([i["bbox_3d"] for i in info["instances"]], sample.lidar.T_ego_lidar)


# ------------------------------------------------------------------------------ where it is
def test_keyframe_is_in_the_repository_and_shared_is_refused(real_nuscenes_dir, repo_root):
    """The data is tracked under test/data (with its licence); ../shared, which a clone lacks,
    cannot be read from a test (conftest's audit hook), whether or not it exists here."""
    assert real_nuscenes_dir.resolve().is_relative_to(repo_root / "test" / "data")
    assert "CC BY-NC-SA 4.0" in (repo_root / "test" / "data" / "LICENSE.md").read_text()
    assert "CC BY-NC-SA 4.0" in (real_nuscenes_dir / "SOURCE.md").read_text()
    beside = repo_root.parent / "shared"
    with pytest.raises(RuntimeError, match="test/data only"):
        (beside / "data" / "nuscenes_real" / "SOURCE.md").read_text()
    with pytest.raises(RuntimeError, match="test/data only"):
        os.listdir(beside)


# ------------------------------------------------------------------------------------ reader
def test_reader_reads_the_real_keyframe(reader, sample, info):
    assert reader.sample_tokens() == [TOKEN]
    assert reader.sample_tokens(scenes="scene-0061") == [TOKEN]
    assert reader.sample_tokens(split="mini_train") == [TOKEN]
    assert reader.sample_tokens(split="val") == []
    assert sample.scene_name == "scene-0061"
    assert sample.timestamp == 1532402927647951 * 1000
    np.testing.assert_allclose(sample.T_map_ego, info["ego2global"], atol=1e-5)
    np.testing.assert_allclose(sample.lidar.T_ego_lidar, info["lidar_points"]["lidar2ego"],
                               atol=1e-6)
    assert set(sample.cameras) == set(CAMERA_NAMES)
    assert sample.radars == {}  # no radar in this keyframe's tables
    assert len(sample.gt) == 0 and sample.gt.params.shape == (0, 9)
    for name, cam in sample.cameras.items():
        meta = info["images"][name]
        assert cam.image.shape == (900, 1600, 3) and cam.image.dtype == np.uint8
        assert cam.image.std() > 10  # a real picture, not a blank
        np.testing.assert_allclose(cam.K, meta["cam2img"], atol=1e-9)
        assert cam.stamp == round(meta["timestamp"] * 1e6) * 1000
        # mmdet3d's lidar2cam goes through the image's own ego pose, as our T_ego_cam does.
        lidar2cam = invert_transform(cam.T_ego_cam) @ sample.lidar.T_ego_lidar
        np.testing.assert_allclose(lidar2cam, meta["lidar2cam"], atol=2e-5)
    raw = read_lidar_bin(next((reader.dataroot / "samples" / LIDAR_NAME).glob("*.pcd.bin")))
    assert raw.shape == (34688, 5)
    assert sample.lidar.points.shape == (34688, 5) and sample.lidar.points.dtype == np.float32
    np.testing.assert_array_equal(sample.lidar.points[:, 3], raw[:, 3])
    assert np.all(sample.lidar.points[:, 4] == 0.0)  # the trimmed tables have no sweeps
    np.testing.assert_allclose(
        sample.lidar.points[:, :3],
        transform_points(sample.lidar.T_ego_lidar, raw[:, :3].astype(np.float64)), atol=1e-4)


def test_reader_camera_without_ego_motion_is_the_calibration(real_root, info):
    sample = NuScenesReader(real_root, "v1.0-test", options=ReaderOptions(
        camera_ego_motion=False, load_lidar=False, load_images=False)).get_sample(TOKEN)
    assert sample.lidar is None
    for name, cam in sample.cameras.items():
        np.testing.assert_allclose(cam.T_ego_cam, info["images"][name]["cam2ego"], atol=1e-6)
        assert cam.image.shape == (900, 1600, 3)


def test_default_reader_drops_points_near_the_sensor(real_root):
    points = NuScenesReader(real_root, "v1.0-test", options=ReaderOptions(
        load_images=False)).get_sample(TOKEN)
    # ~8k returns of this scan sit within 1 m of the sensor (mostly no-return zeros).
    assert 20000 < len(points.lidar.points) < 34688


# ---------------------------------------------------------------------- projection vs devkit
@pytest.mark.parametrize("camera", CAMERA_NAMES)
def test_lidar_projection_matches_devkit(reader, sample, camera):
    nusc = reader.nusc
    record = nusc.get("sample", TOKEN)
    expected, _, image = nusc.explorer.map_pointcloud_to_image(record["data"][LIDAR_NAME],
                                                                record["data"][camera])
    cam = sample.cameras[camera]
    uv, depth = project_to_image(sample.lidar.points, cam.T_ego_cam, cam.K)
    width, height = image.size
    # The devkit's filter: depth > 1 m and one pixel inside the image border.
    keep = ((depth > 1.0) & (uv[:, 0] > 1) & (uv[:, 0] < width - 1)
            & (uv[:, 1] > 1) & (uv[:, 1] < height - 1))
    assert keep.sum() == expected.shape[1]
    assert keep.sum() > 500
    error = np.abs(uv[keep] - expected[:2].T)
    assert error.max() <= 0.5, f"{camera}: max pixel error {error.max():.3f}"
    if camera == "CAM_FRONT":
        assert keep.sum() == 3053  # as SOURCE.md records


# ----------------------------------------------------------------------- ground-truth boxes
def test_info_boxes_hold_their_lidar_points(info, sample, ego_boxes):
    assert len(ego_boxes) == 69
    annotated = np.array([i["num_lidar_pts"] for i in info["instances"]])
    inside = points_in_boxes(sample.lidar.points, ego_boxes).sum(axis=1)
    assert np.all(inside[annotated > 0] >= 1), "a box with LiDAR points holds none of ours"
    assert np.all(inside[annotated == 0] == 0)
    assert (inside == annotated).mean() >= 0.85  # 63 of 69 exact; the rest sit at the faces
    assert np.abs(inside - annotated).sum() <= 0.05 * annotated.sum()
    # The misreadings fit worse: boxes lifted by h/2, or the pre-1.0 yaw convention.
    for wrong in ({"z_is_bottom": True}, {"old_yaw": True}):
        boxes = info_boxes_to_ego([i["bbox_3d"] for i in info["instances"]],
                                  sample.lidar.T_ego_lidar, **wrong)
        inside_wrong = points_in_boxes(sample.lidar.points, boxes).sum(axis=1)
        assert np.abs(inside_wrong - annotated).sum() > 2 * np.abs(inside - annotated).sum()
    # Boxes stand on the ground: typical bottoms near the ego ground plane (some stand on kerbs,
    # a platform or a slope 70 m away).
    bottoms = ego_boxes[:, 2] - ego_boxes[:, 5] / 2
    assert np.median(np.abs(bottoms)) < 0.15


def test_info_boxes_project_onto_their_image_boxes(info, sample, ego_boxes):
    """mmdet3d's per-camera instances record each box's projected centre and the 2D box of its
    projected corners (hull clipped to the image), computed by the devkit from the global
    annotation: our ego boxes must reproduce them."""
    from shapely.geometry import MultiPoint
    from shapely.geometry import box as rectangle

    checked = 0
    for camera, instances in info["cam_instances"].items():
        cam = sample.cameras[camera]
        height, width = cam.image.shape[:2]
        centres, depth = project_to_image(ego_boxes[:, :3], cam.T_ego_cam, cam.K)
        for inst in instances:
            distance = np.linalg.norm(centres - inst["center_2d"], axis=1)
            distance[depth <= 0] = np.inf
            k = int(np.argmin(distance))
            assert distance[k] < 0.01, f"{camera}: no box projects onto {inst['center_2d']}"
            assert abs(depth[k] - inst["depth"]) < 0.01
            uv, z = project_to_image(box_corners(ego_boxes[k:k + 1])[0], cam.T_ego_cam, cam.K)
            hull = MultiPoint([tuple(p) for p in uv[z > 0]]).convex_hull
            bounds = np.array(hull.intersection(rectangle(0, 0, width, height)).bounds)
            size = np.hypot(*(bounds[2:] - bounds[:2]))
            # Our boxes are yaw-only in the ego frame, the devkit's keep the annotation's tilt:
            # a few pixels on large, near boxes.
            assert np.abs(bounds - inst["bbox"]).max() <= 3.0 + 0.03 * size, (camera, k)
            checked += 1
    assert checked >= 80


def test_overlay_of_info_boxes(info, info_categories, sample, ego_boxes):
    """Renders /tmp/imkd_overlay_real.png: the 6 cameras with the 69 boxes drawn (look at it)."""
    labels = [info_categories.get(i["bbox_label_3d"], "ignored") for i in info["instances"]]
    tiles = []
    seen = np.zeros(len(ego_boxes), dtype=bool)
    for camera in ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT",
                   "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"):
        cam = sample.cameras[camera]
        image = Image.fromarray(cam.image)
        visible = draw_boxes(image, ego_boxes, labels, cam.T_ego_cam, cam.K)
        seen |= visible
        ImageDraw.Draw(image).text((10, 10), f"{camera}: {visible.sum()} box centres",
                                   fill=(255, 255, 0))
        tiles.append(image.resize((800, 450)))
    mosaic = Image.new("RGB", (2400, 900))
    for i, tile in enumerate(tiles):
        mosaic.paste(tile, ((i % 3) * 800, (i // 3) * 450))
    OVERLAY.parent.mkdir(parents=True, exist_ok=True)
    mosaic.save(OVERLAY)
    assert OVERLAY.stat().st_size > 100_000
    # The cameras see all around: every box's centre is in some image.
    assert seen.all(), np.flatnonzero(~seen)


COLOURS = {name: colour for name, colour in zip(
    CLASSES, [(255, 158, 0), (255, 99, 71), (233, 150, 70), (255, 69, 0), (255, 140, 0),
              (112, 128, 144), (255, 61, 99), (220, 20, 60), (0, 0, 230), (47, 79, 79)])}
EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
         (0, 4), (1, 5), (2, 6), (3, 7), (0, 7), (3, 4)]  # the last two cross the front (+l) face


def draw_boxes(image: Image.Image, boxes, labels, T_ego_cam, K, near: float = 0.2) -> np.ndarray:
    """Draw the 3D boxes' edges into `image`, clipping edges at a near plane; returns (N,) bool:
    the box's centre is in front of the camera and inside the image."""
    draw = ImageDraw.Draw(image)
    width, height = image.size
    T_cam_ego = invert_transform(T_ego_cam)
    corners = box_corners(boxes)
    centres_uv, centres_z = project_to_image(np.asarray(boxes)[:, :3], T_ego_cam, K)
    visible = ((centres_z > 0) & (centres_uv[:, 0] >= 0) & (centres_uv[:, 0] < width)
               & (centres_uv[:, 1] >= 0) & (centres_uv[:, 1] < height))
    for k in range(len(boxes)):
        cam_pts = transform_points(T_cam_ego, corners[k])
        colour = COLOURS.get(labels[k], (255, 255, 255))
        for a, b in EDGES:
            p, q = cam_pts[a], cam_pts[b]
            if p[2] < near and q[2] < near:
                continue
            if p[2] < near or q[2] < near:  # clip the segment at z = near
                t = (near - p[2]) / (q[2] - p[2])
                clipped = p + t * (q - p)
                p, q = (clipped, q) if p[2] < near else (p, clipped)
            uv = np.array([p, q]) @ np.asarray(K).T
            uv = uv[:, :2] / uv[:, 2:3]
            draw.line([tuple(uv[0]), tuple(uv[1])], fill=colour, width=3)
    return visible

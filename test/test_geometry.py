"""Shared geometry (imkd_core.geometry) and sweep aggregation (imkd_core.data.sweeps), checked
by round trips, by hand-computed cases and against nuscenes-devkit / pyquaternion."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nuscenes.utils.data_classes import Box, LidarPointCloud
from nuscenes.utils.geometry_utils import points_in_box
from pyquaternion import Quaternion

from imkd_core.data.sweeps import (
    RadarFilter,
    RawSweep,
    aggregate_lidar_sweeps,
    aggregate_radar_sweeps,
    far_from_sensor_mask,
    lidar_to_keyframe,
    radar_to_keyframe,
    sensor_to_keyframe,
    time_offset_s,
)
from imkd_core.geometry import (
    BEVGrid,
    box_corners,
    ego_to_nuscenes_boxes,
    invert_transform,
    make_transform,
    matrix_to_quaternion,
    nuscenes_to_ego_boxes,
    points_in_boxes,
    project_to_image,
    quaternion_to_matrix,
    quaternion_yaw,
    rotate_vectors,
    transform_points,
    wrap_angle,
    yaw_to_quaternion,
)
from imkd_core.sample import NUSCENES_RADAR_FIELDS, RADAR_COLUMN, RADAR_POINT_COLUMNS

FAST = settings(max_examples=60, deadline=None)
finite = st.floats(-1.0, 1.0, allow_nan=False)
quaternions = st.tuples(finite, finite, finite, finite).filter(
    lambda q: np.linalg.norm(q) > 0.1).map(lambda q: np.asarray(q) / np.linalg.norm(q))
angles = st.floats(-np.pi, np.pi, allow_nan=False)
small_tilt = st.floats(-0.05, 0.05, allow_nan=False)
coordinate = st.floats(-2000.0, 2000.0, allow_nan=False)


def pose(yaw, tx, ty, tz=0.0, roll=0.0, pitch=0.0) -> np.ndarray:
    """4x4 from z-y-x Euler angles (yaw, pitch, roll) and a translation."""
    q = (Quaternion(axis=[0, 0, 1], angle=yaw) * Quaternion(axis=[0, 1, 0], angle=pitch)
         * Quaternion(axis=[1, 0, 0], angle=roll))
    return make_transform(q.elements, [tx, ty, tz])


@st.composite
def poses(draw, tilt=True):
    return pose(draw(angles), draw(coordinate), draw(coordinate), draw(st.floats(-5, 5)),
                draw(small_tilt) if tilt else 0.0, draw(small_tilt) if tilt else 0.0)


# ------------------------------------------------------------------------- quaternions / SE(3)
@FAST
@given(quaternions)
def test_quaternion_matrix_round_trip(q):
    rot = quaternion_to_matrix(q)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    np.testing.assert_allclose(rot, Quaternion(q).rotation_matrix, atol=1e-12)
    back = matrix_to_quaternion(rot)
    assert back[0] >= 0
    assert min(np.abs(back - q).max(), np.abs(back + q).max()) < 1e-9  # q and -q: one rotation


def test_quaternion_matrix_handles_each_shepperd_branch():
    for axis in ([1, 0, 0], [0, 1, 0], [0, 0, 1]):  # 180 deg turns: trace = -1
        q = Quaternion(axis=axis, angle=np.pi).elements
        np.testing.assert_allclose(np.abs(matrix_to_quaternion(quaternion_to_matrix(q))),
                                   np.abs(q), atol=1e-12)
    batch = np.stack([yaw_to_quaternion(a) for a in (0.1, 1.0, 3.0)])
    assert quaternion_to_matrix(batch).shape == (3, 3, 3)


@FAST
@given(angles)
def test_yaw_quaternion_round_trip(yaw):
    q = yaw_to_quaternion(yaw)
    assert quaternion_yaw(q) == pytest.approx(yaw, abs=1e-9) or abs(abs(yaw) - np.pi) < 1e-9
    assert Quaternion(q).yaw_pitch_roll[0] == pytest.approx(quaternion_yaw(q), abs=1e-9)


@FAST
@given(poses(), st.lists(st.tuples(coordinate, coordinate, coordinate), min_size=1, max_size=5))
def test_make_and_invert_transform(T, points):
    np.testing.assert_allclose(invert_transform(T) @ T, np.eye(4), atol=1e-9)
    np.testing.assert_allclose(invert_transform(T), np.linalg.inv(T), atol=1e-9)
    q = matrix_to_quaternion(T[:3, :3])
    np.testing.assert_allclose(make_transform(q, T[:3, 3]), T, atol=1e-9)
    np.testing.assert_allclose(make_transform(T[:3, :3], T[:3, 3]), T, atol=0)
    pts = np.c_[np.asarray(points), np.arange(len(points))]  # an extra column rides along
    moved = transform_points(T, pts)
    np.testing.assert_array_equal(moved[:, 3], pts[:, 3])
    np.testing.assert_allclose(transform_points(invert_transform(T), moved), pts, atol=1e-6)


def test_rotate_vectors_and_wrap_angle():
    T = make_transform(yaw_to_quaternion(np.pi / 2), [100.0, 5.0, 0.0])
    np.testing.assert_allclose(rotate_vectors(T, [[1.0, 0.0]]), [[0.0, 1.0]], atol=1e-12)
    np.testing.assert_allclose(rotate_vectors(T, [[1.0, 0.0, 2.0]]), [[0.0, 1.0, 2.0]],
                               atol=1e-12)
    wrapped = wrap_angle(np.array([np.pi, -np.pi, 3 * np.pi, 0.5, -7.0]))
    assert np.all((wrapped >= -np.pi) & (wrapped < np.pi))
    np.testing.assert_allclose(np.cos(wrapped), np.cos([np.pi, -np.pi, 3 * np.pi, 0.5, -7.0]))


# ----------------------------------------------------------------------------- box conversions
@st.composite
def ego_boxes(draw, max_count=6):
    count = draw(st.integers(1, max_count))
    rows = []
    for _ in range(count):
        rows.append([draw(st.floats(-60, 60)), draw(st.floats(-60, 60)), draw(st.floats(-3, 3)),
                     draw(st.floats(0.2, 15)), draw(st.floats(0.2, 4)), draw(st.floats(0.2, 4)),
                     draw(angles), draw(st.floats(-20, 20)), draw(st.floats(-20, 20))])
    return np.array(rows)


@FAST
@given(ego_boxes(), poses())
def test_ego_nuscenes_box_round_trip(boxes, T_map_ego):
    nus = ego_to_nuscenes_boxes(boxes, T_map_ego)
    np.testing.assert_allclose(nus["size"], boxes[:, [4, 3, 5]])
    back = nuscenes_to_ego_boxes(nus["translation"], nus["size"], nus["rotation"],
                                 nus["velocity"], T_map_ego)
    np.testing.assert_allclose(back[:, :6], boxes[:, :6], atol=1e-6)
    np.testing.assert_allclose(wrap_angle(back[:, 6] - boxes[:, 6]), 0, atol=1e-9)
    # velocities: 2D in, rotated as (vx, vy, 0) and back: exact for a level pose only
    level = pose(quaternion_yaw(matrix_to_quaternion(T_map_ego[:3, :3])), *T_map_ego[:3, 3])
    nus_level = ego_to_nuscenes_boxes(boxes, level)
    back_level = nuscenes_to_ego_boxes(nus_level["translation"], nus_level["size"],
                                       nus_level["rotation"], nus_level["velocity"], level)
    np.testing.assert_allclose(back_level[:, 7:9], boxes[:, 7:9], atol=1e-9)


@FAST
@given(ego_boxes(), poses(tilt=False))
def test_nuscenes_to_ego_matches_devkit(boxes, T_map_ego):
    """The devkit's way into the ego frame (translate by -pose, rotate by the inverse) gives the
    same centre, size, yaw and velocity as ours."""
    nus = ego_to_nuscenes_boxes(boxes, T_map_ego)
    ours = nuscenes_to_ego_boxes(nus["translation"], nus["size"], nus["rotation"],
                                 nus["velocity"], T_map_ego)
    q_pose = Quaternion(matrix_to_quaternion(T_map_ego[:3, :3]))
    for i in range(len(boxes)):
        box = Box(nus["translation"][i], nus["size"][i], Quaternion(nus["rotation"][i]),
                  velocity=(*nus["velocity"][i], 0.0))
        box.translate(-T_map_ego[:3, 3])
        box.rotate(q_pose.inverse)
        np.testing.assert_allclose(ours[i, :3], box.center, atol=1e-6)
        np.testing.assert_allclose(ours[i, [4, 3, 5]], box.wlh)
        assert wrap_angle(ours[i, 6] - box.orientation.yaw_pitch_roll[0]) == pytest.approx(
            0, abs=1e-9)
        np.testing.assert_allclose(ours[i, 7:9], box.velocity[:2], atol=1e-9)
        # corners: the same 8 points as the devkit's Box.corners, in our documented order
        ours_corners = box_corners(ours[i:i + 1])[0]
        theirs = box.corners().T
        for corner in ours_corners:
            assert np.min(np.linalg.norm(theirs - corner, axis=1)) < 1e-6


def test_nan_velocity_becomes_zero_and_empty_input():
    boxes = nuscenes_to_ego_boxes([[1, 2, 3]], [[2, 4, 1.5]], [[1, 0, 0, 0]],
                                  [[np.nan, np.nan, np.nan]], np.eye(4))
    np.testing.assert_array_equal(boxes[0], [1, 2, 3, 4, 2, 1.5, 0, 0, 0])
    assert nuscenes_to_ego_boxes(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 4)),
                                 np.zeros((0, 2)), np.eye(4)).shape == (0, 9)


def test_box_corners_documented_order():
    corners = box_corners(np.array([[10.0, 0, 1.0, 4.0, 2.0, 2.0, np.pi / 2, 0, 0]]))[0]
    # yaw 90 deg: the box's +l axis is ego +y; corner 0 = (+l/2, +w/2, bottom)
    np.testing.assert_allclose(corners[0], [10 - 1.0, 2.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(corners[4], [10 - 1.0, 2.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(corners[:4, 2], 0.0, atol=1e-12)
    np.testing.assert_allclose(corners.mean(axis=0), [10, 0, 1], atol=1e-12)


@FAST
@given(ego_boxes(max_count=1), st.integers(0, 2**31 - 1))
def test_points_in_boxes_matches_devkit(boxes, seed):
    rng = np.random.default_rng(seed)
    b = boxes[0]
    points = b[:3] + rng.uniform(-1, 1, size=(400, 3)) * b[3:6] * 0.8
    inside = points_in_boxes(points, boxes)[0]
    box = Box(b[:3], b[[4, 3, 5]], Quaternion(yaw_to_quaternion(b[6])))
    # skip points within 1e-9 of a face, where the two formulas may round differently
    local = transform_points(invert_transform(make_transform(yaw_to_quaternion(b[6]), b[:3])),
                             points)
    margin = np.min(np.abs(np.abs(local) - b[3:6] / 2), axis=1) > 1e-9
    np.testing.assert_array_equal(inside[margin], points_in_box(box, points.T)[margin])
    assert points_in_boxes(points, np.zeros((0, 9))).shape == (0, 400)


def test_project_to_image_principal_point_and_behind():
    K = np.array([[1000.0, 0, 800], [0, 1000.0, 450], [0, 0, 1]])
    # camera looking along ego +x: optical z = ego x, optical x = -ego y, optical y = -ego z
    R = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # columns: optical axes in ego
    T_ego_cam = make_transform(R, [1.0, 0.0, 1.5])
    uv, depth = project_to_image(np.array([[11.0, 0, 1.5], [11.0, -1.0, 1.5], [-5, 0, 1.5]]),
                                 T_ego_cam, K)
    np.testing.assert_allclose(uv[0], [800, 450])
    np.testing.assert_allclose(uv[1], [900, 450])  # 1 m to the right at 10 m: +100 px
    np.testing.assert_allclose(depth, [10, 10, -6])


# ------------------------------------------------------------------------------------ BEV grid
def test_bev_grid_point_to_cell_edges():
    grid = BEVGrid()
    assert grid.shape == (128, 128)
    eps = 1e-9
    pts = np.array([
        [grid.x_min, grid.y_min, 0.0],  # the corner itself: first cell, inside
        [grid.x_max - eps, grid.y_max - eps, 0.0],  # just inside the far corner
        [grid.x_max, 0.0, 0.0],  # the far edge belongs to no cell
        [grid.x_min - eps, 0.0, 0.0],
        [0.0, 0.0, grid.z_min],  # z range is [z_min, z_max)
        [0.0, 0.0, grid.z_max],
        [0.0, 0.0, grid.z_min - eps],
    ])
    ix, iy, inside = grid.point_to_cell(pts)
    assert (ix[0], iy[0]) == (0, 0) and inside[0]
    assert (ix[1], iy[1]) == (grid.nx - 1, grid.ny - 1) and inside[1]
    assert ix[2] == grid.nx and not inside[2]
    assert ix[3] == -1 and not inside[3]
    assert inside[4] and not inside[5] and not inside[6]
    # the ego origin lands in cell (64, 64) of a symmetric grid; 2D input ignores z
    ix, iy, inside = grid.point_to_cell(np.array([[0.0, 0.0], [0.79, -0.01]]))
    assert list(ix) == [64, 64] and list(iy) == [64, 63] and inside.all()
    xs, ys = grid.cell_centers()
    assert xs[0] == pytest.approx(grid.x_min + grid.cell / 2) and len(ys) == grid.ny
    coarse = grid.downsampled(4)
    assert coarse.shape == (32, 32) and coarse.cell == pytest.approx(3.2)
    # every cell centre maps back to its own cell
    cx, cy = np.meshgrid(xs, ys)
    ix, iy, inside = grid.point_to_cell(np.c_[cx.ravel(), cy.ravel()])
    assert inside.all()
    np.testing.assert_array_equal(ix.reshape(grid.shape), np.arange(grid.nx)[None].repeat(
        grid.ny, 0))
    np.testing.assert_array_equal(iy.reshape(grid.shape), np.arange(grid.ny)[:, None].repeat(
        grid.nx, 1))


# --------------------------------------------------------------------------------- sweeps
T_EGO_RADAR = pose(0.3, 3.4, 0.5, 0.6)  # a front-left radar
T_EGO_LIDAR = pose(-np.pi / 2, 0.94, 0.0, 1.84, 0.01, -0.005)


def raw_radar(points_radar: np.ndarray, velocity_radar: np.ndarray) -> np.ndarray:
    raw = np.zeros((len(points_radar), len(NUSCENES_RADAR_FIELDS)), dtype=np.float32)
    field = {name: i for i, name in enumerate(NUSCENES_RADAR_FIELDS)}
    raw[:, [field["x"], field["y"], field["z"]]] = points_radar
    raw[:, [field["vx"], field["vy"]]] = velocity_radar * 2  # raw Doppler: not compensated
    raw[:, [field["vx_comp"], field["vy_comp"]]] = velocity_radar
    raw[:, field["rcs"]] = np.arange(len(points_radar))
    raw[:, field["id"]] = 7
    raw[:, field["ambig_state"]] = 3
    raw[:, field["dyn_prop"]] = 1
    return raw


@FAST
@given(poses(), poses(), st.integers(0, 10**9))
def test_static_point_lands_at_one_keyframe_position(T_map_key, T_map_sweep, delay_ns):
    """A static world point seen by a radar and a LiDAR from two ego poses: after compensation
    both sightings land where the point is in the keyframe ego frame."""
    world = np.array([[T_map_key[0, 3] + 12.0, T_map_key[1, 3] - 4.0, T_map_key[2, 3] + 0.5]])
    key_stamp = 1_532_402_927_647_951_000
    sweep_stamp = key_stamp - delay_ns
    expected = transform_points(invert_transform(T_map_key), world)
    for T_ego_sensor in (T_EGO_RADAR, T_EGO_LIDAR):
        seen_key = transform_points(invert_transform(T_map_key @ T_ego_sensor), world)
        seen_sweep = transform_points(invert_transform(T_map_sweep @ T_ego_sensor), world)
        a = radar_to_keyframe(raw_radar(seen_key, np.zeros((1, 2))), T_ego_sensor, T_map_key,
                              T_map_key, key_stamp, key_stamp)
        b = radar_to_keyframe(raw_radar(seen_sweep, np.zeros((1, 2))), T_ego_sensor,
                              T_map_sweep, T_map_key, sweep_stamp, key_stamp)
        np.testing.assert_allclose(a[:, :3], expected, atol=2e-3)  # float32 file precision
        np.testing.assert_allclose(b[:, :3], expected, atol=2e-3)
        assert a[0, RADAR_COLUMN["dt"]] == 0.0
        assert b[0, RADAR_COLUMN["dt"]] == pytest.approx(delay_ns / 1e9, abs=1e-7)
        lidar = lidar_to_keyframe(np.c_[seen_sweep, [[42.0]]], T_ego_sensor, T_map_sweep,
                                  T_map_key, sweep_stamp, key_stamp)
        assert lidar.dtype == np.float32 and lidar.shape == (1, 5)
        np.testing.assert_allclose(lidar[:, :3], expected, atol=2e-3)
        assert lidar[0, 3] == 42.0 and lidar[0, 4] == pytest.approx(delay_ns / 1e9, abs=1e-7)


def test_radar_velocities_rotate_with_the_frames():
    T_map_key = pose(np.pi / 2, 100.0, 50.0)  # keyframe ego faces map +y
    T_map_sweep = pose(0.0, 90.0, 50.0)  # earlier, facing map +x
    T_ego_radar = pose(0.0, 0.0, 0.0)  # radar looks forward
    # radar-frame velocity (1, 0) = ego(sweep) +x = map +x = keyframe ego -y
    raw = raw_radar(np.array([[5.0, 0.0, 0.0]]), np.array([[1.0, 0.0]]))
    out = radar_to_keyframe(raw, T_ego_radar, T_map_sweep, T_map_key, 0, 50_000_000)
    assert out.shape == (1, len(RADAR_POINT_COLUMNS)) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, [RADAR_COLUMN["vx_comp"], RADAR_COLUMN["vy_comp"]]],
                               [0.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(out[0, [RADAR_COLUMN["vx"], RADAR_COLUMN["vy"]]], [0.0, -2.0],
                               atol=1e-6)
    # position: radar (5, 0) = sweep ego (5, 0) = map (95, 50) = key ego (0, 5)
    np.testing.assert_allclose(out[0, :3], [0.0, 5.0, 0.0], atol=1e-5)
    assert out[0, RADAR_COLUMN["dt"]] == pytest.approx(0.05)
    for name in ("rcs", "id", "ambig_state", "dyn_prop"):
        assert out[0, RADAR_COLUMN[name]] == raw[0, NUSCENES_RADAR_FIELDS.index(name)]


def test_sensor_to_keyframe_and_time_offset():
    T_map_key, T_map_sweep = pose(0.4, 10, 20, 1), pose(0.35, 9, 19.5, 1)
    T = sensor_to_keyframe(T_EGO_LIDAR, T_map_sweep, T_map_key)
    np.testing.assert_allclose(T, np.linalg.inv(T_map_key) @ T_map_sweep @ T_EGO_LIDAR,
                               atol=1e-12)
    np.testing.assert_allclose(sensor_to_keyframe(T_EGO_LIDAR, T_map_key, T_map_key),
                               T_EGO_LIDAR, atol=1e-12)
    assert time_offset_s(1_000_000_000, 1_500_000_000) == 0.5
    assert time_offset_s(1_016_000_000, 1_000_000_000) == pytest.approx(-0.016)


def test_radar_filter_sets():
    raw = raw_radar(np.zeros((6, 3)), np.zeros((6, 2)))
    field = {name: i for i, name in enumerate(NUSCENES_RADAR_FIELDS)}
    raw[:, field["dyn_prop"]] = [0, 1, 7, 2, 2, 2]
    raw[:, field["ambig_state"]] = [3, 3, 3, 4, 3, 3]
    raw[:, field["invalid_state"]] = [0, 0, 0, 0, 17, 0]
    assert list(RadarFilter.nuscenes().apply(raw)) == [1, 1, 0, 0, 0, 1]
    assert RadarFilter.all().apply(raw).all()
    assert RadarFilter.from_spec("all") == RadarFilter.all()
    assert RadarFilter.from_spec("nuscenes") == RadarFilter()
    moving = RadarFilter.from_spec({"dyn_prop": [0, 2, 6]})
    assert list(moving.apply(raw)) == [1, 0, 0, 0, 0, 1]
    assert RadarFilter(dyn_prop=range(8), ambig_state=None, invalid_state=[0, 17]).apply(
        raw).tolist() == [1, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="unknown radar filter"):
        RadarFilter.from_spec({"rcs": [1]})
    with pytest.raises(ValueError):
        RadarFilter.from_spec("strict")


def test_far_from_sensor_mask_is_devkit_remove_close():
    rng = np.random.default_rng(0)
    raw = rng.uniform(-3, 3, size=(500, 5)).astype(np.float32)
    cloud = LidarPointCloud(raw[:, :4].T.copy())
    cloud.remove_close(1.0)
    np.testing.assert_array_equal(raw[far_from_sensor_mask(raw, 1.0), :4], cloud.points.T)
    assert far_from_sensor_mask(raw, 0.0).all()


def test_aggregate_sweeps_order_filter_and_empty():
    T_map_key, T_map_prev = pose(0.0, 10, 0), pose(0.0, 9, 0)
    key, prev = 2_000_000_000, 1_950_000_000
    raw_key = raw_radar(np.array([[5.0, 0, 0], [6.0, 0, 0]]), np.zeros((2, 2)))
    raw_prev = raw_radar(np.array([[7.0, 0, 0]]), np.zeros((1, 2)))
    raw_prev[:, NUSCENES_RADAR_FIELDS.index("invalid_state")] = 1  # the nuScenes filter drops
    sweeps = [RawSweep(raw_key, T_EGO_RADAR, T_map_key, key),
              RawSweep(raw_prev, T_EGO_RADAR, T_map_prev, prev)]
    every = aggregate_radar_sweeps(sweeps, T_map_key, key)
    assert every.shape == (3, len(RADAR_POINT_COLUMNS))
    np.testing.assert_allclose(every[:, RADAR_COLUMN["dt"]], [0, 0, 0.05])
    np.testing.assert_array_equal(
        every[2], radar_to_keyframe(raw_prev, T_EGO_RADAR, T_map_prev, T_map_key, prev, key)[0])
    assert len(aggregate_radar_sweeps(sweeps, T_map_key, key, RadarFilter.nuscenes())) == 2
    assert aggregate_radar_sweeps([], T_map_key, key).shape == (0, len(RADAR_POINT_COLUMNS))
    lidar = [RawSweep(np.array([[0.5, 0.2, 0, 1, 0], [5, 0, 0, 2, 0]], np.float32), T_EGO_LIDAR,
                      T_map_key, key)]
    assert len(aggregate_lidar_sweeps(lidar, T_map_key, key, min_distance=1.0)) == 1
    assert len(aggregate_lidar_sweeps(lidar, T_map_key, key)) == 2
    assert aggregate_lidar_sweeps([], T_map_key, key).shape == (0, 5)
    with pytest.raises(ValueError, match="radar sweep must be"):
        radar_to_keyframe(np.zeros((3, 5)), T_EGO_RADAR, T_map_key, T_map_key, key, key)
    with pytest.raises(ValueError, match="LiDAR sweep must be"):
        lidar_to_keyframe(np.zeros((3, 3)), T_EGO_LIDAR, T_map_key, T_map_key, key, key)

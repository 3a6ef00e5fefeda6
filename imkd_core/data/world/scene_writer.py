"""One scene of the synthetic world: simulate its sensors, write its files, return its rows.

`run_scene(config, index, name, root)` is what each worker process of `generate_world` runs.
Every random draw comes from `numpy.random.SeedSequence([seed, scene, ...])` keyed by what is
being drawn, so a scene's bytes do not depend on which process writes it or when.

Timing, as nuScenes: keyframes every 0.5 s, the sample timestamp is the LIDAR_TOP keyframe's;
each camera fires as the spinning LiDAR passes it (a fixed offset before the keyframe); LiDAR
sweeps at `lidar_hz`, each radar at `radar_hz` with its own phase, its keyframe the cycle
nearest the sample; a non-keyframe belongs to the sample that follows it; sweeps start half a
second before the first keyframe. Every sample_data has its own ego pose (same token). Each
LiDAR scan is taken at one instant (no rolling shutter).

Annotations: every object within 70 m of the ego at some keyframe is annotated from its first to
its last keyframe in range (an instance track with prev/next). `num_lidar_pts` counts the
keyframe LiDAR points inside the box as written (devkit `points_in_box` semantics);
`num_radar_pts` counts the 5 radars' keyframe returns that pass the devkit's default radar
filters and fall inside the box in bird's-eye view (radar returns have no height). Velocities
are not stored (nuScenes has none in the table): the devkit derives them from the positions,
which follow the simulated motion. The visibility level is the fraction of the object's pixels,
over the 6 keyframe images, that no other surface hides.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from imkd_core.data.radar_pcd import encode_radar_pcd
from imkd_core.data.world import lidar as lidar_mod
from imkd_core.data.world import radar as radar_mod
from imkd_core.data.world import render as render_mod
from imkd_core.data.world.config import WorldConfig
from imkd_core.data.world.population import build_scene
from imkd_core.data.world.rig import CAMERA_OFFSET_US, Rig, make_rig
from imkd_core.data.world.scene import ANNOTATION_RANGE, KEYFRAME_INTERVAL, LOCATIONS, SceneModel
from imkd_core.data.world.tables import (
    CHANNELS,
    seeded_token,
    stable_token,
    visibility_token,
)
from imkd_core.geometry import (
    make_transform,
    matrix_to_quaternion,
    quaternion_to_matrix,
    yaw_to_quaternion,
)
from imkd_core.sample import ATTRIBUTES, CAMERA_NAMES, LIDAR_NAME, RADAR_NAMES

MAP_RESOLUTION = 0.1  # m per pixel, nuScenes' native map mask resolution
_SENSOR_ID = {name: i for i, (name, _) in enumerate(CHANNELS)}


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *key])))


def _pose_record(T: np.ndarray) -> tuple[list[float], list[float], np.ndarray]:
    """The ego pose as the table stores it (rounded), and the transform rebuilt from exactly
    those numbers so the sensors see what the table says."""
    translation = [round(float(v), 6) for v in T[:3, 3]]
    translation[2] = 0.0  # nuScenes ego poses are 2D + attitude: z = 0
    rotation = [round(float(v), 10) for v in matrix_to_quaternion(T[:3, :3])]
    return translation, rotation, make_transform(quaternion_to_matrix(rotation), translation)


def _yaw_quaternion(yaw: float) -> list[float]:
    """The annotation's rotation as the table stores it: w >= 0, rounded."""
    q = yaw_to_quaternion(yaw)
    return [round(float(v), 10) for v in (-q if q[0] < 0 else q)]


def _points_in_boxes(points_xyz: np.ndarray, centre, size_lwh, yaw, bev: bool) -> np.ndarray:
    """(B,) number of points inside each box (inclusive faces, like the devkit)."""
    counts = np.zeros(len(centre), np.int64)
    if len(points_xyz) == 0:
        return counts
    for i, (c, s, y) in enumerate(zip(centre, size_lwh, yaw)):
        d = points_xyz - c
        near = np.abs(d[:, 0]) + np.abs(d[:, 1]) <= (s[0] + s[1]) * 0.75 + 1e-6
        if not near.any():
            continue
        dn = d[near]
        cy, sy = np.cos(y), np.sin(y)
        lx = cy * dn[:, 0] + sy * dn[:, 1]
        ly = -sy * dn[:, 0] + cy * dn[:, 1]
        inside = (np.abs(lx) <= s[0] / 2) & (np.abs(ly) <= s[1] / 2)
        if not bev:
            inside &= np.abs(dn[:, 2]) <= s[2] / 2
        counts[i] = int(inside.sum())
    return counts


# ================================================================================ one scene
class SceneWriter:
    """Simulates one scene's sensors and writes its files; returns its table rows."""

    def __init__(self, config: WorldConfig, index: int, name: str, root: Path):
        self.cfg, self.index, self.name, self.root = config, index, name, root
        seed = config.seed
        self.seed = seed
        self.model: SceneModel = build_scene(config, index, name, _rng(seed, index, 0))
        self.rig: Rig = make_rig(config.image_width, config.image_height, _rng(seed, index, 1))
        self.rows: dict[str, list[dict]] = defaultdict(list)
        self.timings: dict[str, float] = defaultdict(float)
        self._log()

    # ---------------------------------------------------------------- identity and time
    def _log(self) -> None:
        m, rng = self.model, _rng(self.seed, self.index, 2)
        loc, _, tz = next(x for x in LOCATIONS if x[0] == m.location)
        hour = int(rng.integers(19, 23)) if m.condition == "night" else int(rng.integers(8, 17))
        day = dt.date(2019, 3, 1) + dt.timedelta(days=int(rng.integers(0, 240)))
        sign = 1 if tz[0] == "+" else -1
        offset = dt.timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5])) * sign
        local = dt.datetime(day.year, day.month, day.day, hour, int(rng.integers(0, 60)),
                            int(rng.integers(0, 60)))
        utc = (local - offset).replace(tzinfo=dt.UTC)
        self.vehicle = f"n{900 + self.index % 100:03d}"
        self.logfile = f"{self.vehicle}-{local:%Y-%m-%d-%H-%M-%S}{tz}"
        self.log_token = seeded_token(self.seed, self.index, "log")
        self.scene_token = seeded_token(self.seed, self.index, "scene")
        # the scene starts a little after the log does
        self.start_us = int(utc.timestamp()) * 1_000_000 + int(rng.integers(30, 300)) * 1_000_000 \
            + int(rng.integers(0, 1_000_000))
        self.rows["log"].append({"token": self.log_token, "logfile": self.logfile,
                                 "vehicle": self.vehicle, "date_captured": f"{day:%Y-%m-%d}",
                                 "location": loc})
        self.calib_token = {}
        for channel, _ in CHANNELS:
            token = seeded_token(self.seed, self.index, "calibrated_sensor", channel)
            self.calib_token[channel] = token
            K = self.rig.K.get(channel)
            self.rows["calibrated_sensor"].append({
                "token": token, "sensor_token": stable_token("sensor", channel),
                "translation": self.rig.translation(channel),
                "rotation": self.rig.rotation(channel),
                "camera_intrinsic": [] if K is None else [[round(float(v), 6) for v in r]
                                                          for r in K]})

    def us(self, t: float) -> int:
        return self.start_us + round(t * 1e6)

    def t_of(self, us: int) -> float:
        return (us - self.start_us) * 1e-6

    # ---------------------------------------------------------------- schedule
    def _schedule(self):
        """Per channel: sorted list of (timestamp µs, keyframe index or None)."""
        cfg = self.cfg
        n_kf = cfg.samples_per_scene
        horizon = (n_kf - 1) * KEYFRAME_INTERVAL
        per_kf = KEYFRAME_INTERVAL * cfg.lidar_hz
        kf_j = {round(k * per_kf): k for k in range(n_kf)}
        if cfg.sweeps:
            js = range(-round(per_kf), round(horizon * cfg.lidar_hz) + 1)
        else:
            js = sorted(kf_j)
        lidar = [(self.us(j / cfg.lidar_hz), kf_j.get(j)) for j in js]
        self.sample_us = [us for us, k in lidar if k is not None]
        sched = {LIDAR_NAME: lidar}
        rng = _rng(self.seed, self.index, 3)
        period = 1.0 / cfg.radar_hz
        for name in RADAR_NAMES:
            phase = float(rng.uniform(0, period))
            i0 = int(np.floor((-KEYFRAME_INTERVAL - phase) / period))
            times = [phase + i * period for i in range(i0, int((horizon + period) / period) + 2)]
            us_all = np.array([self.us(t) for t in times])
            key_idx = {int(np.argmin(np.abs(us_all - s))): k
                       for k, s in enumerate(self.sample_us)}
            last = max(key_idx)
            entries = []
            for i, us in enumerate(us_all[: last + 1]):
                k = key_idx.get(i)
                if k is None and (not cfg.sweeps or us < self.sample_us[0] - KEYFRAME_INTERVAL
                                  * 1e6):
                    continue
                entries.append((int(us), k))
            sched[name] = entries
        for cam in CAMERA_NAMES:
            sched[cam] = [(s + CAMERA_OFFSET_US[cam], k) for k, s in enumerate(self.sample_us)]
        return sched

    # ---------------------------------------------------------------- sensors
    def _ego(self, us: int):
        return _pose_record(self.model.ego_pose(self.t_of(us)))

    def _sensor_velocity(self, us: int, channel: str) -> np.ndarray:
        t, h = self.t_of(us), 0.01
        T = self.rig.T_ego[channel]
        a = (self.model.ego_pose(t + h) @ T)[:3, 3]
        b = (self.model.ego_pose(t - h) @ T)[:3, 3]
        return (a - b) / (2 * h)

    def run(self) -> dict:
        cfg, m = self.cfg, self.model
        sched = self._schedule()
        W, H = cfg.image_width, cfg.image_height
        lidar_grid = lidar_mod.lidar_grid(cfg.lidar_azimuth_steps)
        radar_grid = radar_mod.radar_grid()
        rays = {c: render_mod.camera_rays(self.rig.K[c], W, H) for c in CAMERA_NAMES}
        n_kf = cfg.samples_per_scene
        sample_tokens = [seeded_token(self.seed, self.index, "sample", k) for k in range(n_kf)]
        keyframe_lidar: dict[int, np.ndarray] = {}  # k -> global xyz
        keyframe_radar: dict[int, list[np.ndarray]] = defaultdict(list)
        visible = np.zeros((n_kf, len(m.actors)), np.int64)
        potential = np.zeros((n_kf, len(m.actors)), np.int64)

        for channel, entries in sched.items():
            sid = _SENSOR_ID[channel]
            folder_ext = {"camera": "jpg", "lidar": "pcd.bin", "radar": "pcd"}
            modality = dict(CHANNELS)[channel]
            tokens = [seeded_token(self.seed, self.index, "sample_data", channel, us)
                      for us, _ in entries]
            # non-keyframes belong to the next keyframe of their channel
            next_k, owner_k = None, [None] * len(entries)
            for i in range(len(entries) - 1, -1, -1):
                if entries[i][1] is not None:
                    next_k = entries[i][1]
                owner_k[i] = next_k
            for i, (us, k) in enumerate(entries):
                t = self.t_of(us)
                translation, rotation, T_we = self._ego(us)
                T_ws = T_we @ self.rig.T_ego[channel]
                rng = _rng(self.seed, self.index, 10 + sid, i)
                kind = "samples" if k is not None else "sweeps"
                rel = f"{kind}/{channel}/{self.logfile}__{channel}__{us}.{folder_ext[modality]}"
                tic = time.process_time()
                snap = m.snapshot(t)
                if modality == "camera":
                    img, vis, pot = render_mod.render(m, snap, T_ws, T_we, self.rig.K[channel],
                                                      rays[channel], rng)
                    visible[k] += vis
                    potential[k] += pot
                    data = render_mod.encode_jpeg(img, cfg.jpeg_quality)
                elif modality == "lidar":
                    pts, _ = lidar_mod.scan(m, snap, T_ws, lidar_grid, rng, cfg.lidar_max_range)
                    data = pts.astype("<f4").tobytes()
                    if k is not None:
                        keyframe_lidar[k] = pts[:, :3].astype(np.float64) @ T_ws[:3, :3].T \
                            + T_ws[:3, 3]
                else:
                    v = self._sensor_velocity(us, channel)
                    pts, _ = radar_mod.scan(m, snap, T_ws, v, radar_grid, rng)
                    data = encode_radar_pcd(pts)
                    if k is not None:
                        kept = pts[radar_mod.default_filter_mask(pts)]
                        xyz = kept[:, :3].astype(np.float64) @ T_ws[:3, :3].T + T_ws[:3, 3]
                        keyframe_radar[k].append(xyz)
                self.timings[modality] += time.process_time() - tic
                tic = time.process_time()
                (self.root / rel).write_bytes(data)
                self.timings["write"] += time.process_time() - tic
                self.rows["ego_pose"].append({"token": tokens[i], "timestamp": us,
                                              "rotation": rotation, "translation": translation})
                self.rows["sample_data"].append({
                    "token": tokens[i], "sample_token": sample_tokens[owner_k[i]],
                    "ego_pose_token": tokens[i], "calibrated_sensor_token":
                        self.calib_token[channel], "timestamp": us,
                    "fileformat": "jpg" if modality == "camera" else "pcd",
                    "is_key_frame": k is not None,
                    "height": H if modality == "camera" else 0,
                    "width": W if modality == "camera" else 0, "filename": rel,
                    "prev": tokens[i - 1] if i > 0 else "",
                    "next": tokens[i + 1] if i + 1 < len(entries) else ""})

        tic = time.process_time()
        self._samples(sample_tokens)
        self._annotations(sample_tokens, keyframe_lidar, keyframe_radar, visible, potential)
        self._map()
        self.timings["annotate+map"] += time.process_time() - tic
        return {"rows": dict(self.rows), "timings": dict(self.timings),
                "scene": {"name": self.name, "condition": m.condition, "location": m.location,
                          "description": m.description, "log": self.logfile}}

    # ---------------------------------------------------------------- tables
    def _samples(self, sample_tokens: list[str]) -> None:
        n = len(sample_tokens)
        for k, token in enumerate(sample_tokens):
            self.rows["sample"].append({
                "token": token, "timestamp": self.sample_us[k],
                "prev": sample_tokens[k - 1] if k > 0 else "",
                "next": sample_tokens[k + 1] if k + 1 < n else "",
                "scene_token": self.scene_token})
        self.rows["scene"].append({
            "token": self.scene_token, "log_token": self.log_token, "nbr_samples": n,
            "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
            "name": self.name, "description": self.model.description})

    def _annotations(self, sample_tokens, keyframe_lidar, keyframe_radar, visible, potential):
        m, seed = self.model, self.seed
        n_kf = len(sample_tokens)
        annotated = np.flatnonzero(m.annotated)
        snaps = [m.snapshot(self.t_of(us)) for us in self.sample_us]
        in_range = np.zeros((n_kf, len(m.actors)), bool)
        for k, snap in enumerate(snaps):
            ego = m.ego_pose(self.t_of(self.sample_us[k]))[:3, 3]
            d = np.hypot(snap.x[annotated] - ego[0], snap.y[annotated] - ego[1])
            in_range[k, annotated] = d <= ANNOTATION_RANGE
        counts = {}
        # annotate every keyframe between an object's first and last time in range
        first = np.where(in_range.any(0), np.argmax(in_range, axis=0), -1)
        last = np.where(in_range.any(0), n_kf - 1 - np.argmax(in_range[::-1], axis=0), -1)
        boxes = {}  # (k, o) -> (translation, size wlh, rotation) exactly as the table says
        for k, snap in enumerate(snaps):
            objs = [o for o in annotated if first[o] >= 0 and first[o] <= k <= last[o]]
            if not objs:
                continue
            for o in objs:
                length, width, height = snap.size[o]
                boxes[k, o] = ([round(float(v), 6) for v in snap.centre[o]],
                               [round(float(width), 4), round(float(length), 4),
                                round(float(height), 4)],
                               _yaw_quaternion(float(snap.yaw[o])))
            # count points in the boxes as written (devkit semantics: inclusive faces)
            centre = np.array([boxes[k, o][0] for o in objs])
            size = np.array([[b[1][1], b[1][0], b[1][2]] for b in (boxes[k, o] for o in objs)])
            yaw = np.array([2 * np.arctan2(boxes[k, o][2][3], boxes[k, o][2][0]) for o in objs])
            n_lidar = _points_in_boxes(keyframe_lidar[k], centre, size, yaw, bev=False)
            radar_xyz = np.concatenate(keyframe_radar[k]) if keyframe_radar[k] else np.zeros(
                (0, 3))
            n_radar = _points_in_boxes(radar_xyz, centre, size, yaw, bev=True)
            counts[k] = dict(zip(objs, zip(n_lidar, n_radar)))
        attr_tokens = [stable_token("attribute", a) for a in ATTRIBUTES]
        i_of = {}
        for o in annotated:
            if first[o] < 0:
                continue
            actor = m.actors[o]
            inst = seeded_token(seed, self.index, "instance", o)
            anns = [seeded_token(seed, self.index, "annotation", o, k)
                    for k in range(first[o], last[o] + 1)]
            self.rows["instance"].append({
                "token": inst, "category_token": stable_token("category", actor.category),
                "nbr_annotations": len(anns), "first_annotation_token": anns[0],
                "last_annotation_token": anns[-1]})
            i_of[o] = (inst, anns)
        for k in range(n_kf):
            ti = m._interp(self.t_of(self.sample_us[k]))[0]
            for o in annotated:
                if o not in i_of or not first[o] <= k <= last[o]:
                    continue
                inst, anns = i_of[o]
                j = k - first[o]
                n_lidar, n_radar = counts[k][o]
                vis = visible[k, o] / potential[k, o] if potential[k, o] > 0 else 0.0
                a = int(m.actors[o].attr[ti])
                translation, size_wlh, rotation = boxes[k, o]
                self.rows["sample_annotation"].append({
                    "token": anns[j], "sample_token": sample_tokens[k], "instance_token": inst,
                    "visibility_token": visibility_token(vis),
                    "attribute_tokens": [attr_tokens[a]] if a >= 0 else [],
                    "translation": translation, "size": size_wlh, "rotation": rotation,
                    "prev": anns[j - 1] if j > 0 else "",
                    "next": anns[j + 1] if j + 1 < len(anns) else "",
                    "num_lidar_pts": int(n_lidar), "num_radar_pts": int(n_radar)})

    def _map(self) -> None:
        """The log's semantic prior: the drivable surface, 0.1 m per pixel, origin bottom-left
        (as nuscenes-devkit's MapMask reads it)."""
        m = self.model
        token = seeded_token(self.seed, self.index, "map")
        width = int(np.ceil(m.map_extent[0] / MAP_RESOLUTION))
        height = int(np.ceil(m.map_extent[1] / MAP_RESOLUTION))
        mask = np.zeros((height, width), np.uint8)
        poly = m.road.drivable_polygon(*m.s_range)
        px = np.round(poly[:, 0] / MAP_RESOLUTION).astype(np.int32)
        py = np.round(height - poly[:, 1] / MAP_RESOLUTION).astype(np.int32)
        cv2.fillPoly(mask, [np.stack([px, py], 1)], 255)
        ok, buf = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:
            raise RuntimeError("PNG encoding failed")
        rel = f"maps/{token}.png"
        (self.root / rel).write_bytes(buf.tobytes())
        self.rows["map"].append({"category": "semantic_prior", "token": token, "filename": rel,
                                 "log_tokens": [self.log_token]})


def run_scene(config: WorldConfig, index: int, name: str, root: Path) -> dict:
    """Generate one scene's files under `root`; return its table rows and timings."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # parallelism comes from the scene processes
    try:
        return SceneWriter(config, index, name, Path(root)).run()
    finally:
        cv2.setNumThreads(threads)


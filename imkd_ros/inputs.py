"""The node's input side: sensor messages -> synchroniser payloads -> the `Sample` of a set.

Subscription callbacks turn each message into a payload (`camera_frame`, `radar_sweep`; the
decoding is `imkd_core.wire.fields`, shared with the bag reader) that `imkd_ros.sync` groups
into a `FrameSet`. An image is made pinhole in its callback, before its model input is prepared:
its camera's latest CameraInfo (`imkd_core.wire.camera_model`) gives the K for the image's size
(scaled for a uniformly resized image, refused for any other) and, for a distorted lens, the
cached undistort maps. `SampleBuilder` hands a set, with each image's K and the ego pose at each
of its stamps, to `imkd_core.data.assemble.assemble_sample`, the assembler the offline readers
use, so the node and the offline evaluation build the same `Sample` from the same data.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from imkd_core.data.assemble import CameraRecord, assemble_sample
from imkd_core.data.image_codec import DEFAULT_MAX_PIXELS
from imkd_core.data.options import ReaderOptions
from imkd_core.data.sweeps import RawSweep
from imkd_core.preprocess import PreparedImage
from imkd_core.sample import Sample
from imkd_core.wire import fields
from imkd_core.wire.camera_model import CameraModel
from imkd_core.wire.fields import WireError
from imkd_ros.diagnostics import InputWarnings
from imkd_ros.sync import FrameSet, Stamped
from imkd_ros.tf_buffer import TfLookupError
from imkd_ros.tf_listener import TfListener


@dataclass
class CameraFrame:
    """A converted camera message."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, pinhole (rectified when the lens is distorted)
    prepared: PreparedImage  # the image's model input, made in the callback
    T_base_cam: np.ndarray  # (4, 4) calibration from /tf_static (or calibration_file)
    convert_s: float  # CPU time the callback spent converting, rectifying and preparing it
    K: np.ndarray | None = None  # (3, 3) of `image`; None: no CameraInfo before the image


@dataclass
class RadarSweep:
    """A converted radar message."""

    points: np.ndarray  # (N, 18) float32 NUSCENES_RADAR_FIELDS, finite, unfiltered
    T_base_radar: np.ndarray  # (4, 4) calibration


def camera_frame(msg, tf: TfListener, prepare: Callable[[np.ndarray], PreparedImage],
                 model: CameraModel | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> CameraFrame:
    """Image or CompressedImage -> CameraFrame: made pinhole with its camera's `model` (the
    latest CameraInfo's), then its model input made by `prepare`. A message that cannot be used
    (no extrinsics for its frame, a bad image, a size its CameraInfo is not for, more than
    `max_pixels` pixels) raises `WireError`."""
    cpu_start = time.thread_time()
    try:
        T_base_cam = tf.extrinsics(msg.header.frame_id.lstrip("/"))
    except TfLookupError as exc:
        raise WireError(f"missing TF: {exc}") from exc
    image, K = fields.image_from_msg(msg, max_pixels), None
    if model is not None:
        view = model.for_image(image.shape[1], image.shape[0])
        image, K = view.rectify(image), view.K
    return CameraFrame(image, prepare(image), T_base_cam, time.thread_time() - cpu_start, K)


def radar_sweep(msg, tf: TfListener, max_points: int) -> tuple[RadarSweep, int]:
    """PointCloud2 -> (RadarSweep, number of points removed for NaN/Inf); `WireError` as
    `camera_frame`."""
    points, non_finite = fields.radar_points(msg, max_points)
    try:
        T_base_radar = tf.extrinsics(msg.header.frame_id.lstrip("/"))
    except TfLookupError as exc:
        raise WireError(f"missing TF: {exc}") from exc
    return RadarSweep(points, T_base_radar), non_finite


def frame_stamps(frame_set: FrameSet) -> list[int]:
    """Every stamp whose ego pose a frame set needs: its key pose, cameras, radar sweeps."""
    stamps = [frame_set.key_pose_stamp] + [f.stamp for f in frame_set.cameras.values()]
    return stamps + [s.stamp for sweeps in frame_set.radars.values() for s in sweeps]


class SampleBuilder:
    """FrameSet -> `Sample`, exactly as the offline readers build it; warns (via `warnings`)
    about what a set lacks: a camera without intrinsics is left out, and without a /tf ego
    pose at some stamp every sensor is taken to be at the key pose (`ego_motion_missing`).
    Holds each camera's latest `CameraModel` for the image callbacks (`camera_model`)."""

    def __init__(self, tf: TfListener, options: ReaderOptions,
                 warnings: InputWarnings) -> None:
        self.options = options
        self.ego_motion_missing = False
        self._tf, self._warnings = tf, warnings
        self._lock = threading.Lock()  # intrinsics: callbacks vs the worker
        self._models: dict[str, CameraModel] = {}

    def set_camera_model(self, camera: str, model: CameraModel) -> None:
        """The camera's latest CameraInfo, parsed. An unchanged one (the usual case: it comes
        with every image) keeps the model held, and with it its cached undistort maps."""
        with self._lock:
            if self._models.get(camera) != model:
                self._models[camera] = model

    def camera_model(self, camera: str) -> CameraModel | None:
        with self._lock:
            return self._models.get(camera)

    def build(self, frame_set: FrameSet) -> Sample:
        poses = {s: self._ego_pose(s) for s in sorted(set(frame_stamps(frame_set)))}
        self.ego_motion_missing = any(T is None for T in poses.values())
        if self.ego_motion_missing:  # no ego motion known: every sensor at the key pose
            poses = dict.fromkeys(poses, np.eye(4))
        cameras = {}
        for cam, frame in frame_set.cameras.items():
            K = frame.payload.K if frame.payload.K is not None else self._late_k(cam, frame)
            if K is None:
                continue
            cameras[cam] = CameraRecord(image=frame.payload.image, K=K,
                                        T_ego_cam=frame.payload.T_base_cam,
                                        T_map_ego=poses[frame.stamp], stamp=frame.stamp)
        radars = {radar: [RawSweep(points=s.payload.points, T_ego_sensor=s.payload.T_base_radar,
                                   T_map_ego=poses[s.stamp], stamp=s.stamp) for s in sweeps]
                  for radar, sweeps in frame_set.radars.items()}
        return assemble_sample(f"ros_{frame_set.stamp}", frame_set.stamp,
                               poses[frame_set.key_pose_stamp], cameras, radars, None,
                               self.options)

    def _late_k(self, cam: str, frame: Stamped) -> np.ndarray | None:
        """K for an image that came before any valid CameraInfo (which may trail its image a
        little), from the latest one if it has come since; None (warned): left out. A distorted
        camera's image is not rectified afterwards: it is left out too."""
        model, topic = self.camera_model(cam), f"~/input/{cam}/camera_info"
        if model is None:
            self._warnings.warn(topic, "no camera_info",
                                f"no valid CameraInfo yet; {cam} left out of this frame")
            return None
        if model.distorted:
            self._warnings.warn(topic, "camera_info late", f"{cam}'s image came before its "
                                "first CameraInfo and is not rectified; left out of this frame")
            return None
        height, width = frame.payload.image.shape[:2]
        try:
            return model.for_image(width, height).K
        except WireError as exc:
            self._warnings.warn(f"~/input/{cam}/image", "size", f"{exc}; {cam} left out")
            return None

    def _ego_pose(self, stamp: int) -> np.ndarray | None:
        """map -> base at `stamp`, or None (warned) when /tf does not have it."""
        try:
            return self._tf.ego_pose(stamp)
        except TfLookupError as exc:
            self._warnings.warn("/tf", "missing ego pose", f"missing TF: {exc}; sensors are "
                                "treated as static for this frame")
            return None

"""Multi-sensor synchroniser for the detector node: pure Python, no rclpy, driven by stamps.

Two trigger modes (`SyncConfig.trigger`):
- `cameras` (live): a frame set is emitted as soon as every required camera has a frame and the
  set's stamps lie within `camera_tolerance_ns` of each other; the trigger stamp is the newest
  camera stamp; radar sweeps are the newest `radar_sweeps` not newer than the trigger.
- `keyframes` (replay evaluation): a keyframe request names the exact stamp of each sensor's
  keyframe message (the `/imkd/keyframes` records of a `nuscenes2bag` bag); the set is emitted
  once those messages have arrived, with the request's stamp, and radar sweeps are the newest
  `radar_sweeps` up to and including the named sweep — exactly what the offline bag reader
  assembles, so the node can be scored against it.
In both, sweeps older than `radar_max_age_ns` before the trigger are not used. Nothing here
blocks and every buffer is bounded; what falls out of a full buffer is counted.

All time is the sensors' own stamps (integer ns), never the wall clock, so a replayed bag at
any rate behaves like the car. "Now" is the newest camera stamp seen.

Degraded modes (reported by `status()`):
- a sensor with no message for `stale_timeout_ns` is stale. A stale camera is not waited for;
  with `missing_camera="blank"` sets are emitted without it (the model sees a zero image), with
  `"skip"` no set is emitted until it is back;
- a radar with no sweep in the trigger's window (or stale) is missing: its input is empty.
A stamp older than the same sensor's previous one (a bag loop, a restarted driver) clears all
state, as if the node had just started, and counts a reset.

Duplicates and clock jumps:
- a message with the same stamp as its sensor's previous one (delivered twice: two publishers,
  a doubled bag, a re-sent keyframe record) is dropped and counted, so one frame set never
  gives two outputs and a radar sweep is never aggregated twice;
- a camera stamp more than `max_jump_ns` ahead of the newest camera stamp (a clock jump
  forward) resets like a bag loop and starts over at it. Until a later camera stamp confirms the
  new time, a camera stamp more than `max_jump_ns` behind it means the jump was a glitch (or
  the clock came back): that resets again, so a future-stamped message cannot wedge "now" (which
  would make every other camera look stale for good).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

MISSING_CAMERA_POLICIES = ("blank", "skip")
TRIGGERS = ("cameras", "keyframes")
_KEYFRAMES = "\x00keyframes"  # the keyframe request stream's own stamp order


@dataclass(frozen=True)
class SyncConfig:
    """Synchroniser settings; times in integer nanoseconds.

    Construction checks the invariants the synchroniser relies on, as any library API does.
    The node never relies on these checks: its parameters pass `imkd_ros.parameters` first,
    which uses `TRIGGERS` and `MISSING_CAMERA_POLICIES` from here and reports a bad value by
    its parameter name."""

    cameras: tuple[str, ...]
    radars: tuple[str, ...]
    camera_tolerance_ns: int = 60_000_000
    radar_sweeps: int = 1
    radar_max_age_ns: int = 500_000_000
    stale_timeout_ns: int = 1_000_000_000
    missing_camera: str = "blank"
    trigger: str = "cameras"
    camera_queue: int = 4  # frames pending per camera
    radar_queue: int = 16  # sweeps cached per radar
    keyframe_queue: int = 4  # keyframe requests waiting for their messages
    max_jump_ns: int = 10_000_000_000  # a camera stamp this far ahead of "now": a clock jump

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("cameras: at least one camera is required to trigger detection")
        if self.missing_camera not in MISSING_CAMERA_POLICIES:
            raise ValueError(f"missing_camera: {self.missing_camera!r} is not one of "
                             f"{MISSING_CAMERA_POLICIES}")
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger: {self.trigger!r} is not one of {TRIGGERS}")
        for name in ("camera_tolerance_ns", "radar_max_age_ns", "stale_timeout_ns"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("radar_sweeps", "camera_queue", "radar_queue", "keyframe_queue",
                     "max_jump_ns"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.radar_queue < self.radar_sweeps:
            raise ValueError(f"radar_queue ({self.radar_queue}) must hold radar_sweeps "
                             f"({self.radar_sweeps})")


@dataclass
class Stamped:
    """One sensor message's payload (whatever the caller converted it to) and its stamp."""

    stamp: int
    payload: Any


@dataclass
class FrameSet:
    """What one trigger hands to the detector."""

    stamp: int  # trigger stamp (cameras: the newest camera stamp; keyframes: the request's)
    cameras: dict[str, Stamped]  # present cameras only
    radars: dict[str, list[Stamped]]  # per radar, newest sweep first; [] when missing
    missing_cameras: tuple[str, ...] = ()
    missing_radars: tuple[str, ...] = ()
    pose_stamp: int | None = None  # where the keyframe's ego pose is taken; None: `stamp`

    @property
    def key_pose_stamp(self) -> int:
        """The stamp of the ego pose the set's data is brought to."""
        return self.stamp if self.pose_stamp is None else self.pose_stamp


@dataclass
class KeyframeRequest:
    """Keyframe mode: the trigger stamp, the ego-pose stamp and each sensor's message stamp."""

    stamp: int
    pose_stamp: int
    sensors: dict[str, int]


@dataclass
class SyncCounters:
    """Monotonic counters, kept across resets."""

    triggered: int = 0
    camera_frames_dropped: int = 0  # fell out of a full per-camera queue unused
    radar_sweeps_dropped: int = 0  # fell out of a full per-radar cache
    keyframes_dropped: int = 0  # requests whose messages never (all) came
    sets_skipped: int = 0  # complete except for stale cameras, with missing_camera=skip
    resets: int = 0  # stamps went backwards, or jumped (the reason `add_*` returns)
    duplicates: int = 0  # a sensor's message with the stamp of its previous one, dropped
    unknown_sensor: int = 0


# (the set a message completed, why it reset the state first: "" when it did not)
Result = tuple[FrameSet | None, str]
BACKWARDS = "stamp went backwards (bag loop?): state reset"


class SensorSync:
    """Camera- or keyframe-triggered synchroniser with a bounded radar cache (module doc)."""

    def __init__(self, config: SyncConfig) -> None:
        self.config = config
        self.counters = SyncCounters()
        self._reset_state()

    def _reset_state(self) -> None:
        cfg = self.config
        self._pending: dict[str, deque[Stamped]] = {c: deque() for c in cfg.cameras}
        self._sweeps: dict[str, deque[Stamped]] = {r: deque() for r in cfg.radars}
        self._requests: deque[KeyframeRequest] = deque()
        self._last_stamp: dict[str, int] = {}  # per sensor, newest stamp seen
        self._first_stamp: int | None = None  # first camera stamp since (re)start
        self._now: int | None = None  # newest camera stamp seen
        self._jumped = False  # "now" jumped ahead and no later camera stamp confirmed it yet
        self._last_missing_radars: tuple[str, ...] = ()

    # ------------------------------------------------------------------------------- input
    def drop_duplicate(self, sensor: str, stamp: int) -> bool:
        """True, and counted, when `sensor`'s message at `stamp` repeats its previous one: a
        caller may skip converting it (`add_*` drops it anyway)."""
        duplicate = self._last_stamp.get(sensor) == stamp
        self.counters.duplicates += duplicate
        return duplicate

    def _check_order(self, sensor: str, stamp: int, camera: bool = False) -> str:
        """Record `stamp` for `sensor`; a stamp going backwards, or a camera's jumping (module
        docstring), resets everything first. Returns why it reset ("" when it did not)."""
        reason = ""
        if sensor in self._last_stamp and stamp < self._last_stamp[sensor]:
            reason = BACKWARDS
        elif camera and self._now is not None:
            ahead = stamp - self._now
            if ahead > self.config.max_jump_ns:
                reason = f"stamp jumped {ahead * 1e-9:.1f} s ahead (clock jump?): state reset"
            elif self._jumped and -ahead > self.config.max_jump_ns:
                reason = (f"stamp {-ahead * 1e-9:.1f} s behind a jump ahead that no other "
                          "stamp followed: state reset")
            else:
                self._jumped = False  # the newest stamp is confirmed
        if reason:
            self.counters.resets += 1
            self._reset_state()
            self._jumped = reason.startswith("stamp jumped")
        self._last_stamp[sensor] = stamp
        return reason

    @staticmethod
    def _push(queue: deque, limit: int, item) -> bool:
        """Append to a bounded queue, dropping the oldest; True when one was dropped."""
        full = len(queue) >= limit
        if full:
            queue.popleft()
        queue.append(item)
        return full

    def _refused(self, name: str, known: dict, stamp: int) -> bool:
        """An unknown sensor, or a duplicate: counted, not used."""
        if name not in known:
            self.counters.unknown_sensor += 1
            return True
        return self.drop_duplicate(name, stamp)

    def add_radar(self, name: str, stamp: int, payload: Any) -> Result:
        """Cache one radar sweep (completes a keyframe set in keyframe mode)."""
        if self._refused(name, self._sweeps, stamp):
            return None, ""
        reset = self._check_order(name, stamp)
        if self._push(self._sweeps[name], self.config.radar_queue, Stamped(stamp, payload)):
            self.counters.radar_sweeps_dropped += 1
        if self.config.trigger == "keyframes":
            return self._try_keyframes(), reset
        return None, reset

    def add_camera(self, name: str, stamp: int, payload: Any) -> Result:
        """Queue one camera frame and try to complete a set."""
        if self._refused(name, self._pending, stamp):
            return None, ""
        reset = self._check_order(name, stamp, camera=True)
        if self._push(self._pending[name], self.config.camera_queue, Stamped(stamp, payload)):
            self.counters.camera_frames_dropped += 1
        if self._first_stamp is None:
            self._first_stamp = stamp
        self._now = stamp if self._now is None else max(self._now, stamp)
        if self.config.trigger == "keyframes":
            return self._try_keyframes(), reset
        return self._try_camera_set(stamp), reset

    def add_keyframe(self, stamp: int, pose_stamp: int, sensors: dict[str, int]) -> Result:
        """Keyframe mode: request the set named by `sensors` (sensor -> message stamp)."""
        if self.config.trigger != "keyframes":
            raise RuntimeError("add_keyframe needs SyncConfig(trigger='keyframes')")
        if self.drop_duplicate(_KEYFRAMES, stamp):
            return None, ""
        reset = self._check_order(_KEYFRAMES, stamp)
        request = KeyframeRequest(stamp, pose_stamp, dict(sensors))
        if self._push(self._requests, self.config.keyframe_queue, request):
            self.counters.keyframes_dropped += 1
        return self._try_keyframes(), reset

    # ----------------------------------------------------------------------------- trigger
    def _silent(self, sensor: str) -> bool:
        last = self._last_stamp.get(sensor, self._first_stamp)
        return self._now - last > self.config.stale_timeout_ns

    def stale_cameras(self) -> tuple[str, ...]:
        """Cameras silent for more than stale_timeout_ns before the newest camera stamp."""
        if self._now is None:
            return ()
        return tuple(c for c in self.config.cameras if self._silent(c))

    def stale_radars(self) -> tuple[str, ...]:
        if self._now is None:
            return ()
        return tuple(r for r in self.config.radars if self._silent(r))

    def _try_camera_set(self, anchor: int) -> FrameSet | None:
        cfg = self.config
        stale = set(self.stale_cameras())
        chosen: dict[str, Stamped] = {}
        for cam in cfg.cameras:
            if cam in stale:
                continue
            frames = self._pending[cam]
            if not frames:
                return None
            chosen[cam] = min(frames, key=lambda f: abs(f.stamp - anchor))
        if not chosen:
            return None
        stamps = [f.stamp for f in chosen.values()]
        if max(stamps) - min(stamps) > cfg.camera_tolerance_ns:
            return None
        trigger = max(stamps)
        limits = {r: trigger for r in cfg.radars}
        return self._emit(trigger, None, chosen, stale, limits)

    def _try_keyframes(self) -> FrameSet | None:
        """Emit the oldest request whose messages are all here; older ones are given up."""
        stale_cams, stale_radars = set(self.stale_cameras()), set(self.stale_radars())
        for index, request in enumerate(self._requests):
            chosen: dict[str, Stamped] = {}
            complete = True
            for cam in self.config.cameras:
                if cam in request.sensors and cam not in stale_cams:
                    frame = next((f for f in self._pending[cam]
                                  if f.stamp == request.sensors[cam]), None)
                    complete = complete and frame is not None
                    chosen[cam] = frame
            limits = {r: request.sensors[r] for r in self.config.radars
                      if r in request.sensors and r not in stale_radars}
            complete = complete and all(any(s.stamp == stamp for s in self._sweeps[r])
                                        for r, stamp in limits.items())
            if not complete:
                continue
            for _ in range(index + 1):
                self._requests.popleft()
            self.counters.keyframes_dropped += index
            missing = set(self.config.cameras) - set(chosen)
            return self._emit(request.stamp, request.pose_stamp, chosen, missing, limits)
        return None

    def _emit(self, trigger: int, pose_stamp: int | None, chosen: dict[str, Stamped],
              missing_cameras: set[str], radar_limits: dict[str, int]) -> FrameSet | None:
        """Consume the cameras up to the set and build it (or skip it, by policy)."""
        cfg = self.config
        newest = max(f.stamp for f in chosen.values()) if chosen else trigger
        # Everything up to the set is used or superseded: consume it, so a frame never
        # triggers twice and stale leftovers cannot pair with newer frames.
        for frames in self._pending.values():
            while frames and frames[0].stamp <= newest:
                frames.popleft()
        if (missing_cameras and cfg.missing_camera == "skip") or not chosen:
            self.counters.sets_skipped += 1
            return None
        oldest = trigger - cfg.radar_max_age_ns
        radars: dict[str, list[Stamped]] = {}
        for radar, sweeps in self._sweeps.items():
            limit = radar_limits.get(radar)
            usable = [] if limit is None else [s for s in reversed(sweeps)
                                                if oldest <= s.stamp <= limit]
            radars[radar] = usable[: cfg.radar_sweeps]
        self._last_missing_radars = tuple(r for r, s in radars.items() if not s)
        self.counters.triggered += 1
        return FrameSet(
            stamp=trigger,
            cameras=chosen,
            radars=radars,
            missing_cameras=tuple(c for c in cfg.cameras if c in missing_cameras),
            missing_radars=self._last_missing_radars,
            pose_stamp=pose_stamp,
        )

    # ------------------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """Degraded-mode report and counters, JSON-serialisable."""
        stale = self.stale_cameras()
        c = self.counters
        if stale and self.config.missing_camera == "skip":
            mode = "skipping"  # no detections until the stale cameras are back
        elif stale or self._last_missing_radars:
            mode = "degraded"
        else:
            mode = "ok"
        return {
            "mode": mode,
            "trigger": self.config.trigger,
            "stale_cameras": list(stale),
            "missing_camera_policy": self.config.missing_camera,
            "missing_radars": list(self._last_missing_radars),
            "stale_radars": list(self.stale_radars()),
            "triggered": c.triggered,
            "camera_frames_dropped": c.camera_frames_dropped,
            "radar_sweeps_dropped": c.radar_sweeps_dropped,
            "keyframes_dropped": c.keyframes_dropped,
            "sets_skipped": c.sets_skipped,
            "resets": c.resets,
            "duplicates": c.duplicates,
        }

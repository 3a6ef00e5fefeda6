"""The node's health on `/diagnostics` (`diagnostic_msgs/DiagnosticArray`), as
diagnostic_updater publishes it and rqt_runtime_monitor / Autoware's diagnostic aggregator read
it: one `DiagnosticStatus` per sensor and one for the model, named `<node>: <part>`.

Per sensor (camera: its image topic, plus its camera_info; radar: its points):
- ERROR: nothing ever received, every message of the last status window dropped (the drop
  reasons are in the log, throttled: `imkd_ros.diagnostics`), or (camera) images but no valid
  CameraInfo yet;
- WARN: stale (no message for longer than `stale_timeout`, wall clock), some messages of the
  window dropped, or the synchroniser runs without it (stale or missing in the last set);
- OK otherwise. Values: rate_hz (messages per second over the window), received and dropped
  (since start), last_message_age_s.
Model: device, frames done and failed, queue drops, end-to-end latency and inference time
(last and median of the last `LATENCY_WINDOW` frames); WARN when the window dropped frame sets
from the full queue, ERROR when it only failed.

Callbacks only count (`received`, O(1) under a lock); everything else is computed by the
status timer (`tick`, then `statuses`), off the callbacks' path.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
LEVEL_NAMES = {OK: "ok", WARN: "warn", ERROR: "error"}
DIAGNOSTICS_TOPIC = "/diagnostics"  # absolute, as diagnostic_updater publishes it
LATENCY_WINDOW = 100  # frames the latency medians are taken over


@dataclass
class Status:
    """One part's health: what a `DiagnosticStatus` carries, as plain data."""

    name: str  # the part: a sensor name or "model"
    level: bytes
    message: str
    hardware_id: str
    values: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"level": LEVEL_NAMES[self.level], "message": self.message, **self.values}


@dataclass
class _Topic:
    """Counts of one input topic."""

    name: str  # full topic name, as InputWarnings keys its drop counts
    received: int = 0
    last_arrival: float | None = None  # clock() of the newest message
    window_received: int = 0  # received in the last closed window
    window_dropped: int = 0
    dropped: int = 0  # since start (InputWarnings' count)
    _counted: tuple[int, int] = (0, 0)  # (received, dropped) when the last window closed


class NodeHealth:
    """Counters from the callbacks and the worker, turned into per-part `Status`es by the
    status timer. Thread-safe."""

    def __init__(self, cameras: tuple[str, ...], radars: tuple[str, ...],
                 resolve: Callable[[str], str], stale_timeout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`resolve`: the node's private topic name -> its full name."""
        self._clock, self._stale_s = clock, stale_timeout_s
        self._lock = threading.Lock()
        self.cameras, self.radars = tuple(cameras), tuple(radars)
        self._topics: dict[tuple[str, str], _Topic] = {}
        for cam in cameras:
            for kind in ("image", "camera_info"):
                self._topics[(cam, kind)] = _Topic(resolve(f"~/input/{cam}/{kind}"))
        for radar in radars:
            self._topics[(radar, "points")] = _Topic(resolve(f"~/input/{radar}/points"))
        self._latency: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._inference: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._frames = {"done": 0, "failed": 0, "queue_dropped": 0}
        self._window_frames = dict.fromkeys(self._frames, 0)
        self._counted_frames = dict(self._frames)
        self._window_start = clock()
        self._window_s = 0.0

    # ------------------------------------------------------------------ from the callbacks
    def received(self, sensor: str, kind: str) -> None:
        """One message of `sensor`'s `kind` topic (image, camera_info, points) arrived."""
        now = self._clock()
        with self._lock:
            topic = self._topics[(sensor, kind)]
            topic.received += 1
            topic.last_arrival = now

    def frame_done(self, end_to_end_ms: float, inference_ms: float) -> None:
        with self._lock:
            self._frames["done"] += 1
            self._latency.append(end_to_end_ms)
            self._inference.append(inference_ms)

    def frame_failed(self) -> None:
        with self._lock:
            self._frames["failed"] += 1

    # ------------------------------------------------------------------ the status timer
    def tick(self, dropped: Mapping[str, int], queue_dropped: int) -> None:
        """Close the window: `dropped` is InputWarnings' per-topic drop count, `queue_dropped`
        the worker's count of frame sets it dropped from its full queue."""
        now = self._clock()
        with self._lock:
            self._window_s, self._window_start = now - self._window_start, now
            for topic in self._topics.values():
                topic.dropped = dropped.get(topic.name, 0)
                received, drops = topic._counted
                topic.window_received = topic.received - received
                topic.window_dropped = topic.dropped - drops
                topic._counted = (topic.received, topic.dropped)
            self._frames["queue_dropped"] = queue_dropped
            for key, value in self._frames.items():
                self._window_frames[key] = value - self._counted_frames[key]
            self._counted_frames = dict(self._frames)

    def dropping_everything(self) -> dict[str, str]:
        """Input topics every message of whose last window was dropped -> what happened."""
        with self._lock:
            return {t.name: f"all {t.window_received} messages of the last "
                            f"{self._window_s:.1f} s dropped (reasons in the log)"
                    for t in self._topics.values()
                    if t.window_received and t.window_dropped >= t.window_received}

    def statuses(self, device: str, sync_status: Mapping) -> list[Status]:
        """Every sensor's and the model's status after the last `tick`. `sync_status`: the
        synchroniser's `status()` (stale and missing sensors)."""
        now = self._clock()
        lagging = set(sync_status.get("stale_cameras", ())) | set(
            sync_status.get("stale_radars", ())) | set(sync_status.get("missing_radars", ()))
        with self._lock:
            sensors = [self._sensor(cam, "image", now, lagging) for cam in self.cameras]
            sensors += [self._sensor(radar, "points", now, lagging) for radar in self.radars]
            return [*sensors, self._model(device)]

    def _sensor(self, sensor: str, kind: str, now: float, lagging: set[str]) -> Status:
        topic = self._topics[(sensor, kind)]
        values = {"topic": topic.name,
                  "rate_hz": f"{topic.window_received / self._window_s:.2f}"
                  if self._window_s > 0 else "0.00",
                  "received": str(topic.received), "dropped": str(topic.dropped),
                  "last_message_age_s": "never" if topic.last_arrival is None
                  else f"{now - topic.last_arrival:.2f}"}
        info = self._topics.get((sensor, "camera_info"))
        if info is not None:
            values.update(camera_info_topic=info.name, camera_info_received=str(info.received),
                          camera_info_dropped=str(info.dropped))
        level, message = OK, "ok"
        if topic.last_arrival is None:
            level, message = ERROR, f"no message received on {topic.name}"
        elif topic.window_received and topic.window_dropped >= topic.window_received:
            level, message = ERROR, (f"all {topic.window_received} messages of the last "
                                     f"{self._window_s:.1f} s dropped (reasons in the log)")
        elif info is not None and info.received <= info.dropped:
            level, message = ERROR, (f"no valid CameraInfo on {info.name} yet: images not used"
                                     if info.received else
                                     f"no CameraInfo received on {info.name}: images not used")
        elif now - topic.last_arrival > self._stale_s:
            level, message = WARN, (f"stale: no message for {now - topic.last_arrival:.1f} s "
                                    f"(stale_timeout {self._stale_s:g} s)")
        elif topic.window_dropped:
            level, message = WARN, (f"{topic.window_dropped} of {topic.window_received} "
                                    f"messages of the last {self._window_s:.1f} s dropped")
        elif sensor in lagging:
            level, message = WARN, "stale or missing in the synchroniser: run without it"
        return Status(sensor, level, message, sensor, values)

    def _model(self, device: str) -> Status:
        frames, window = self._frames, self._window_frames

        def ms(values: deque) -> tuple[str, str]:
            if not values:
                return "none", "none"
            return f"{values[-1]:.1f}", f"{statistics.median(values):.1f}"

        latency_last, latency_p50 = ms(self._latency)
        inference_last, inference_p50 = ms(self._inference)
        values = {"device": device, "frames_done": str(frames["done"]),
                  "frames_failed": str(frames["failed"]),
                  "frames_dropped_queue": str(frames["queue_dropped"]),
                  "latency_last_ms": latency_last, "latency_p50_ms": latency_p50,
                  "inference_last_ms": inference_last, "inference_p50_ms": inference_p50}
        if window["failed"] and not window["done"]:
            level, message = ERROR, f"{window['failed']} frame sets failed (see the log)"
        elif window["queue_dropped"]:
            level, message = WARN, (f"{window['queue_dropped']} frame sets dropped from the "
                                    f"full queue: the model is slower than its input")
        elif window["failed"]:
            level, message = WARN, f"{window['failed']} frame sets failed (see the log)"
        elif not frames["done"]:
            level, message = OK, "waiting for the first frame set"
        else:
            level, message = OK, f"latency p50 {latency_p50} ms"
        return Status("model", level, message, device, values)


def diagnostic_array(statuses: list[Status], node_name: str, stamp) -> DiagnosticArray:
    """The `/diagnostics` message: `<node_name>: <part>` per status; `stamp`: a
    builtin_interfaces Time (the node's clock)."""
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = [DiagnosticStatus(level=s.level, name=f"{node_name}: {s.name}",
                                   message=s.message, hardware_id=s.hardware_id,
                                   values=[KeyValue(key=k, value=v) for k, v in s.values.items()])
                  for s in statuses]
    return msg

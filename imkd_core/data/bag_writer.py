"""`BagWriter`: a rosbag2 writer (pure-Python `rosbags`, no ROS) that never leaves a
finished-looking bag behind unless it finished.

The bag layout (topics, frames, QoS) is `imkd_core.wire.names`; `nuscenes2bag` fills it. Bags
are rosbag2 metadata version 8, which Humble reads (Jazzy and later read it too), in MCAP or
sqlite3 storage. `BagError` is raised for a bag that cannot be written or read as this project
expects, by this writer and by `imkd_core.data.bag_reader`.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer

from imkd_core.wire.names import QosSpec, topic_qos
from imkd_core.wire.typestore import typestore

BAG_VERSION = 8  # rosbag2 metadata version that Humble reads (Jazzy and later read it too)
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class BagError(RuntimeError):
    """A bag that cannot be written or read as this project expects."""


def bag_qos(spec: QosSpec) -> Qos:
    """A `QosSpec` as the rosbags profile a bag records for its publisher."""
    zero = QosTime(sec=0, nsec=0)  # 0 = "unspecified": the RMW default (infinite)
    return Qos(history=QosHistory.KEEP_LAST, depth=spec.depth,
               reliability=QosReliability.RELIABLE if spec.reliable
               else QosReliability.BEST_EFFORT,
               durability=QosDurability.TRANSIENT_LOCAL if spec.transient_local
               else QosDurability.VOLATILE,
               deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=zero, avoid_ros_namespace_conventions=False)


class BagWriter:
    """A rosbag2 writer that never leaves a finished-looking bag behind unless it finished.

    Writes the bag as `<out>.partial/<name>/` and moves it to `<out>` only after rosbags has
    written the index and `metadata.yaml` (so the storage file is `<name>.mcap` and the bag is
    complete wherever it lies); on any exception (Ctrl-C included) the partial directory is
    deleted. A process killed with SIGKILL leaves at most `<out>.partial/`, never `<out>`.
    Connections are added on first use with the topic's QoS (`topic_qos`).
    """

    def __init__(self, out: str | Path, storage: str = "mcap", overwrite: bool = False):
        if storage not in STORAGES:
            raise BagError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.storage = storage
        self.overwrite = overwrite
        self.bytes_written = 0
        self.messages_written = 0
        self.counts: dict[str, int] = defaultdict(int)
        self._writer: Writer | None = None
        self._connections: dict[str, Any] = {}
        self._store = typestore()

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        if self.out.exists():
            if not self.overwrite:
                raise BagError(f"{self.out} exists; remove it or choose another --out")
            shutil.rmtree(self.out) if self.out.is_dir() else self.out.unlink()
        if self.partial.exists():  # left by an interrupted run of ours
            shutil.rmtree(self.partial)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir()
        self._writer = Writer(self.partial / self.out.name, version=BAG_VERSION,
                              storage_plugin=STORAGES[self.storage])
        self._writer.open()

    def _connection(self, topic: str, msgtype: str):
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self._store,
                                               offered_qos_profiles=[bag_qos(topic_qos(topic))])
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise BagError(f"{topic}: written as {conn.msgtype}, now {msgtype}")
        return conn

    def write(self, topic: str, log_ns: int, msg) -> int:
        """Serialise `msg` (a rosbags message of the shared store) and write it; returns bytes."""
        msgtype = msg.__msgtype__
        data = self._store.serialize_cdr(msg, msgtype)
        return self.write_raw(topic, msgtype, log_ns, data)

    def write_raw(self, topic: str, msgtype: str, log_ns: int, data) -> int:
        if self._writer is None:
            raise BagError("bag is not open")
        self._writer.write(self._connection(topic, msgtype), int(log_ns), data)
        size = len(data)
        self.bytes_written += size
        self.messages_written += 1
        self.counts[topic] += 1
        return size

    def close(self) -> Path:
        if self._writer is None:
            return self.out
        writer, self._writer = self._writer, None
        try:
            writer.close()
            (self.partial / self.out.name).rename(self.out)
            self.partial.rmdir()
        except BaseException:
            shutil.rmtree(self.partial, ignore_errors=True)
            raise
        return self.out

    def abort(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.abort()
            except Exception:  # cleaning up after an error that is already propagating
                pass
        shutil.rmtree(self.partial, ignore_errors=True)

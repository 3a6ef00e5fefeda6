"""A standalone rclpy peer for cross-process DDS tests: `pub` publishes a message built from a
JSON spec until told to stop; `sub` waits for one message and dumps every field as JSON.

Run as `python test/ros_peer.py pub|sub TYPE TOPIC JSON_PATH [--timeout S]`, where TYPE is like
`vision_msgs/msg/Detection3DArray`. Both ends use reliable + transient-local QoS (depth 1) so
the order in which the two processes start does not matter.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np


def message_type(name: str):
    package, _, cls = name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), cls)


def to_plain(value):
    """A rosidl message (or field value) -> JSON-able nested dicts/lists, every field kept."""
    if hasattr(value, "get_fields_and_field_types"):
        fields = value.get_fields_and_field_types()
        return {name: to_plain(getattr(value, name)) for name in fields}
    if isinstance(value, (list, tuple, np.ndarray)) or type(value).__name__ == "array":
        return [to_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def from_plain(cls, data: dict):
    """Nested dicts/lists -> a message of type `cls` (the inverse of `to_plain`)."""
    msg = cls()
    for name, type_name in cls.get_fields_and_field_types().items():
        if name not in data:
            continue
        value = data[name]
        current = getattr(msg, name)
        if hasattr(current, "get_fields_and_field_types"):
            value = from_plain(type(current), value)
        elif type_name.startswith("sequence<") and "/" in type_name:
            inner = message_type(type_name[len("sequence<"):-1].replace("/", "/msg/", 1))
            value = [from_plain(inner, item) for item in value]
        setattr(msg, name, value)
    return msg


def main() -> int:
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("pub", "sub"))
    parser.add_argument("type")
    parser.add_argument("topic")
    parser.add_argument("json_path", type=Path)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    cls = message_type(args.type)
    rclpy.init()
    node = rclpy.create_node(f"ros_peer_{args.mode}")
    deadline = time.monotonic() + args.timeout
    try:
        if args.mode == "pub":
            publisher = node.create_publisher(cls, args.topic, qos)
            publisher.publish(from_plain(cls, json.loads(args.json_path.read_text())))
            # Stay alive (the sample is latched) until the subscriber has written its file.
            done = args.json_path.with_suffix(".received.json")
            while not done.exists() and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.05)
            return 0 if done.exists() else 1
        received = []
        node.create_subscription(cls, args.topic, received.append, qos)
        while not received and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        if not received:
            print(f"ros_peer: nothing received on {args.topic}", file=sys.stderr)
            return 1
        tmp = args.json_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(to_plain(received[0])))
        tmp.rename(args.json_path)
        return 0
    finally:
        node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())

"""Ctrl-C is always a clean exit of the detector: status 0 and no traceback, also when SIGINT
comes again while the node shuts down (`timeout -s INT ros2 launch ...`: the process group gets
it and launch forwards it), which used to end it with a KeyboardInterrupt traceback at
destroy_node() and launch's `process has died [exit code -2]`."""

from __future__ import annotations

import os
import time

import pytest
import rclpy
from ros_rig import DetectorProcess, Rig, interrupt_until_exit, write_random_checkpoint

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("period", [0.0, 0.01, 0.05])
def test_repeated_sigint_is_a_clean_exit(tmp_path, period):
    checkpoint = write_random_checkpoint(tmp_path / "model.pt")
    name = f"det_sigint_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    node = DetectorProcess(name, {"checkpoint": str(checkpoint), "device": "cpu",
                                  "cameras": ["CAM_FRONT"], "radars": ["RADAR_FRONT"]},
                           tmp_path)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        rig = Rig(context, name, ("CAM_FRONT",), ("RADAR_FRONT",))
        rig.wait_ready(node)
        rig.node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    code = interrupt_until_exit(node.proc, period=period)
    node.stop()
    log = node.log()
    assert code == 0, log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log

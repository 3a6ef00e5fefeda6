"""`make demo` (`imkd_ros.demo`): end to end on a minimal world with a random checkpoint (the
ROS path through `ros2 launch` scores what the offline evaluation scores, box for box), and
the reuse rules that keep a second run fast without ever trusting a half-built world or bag."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from ros_rig import write_random_checkpoint

from imkd_core.data.world.config import WorldConfig
from imkd_ros import demo

TINY = WorldConfig(scenes=1, samples_per_scene=2, seed=demo.DEMO_SEED, val_fraction=1.0,
                   image_width=64, image_height=36, lidar_azimuth_steps=90, sweeps=False)


def test_a_world_is_reused_only_when_complete_and_of_the_same_config(tmp_path):
    world = tmp_path / "world"
    assert demo.ensure_world(world, TINY, workers=1) is False
    assert demo.ensure_world(world, TINY, workers=1) is True
    other = WorldConfig(**{**TINY.to_dict(), "seed": TINY.seed + 1, "conditions": ("night",)})
    assert not demo.world_is_current(world, other)
    assert demo.ensure_world(world, other, workers=1) is False  # regenerated in place
    assert json.loads((world / "world.json").read_text())["config"] == other.to_dict()
    # half-built: tables without world.json, or world.json without tables
    (world / "world.json").unlink()
    assert not demo.world_is_current(world, other)
    assert demo.ensure_world(world, other, workers=1) is False
    (world / other.version / "sample.json").unlink()
    assert not demo.world_is_current(world, other)
    # nothing is left beside it from the replacements
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]


def test_bags_are_reused_only_for_the_same_world_and_when_complete(tmp_path):
    world, bags_dir = tmp_path / "world", tmp_path / "bag"
    demo.ensure_world(world, TINY, workers=1)
    bags, reused = demo.ensure_bags(world, bags_dir)
    assert not reused and [b.name for b in bags] == ["scene-0003"]
    assert (bags[0] / "metadata.yaml").is_file()
    assert demo.ensure_bags(world, bags_dir) == (bags, True)
    # a bag without metadata.yaml (a killed conversion) is not taken
    (bags[0] / "metadata.yaml").unlink()
    assert demo.ensure_bags(world, bags_dir) == (bags, False)
    # another world: its stamp no longer matches
    demo.ensure_world(world, WorldConfig(**{**TINY.to_dict(), "seed": 7}), workers=1)
    assert demo.ensure_bags(world, bags_dir)[1] is False
    assert demo.ensure_bags(world, bags_dir)[1] is True
    # no stamp (removed first when a conversion starts): converted again
    (bags_dir / "source.json").unlink()
    assert demo.ensure_bags(world, bags_dir)[1] is False


def test_a_missing_default_checkpoint_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "SHIPPED_CHECKPOINT", tmp_path / "models" / "none.pt")
    assert demo.main(["--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert f"no shipped model at {tmp_path / 'models' / 'none.pt'}; pass --checkpoint" in err


def _results(path: Path) -> dict:
    return json.loads(path.read_text())["results"]


@pytest.mark.ros
@pytest.mark.slow
def test_the_demo_end_to_end(tmp_path, capsys):
    pytest.importorskip("ros2launch", reason="`ros2 launch` is not importable here")
    assert shutil.which("ros2", path=str(Path(sys.executable).parent)), "no ros2 in the venv"
    checkpoint = write_random_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "demo"
    code = demo.main(["--checkpoint", str(checkpoint), "--out", str(out), "--scenes", "1",
                      "--samples-per-scene", "3", "--image-size", "192x108",
                      "--lidar-azimuth-steps", "180", "--workers", "1",
                      "--domain-id", os.environ["ROS_DOMAIN_ID"]])
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 0, printed + captured.err + (out / "launch.log").read_text()
    assert f"report {out / 'report.md'}" in printed
    assert re.search(r"NDS \d\.\d{4} .*mAP \d\.\d{4}, p50 end-to-end latency \d+\.\d ms",
                     printed), printed

    ros = json.loads((out / "ros" / "metrics.json").read_text())
    offline = json.loads((out / "offline" / "metrics.json").read_text())
    assert abs(ros["NDS"] - offline["NDS"]) <= 1e-3
    assert ros["num_pred_boxes"] == offline["num_pred_boxes"] > 0
    # box for box: what the node published is what the offline pipeline detected
    a, b = _results(out / "ros" / "results_val.json"), _results(out / "offline" /
                                                                 "results_val.json")
    assert sorted(a) == sorted(b) and len(a) == 3
    for token in a:
        assert len(a[token]) == len(b[token])
        for x, y in zip(a[token], b[token]):
            assert x["detection_name"] == y["detection_name"]
            for key in ("translation", "size", "rotation", "velocity"):
                np.testing.assert_allclose(x[key], y[key], atol=1e-6)

    report = (out / "report.md").read_text()
    assert "## Metrics: ROS path vs offline" in report and "**PASS**" in report
    for name in ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE", "AP car"):
        assert re.search(rf"^\| {name} \| [\d.]+ \| [\d.]+ \| -?[\d.]+ \|$", report, re.M), name
    assert "| scene-0003 | day | 3 |" in report
    for stage in ("inference", "end_to_end"):
        assert re.search(rf"^\| {stage} \| 3 \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$", report,
                         re.M), stage
    pictures = re.findall(r"\]\(([\w.-]+\.png)\)", report)
    assert {"ap_per_class.png", "cameras_scene-0003.png", "bev_scene-0003.png"} <= set(pictures)
    for name in pictures:
        assert (out / name).stat().st_size > 1000, name
    log = (out / "launch.log").read_text()
    assert "Traceback" not in log and "detector-1]: process has finished cleanly" in log

"""The paper's setting, r50_256x704 (ResNet-50 + FPN, six cameras at 256x704, 128 x 128 BEV),
end to end on a generated world: one real IMKD student step through `imkd train`, then
`imkd evaluate` of its checkpoint. Not trained to convergence (that needs a GPU, README); this
shows that the configuration a GPU run uses builds, steps, checkpoints and scores."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from imkd_core.checkpoint import load_checkpoint, save_checkpoint
from imkd_core.cli import main
from imkd_core.config import config_from_dict, load_model_config
from imkd_core.data.world import WorldConfig, generate_world
from imkd_core.models.detector import build_model

# The smallest world the trainer accepts (a scene has at least 2 keyframes): one train and one
# val scene; images at 704x396, the r50 input width at nuScenes' 16:9 (1600x900 x 0.44), so the
# preprocessor crops 256 rows without upscaling.
R50_WORLD = WorldConfig(scenes=2, samples_per_scene=2, seed=7, val_fraction=0.5,
                        image_width=704, image_height=396, lidar_azimuth_steps=180, density=0.5)
KD_LOSSES = {"stage1": "stage1", "intensity_prediction": "intensity", "stage2": "stage2",
             "response": "response", "depth": "depth"}  # distill.<stage> -> loss/<name>


def _step_records(run) -> list[dict]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "event" not in r]


@pytest.mark.slow
def test_r50_student_step_then_evaluation(tmp_path):
    times = {}
    t = time.perf_counter()
    world = generate_world(tmp_path / "world" / "nuscenes", R50_WORLD, workers=1)
    times["world"] = time.perf_counter() - t

    # The teacher: an r50 LiDAR teacher at its initial weights (training one costs a step more
    # and changes nothing in the student's path: every KD loss still runs against it).
    config = load_model_config("r50_256x704")
    teacher = tmp_path / "teacher.pt"
    save_checkpoint(teacher, build_model("teacher", config), config)

    # One step at batch 1: the train split has 2 keyframes, so the run checkpoints after its
    # first step (--save-every 1) and is stopped there as Ctrl-C would (SIGTERM), which leaves a
    # resumable run. A subprocess, for its peak RSS alone.
    run = tmp_path / "student"
    t = time.perf_counter()
    with open(tmp_path / "train.log", "w+") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imkd_core.cli", "train", "student", "--config",
             "r50_256x704", "--dataroot", str(world), "--teacher", str(teacher), "--out",
             str(run), "--no-cache", "--quiet", "--epochs", "1", "--save-every", "1",
             "--set", "train.batch_size=1", "--set", "train.num_workers=0"],
            stdout=out, stderr=subprocess.STDOUT)
        last = run / "checkpoints" / "last.pt"
        deadline = time.monotonic() + 600
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if last.exists() else signal.SIGKILL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        log = out.read()
    times["train"] = time.perf_counter() - t
    # 130: stopped after the first step; 0: a fast machine finished the second one first
    assert proc.returncode in (0, 130), log
    assert last.exists(), log

    first = _step_records(run)[0]
    losses = {k: v for k, v in first.items() if k.startswith("loss/")}
    assert all(math.isfinite(v) for v in losses.values()), losses
    expected = {f"loss/{name}" for stage, name in KD_LOSSES.items()
                if getattr(config.distill, stage).enabled}
    assert expected <= set(losses), (expected, losses)
    assert math.isfinite(first["grad_norm"]) and first["grad_norm"] > 0

    payload = load_checkpoint(last)
    saved = payload["config"]
    assert payload["kind"] == "student" and saved["name"] == "r50_256x704"
    assert saved["camera"]["backbone"]["depth"] == 50
    assert (saved["image"]["height"], saved["image"]["width"]) == (256, 704)
    assert len(saved["image"]["cameras"]) == 6
    assert payload["extra"]["position"]["step"] >= 1
    # a real step: the weights moved from the run's initial ones (train.seed, then build_model)
    torch.manual_seed(config_from_dict(saved).train.seed)
    initial = build_model("student", config_from_dict(saved)).state_dict()
    trained = payload["state_dict"]
    moved = {k for k, v in initial.items() if v.is_floating_point()
             and not torch.equal(v, trained[k])}
    for part in ("camera.backbone.", "camera.depth", "radar.", "fusion.", "head_net."):
        assert any(k.startswith(part) for k in moved), part
    del initial, trained, payload

    t = time.perf_counter()
    evaluation = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(last), "--dataroot", str(world), "--split",
                 "val", "--out", str(evaluation), "--no-cache", "--quiet"]) == 0
    times["evaluate"] = time.perf_counter() - t
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert {"NDS", "mAP", "mATE", "per_class"} <= set(metrics)
    assert 0.0 <= metrics["NDS"] <= 1.0 and 0.0 <= metrics["mAP"] <= 1.0  # untrained: ~0
    assert metrics["num_samples"] == R50_WORLD.samples_per_scene
    assert (evaluation / "report.md").is_file()

    rss_gib = usage.ru_maxrss / 2**20  # KiB on Linux
    print(f"\nr50_256x704: world {times['world']:.0f} s, train (one step {first['step_s']:.0f} s)"
          f" {times['train']:.0f} s, evaluate {times['evaluate']:.0f} s; training process peak "
          f"RSS {rss_gib:.1f} GiB; NDS {metrics['NDS']:.4f}")

"""`imkd train` under torchrun: 2 processes x batch 1 train the parameters of 1 process x batch 2
(sharded sampler, global loss normalisers, synchronised BatchNorm, averaged gradients), and a
2-process run killed mid-epoch resumes to the same weights.

Both sides run in float64 (`ddp_float64.py` says why: float32 rounding of a different summation
order is amplified by AdamW, the maths is not). Augmentation stays on: each item's is drawn from
(seed, epoch, index), whatever rank loads it. The teacher is the model trained here; the student
shares the loop, the DDP wrapper and the normalisers (`device.batch_normaliser`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_world import TINY_WORLD

from imkd_core.checkpoint import load_checkpoint
from imkd_core.cli import main
from imkd_core.data.dataset import EpochSampler
from imkd_core.data.world import generate_world

DRIVER = str(Path(__file__).with_name("ddp_float64.py"))
# 4 train keyframes, 2 epochs: 2 steps of 2 samples per epoch; a smaller teacher for speed
ARGS = ["train", "teacher", "--epochs", "2", "--seed", "5", "--no-cache", "--quiet",
        "--set", "train.warmup_steps=2", "--set", "train.ema_decay=0.5",
        "--set", "lidar.bev_backbone.channels=[16,32]",
        "--set", "lidar.bev_backbone.out_channels=16", "--set", "head.channels=16"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    config = dataclasses.replace(TINY_WORLD, scenes=1, samples_per_scene=4, val_fraction=0.0)
    return generate_world(tmp_path_factory.mktemp("world") / "nuscenes", config, workers=1)


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(Path(__file__).parent),
                                            os.environ.get("PYTHONPATH", "")]))


def _run(args: list[str], processes: int) -> subprocess.Popen:
    launcher = [sys.executable, DRIVER] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
        "--standalone", DRIVER]
    # a session of its own: a kill reaches torchrun's workers too
    return subprocess.Popen([*launcher, *args], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def _steps(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in records if "event" not in r]


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    pa, pb = load_checkpoint(a), load_checkpoint(b)
    for weights in ("state_dict", "train_weights"):  # the EMA, and the trained weights
        wa = pa[weights] if weights == "state_dict" else pa["extra"][weights]
        wb = pb[weights] if weights == "state_dict" else pb["extra"][weights]
        assert wa.keys() == wb.keys()
        for key, value in wa.items():  # BatchNorm running statistics included
            torch.testing.assert_close(wb[key], value, rtol=0, atol=atol, msg=key)


def test_sampler_shards_are_the_single_process_batches():
    order = list(EpochSampler(5, seed=2, epoch=1))
    shards = [list(EpochSampler(5, seed=2, epoch=1, rank=r, world_size=2)) for r in range(2)]
    assert [len(s) for s in shards] == [3, 3]  # padded by wrapping: equal step counts
    for k in range(2):  # step k at batch 1 per rank = positions 2k, 2k+1 of the order
        assert {shards[0][k], shards[1][k]} == set(order[2 * k: 2 * k + 2])
    assert shards[0][2] == order[4] and shards[1][2] == order[0]
    resumed = list(EpochSampler(5, seed=2, epoch=1, start=1, rank=1, world_size=2))
    assert resumed == shards[1][1:]
    with pytest.raises(ValueError, match="rank 2"):
        EpochSampler(5, seed=2, rank=2, world_size=2)


@pytest.mark.slow
def test_two_processes_batch_one_train_as_one_process_batch_two(world, tmp_path, capsys):
    common = [*ARGS, "--dataroot", str(world)]
    ref, ddp = tmp_path / "ref", tmp_path / "ddp"
    single = _run([*common, "--set", "train.batch_size=2", "--out", str(ref)], processes=1)
    _finish(single)

    # the 2-process run is killed in epoch 2, after a mid-epoch checkpoint, then resumed
    proc = _run([*common, "--set", "train.batch_size=1", "--save-every", "1", "--out",
                 str(ddp)], processes=2)
    deadline = time.monotonic() + 400
    while not ((ddp / "log.jsonl").exists() and len(_steps(ddp)) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (ddp / "checkpoints" / "epoch_002.pt").exists()
    position = load_checkpoint(ddp / "checkpoints" / "last.pt")["extra"]["position"]
    assert position["epoch"] == 1 and position["step"] < 4
    # epoch 1 as it was written before the kill: the same weights as one process x batch 2
    _assert_same_weights(ref / "checkpoints" / "epoch_001.pt",
                         ddp / "checkpoints" / "epoch_001.pt", atol=1e-9)

    # a resume needs the run's number of processes
    assert main(["train", "teacher", "--resume", str(ddp), "--quiet"]) == 2
    assert "trained by 2 process(es), resumed by 1" in capsys.readouterr().err
    out = _finish(_run(["train", "teacher", "--resume", str(ddp), "--quiet"], processes=2))
    assert out.count("imkd train: done") == 1  # rank 0 speaks for the job

    _assert_same_weights(ref / "checkpoints" / "last.pt", ddp / "checkpoints" / "last.pt",
                         atol=1e-9)
    got, want = _steps(ddp), _steps(ref)
    assert [r["step"] for r in got] == [1, 2, 3, 4]  # the log reads as one run
    for g, w in zip(got, want):  # the logged losses are the whole batch's
        # (the heatmap loss is summed in float32: its sum order shows at 1e-7)
        assert g["loss/total"] == pytest.approx(w["loss/total"], rel=1e-6)
        assert g["grad_norm"] == pytest.approx(w["grad_norm"], rel=1e-7)
    assert json.loads((ddp / "run.json").read_text())["world_size"] == 2
    assert list((ddp / "tensorboard").glob("events.out.tfevents.*"))

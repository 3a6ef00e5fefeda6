"""`imkd train`: a run directory that resumes exactly after SIGKILL, the learning-rate schedule,
a distillation run, and the clear errors for bad input (wrong teacher, unknown config key)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tiny_world import make_tiny_world

from imkd_core.checkpoint import load_checkpoint, save_checkpoint
from imkd_core.cli import main
from imkd_core.config import load_model_config
from imkd_core.models.detector import build_model
from imkd_core.train.loop import lr_factor

# 3 train keyframes at batch 1: 3 steps per epoch, 6 in all, a checkpoint after every step;
# with an EMA of the weights, so its state is resumed too
TRAIN_ARGS = ["train", "teacher", "--epochs", "2", "--seed", "5", "--save-every", "1",
              "--set", "train.batch_size=1", "--set", "train.warmup_steps=2",
              "--set", "train.ema_decay=0.9", "--quiet"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_tiny_world(tmp_path_factory.mktemp("world") / "nuscenes")


def _imkd(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # a fixed thread count: bit-identical sums
    return subprocess.Popen([sys.executable, "-m", "imkd_core.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def _steps(run) -> list[dict]:
    """The per-step records without their timings."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in records
            if "event" not in r]


def test_a_run_killed_mid_epoch_resumes_to_identical_weights(world, tmp_path):
    common = [*TRAIN_ARGS, "--dataroot", str(world), "--cache-dir", str(tmp_path / "cache")]
    _finish(_imkd([*common, "--out", str(tmp_path / "ref")]))

    killed = tmp_path / "killed"
    proc = _imkd([*common, "--out", str(killed)])
    deadline = time.monotonic() + 120
    while not ((killed / "log.jsonl").exists() and len(_steps(killed)) >= 4):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # in epoch 2 (steps 4-6), after a mid-epoch checkpoint
    proc.wait()
    assert not (killed / "checkpoints" / "epoch_002.pt").exists()
    position = load_checkpoint(killed / "checkpoints" / "last.pt")["extra"]["position"]
    assert position["epoch"] == 1 and position["step"] < 6

    _finish(_imkd(["train", "teacher", "--resume", str(killed), "--quiet"]))
    ref = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")
    got = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert ref["state_dict"].keys() == got["state_dict"].keys()
    for weights in ("state_dict", "train_weights"):  # the EMA, and the weights it follows
        ref_w = ref[weights] if weights == "state_dict" else ref["extra"][weights]
        got_w = got[weights] if weights == "state_dict" else got["extra"][weights]
        for key, value in ref_w.items():
            assert torch.equal(got_w[key], value), (weights, key)
    key = "encoder.pillars.mlp.0.weight"  # the EMA is on: it lags the trained weights
    assert not torch.equal(ref["state_dict"][key], ref["extra"]["train_weights"][key])
    assert got["extra"]["position"] == {"epoch": 2, "step_in_epoch": 0, "step": 6}
    assert _steps(killed) == _steps(tmp_path / "ref")  # the log reads as one run
    assert (killed / "command.txt").read_text().count("\n") == 2
    for name in ("config.yaml", "run.json", "checkpoints/epoch_001.pt"):
        assert (killed / name).is_file()


def test_lr_warms_up_then_decays_to_the_floor():
    f = [lr_factor(s, total=100, warmup=10, min_ratio=0.01) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))
    assert f[100] == pytest.approx(0.01)


def test_student_distils_from_a_teacher_and_refuses_a_student_as_teacher(world, tmp_path,
                                                                          capsys):
    config = load_model_config("tiny")
    torch.manual_seed(0)
    teacher, student = tmp_path / "teacher.pt", tmp_path / "student.pt"
    save_checkpoint(teacher, build_model("teacher", config), config)
    save_checkpoint(student, build_model("student", config), config)
    common = ["train", "student", "--dataroot", str(world), "--no-cache", "--quiet",
              "--epochs", "1", "--set", "train.batch_size=3"]
    assert main([*common, "--out", str(tmp_path / "bad"), "--teacher", str(student)]) == 2
    assert "a student checkpoint; --teacher needs a teacher checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

    assert main([*common, "--out", str(tmp_path / "run"), "--teacher", str(teacher)]) == 0
    (step,) = _steps(tmp_path / "run")
    assert {"loss/stage1", "loss/stage2", "loss/intensity", "loss/depth"} <= set(step)
    payload = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert payload["kind"] == "student" and "imkd_loss" in payload["extra"]


def test_bad_settings_give_one_clear_message(world, tmp_path, capsys):
    base = ["train", "teacher", "--dataroot", str(world), "--out", str(tmp_path / "r")]
    assert main([*base, "--set", "train.no_such_key=1"]) == 2
    assert "override 'train.no_such_key': unknown key 'no_such_key'" in capsys.readouterr().err
    assert main([*base, "--set", "train.lr"]) == 2
    assert "is not key=value" in capsys.readouterr().err
    assert main([*base, "--split", "mini_val"]) == 2
    assert "no keyframes of split 'mini_val'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # bad input leaves no run directory behind
    assert main([*base, "--teacher", str(tmp_path / "missing.pt")]) == 2
    assert "--teacher is for `imkd train student`" in capsys.readouterr().err
    student = [*base, "--out", str(tmp_path / "s")]
    student[1] = "student"
    assert main([*student, "--teacher", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt: cannot load" in capsys.readouterr().err
    assert main(["train", "teacher", "--resume", str(tmp_path / "r"), "--seed", "1"]) == 2
    assert "drop --seed" in capsys.readouterr().err
    assert main(["train", "teacher", "--resume", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_eval_every_keeps_the_best_epoch(world, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "teacher", "--dataroot", str(world), "--out", str(run), "--no-cache",
                 "--quiet", "--epochs", "2", "--set", "train.batch_size=3",
                 "--eval-every", "1"]) == 0
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if r.get("event") == "eval"]
    assert [e["epoch"] for e in evals] == [0, 1] and all(e["split"] == "val" for e in evals)
    best = max(range(2), key=lambda i: (evals[i]["NDS"], -i)) + 1  # the first of equals
    ckpt = run / "checkpoints"
    assert (ckpt / "best.pt").read_bytes() == (ckpt / f"epoch_{best:03d}.pt").read_bytes()
    assert load_checkpoint(ckpt / "last.pt")["extra"]["best"] == {"NDS": evals[best - 1]["NDS"],
                                                                 "epoch": best}
    assert (run / "eval" / "epoch_002" / "report.md").is_file()


def test_a_full_disk_while_checkpointing_leaves_a_resumable_run(world, tmp_path, capsys,
                                                              monkeypatch):
    import errno

    import imkd_core.checkpoint

    def disk_full(obj, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    run = tmp_path / "run"
    monkeypatch.setattr(imkd_core.checkpoint.torch, "save", disk_full)
    assert main(["train", "teacher", "--dataroot", str(world), "--out", str(run), "--no-cache",
                 "--quiet", "--epochs", "1", "--set", "train.batch_size=3"]) == 2
    assert "cannot write the checkpoint (No space left on device)" in capsys.readouterr().err
    assert list((run / "checkpoints").iterdir()) == []  # no half-written file left behind
    monkeypatch.undo()
    assert main(["train", "teacher", "--resume", str(run), "--quiet"]) == 0
    assert (run / "checkpoints" / "last.pt").is_file()


def test_training_on_a_bag_with_tensorboard_events(world, tmp_path, capsys):
    from imkd_ros.nuscenes2bag import convert  # a test may use the ROS side to make a bag

    bag = tmp_path / "bag"
    convert(world, bag, progress=False)
    run = tmp_path / "run"
    common = ["train", "teacher", "--bag", str(bag), "--cache-dir", str(tmp_path / "cache"),
              "--quiet", "--epochs", "1", "--set", "train.batch_size=3"]
    assert main([*common, "--out", str(run), "--eval-every", "1"]) == 2
    assert "--eval-every needs --dataroot" in capsys.readouterr().err
    assert main([*common, "--out", str(run)]) == 0
    settings = json.loads((run / "run.json").read_text())
    assert settings["bags"] == [str(bag.resolve())] and settings["dataroot"] is None
    assert len(_steps(run)) == 2  # the bag's 6 keyframes (both scenes) at batch 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/total")] == [1, 2]
    assert "epoch/data_wait_share" in events.Tags()["scalars"]

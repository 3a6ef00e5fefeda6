"""`imkd evaluate --robustness`: every variant is the one pipeline on the keyframe with a
sensor taken out, each keyframe decoded once; the all-sensors row is evaluate_checkpoint's."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from tiny_world import make_tiny_world

from imkd_core.checkpoint import save_checkpoint
from imkd_core.cli import main
from imkd_core.config import apply_overrides, load_model_config
from imkd_core.data.nuscenes import NuScenesReader
from imkd_core.evaluation import robustness as robustness_module
from imkd_core.evaluation.robustness import ALL_SENSORS, RADARS_OUT, camera_out
from imkd_core.evaluation.runner import evaluate_checkpoint
from imkd_core.models.detector import build_model
from imkd_core.pipeline import DetectorPipeline
from imkd_core.sample import CAMERA_NAMES


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_tiny_world(tmp_path_factory.mktemp("world") / "nuscenes")


def _checkpoint(path, kind: str):
    """A fresh tiny model scoring every cell (at most 40 boxes): different inputs show."""
    config = apply_overrides(load_model_config("tiny"),
                             ["head.score_threshold=0.0", "head.max_detections=40"])
    torch.manual_seed(0)
    save_checkpoint(path, build_model(kind, config), config)
    return path


@pytest.mark.slow  # 27 pipeline calls: about 20 s on an idle 2-core CPU, minutes under load
def test_robustness_table_one_pass(world, tmp_path, monkeypatch):
    checkpoint = _checkpoint(tmp_path / "student.pt", "student")
    decoded: Counter[str] = Counter()
    get_sample = NuScenesReader.get_sample

    def counting_get_sample(self, token, *args, **kwargs):
        decoded[token] += 1
        return get_sample(self, token, *args, **kwargs)

    calls = []  # (token, cameras fed, radars fed, boxes) per pipeline call
    call = DetectorPipeline.__call__

    def recording_call(self, sample):
        boxes = call(self, sample)
        calls.append((sample.token, tuple(sample.cameras), len(sample.radars), boxes))
        return boxes

    returned = {}
    api = robustness_module.robustness

    def capturing(*args, **kwargs):
        returned.update(api(*args, **kwargs))
        return returned

    monkeypatch.setattr(NuScenesReader, "get_sample", counting_get_sample)
    monkeypatch.setattr(DetectorPipeline, "__call__", recording_call)
    monkeypatch.setattr(robustness_module, "robustness", capturing)
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--dataroot", str(world),
                 "--out", str(out), "--no-cache", "--quiet", "--device", "cpu",
                 "--robustness"]) == 0

    # each val keyframe decoded once for all eight variants, each variant run on each
    assert len(decoded) == 3 and set(decoded.values()) == {1}
    assert len(calls) == 3 * 8
    fed = Counter((cams, radars) for _, cams, radars, _ in calls)
    assert fed[(CAMERA_NAMES, 5)] == 3 and fed[(CAMERA_NAMES, 0)] == 3  # all; radars out
    for name in CAMERA_NAMES:
        assert fed[(tuple(c for c in CAMERA_NAMES if c != name), 5)] == 3
    # a sensor out is not a no-op: the detections change
    first = [c for c in calls if c[0] == calls[0][0]]
    by_input = {(cams, radars): boxes for _, cams, radars, boxes in first}
    full = by_input[(CAMERA_NAMES, 5)]
    no_front = by_input[(CAMERA_NAMES[1:], 5)]
    assert CAMERA_NAMES[0] == "CAM_FRONT"
    assert not np.array_equal(full.params, no_front.params)
    assert not np.array_equal(full.params, by_input[(CAMERA_NAMES, 0)].params)

    table = json.loads((out / "robustness" / "robustness.json").read_text())
    assert table == json.loads(json.dumps(returned))  # the API returns what it wrote
    rows = {row["variant"]: row for row in table["rows"]}
    assert list(rows) == [ALL_SENSORS, *map(camera_out, CAMERA_NAMES), "mean_camera_out",
                          RADARS_OUT, f"{ALL_SENSORS}/night"]  # val: one night scene
    assert rows[ALL_SENSORS]["dNDS"] == 0.0
    assert rows[camera_out("CAM_FRONT")]["row"] == "CAM_FRONT out (front camera out)"
    assert table["front_camera_out"] == camera_out("CAM_FRONT")
    singles = [rows[camera_out(c)]["NDS"] for c in CAMERA_NAMES]
    assert rows["mean_camera_out"]["NDS"] == pytest.approx(np.mean(singles))
    for row in table["rows"]:
        assert row["dNDS"] == pytest.approx(row["NDS"] - rows[ALL_SENSORS]["NDS"])
    assert rows[f"{ALL_SENSORS}/night"]["keyframes"] == 3

    # the all-sensors row is the normal report of the same pass, and evaluate_checkpoint's
    report = json.loads((out / "metrics.json").read_text())
    assert report["NDS"] == rows[ALL_SENSORS]["NDS"] and list(report["subsets"]) == ["night"]
    alone = evaluate_checkpoint(checkpoint, world, tmp_path / "alone", "val", device="cpu",
                                quiet=True)
    assert alone["NDS"] == rows[ALL_SENSORS]["NDS"] and alone["mAP"] == rows[ALL_SENSORS]["mAP"]
    # a random model scores ~0 everywhere: the detections themselves are the same too
    assert json.loads((out / "results_val.json").read_text()) == \
        json.loads((tmp_path / "alone" / "results_val.json").read_text())

    page = (out / "robustness" / "robustness.md").read_text()
    assert f"| all sensors | 3 | {rows[ALL_SENSORS]['NDS']:.4f} |" in page
    assert "+0.0000 |" in page and "| radars out (camera only) |" in page
    assert "| night (all sensors) | 3 |" in page
    # written aside and renamed; the per-variant devkit folders are gone
    assert sorted(p.name for p in (out / "robustness").iterdir()) == ["robustness.json",
                                                                      "robustness.md"]


def test_teacher_is_refused(world, tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path / "teacher.pt", "teacher")
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--dataroot", str(world),
                 "--out", str(out), "--no-cache", "--quiet", "--device", "cpu",
                 "--robustness"]) == 2
    err = capsys.readouterr().err
    assert "teacher.pt: a teacher checkpoint reads LiDAR only" in err
    assert not out.exists()  # refused before anything was written

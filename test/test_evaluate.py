"""`imkd evaluate`: the official results JSON is DetectorPipeline run by hand on the same
keyframes; metrics.json and report.md carry the devkit's numbers."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_world import make_tiny_world

from imkd_core.checkpoint import save_checkpoint
from imkd_core.cli import main
from imkd_core.config import apply_overrides, load_model_config
from imkd_core.data.nuscenes import NuScenesReader
from imkd_core.data.options import ReaderOptions
from imkd_core.evaluation.metrics import boxes_to_submission
from imkd_core.evaluation.runner import scene_conditions
from imkd_core.models.detector import build_model
from imkd_core.pipeline import DetectorPipeline


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_tiny_world(tmp_path_factory.mktemp("world") / "nuscenes")


@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_results_json_is_the_pipeline_run_by_hand(world, tmp_path, kind):
    # every cell above score 0 is a detection: the JSON has hundreds of boxes to compare
    config = apply_overrides(load_model_config("tiny"), ["head.score_threshold=0.0"])
    torch.manual_seed(1)
    checkpoint = tmp_path / f"{kind}.pt"
    save_checkpoint(checkpoint, build_model(kind, config), config)
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--dataroot", str(world),
                 "--out", str(out), "--no-cache", "--quiet", "--device", "cpu",
                 "--by-condition"]) == 0

    pipe = DetectorPipeline.from_checkpoint(checkpoint, device="cpu")
    reader = NuScenesReader(world, options=ReaderOptions(load_lidar=kind == "teacher"))
    by_hand = {}
    for token in reader.sample_tokens(split="val"):
        sample = reader.get_sample(token)
        by_hand[token] = boxes_to_submission(token, pipe(sample), sample.T_map_ego)
    submitted = json.loads((out / "results_val.json").read_text())
    assert submitted["results"] == json.loads(json.dumps(by_hand))
    assert sum(map(len, by_hand.values())) > 100
    assert submitted["meta"]["use_lidar"] == (kind == "teacher")

    metrics = json.loads((out / "metrics.json").read_text())
    summary = json.loads((out / "metrics_summary.json").read_text())
    assert metrics["NDS"] == pytest.approx(summary["nd_score"])
    assert metrics["mAP"] == pytest.approx(summary["mean_ap"])
    assert metrics["kind"] == kind and metrics["num_samples"] == 3
    report = (out / "report.md").read_text()
    assert f"| {metrics['NDS']:.4f} | {metrics['mAP']:.4f} |" in report
    assert all(f"| {name} |" in report for name in metrics["per_class"])
    # the overlays: three keyframes spread over the split; cameras only where the model read
    # them (the teacher reads LiDAR alone)
    overlays = [f"sample_{k}_bev.png" for k in range(3)]
    if kind == "student":
        overlays += [f"sample_{k}_cameras.png" for k in range(3)]
    assert sorted(p.name for p in out.glob("sample_*.png")) == sorted(overlays)
    for png in ("ap_per_class.png", "pr_car.png", "pr_pedestrian.png", *overlays):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"({png})" in report
    assert not list(out.glob(".*.tmp"))  # written aside and renamed
    # the val split of the tiny world is one night scene: its subset is the whole split
    (night,) = metrics["subsets"].values()
    assert list(metrics["subsets"]) == ["night"] and night["num_samples"] == 3
    assert night["NDS"] == metrics["NDS"] and night["per_class"] == metrics["per_class"]
    assert "| night | 3 |" in report


def test_scene_conditions_from_descriptions():
    assert scene_conditions("Night, cruising, parked cars") == ["night"]
    assert scene_conditions("Rain, ego waits at a crossing") == ["rain"]
    assert scene_conditions("night, rain, peds") == ["night", "rain"]  # counts in both
    assert scene_conditions("ego pulls away, 3 lanes each way") == ["day"]


def test_bad_input_names_what_is_wrong(world, tmp_path, capsys):
    args = ["evaluate", "--dataroot", str(world), "--out", str(tmp_path / "e"), "--no-cache"]
    assert main([*args, "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt: no such file" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main([*args, "--checkpoint", str(tmp_path / "junk.pt")]) == 2
    assert "junk.pt: not a readable checkpoint" in capsys.readouterr().err

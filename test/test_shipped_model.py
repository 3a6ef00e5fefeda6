"""The models shipped under models/ (issue 15): small enough for git, loadable without running
pickled code, installed where the node's default `checkpoint` points, and (slow) reproducing
the val metrics their card (models/imkd_tiny_student.json) records on its check world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imkd_core.checkpoint import load_checkpoint
from imkd_core.data.world import WorldConfig, generate_world
from imkd_core.evaluation.runner import evaluate_checkpoint
from imkd_core.export import file_sha256

MODELS = Path(__file__).resolve().parents[1] / "models"
CARD = MODELS / "imkd_tiny_student.json"
MAX_BYTES = 10 * 2**20


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads(CARD.read_text())


def test_shipped_files_are_small_and_load_weights_only(card):
    for role, kind in (("student", "student"), ("teacher", "teacher")):
        entry = card[role]
        path = MODELS / entry["file"]
        assert path.stat().st_size <= MAX_BYTES, f"{path}: over {MAX_BYTES} bytes"
        assert file_sha256(path) == entry["sha256"], f"{path} differs from its card"
        payload = load_checkpoint(path)  # torch.load(weights_only=True)
        assert payload["kind"] == kind and payload["config"]["name"] == "tiny"
        assert "optimizer" not in payload["extra"], f"{path} carries training state"


def test_the_node_default_is_the_installed_student(card):
    """`package://imkd_ros/models/...` (parameters.SHIPPED_STUDENT, the launch file's and
    config/detector.yaml's default) resolves to the installed copy of the shipped file."""
    pytest.importorskip("rclpy", reason="the node's parameters need rclpy")
    from imkd_ros.parameters import SHIPPED_STUDENT, DetectorParams

    assert SHIPPED_STUDENT.endswith("/" + card["student"]["file"])
    params = DetectorParams.from_values({"checkpoint": SHIPPED_STUDENT})
    assert file_sha256(params.checkpoint) == card["student"]["sha256"]


@pytest.mark.slow
def test_shipped_student_reproduces_its_check_metrics(card, tmp_path):
    check = card["check"]
    world = generate_world(tmp_path / "world", WorldConfig.from_dict(check["world"]), workers=2)
    metrics = evaluate_checkpoint(MODELS / card["student"]["file"], world, tmp_path / "eval",
                                  split=check["split"], device="cpu", quiet=True)
    for key in ("NDS", "mAP"):
        assert metrics[key] == pytest.approx(check[key], abs=1e-3), key

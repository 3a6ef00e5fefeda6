"""IMKD distillation: the intensity map, LiDAR depth targets, and the losses of the stages —
each sends gradient into the student (where it should) and none into the teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imkd_core.config import IntensityMapConfig, apply_overrides, load_model_config
from imkd_core.data.synthetic import make_sample
from imkd_core.distill import (
    IMKDLoss,
    feature_intensity_map,
    intensity_map,
    lidar_depth_targets,
    teacher_loss,
)
from imkd_core.geometry import BEVGrid, project_to_image
from imkd_core.models import Student, Teacher, freeze
from imkd_core.preprocess import AugParams, Preprocessor, collate


@pytest.fixture(scope="module")
def tiny():
    return load_model_config("tiny")


@pytest.fixture(scope="module")
def train_batch(tiny):
    prep = Preprocessor(tiny, train=True, with_lidar=True)
    rng = np.random.default_rng(0)
    return collate([prep(make_sample(i), rng=rng) for i in range(2)])


# -------------------------------------------------------------------------------- intensity map
def test_intensity_map_is_per_cell_max_normalised_and_dilated():
    grid = BEVGrid(cell=1.0, x_min=-4, x_max=4, y_min=-4, y_max=4)
    pts = torch.tensor([[[0.2, 0.3, 1.0, 51.0, 0.0],
                         [0.7, 0.9, 1.0, 204.0, 0.0],  # same cell, larger: the max wins
                         [-3.5, 2.5, 1.0, 255.0, 0.0],
                         [2.5, -2.5, 0.0, 255.0, 0.0],  # below min_height: ignored
                         [9.0, 0.0, 1.0, 255.0, 0.0],  # outside the grid
                         [1.5, 1.5, 1.0, 255.0, 0.0]]])  # padding (mask False)
    mask = torch.tensor([[True, True, True, True, True, False]])
    cfg = IntensityMapConfig(normalizer=255.0, gamma=1.0, dilation=0, min_height=0.3)
    imap = intensity_map(pts, mask, grid, cfg)
    assert imap.shape == (1, 1, 8, 8)
    assert float(imap[0, 0, 4, 4]) == pytest.approx(0.8)
    assert float(imap[0, 0, 6, 0]) == pytest.approx(1.0)
    assert int((imap > 0).sum()) == 2
    gamma = intensity_map(pts, mask, grid, IntensityMapConfig(gamma=0.5, dilation=0,
                                                              min_height=0.3))
    assert float(gamma[0, 0, 4, 4]) == pytest.approx(0.8**0.5)
    dilated = intensity_map(pts, mask, grid, IntensityMapConfig(gamma=1.0, dilation=1,
                                                                min_height=0.3))
    assert float(dilated[0, 0, 3:6, 3:6].min()) == pytest.approx(0.8)
    assert float(dilated[0, 0, 5, 1]) == pytest.approx(1.0)  # neighbour of (6, 0)
    empty = intensity_map(pts, torch.zeros_like(mask), grid, cfg)
    assert (empty == 0).all()


# -------------------------------------------------------------------------------- depth targets
@pytest.mark.parametrize("aug", [AugParams(),
                                 AugParams(image_scale=1.05, crop_dx=6, image_flip=True,
                                           bev_rotation=0.5, bev_scale=1.05, bev_flip_y=True)])
def test_lidar_depth_targets_match_projection(tiny, aug):
    sample = make_sample(0, num_objects=0, image_hw=(450, 800))
    cam = sample.cameras["CAM_FRONT"]
    p_ego = np.array([[20.0, 1.0, 0.8], [35.0, -6.0, 0.3]])
    uv, depth = project_to_image(p_ego, cam.T_ego_cam, cam.K)
    sample.lidar.points = np.array([[*p, 100.0, 0.0] for p in p_ego], dtype=np.float32)
    batch = collate([Preprocessor(tiny, with_lidar=True)(sample, aug=aug)])
    dc = tiny.camera.depth
    s = tiny.camera.stride
    gt = lidar_depth_targets(batch["lidar_points"], batch["lidar_mask"], batch["intrinsics"],
                             batch["cam2ego"], (tiny.image.height, tiny.image.width), s,
                             dc.d_min, dc.d_step, dc.num_bins)
    A = batch["image_aug"][0].double().numpy()
    for (u, v), d in zip(uv, depth):
        u2, v2, _ = A @ np.array([u, v, 1.0])
        row, col = int((v2 + 0.5) // s), int((u2 + 0.5) // s)
        assert int(gt[0, 0, row, col]) == int((d - dc.d_min) // dc.d_step)
    assert int((gt >= 0).sum()) == 2  # only CAM_FRONT sees them, once each


def test_depth_targets_keep_the_nearest_return(tiny):
    sample = make_sample(0, num_objects=0, image_hw=(450, 800))
    cam = sample.cameras["CAM_FRONT"]
    ray = cam.T_ego_cam[:3, :3] @ np.linalg.solve(cam.K, [400.0, 300.0, 1.0])
    pts = [cam.T_ego_cam[:3, 3] + d * ray for d in (30.0, 12.0, 45.0)]
    sample.lidar.points = np.array([[*p, 50.0, 0.0] for p in pts], dtype=np.float32)
    batch = collate([Preprocessor(tiny, with_lidar=True)(sample)])
    dc = tiny.camera.depth
    gt = lidar_depth_targets(batch["lidar_points"], batch["lidar_mask"], batch["intrinsics"],
                             batch["cam2ego"], (tiny.image.height, tiny.image.width),
                             tiny.camera.stride, dc.d_min, dc.d_step, dc.num_bins)
    assert sorted(gt[gt >= 0].tolist()) == [int((12.0 - dc.d_min) // dc.d_step)]


# ------------------------------------------------------------------------------------- gradients
LOSS_OWNERS = {
    # loss term -> student modules that must receive gradient from it alone
    "stage1": ["radar"],
    "intensity": ["radar"],
    "stage2": ["bev_backbone", "fusion", "radar", "camera"],
    "response": ["head_net", "bev_backbone"],
    "depth": ["camera"],
    "det_heatmap": ["head_net", "fusion", "camera", "radar"],
}


@pytest.mark.parametrize("term", sorted(LOSS_OWNERS))
@pytest.mark.parametrize("frozen", [True, False], ids=["frozen-teacher", "live-teacher"])
def test_each_loss_trains_the_student_and_never_the_teacher(tiny, train_batch, term, frozen):
    cfg = apply_overrides(tiny, {"distill.response.enabled": True})
    torch.manual_seed(0)
    student, teacher = Student(cfg).train(), Teacher(cfg)
    if frozen:
        freeze(teacher)
        with torch.no_grad():
            t_out = teacher(train_batch)
    else:  # even a teacher that still requires grad must get none through these losses
        t_out = teacher.eval()(train_batch)
    crit = IMKDLoss(cfg)
    losses = crit(student(train_batch), train_batch, t_out)
    assert torch.isfinite(losses[term]) and losses[term].requires_grad
    losses[term].backward()
    for p in teacher.parameters():
        assert p.grad is None
    for name in LOSS_OWNERS[term]:
        module = getattr(student, name)
        total = sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)
        assert total > 0, f"{term} sent no gradient into student.{name}"
    if term in ("stage1", "stage2"):
        adaptor = crit.adaptor1 if term == "stage1" else crit.adaptor2
        assert all(p.grad is not None for p in adaptor.parameters())


def test_stage_switches_and_weights(tiny, train_batch):
    torch.manual_seed(0)
    student, teacher = Student(tiny).train(), freeze(Teacher(tiny))
    with torch.no_grad():
        t_out = teacher(train_batch)
    out = student(train_batch)
    full = IMKDLoss(tiny)(out, train_batch, t_out)
    assert {"det_heatmap", "det_bbox", "stage1", "intensity", "stage2", "depth"} == \
        set(full) - {"total"}
    torch.testing.assert_close(full["total"], sum(v for k, v in full.items() if k != "total"))
    off = apply_overrides(tiny, {"distill.stage1.enabled": False, "distill.stage2.enabled": False,
                                 "distill.intensity_prediction.enabled": False,
                                 "distill.depth.enabled": False})
    crit_off = IMKDLoss(off)
    assert crit_off.adaptor1 is None and crit_off.adaptor2 is None
    assert set(crit_off(out, train_batch, t_out)) == {"det_heatmap", "det_bbox", "total"}
    doubled = apply_overrides(tiny, {"distill.intensity_prediction.weight": 2.0,
                                     "distill.depth.weight": 6.0})
    loss2 = IMKDLoss(doubled)(out, train_batch, t_out)
    torch.testing.assert_close(loss2["intensity"], 2 * full["intensity"])
    torch.testing.assert_close(loss2["depth"], 2 * full["depth"])
    # without teacher outputs or LiDAR the distillation terms are skipped, detection remains
    no_lidar = {k: v for k, v in train_batch.items() if not k.startswith("lidar")}
    assert set(IMKDLoss(tiny)(out, no_lidar)) == {"det_heatmap", "det_bbox", "total"}


def test_stage_weights_follow_the_intensity_map(tiny, train_batch):
    """Stage 1 ignores cells where I = 0: changing the student there changes nothing."""
    torch.manual_seed(0)
    crit = IMKDLoss(tiny).eval()
    teacher = freeze(Teacher(tiny))
    with torch.no_grad():
        t_out = teacher(train_batch)
        imap = intensity_map(train_batch["lidar_points"], train_batch["lidar_mask"],
                             tiny.bev_grid, tiny.distill.intensity_map)
        student = Student(tiny).eval()
        out = student(train_batch)
        base = crit(out, train_batch, t_out)["stage1"]
        # perturb radar features only where I == 0 and far from any I > 0 (adaptor is 3x3)
        far = torch.nn.functional.max_pool2d(imap, 5, 1, 2) == 0
        changed = dict(out, radar_bev=out["radar_bev"] + 5.0 * far)
        torch.testing.assert_close(crit(changed, train_batch, t_out)["stage1"], base)


def test_intensity_from_teacher_features(tiny, train_batch):
    """source: teacher_features: I is the teacher BEV's channel-norm over its per-sample max;
    it needs no LiDAR points, only the teacher."""
    cfg = apply_overrides(tiny, {"distill.intensity_map.source": "teacher_features"})
    torch.manual_seed(0)
    teacher = freeze(Teacher(cfg))
    with torch.no_grad():
        t_out = teacher(train_batch)
    raw = feature_intensity_map(t_out["bev"], cfg.distill.intensity_map, dilate=False)
    norm = t_out["bev"].pow(2).sum(1, keepdim=True).sqrt()
    expected = (norm / norm.amax(dim=(2, 3), keepdim=True)) ** cfg.distill.intensity_map.gamma
    torch.testing.assert_close(raw, expected)
    assert float(raw.amax()) == pytest.approx(1.0) and float(raw.amin()) >= 0.0
    student = Student(cfg).train()
    out = student(train_batch)
    no_points = {k: v for k, v in train_batch.items() if not k.startswith("lidar")}
    losses = IMKDLoss(cfg)(out, no_points, t_out)
    assert {"stage1", "intensity", "stage2"} <= set(losses)
    reflectance = IMKDLoss(tiny)(out, train_batch, t_out)
    assert not torch.allclose(losses["intensity"], reflectance["intensity"])


def test_stage2_per_level_distils_the_fusion_output_too(tiny, train_batch):
    torch.manual_seed(0)
    teacher = freeze(Teacher(tiny))
    with torch.no_grad():
        t_out = teacher(train_batch)
    student = Student(tiny).train()
    out = student(train_batch)
    torch.manual_seed(1)
    output_only = IMKDLoss(tiny)
    torch.manual_seed(1)
    both = IMKDLoss(apply_overrides(tiny, {"distill.stage2.levels": ["output", "input"]}))
    input_only = IMKDLoss(apply_overrides(tiny, {"distill.stage2.levels": ["input"]}))
    assert output_only.adaptor2_input is None and input_only.adaptor2 is None
    assert both.adaptor2_input[0][0].in_channels == tiny.fusion.channels
    # the output level is the same term with the same adaptor; the input level adds its own
    s_out = output_only(out, train_batch, t_out)["stage2"]
    s_both = both(out, train_batch, t_out)["stage2"]
    s_in = input_only(out, train_batch, t_out)["stage2"]
    both.adaptor2_input.load_state_dict(input_only.adaptor2_input.state_dict())
    torch.testing.assert_close(both(out, train_batch, t_out)["stage2"], s_out + s_in)
    assert float(s_both.detach()) > float(s_out.detach())
    s_in.backward()  # the input level trains the fusion and what feeds it, not the backbone
    assert all(p.grad is None for p in student.bev_backbone.parameters())
    assert sum(float(p.grad.abs().sum()) for p in student.fusion.parameters()) > 0
    with pytest.raises(ValueError, match=r"distill\.stage2\.levels"):
        apply_overrides(tiny, {"distill.stage2.levels": ["middle"]})


def test_radar_terms_skip_samples_without_radar(tiny, train_batch):
    """A sample whose radars were dropped teaches the radar branch nothing: stage 1 and the
    intensity prediction score the other samples alone, exactly as if it were not there."""
    torch.manual_seed(0)
    teacher = freeze(Teacher(tiny))
    student = Student(tiny).eval()
    crit = IMKDLoss(tiny).eval()
    dropped = dict(train_batch, radar_mask=train_batch["radar_mask"].clone())
    dropped["radar_mask"][1] = False
    with torch.no_grad():
        t_out = teacher(dropped)
        out = student(dropped)
        losses = crit(out, dropped, t_out)
        first = {k: v[:1] for k, v in dropped.items()}
        alone = crit({k: v[:1] for k, v in out.items()}, first,
                     {k: v[:1] for k, v in t_out.items()})
    for term in ("stage1", "intensity"):
        torch.testing.assert_close(losses[term], alone[term])


def test_teacher_loss(tiny, train_batch):
    teacher = Teacher(tiny).train()
    losses = teacher_loss(teacher(train_batch), train_batch, tiny)
    losses["total"].backward()
    assert all(p.grad is not None for p in teacher.parameters())


@pytest.mark.parametrize("overrides", [
    {"camera.enabled": False},
    {"radar.enabled": False},
    {"fusion.mode": "concat", "distill.response.enabled": True},
    {"distill.stage1.intensity_weighted": False, "distill.stage2.label_guided": False},
], ids=["radar-only", "camera-only", "concat+response", "unweighted"])
def test_ablation_configs_build_and_train(tiny, overrides):
    cfg = apply_overrides(tiny, overrides)
    prep = Preprocessor(cfg, train=True, with_lidar=True)
    batch = collate([prep(make_sample(i), rng=np.random.default_rng(i)) for i in range(2)])
    student, teacher = Student(cfg).train(), freeze(Teacher(cfg))
    with torch.no_grad():
        t_out = teacher(batch)
    losses = IMKDLoss(cfg)(student(batch), batch, t_out)
    losses["total"].backward()
    assert torch.isfinite(losses["total"])
    assert ("depth" in losses) == cfg.camera.enabled
    assert ("stage1" in losses) == cfg.radar.enabled

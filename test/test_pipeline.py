"""Preprocessing (image resize/crop/flip with K updated, BEV augmentation applied consistently),
the DetectorPipeline inference API and checkpoints, and the tiny student's overfitting check."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from imkd_core.checkpoint import load_checkpoint, save_checkpoint
from imkd_core.config import apply_overrides, load_model_config
from imkd_core.data.synthetic import make_sample
from imkd_core.distill import IMKDLoss
from imkd_core.geometry import points_in_boxes, project_to_image
from imkd_core.models import Student, Teacher, freeze
from imkd_core.pipeline import DetectorPipeline
from imkd_core.preprocess import (
    AugParams,
    Preprocessor,
    augment_boxes,
    bev_matrix,
    collate,
    evaluated_boxes,
    image_transform,
)
from imkd_core.sample import Boxes, Sample


@pytest.fixture(scope="module")
def tiny():
    return load_model_config("tiny")


# ------------------------------------------------------------------------------ preprocessing
AUGS = {
    "identity": AugParams(),
    "scale-crop": AugParams(image_scale=1.06, crop_dx=11, crop_dy=-6),
    "flip": AugParams(image_flip=True),
    "all+bev": AugParams(image_scale=0.94, crop_dx=-7, crop_dy=5, image_flip=True,
                         bev_rotation=0.7, bev_scale=1.05, bev_flip_x=True, bev_flip_y=True),
}


@pytest.mark.parametrize("name", sorted(AUGS))
def test_image_resize_crop_flip_moves_pixels_where_the_intrinsics_say(tiny, name):
    """Paint a blob where a 3D point projects in the original image; after preprocessing, the
    blob must sit where the updated intrinsics and extrinsics project the (augmented) point."""
    aug = AUGS[name]
    sample = make_sample(0, num_objects=0, image_hw=(450, 800))
    cam = sample.cameras["CAM_FRONT_RIGHT"]
    p_ego = cam.T_ego_cam[:3, :3] @ np.array([1.5, 0.4, 15.0]) + cam.T_ego_cam[:3, 3]
    (u0, v0), = project_to_image(p_ego[None], cam.T_ego_cam, cam.K)[0]
    yy, xx = np.mgrid[0:450, 0:800]
    blob = np.exp(-((xx - u0) ** 2 + (yy - v0) ** 2) / (2 * 4.0**2))
    cam.image = np.repeat((blob * 255).astype(np.uint8)[..., None], 3, axis=2)
    batch = collate([Preprocessor(tiny)(sample, aug=aug)])
    n = tiny.image.cameras.index("CAM_FRONT_RIGHT")
    img = batch["images"][0, n, 0].numpy() * tiny.image.std[0] + tiny.image.mean[0]
    w = np.clip(img - 130.0, 0, None)  # above the padding (= the mean colour)
    v_c, u_c = (np.mgrid[0:img.shape[0], 0:img.shape[1]] * w).reshape(2, -1).sum(1) / w.sum()
    # where the batch's calibration projects the augmented point
    p_aug = bev_matrix(aug)[:3, :3] @ p_ego
    T = batch["cam2ego"][0, n].double().numpy()
    K = batch["intrinsics"][0, n].double().numpy()
    p_cam = np.linalg.solve(T, [*p_aug, 1.0])[:3]
    u, v = (K @ p_cam)[:2] / p_cam[2]
    assert abs(u - u_c) < 0.1 and abs(v - v_c) < 0.1  # a half-pixel slip is ~0.3, (u, v, u_c, v_c)
    # and the intrinsics are A @ K with the documented A
    A = image_transform(450, 800, tiny.image.height, tiny.image.width,
                        tiny.image.crop_anchor_v, aug).matrix
    np.testing.assert_allclose(K, A @ cam.K, rtol=1e-5)


def test_small_source_images_are_padded_not_cropped(tiny):
    sample = make_sample(0, num_objects=0, image_hw=(90, 352))  # wider aspect than the model's
    batch = collate([Preprocessor(tiny)(sample)])
    img = batch["images"][0, 0]
    assert (img[:, : tiny.image.height - 90] == 0).all()  # top padding (anchor keeps the bottom)
    assert (img[:, tiny.image.height - 90:].abs().sum(0) > 0).all()


def test_bev_augmentation_is_consistent_for_points_boxes_and_velocities(tiny):
    sample = make_sample(4, num_objects=10)
    aug = AugParams(bev_rotation=0.9, bev_scale=1.05, bev_flip_x=True)
    A = bev_matrix(aug)
    batch = collate([Preprocessor(tiny, with_lidar=True)(sample, aug=aug)])
    rng = np.random.default_rng(0)  # points around the boxes (none exactly on a face)
    pts = (sample.gt.params[:, None, :3] + rng.normal(0, 1.5, (len(sample.gt), 200, 3)))
    pts = pts.reshape(-1, 3)
    inside_before = points_in_boxes(pts, sample.gt.params)
    boxes = batch["gt_boxes"][0].double().numpy()
    aug_pts = pts.copy()
    aug_pts[:, :3] = pts[:, :3] @ A[:3, :3].T
    inside_after = points_in_boxes(aug_pts, boxes)
    np.testing.assert_array_equal(inside_before, inside_after)
    # the velocity is a displacement per second: moving the box by v*t commutes with A
    t = 0.5
    moved = sample.gt.params.copy()
    moved[:, :2] += moved[:, 7:9] * t
    np.testing.assert_allclose(augment_boxes(moved, A)[:, :2], boxes[:, :2] + boxes[:, 7:9] * t,
                               atol=1e-4)
    # yaw: the box heading is the transformed heading
    heading = np.stack([np.cos(sample.gt.params[:, 6]), np.sin(sample.gt.params[:, 6])], 1)
    h2 = heading @ A[:2, :2].T
    np.testing.assert_allclose(np.cos(boxes[:, 6]), h2[:, 0] / np.hypot(*h2.T), atol=1e-5)
    # radar: positions and compensated velocities
    radar = sample.radar_points()[:, :7]
    inside = np.abs(radar[:, :2] @ A[:2, :2].T).max(1) < 51.2
    np.testing.assert_allclose(batch["radar_points"][0, : inside.sum(), 4:6].numpy(),
                               radar[inside, 4:6] @ A[:2, :2].T, atol=1e-4)


def test_eval_preprocessing_is_deterministic_and_training_augments(tiny):
    sample = make_sample(0)
    a = Preprocessor(tiny, with_lidar=True)(sample)
    b = Preprocessor(tiny, with_lidar=True)(sample)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    train = Preprocessor(tiny, train=True)
    c = train(sample, rng=np.random.default_rng(1))
    d = train(sample, rng=np.random.default_rng(2))
    assert not torch.equal(c["bev_aug"], d["bev_aug"])


def test_modality_dropout_feeds_sensors_as_absent_and_keeps_other_draws(tiny):
    """augment.camera_dropout / radar_dropout take a sensor away as the node takes an absent
    one; the draws they add come last, so every other augmentation of an item is unchanged."""
    sample = make_sample(1)
    plain = Preprocessor(tiny, train=True, with_lidar=True)
    all_out = Preprocessor(apply_overrides(tiny, {"augment.camera_dropout": 1.0,
                                                  "augment.radar_dropout": 1.0}),
                           train=True, with_lidar=True)
    a = plain(sample, rng=np.random.default_rng(5))
    b = all_out(sample, rng=np.random.default_rng(5))
    assert a["cam_valid"].all() and len(a["radar_points"]) > 0
    assert not b["cam_valid"].any() and float(b["images"].abs().sum()) == 0.0
    assert b["radar_points"].shape == (0, a["radar_points"].shape[1])
    torch.testing.assert_close(a["bev_aug"], b["bev_aug"])
    torch.testing.assert_close(a["gt_boxes"], b["gt_boxes"])
    # what an absent sensor gives, exactly: the same tensors as a Sample without it
    absent = dataclasses.replace(sample, cameras={}, radars={})
    aug = all_out.draw_aug(np.random.default_rng(5))
    assert aug.cameras_out == tuple(tiny.image.cameras) and aug.radars_out
    c = all_out(absent, aug=aug)
    d = all_out(sample, aug=aug)
    for key in ("images", "cam_valid", "intrinsics", "cam2ego", "radar_points"):
        assert torch.equal(c[key], d[key]), key
    # a probability in between drops some cameras, and the same ones for the same draw
    half = Preprocessor(apply_overrides(tiny, {"augment.camera_dropout": 0.5}), train=True)
    drawn = [half.draw_aug(np.random.default_rng(seed)).cameras_out for seed in range(20)]
    assert 0 < sum(map(len, drawn)) < 20 * len(tiny.image.cameras)
    assert drawn[3] == half.draw_aug(np.random.default_rng(3)).cameras_out
    # inference never drops
    assert Preprocessor(all_out.config)(sample)["cam_valid"].all()


def test_images_prepared_ahead_give_the_same_batch(tiny):
    """The node prepares each image as it arrives; the batch must be the offline one, bit for
    bit, with any subset of cameras prepared ahead."""
    sample = make_sample(2)
    pipe = DetectorPipeline.from_config(tiny, device="cpu")
    reference = pipe.preprocess(sample)
    names = sorted(sample.cameras)
    for prepared_names in (names, names[:2], []):
        prepared = {c: pipe.prepare_image(sample.cameras[c].image) for c in prepared_names}
        batch = pipe.preprocess(sample, prepared)
        assert batch.keys() == reference.keys()
        for key in reference:
            assert torch.equal(batch[key], reference[key]), key
    other = np.zeros((50, 80, 3), np.uint8)
    with pytest.raises(ValueError, match=f"{names[0]}: prepared image was made from a "
                                         r"\(50, 80, 3\) image"):
        pipe.preprocess(sample, {names[0]: pipe.prepare_image(other)})
    prepared = {names[0]: pipe.prepare_image(sample.cameras[names[0]].image)}
    with pytest.raises(ValueError, match="without augmentation"):
        Preprocessor(tiny)(sample, aug=AUGS["flip"], prepared=prepared)


def test_points_are_capped_and_collate_pads_with_masks(tiny):
    cfg = apply_overrides(tiny, {"radar.pillars.max_points": 20})
    big, small = make_sample(0, num_objects=12), make_sample(1, num_objects=1)
    small.radars = {}
    prep = Preprocessor(cfg)
    batch = collate([prep(big), prep(small)])
    assert batch["radar_points"].shape == (2, 20, 7)
    assert batch["radar_mask"].sum(1).tolist() == [20, 0]
    assert batch["gt_mask"].sum(1).tolist() == [len(big.gt), len(small.gt)]


# ---------------------------------------------------------------------------------- inference
def test_pipeline_from_config_runs_and_is_deterministic(tiny):
    sample = make_sample(3)
    a = DetectorPipeline.from_config(tiny, device="cpu", seed=7)
    b = DetectorPipeline.from_config(tiny, device="cpu", seed=7)
    assert a.device == torch.device("cpu") and a.config is tiny
    batch = a.preprocess(sample)
    assert batch["images"].shape[0] == 1 and "lidar_points" not in batch
    outputs = a.infer(batch)
    assert not outputs["heatmap"].requires_grad
    boxes = a.postprocess(outputs)
    assert isinstance(boxes, Boxes) and boxes.params.shape[1] == 9
    assert boxes.scores is not None and len(boxes.scores) == len(boxes)
    assert len(boxes) <= tiny.head.max_detections
    other = b(sample)
    np.testing.assert_allclose(boxes.params, other.params)
    np.testing.assert_array_equal(boxes.labels, other.labels)


def test_checkpoint_round_trip_gives_identical_detections(tiny, tmp_path):
    torch.manual_seed(1)
    student = Student(tiny)
    with torch.no_grad():  # make the heads confident enough to give many detections
        student.head_net.heatmap[-1].bias.fill_(0.0)
    path = tmp_path / "ckpt" / "student.pt"
    save_checkpoint(path, student, tiny, extra={"epoch": 3, "metrics": {"nds": 0.1}})
    assert path.is_file() and not list(path.parent.glob(".*tmp*"))
    payload = load_checkpoint(path)
    assert payload["kind"] == "student" and payload["extra"]["epoch"] == 3
    pipe = DetectorPipeline.from_checkpoint(path, device="cpu")
    assert pipe.config == tiny
    sample = make_sample(5)
    reference = DetectorPipeline(student, tiny, device="cpu")(sample)
    loaded = pipe(sample)
    assert len(reference) > 0
    np.testing.assert_allclose(loaded.params, reference.params, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loaded.scores, reference.scores, rtol=1e-5, atol=1e-6)
    # the teacher too (evaluated offline from LiDAR)
    save_checkpoint(tmp_path / "teacher.pt", Teacher(tiny), tiny)
    teacher = DetectorPipeline.from_checkpoint(tmp_path / "teacher.pt", device="cpu")
    assert "lidar_points" in teacher.preprocess(sample)
    assert isinstance(teacher(sample), Boxes)


def test_pipeline_degraded_modes(tiny):
    pipe = DetectorPipeline.from_config(tiny, device="cpu")
    sample = make_sample(6)
    sample.radars = {}
    del sample.cameras["CAM_FRONT"]
    assert isinstance(pipe(sample), Boxes)
    bare = Sample(token="bare", timestamp=0, T_map_ego=np.eye(4))
    assert isinstance(pipe(bare), Boxes)


def test_auto_device_and_bad_device(tiny):
    pipe = DetectorPipeline.from_config(tiny, device="auto")
    assert pipe.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            DetectorPipeline.from_config(tiny, device="cuda")


# ------------------------------------------------------------------------------ overfitting
def _world_samples(tmp_path, n):
    try:
        from imkd_core.data.nuscenes import NuScenesReader
        from imkd_core.data.world import WorldConfig, generate_world
    except ImportError as exc:
        pytest.skip(f"synthetic world not available: {exc}")
    config = WorldConfig(scenes=1, samples_per_scene=max(2, n), seed=0, val_fraction=0.0)
    generate_world(tmp_path / "world", config)
    reader = NuScenesReader(tmp_path / "world", version=config.version)
    samples = []
    for sample in reader.samples():
        samples.append(sample)
        if len(samples) == n:
            break
    return samples


@pytest.mark.slow
def test_tiny_student_overfits_a_handful_of_samples(tiny, tmp_path):
    """On two keyframes of the world: the generator -> reader -> preprocess path that training
    reads (a second run on in-memory synthetic samples repeated the same check)."""
    cfg = apply_overrides(tiny, {"augment.enabled": False})
    samples = _world_samples(tmp_path, 2)
    torch.manual_seed(0)
    batch = collate([Preprocessor(cfg, train=True, with_lidar=True)(s) for s in samples])
    student, teacher, crit = Student(cfg).train(), freeze(Teacher(cfg)), IMKDLoss(cfg)
    with torch.no_grad():
        t_out = teacher(batch)
    opt = torch.optim.AdamW(list(student.parameters()) + list(crit.parameters()), lr=2e-3)
    history = []
    start = time.perf_counter()
    for _ in range(200):
        losses = crit(student(batch), batch, t_out)
        opt.zero_grad()
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 35.0)
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    elapsed = time.perf_counter() - start
    first, last = history[0], {k: np.mean([h[k] for h in history[-10:]]) for k in history[0]}
    print(f"200 steps in {elapsed:.0f} s; first {first}; last {last}")
    assert last["total"] < 0.2 * first["total"]
    assert last["det_heatmap"] < 0.1 * first["det_heatmap"]
    # the overfit detector finds its training boxes
    pipe = DetectorPipeline(student, cfg, device="cpu")
    for sample in samples:
        det = pipe(sample)
        # its training boxes: the evaluated ones (a box no sensor saw is not a target)
        gt = evaluated_boxes(sample.gt)
        gt = gt.select(np.hypot(gt.params[:, 0], gt.params[:, 1]) < 45)
        hits = 0
        for p, label in zip(gt.params, gt.labels):
            d = np.hypot(det.params[:, 0] - p[0], det.params[:, 1] - p[1])
            ok = (d < 1.0) & (det.labels == label) & (det.scores > 0.3)
            hits += bool(ok.any())
        assert hits >= 0.8 * len(gt), (hits, len(gt))

"""Models: shapes through every block (both configs), r50 forward+backward, the head's
encode -> decode round trip, degraded inputs, and the one-BEV-grid invariant across the teacher
voxels, the intensity map, the radar pillars, the camera lift-splat and the head targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imkd_core.config import apply_overrides, config_from_dict, load_model_config
from imkd_core.data.synthetic import make_sample, random_boxes
from imkd_core.distill import intensity_map
from imkd_core.distill.losses import build_targets
from imkd_core.models import Student, Teacher
from imkd_core.models.camera_branch import LiftSplat
from imkd_core.models.fpn import FPN
from imkd_core.models.head import circle_nms_keep, class_map_tensor, decode, encode_targets
from imkd_core.models.resnet import ResNet
from imkd_core.preprocess import AugParams, Preprocessor, collate, image_transform
from imkd_core.sample import CLASSES, RADAR_POINT_COLUMNS, Boxes, LidarData, RadarData

CONFIGS = ["tiny", "r50_256x704"]


@pytest.fixture(scope="module")
def tiny():
    return load_model_config("tiny")


def make_batch(config, seed=0, train=False, with_lidar=True, n=1, **sample_kw):
    prep = Preprocessor(config, train=train, with_lidar=with_lidar)
    rng = np.random.default_rng(seed)
    return collate([prep(make_sample(seed + i, **sample_kw), rng=rng) for i in range(n)])


# ------------------------------------------------------------------------------------ configs
def test_configs_load_validate_and_round_trip():
    for name in ("tiny", "r50_256x704"):
        cfg = load_model_config(name)
        assert cfg.name == name
        again = config_from_dict(cfg.to_dict())
        assert again == cfg
    tiny = load_model_config("tiny")
    assert tiny.bev_grid.shape == (64, 64)
    assert load_model_config("r50_256x704").bev_grid.shape == (128, 128)


def test_config_is_strict_and_overridable(tiny, tmp_path):
    bad = tiny.to_dict()
    bad["fusion"]["mdoe"] = "concat"
    with pytest.raises(KeyError, match="mdoe"):
        config_from_dict(bad)
    bad = tiny.to_dict()
    bad["camera"]["backbone"]["depth"] = "18"
    with pytest.raises(TypeError, match=r"camera\.backbone\.depth"):
        config_from_dict(bad)
    cfg = apply_overrides(tiny, ["fusion.mode=concat", "distill.stage1.weight=0.5"])
    assert cfg.fusion.mode == "concat" and cfg.distill.stage1.weight == 0.5
    assert tiny.fusion.mode == "intensity"  # the original is untouched
    with pytest.raises(ValueError, match=r"fusion\.mode"):
        apply_overrides(tiny, {"fusion.mode": "sum"})
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ngrid: {cell: 1.6}\nimage: {height: 64, width: 176}\n")
    mine = load_model_config(path)
    assert mine.name == "mine" and mine.grid.cell == 1.6 and mine.image.width == 176
    with pytest.raises(FileNotFoundError):
        load_model_config("no_such_config")


# ------------------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("depth,expansion", [(18, 1), (34, 1), (50, 4)])
def test_resnet_and_fpn_shapes(depth, expansion):
    net = ResNet(depth, base_width=8)
    feats = net(torch.zeros(2, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [
        (2, 8 * expansion, 16, 24), (2, 16 * expansion, 8, 12), (2, 32 * expansion, 4, 6),
        (2, 64 * expansion, 2, 3)]
    assert net.out_channels == [8 * expansion, 16 * expansion, 32 * expansion, 64 * expansion]
    neck = FPN(net.out_channels[1:], net.strides[1:], 24, out_stride=16)
    assert tuple(neck(feats[1:]).shape) == (2, 24, 4, 6)


@pytest.mark.parametrize("name", CONFIGS)
def test_shapes_through_every_block(name):
    cfg = load_model_config(name)
    grid = cfg.bev_grid
    ny, nx = grid.shape
    torch.manual_seed(0)
    student, teacher = Student(cfg).eval(), Teacher(cfg).eval()
    batch = make_batch(cfg, image_hw=(450, 800))
    N = len(cfg.image.cameras)
    H, W, s = cfg.image.height, cfg.image.width, cfg.camera.stride
    D = cfg.camera.depth.num_bins
    assert tuple(batch["images"].shape) == (1, N, 3, H, W)
    with torch.no_grad():
        feats = student.image_features(batch)
        assert tuple(feats.shape) == (N, cfg.camera.neck_channels, H // s, W // s)
        cam_bev, depth_logits = student.camera_bev(feats, batch)
        assert tuple(cam_bev.shape) == (1, cfg.camera.bev_channels, ny, nx)
        assert tuple(depth_logits.shape) == (1, N, D, H // s, W // s)
        radar_bev, inten = student.radar_bev(batch)
        assert tuple(radar_bev.shape) == (1, cfg.radar.channels, ny, nx)
        assert tuple(inten.shape) == (1, 1, ny, nx)
        fused, bev = student.fuse(cam_bev, radar_bev, inten)
        assert tuple(fused.shape) == (1, cfg.fusion.channels, ny, nx)
        assert tuple(bev.shape) == (1, cfg.bev_backbone.out_channels, ny, nx)
        preds = student.head(bev)
        expected = {"heatmap": cfg.num_classes, "offset": 2, "z": 1, "size": 3, "rot": 2,
                    "vel": 2}
        assert {k: tuple(v.shape) for k, v in preds.items()} == {
            k: (1, c, ny, nx) for k, c in expected.items()}
        t_out = teacher(batch)
        assert tuple(t_out["bev"].shape) == (1, cfg.lidar.bev_backbone.out_channels, ny, nx)
        assert tuple(t_out["heatmap"].shape) == (1, cfg.num_classes, ny, nx)
        full = student(batch)
    for key, value in full.items():
        assert torch.isfinite(value).all(), key
    # the staged forward is the forward
    torch.testing.assert_close(full["heatmap"], preds["heatmap"])


# ----------------------------------------------------------------------------------------- head
def test_head_encode_decode_recovers_boxes(tiny):
    grid = tiny.bev_grid
    rng = np.random.default_rng(3)
    gt = random_boxes(rng, 25, extent=45.0, min_separation=8.0)
    boxes = torch.tensor(gt.params, dtype=torch.float32)[None]
    labels = torch.tensor(gt.labels)[None]
    mask = torch.ones_like(labels, dtype=torch.bool)
    targets = encode_targets(boxes, labels, mask, grid, class_map_tensor(tiny.classes), tiny.head,
                             tiny.num_classes)
    assert targets["reg_mask"].all()
    hm = targets["heatmap"]
    assert hm.max() == 1.0 and int((hm == 1.0).sum()) == len(gt)
    # perfect predictions: logits of the target heatmap, regression code at every GT cell
    H, W = grid.shape
    reg = torch.zeros(1, 10, H * W)
    reg[0, :, targets["index"][0]] = targets["reg"][0].T
    reg = reg.view(1, 10, H, W)
    preds = {"heatmap": torch.logit(hm.clamp(1e-4, 1 - 1e-4)), "offset": reg[:, 0:2],
             "z": reg[:, 2:3], "size": reg[:, 3:6], "rot": reg[:, 6:8], "vel": reg[:, 8:10]}
    det = decode(preds, grid, tiny.head, tiny.classes)[0]
    assert len(det["boxes"]) == len(gt)
    found = det["boxes"].double().numpy()
    for p, label in zip(gt.params, gt.labels):
        i = int(np.argmin(np.hypot(found[:, 0] - p[0], found[:, 1] - p[1])))
        assert abs(found[i, 0] - p[0]) < 1e-3 and abs(found[i, 1] - p[1]) < 1e-3
        np.testing.assert_allclose(found[i, 2:6], p[2:6], rtol=1e-4, atol=1e-4)
        dyaw = (found[i, 6] - p[6] + np.pi) % (2 * np.pi) - np.pi
        assert abs(dyaw) < 1e-4
        np.testing.assert_allclose(found[i, 7:9], p[7:9], atol=1e-4)
        assert int(det["labels"][i]) == label
    assert (det["scores"] > 0.99).all()


@pytest.mark.parametrize("seed", range(4))
def test_circle_nms_is_the_greedy_suppression(seed):
    """Against the plain greedy pass: in score order, keep a box unless a kept box of its class
    is within the class radius."""
    rng = np.random.default_rng(seed)
    n = 300
    xy = torch.tensor(rng.uniform(-20, 20, (n, 2)), dtype=torch.float32)
    labels = torch.tensor(rng.integers(0, 3, n))
    radius = torch.tensor([2.0, 0.5, 3.5])
    kept = []
    for i in range(n):
        if all(labels[j] != labels[i] or torch.dist(xy[i], xy[j]) > radius[labels[i]]
               for j in kept):
            kept.append(i)
    got = circle_nms_keep(xy, labels, radius)
    assert got.tolist() == kept and 0 < len(kept) < n
    assert circle_nms_keep(xy[:0], labels[:0], radius).tolist() == []


def test_head_targets_mask_outside_and_unknown_classes(tiny):
    cfg = apply_overrides(tiny, {"classes": ["car", "pedestrian"]})
    boxes = torch.tensor([[[10.0, 5.0, 1.0, 4.0, 2.0, 1.6, 0.3, 0, 0],
                           [80.0, 0.0, 1.0, 4.0, 2.0, 1.6, 0.0, 0, 0],  # outside the grid
                           [-3.0, 7.0, 1.0, 0.7, 0.7, 1.8, 0.0, 0, 0],
                           [0.0, -9.0, 1.0, 1.0, 2.5, 1.0, 0.0, 0, 0]]])  # barrier: not detected
    labels = torch.tensor([[CLASSES.index("car"), CLASSES.index("car"),
                            CLASSES.index("pedestrian"), CLASSES.index("barrier")]])
    t = encode_targets(boxes, labels, torch.ones_like(labels, dtype=torch.bool), cfg.bev_grid,
                       class_map_tensor(cfg.classes), cfg.head, 2)
    assert t["reg_mask"].tolist() == [[True, False, True, False]]
    assert t["heatmap"].shape[1] == 2
    assert t["heatmap"][0, 0].max() == 1 and t["heatmap"][0, 1].max() == 1
    assert t["label"][0, 2] == 1


# ---------------------------------------------------------------------------- degraded inputs
def test_student_runs_without_radar_and_with_missing_cameras(tiny):
    torch.manual_seed(0)
    student = Student(tiny).eval()
    sample = make_sample(1)
    sample.radars = {}
    for name in ("CAM_BACK", "CAM_FRONT_LEFT"):
        del sample.cameras[name]
    batch = collate([Preprocessor(tiny)(sample)])
    assert batch["radar_points"].shape[1] >= 1 and not batch["radar_mask"].any()
    assert batch["cam_valid"].tolist() == [[True, True, True, False, True, False]]
    assert (batch["images"][0, 3] == 0).all()
    with torch.no_grad():
        pillars = student.radar.pillars(batch["radar_points"], batch["radar_mask"])
        assert (pillars == 0).all()  # empty radar -> zero radar (pillar) features
        out = student(batch)
        assert all(torch.isfinite(v).all() for v in out.values())
        # a missing camera contributes nothing: its image content is irrelevant
        batch2 = dict(batch, images=batch["images"].clone())
        batch2["images"][0, 3] = torch.randn_like(batch2["images"][0, 3])
        out2 = student(batch2)
    torch.testing.assert_close(out["cam_bev"], out2["cam_bev"])
    # nothing at all: no cameras, no radar
    empty = make_sample(2)
    empty.radars, empty.cameras = {}, {}
    with torch.no_grad():
        out = student(collate([Preprocessor(tiny)(empty)]))
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("mode", ["intensity", "concat"])
def test_fusion_modes_and_ablation_switches(tiny, mode):
    cfg = apply_overrides(tiny, {"fusion.mode": mode})
    variants = [cfg]
    if mode == "intensity":
        variants += [apply_overrides(cfg, {"fusion.gate": False}),
                     apply_overrides(cfg, {"fusion.attention": False}),
                     apply_overrides(cfg, {"fusion.intensity_weighting": False})]
    batch = make_batch(tiny)
    for variant in variants:
        student = Student(variant).eval()
        with torch.no_grad():
            out = student(batch)
        assert tuple(out["fused"].shape) == (1, variant.fusion.channels, 64, 64)


def test_intensity_weighting_suppresses_radar_evidence(tiny):
    """With predicted intensity 0 everywhere, the radar values never reach the camera path."""
    from imkd_core.models.fusion import window_attention
    q, k, v = (torch.randn(1, 8, 6, 6) for _ in range(3))
    zero = window_attention(q, k, v, 3, 2, value_weight=torch.zeros(1, 1, 6, 6))
    assert (zero == 0).all()
    full = window_attention(q, k, v, 3, 2, value_weight=torch.ones(1, 1, 6, 6))
    torch.testing.assert_close(full, window_attention(q, k, v, 3, 2))


# ------------------------------------------------------------------------- one BEV grid for all
def _single_point_sample(p_ego: np.ndarray, seed: int = 0):
    sample = make_sample(seed, num_objects=0, image_hw=(450, 800))
    sample.lidar = LidarData(points=np.array([[*p_ego, 200.0, 0.0]], dtype=np.float32),
                             T_ego_lidar=np.eye(4), stamp=0)
    radar = np.zeros((1, len(RADAR_POINT_COLUMNS)), dtype=np.float32)
    radar[0, :3] = p_ego
    radar[0, 3] = 5.0
    sample.radars = {"RADAR_FRONT": RadarData(points=radar, T_ego_radar=np.eye(4), stamp=0)}
    sample.gt = Boxes(params=np.array([[*p_ego, 4.0, 2.0, 1.5, 0.2, 0.0, 0.0]]),
                      labels=np.array([0]))
    return sample


def _nonzero_cells(bev: torch.Tensor) -> set[tuple[int, int]]:
    occupied = bev.abs().sum(dim=(0, 1)) > 0
    return {(int(r), int(c)) for r, c in occupied.nonzero().tolist()}


AUGS = [
    AugParams(),
    AugParams(image_scale=1.05, crop_dx=9, crop_dy=-4, image_flip=True, bev_rotation=0.6,
              bev_scale=1.04, bev_flip_x=True),
    AugParams(image_scale=0.95, crop_dx=-5, crop_dy=3, bev_rotation=-1.2, bev_scale=0.96,
              bev_flip_y=True),
]


@pytest.mark.parametrize("aug", AUGS, ids=["identity", "flip-x-rot-scale", "flip-y-rot"])
@pytest.mark.parametrize("camera", ["CAM_FRONT_LEFT", "CAM_BACK"])
def test_one_bev_grid_for_all(tiny, aug, camera):
    """A point seen by a camera lands in the same cell in the teacher's voxels, the intensity
    map, the radar pillars, the camera lift-splat and the head targets, with and without the
    same BEV + image augmentation."""
    cfg = tiny
    grid = cfg.bev_grid
    s, D = cfg.camera.stride, cfg.camera.depth.num_bins
    H, W = cfg.image.height, cfg.image.width
    base = make_sample(0, num_objects=0, image_hw=(450, 800))
    cam = base.cameras[camera]
    A_img = image_transform(450, 800, H, W, cfg.image.crop_anchor_v, aug).matrix
    from imkd_core.preprocess import bev_matrix
    A_bev = bev_matrix(aug)
    # find a frustum point (feature pixel centre, depth-bin centre) well inside a cell
    chosen = None
    for i in range(H // s - 1, -1, -1):
        for j in range(W // s):
            for k in range(D // 4, D):
                u, v = j * s + (s - 1) / 2, i * s + (s - 1) / 2
                d = cfg.camera.depth.d_min + (k + 0.5) * cfg.camera.depth.d_step
                uv0 = np.linalg.solve(A_img, [u, v, 1.0])
                p_cam = d * np.linalg.solve(cam.K, uv0)
                p_ego = cam.T_ego_cam[:3, :3] @ p_cam + cam.T_ego_cam[:3, 3]
                p_aug = A_bev[:3, :3] @ p_ego
                fx = (p_aug[0] - grid.x_min) / grid.cell
                fy = (p_aug[1] - grid.y_min) / grid.cell
                margin = min(fx % 1, 1 - fx % 1, fy % 1, 1 - fy % 1)
                if (margin > 0.2 and 0 <= fx < grid.nx and 0 <= fy < grid.ny
                        and grid.z_min + 0.5 < p_aug[2] < grid.z_max - 0.5
                        and p_ego[2] > 0.5):
                    chosen = (i, j, k, p_ego, p_aug)
                    break
            if chosen:
                break
        if chosen:
            break
    assert chosen is not None
    i, j, k, p_ego, p_aug = chosen
    ix, iy, inside = grid.point_to_cell(p_aug[None])
    assert inside[0]
    expected = {(int(iy[0]), int(ix[0]))}

    sample = _single_point_sample(p_ego)
    batch = collate([Preprocessor(cfg, train=False, with_lidar=True)(sample, aug=aug)])
    np.testing.assert_allclose(batch["lidar_points"][0, 0, :3].numpy(), p_aug, atol=1e-4)
    torch.manual_seed(0)
    teacher, student = Teacher(cfg).eval(), Student(cfg).eval()
    with torch.no_grad():
        voxels = teacher.encoder.pillars(batch["lidar_points"], batch["lidar_mask"])
        assert _nonzero_cells(voxels) == expected
        imap = intensity_map(batch["lidar_points"], batch["lidar_mask"], grid,
                             cfg.distill.intensity_map, dilate=False)
        assert _nonzero_cells(imap) == expected
        assert float(imap.max()) == pytest.approx((200 / 255) ** cfg.distill.intensity_map.gamma)
        radar = student.radar.pillars(batch["radar_points"], batch["radar_mask"])
        assert _nonzero_cells(radar) == expected
        # camera: one-hot depth at the chosen (camera, bin, pixel), context ones
        lift: LiftSplat = student.camera.lift
        N = len(cfg.image.cameras)
        n = cfg.image.cameras.index(camera)
        depth = torch.zeros(1, N, D, H // s, W // s)
        depth[0, n, k, i, j] = 1.0
        bev = lift(depth, torch.ones(1, N, 1, H // s, W // s), batch["intrinsics"],
                   batch["cam2ego"])
        assert _nonzero_cells(bev) == expected
        targets = build_targets(batch, cfg)
        row, col = divmod(int(targets["index"][0, 0]), grid.nx)
        assert {(row, col)} == expected
        assert _nonzero_cells((targets["heatmap"] == 1).float()) == expected


def test_lift_splat_cached_compact_and_static_paths_agree(tiny):
    torch.manual_seed(0)
    lift = Student(tiny).camera.lift
    batch = make_batch(tiny, n=2)
    N, D = len(tiny.image.cameras), tiny.camera.depth.num_bins
    depth = torch.rand(2, N, D, lift.h, lift.w).softmax(2)
    context = torch.randn(2, N, 5, lift.h, lift.w)
    K, T = batch["intrinsics"], batch["cam2ego"]
    lift.train()
    static = lift(depth, context, K, T)
    assert len(lift._cache) == 0
    lift.eval()
    cached = lift(depth, context, K, T)
    lift(depth, context, K, T)
    assert len(lift._cache) == 1
    torch.testing.assert_close(cached, static, rtol=1e-4, atol=1e-4)
    # every frustum point inside the grid is splatted, nothing else: the masses match
    keep, _, _ = lift.geometry(K, T, compact=True)
    assert 0 < len(keep) < depth.numel()
    mass = lift(depth, torch.ones(2, N, 1, lift.h, lift.w), K, T).sum()
    torch.testing.assert_close(mass, depth.reshape(-1)[keep].sum(), rtol=1e-4, atol=1e-3)

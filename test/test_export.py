"""`imkd export` and the exported-file backends: the ONNX / TorchScript student gives the eager
model's head maps (1e-4) and boxes on world samples, carries its config, uses standard
operators only, and a file the requested backend, device or code cannot use is one clear
error naming it. The node runs an ONNX export over DDS (the replayed-bag equality with the
offline path, per backend, is test_detector_node's)."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import onnx
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from tiny_world import make_tiny_world

from imkd_core.checkpoint import save_checkpoint
from imkd_core.cli import main as imkd_main
from imkd_core.config import load_model_config
from imkd_core.data.nuscenes import NuScenesReader
from imkd_core.data.options import ReaderOptions
from imkd_core.export import (
    EXPORT_VERSION,
    INPUTS,
    ONNX_OPSET,
    OUTPUTS,
    ExportError,
    export_checkpoint,
    file_sha256,
    read_export,
)
from imkd_core.models import Student
from imkd_core.models.head import decode
from imkd_core.pipeline import DetectorPipeline

HEAD_ATOL = 1e-4
# The heatmap's last conv has its weights multiplied by 5e3 (make_checkpoint), so float32
# rounding of its inputs under another reduction order (ONNX Runtime's threads) reaches it
# 5e3-fold: up to 2.7e-4 measured, for logits of magnitude ~2.5. The decoded boxes, scores and
# labels are still compared at HEAD_ATOL.
HEATMAP_ATOL = 1e-3


def make_checkpoint(path, config_name: str = "tiny", seed: int = 1):
    """A random student whose heatmap logits spread (an untrained head's are all within 1e-4
    of its prior), so its peak scores lie far enough apart that no 1e-6 difference between
    backends reorders them or changes the NMS."""
    config = load_model_config(config_name)
    torch.manual_seed(seed)
    student = Student(config)
    with torch.no_grad():
        student.head_net.heatmap[-1].weight.mul_(5e3)
        student.head_net.heatmap[-1].bias.fill_(-2.0)
    save_checkpoint(path, student, config)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_tiny_world(tmp_path_factory.mktemp("world") / "nuscenes")


def world_samples(world, n: int):
    reader = NuScenesReader(world, version="v1.0-trainval",
                            options=ReaderOptions(load_lidar=False))
    samples = []
    for sample in reader.samples():
        samples.append(sample)
        if len(samples) == n:
            break
    return samples


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """tiny: a checkpoint and its ONNX and TorchScript exports (the CLI writes one)."""
    d = tmp_path_factory.mktemp("export")
    ckpt = make_checkpoint(d / "tiny.pt")
    export_checkpoint(ckpt, "onnx", d / "tiny.onnx")
    assert imkd_main(["export", "--checkpoint", str(ckpt), "--format", "torchscript",
                      "--out", str(d / "tiny.ts")]) == 0
    return {"checkpoint": ckpt, "onnx": d / "tiny.onnx", "torchscript": d / "tiny.ts"}


def assert_same(reference: DetectorPipeline, other: DetectorPipeline, samples) -> int:
    """Head maps within HEAD_ATOL (the amplified heatmap: HEATMAP_ATOL), identical decoded
    labels, boxes and scores within HEAD_ATOL; returns the number of boxes."""
    boxes_seen = 0
    for sample in samples:
        batch = reference.preprocess(sample)
        ref = reference.infer(batch)
        out = other.infer(other.preprocess(sample))
        assert set(out) == set(OUTPUTS)
        for name in OUTPUTS:
            diff = float((out[name] - ref[name]).abs().max())
            tolerance = HEATMAP_ATOL if name == "heatmap" else HEAD_ATOL
            assert diff <= tolerance, (sample.token, name, diff)
        # decoded at a score threshold in a wide gap of the peak scores (a random model's
        # scores cluster; a threshold inside a cluster would test the noise, not the export)
        head = dataclasses.replace(reference.config.head,
                                   score_threshold=gap_threshold(ref["heatmap"]))
        a, b = (decode(x, reference.config.bev_grid, head, reference.config.classes)[0]
                for x in (ref, out))
        assert len(a["scores"]) >= 20
        assert torch.equal(b["labels"], a["labels"]), sample.token
        for key in ("boxes", "scores"):
            torch.testing.assert_close(b[key], a[key], atol=HEAD_ATOL, rtol=0)
        boxes_seen += len(a["scores"])
    return boxes_seen


def gap_threshold(heatmap: torch.Tensor, lo: int = 20, hi: int = 150) -> float:
    """A score between the k-th and (k+1)-th best peak, lo <= k <= hi, where they differ most."""
    heat = torch.sigmoid(heatmap.float())
    peaks = heat * (heat == F.max_pool2d(heat, 3, stride=1, padding=1))
    top = peaks.flatten().sort(descending=True).values[:hi + 1]
    gaps = top[lo - 1:hi] - top[lo:hi + 1]
    k = int(gaps.argmax())
    assert float(gaps[k]) > 1e-5, f"no clear gap in the peak scores: {float(gaps[k])}"
    return float(top[lo - 1 + k] + top[lo + k]) / 2


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_tiny_student_equals_eager_on_world_samples(exported, world, fmt):
    eager = DetectorPipeline.from_file(exported["checkpoint"], device="cpu")
    backend = "onnxruntime" if fmt == "onnx" else "torch"
    other = DetectorPipeline.from_file(exported[fmt], device="cpu", backend=backend)
    assert other.config == eager.config and other.model is None
    samples = world_samples(world, 3)
    # a radar-less frame and one missing camera: other radar point counts, cam_valid False
    degraded = world_samples(world, 1)[0]
    degraded.radars = {}
    del degraded.cameras["CAM_BACK"]
    assert assert_same(eager, other, [*samples, degraded]) > 0


def test_onnx_file_is_standard_opset_with_its_config_inside(exported):
    model = onnx.load(str(exported["onnx"]))
    onnx.checker.check_model(model)
    assert {(o.domain, o.version) for o in model.opset_import} == {("", ONNX_OPSET)}
    assert {n.domain for n in model.graph.node} == {""}  # no custom operators
    assert [i.name for i in model.graph.input] == list(INPUTS)
    assert [o.name for o in model.graph.output] == list(OUTPUTS)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input}
    assert isinstance(dims["radar_points"][1], str) and dims["radar_points"][2] == 7
    assert dims["images"] == [1, 6, 3, 128, 352]
    meta = {p.key: p.value for p in model.metadata_props}
    config = DetectorPipeline.from_file(exported["checkpoint"], device="cpu").config
    assert json.loads(meta["imkd.config"]) == config.to_dict()
    assert meta["imkd.checkpoint_sha256"] == file_sha256(exported["checkpoint"])
    assert meta["imkd.version"] == str(EXPORT_VERSION)
    for fmt in ("onnx", "torchscript"):
        info = read_export(exported[fmt])
        assert info.format == fmt and info.config == config
        assert info.cameras == tuple(config.image.cameras) and info.image_size == (128, 352)


def test_files_the_backend_cannot_use_fail_naming_file_and_mismatch(exported, tmp_path):
    ckpt, onnx_path, ts = exported["checkpoint"], exported["onnx"], exported["torchscript"]
    cases = [
        (ckpt, "onnxruntime", "cpu", None, f"{ckpt}: a checkpoint, which backend 'torch' runs; "
                                           "backend 'onnxruntime' needs an ONNX file"),
        (onnx_path, "torch", "cpu", None, f"{onnx_path}: an ONNX export, which backend "
                                          "'onnxruntime' runs"),
        (ts, "onnxruntime", "cpu", None, f"{ts}: a TorchScript export, which backend 'torch'"),
        (onnx_path, "tensorrt", "cpu", None, "backend must be one of ['torch', 'onnxruntime']"),
        (onnx_path, "onnxruntime", "cpu", ["CAM_FRONT", "CAM_ROOF"],
         f"{onnx_path}: exported for cameras [") ,
    ]
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        cases.append((onnx_path, "onnxruntime", "cuda", None,
                      f"{onnx_path}: device 'cuda' needs onnxruntime's CUDAExecutionProvider"))
    # a file of another export format version
    model = onnx.load(str(onnx_path))
    for prop in model.metadata_props:
        if prop.key == "imkd.version":
            prop.value = "99"
    old = tmp_path / "old.onnx"
    onnx.save(model, str(old))
    cases.append((old, "onnxruntime", "cpu", None, f"{old}: export format version 99, this "
                                                   f"code reads version {EXPORT_VERSION}"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xffnot a model" * 10)
    cases.append((junk, "onnxruntime", "cpu", None, f"{junk}: "))
    for path, backend, device, cameras, message in cases:
        with pytest.raises(ExportError) as info:
            DetectorPipeline.from_file(path, device=device, backend=backend, cameras=cameras)
        assert message in str(info.value), (path, backend, str(info.value))


def test_cli_export_refuses_a_teacher_and_a_missing_file(tmp_path, capsys):
    from imkd_core.models import Teacher

    config = load_model_config("tiny")
    save_checkpoint(tmp_path / "teacher.pt", Teacher(config), config)
    assert imkd_main(["export", "--checkpoint", str(tmp_path / "teacher.pt"),
                      "--out", str(tmp_path / "t.onnx")]) == 2
    assert "a teacher checkpoint; only the student" in capsys.readouterr().err
    assert imkd_main(["export", "--checkpoint", str(tmp_path / "none.pt"),
                      "--out", str(tmp_path / "t.onnx")]) == 2
    assert f"{tmp_path / 'none.pt'}: no such file" in capsys.readouterr().err
    assert not (tmp_path / "t.onnx").exists()


def test_released_checkpoint_keeps_weights_and_drops_training_state(tmp_path, capsys):
    """`imkd export --format checkpoint` (what models/ ships): same weights, config and kind,
    loadable by the pipeline, without the optimizer state a trainer's file carries."""
    from imkd_core.checkpoint import load_checkpoint
    from imkd_core.models import Teacher

    config = load_model_config("tiny")
    teacher = Teacher(config)
    optimizer = torch.optim.AdamW(teacher.parameters())
    trained = {"optimizer": optimizer.state_dict(), "position": {"epoch": 3, "step": 90}}
    save_checkpoint(tmp_path / "last.pt", teacher, config, extra=trained)
    assert imkd_main(["export", "--checkpoint", str(tmp_path / "last.pt"), "--format",
                      "checkpoint", "--out", str(tmp_path / "teacher.pt")]) == 0
    assert "weights only" in capsys.readouterr().out
    source = load_checkpoint(tmp_path / "last.pt")
    released = load_checkpoint(tmp_path / "teacher.pt")
    assert released["kind"] == "teacher" and released["config"] == source["config"]
    assert released["state_dict"].keys() == source["state_dict"].keys()
    assert all(torch.equal(released["state_dict"][k], v) for k, v in source["state_dict"].items())
    assert "optimizer" not in released["extra"]
    assert released["extra"]["released_from"]["position"] == {"epoch": 3, "step": 90}
    assert DetectorPipeline.from_checkpoint(tmp_path / "teacher.pt").kind == "teacher"


@pytest.mark.slow
def test_exported_r50_student_equals_eager(world, tmp_path):
    ckpt = make_checkpoint(tmp_path / "r50.pt", "r50_256x704")
    start = time.perf_counter()
    export_checkpoint(ckpt, "onnx", tmp_path / "r50.onnx")
    print(f"r50 ONNX export {time.perf_counter() - start:.0f} s, "
          f"{os.path.getsize(tmp_path / 'r50.onnx') / 2**20:.0f} MiB")
    eager = DetectorPipeline.from_file(ckpt, device="cpu")
    ort_pipe = DetectorPipeline.from_file(tmp_path / "r50.onnx", device="cpu",
                                          backend="onnxruntime")
    assert assert_same(eager, ort_pipe, world_samples(world, 1)) > 0


# ------------------------------------------------------------------------------ the node
@pytest.mark.ros
def test_node_runs_an_onnx_export_and_refuses_a_mismatch(exported, tmp_path):
    import rclpy
    from ros_rig import DetectorProcess, Rig

    from imkd_ros.detector_node import DetectorNode
    from imkd_ros.parameters import ParameterError

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        overrides = [rclpy.parameter.Parameter("checkpoint", value=str(exported["checkpoint"])),
                     rclpy.parameter.Parameter("backend", value="onnxruntime")]
        with pytest.raises(ParameterError) as info:
            DetectorNode(context=ctx, parameter_overrides=overrides)
        assert (f"parameter 'checkpoint' = '{exported['checkpoint']}' (device 'auto', backend "
                f"'onnxruntime'): cannot load: {exported['checkpoint']}: a checkpoint"
                in str(info.value))

        name = f"det_onnx_{os.getpid()}"
        cams, radars = ("CAM_FRONT", "CAM_BACK"), ("RADAR_FRONT",)
        node = DetectorProcess(name, {
            "checkpoint": str(exported["onnx"]), "backend": "onnxruntime", "device": "cpu",
            "cameras": list(cams), "radars": list(radars), "score_threshold": 0.0}, tmp_path)
        rig = Rig(ctx, name, cams, radars)
        try:
            rig.wait_ready(node)
            rig.publish_static()
            rig.spin(0.2)
            rig.publish_frame(100 * 10**9)
            rig.spin_until(lambda: len(rig.detections) >= 1, 60, "detections (onnxruntime)")
            assert len(rig.detections[0].detections) > 0
            assert "onnxruntime" in node.log() and "CPUExecutionProvider" in node.log()
        finally:
            rig.node.destroy_node()
            code = node.stop()
            print(node.log())
        assert code == 0
    finally:
        rclpy.try_shutdown(context=ctx)

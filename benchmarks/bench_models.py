"""Model benchmark: forward latency per stage, parameter counts and peak memory, per config.

    .venv/bin/python benchmarks/bench_models.py                       # tiny and r50_256x704
    .venv/bin/python benchmarks/bench_models.py --configs tiny --repeats 50 --json out.json

Each config runs in its own subprocess so its peak memory is its own (CPU: peak RSS of that
process, with the RSS before the model was built shown separately; CUDA: the allocator's
peak). Input: one synthetic sample at nuScenes resolution (6 cameras 900x1600, 5 radars, ~12
objects; `--world DIR`: the first keyframe of a generated world instead), batch 1, eval mode,
no grad. Stages (Student methods): image backbone (ResNet+FPN),
depth + view transform (depth net, lift-splat, BEV conv), radar (pillars, encoder, intensity
head), fusion, BEV backbone, head + decode (incl. NMS). Latencies are medians over the repeats;
preprocessing (image resize etc.) and the teacher are timed separately.

Backends (`--backends`, default all): the same student, weights and batch through
`DetectorPipeline.infer` (the node's forward: model input -> head maps, no decoding) as torch
eager, torch.compile (inductor; "failed: ..." where it does not work here), TorchScript and
ONNX Runtime (CPU, the `imkd export` files), one call of each per round so they share the
machine's load; medians, and ratios to eager. ONNX Runtime's time per stage comes from its
profiler (kernel time of the nodes per module scope of the exported graph; `other`: glue and
fused nodes). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ["image_backbone", "depth_view_transform", "radar", "fusion", "bev_backbone",
          "head_decode"]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def load_sample(world: Path | None):
    """The first keyframe of a generated world (`imkd world`), or a synthetic sample."""
    if world is None:
        from imkd_core.data.synthetic import make_sample
        return make_sample(0, num_objects=12, image_hw=(900, 1600)), "synthetic 900x1600"
    from imkd_core.data.nuscenes import NuScenesReader, dataroot_version
    reader = NuScenesReader(world, version=dataroot_version(world))
    sample = next(iter(reader.samples()))
    h, w = next(iter(sample.cameras.values())).image.shape[:2]
    return sample, f"world {w}x{h}"


def run_single(name: str, device: str, repeats: int, warmup: int,
               world: Path | None = None, backends: list[str] | None = None) -> dict:
    import torch

    from imkd_core.config import load_model_config
    from imkd_core.device import resolve_device
    from imkd_core.distill import IMKDLoss
    from imkd_core.models import Student, Teacher, count_parameters
    from imkd_core.models.head import decode
    from imkd_core.preprocess import Preprocessor, collate, to_device

    dev = resolve_device(device)
    cfg = load_model_config(name)
    sample, source = load_sample(world)
    rss_before = _rss_mib()
    torch.manual_seed(0)
    student = Student(cfg).to(dev).eval()
    teacher = Teacher(cfg).to(dev).eval()
    cam = student.camera
    params = {
        "image_backbone": count_parameters(cam.backbone) + count_parameters(cam.neck),
        "depth_view_transform": count_parameters(cam.depth_net) + count_parameters(cam.bev_conv),
        "radar": count_parameters(student.radar),
        "fusion": count_parameters(student.fusion),
        "bev_backbone": count_parameters(student.bev_backbone),
        "head_decode": count_parameters(student.head_net),
        "student": count_parameters(student),
        "teacher": count_parameters(teacher),
        "imkd_adaptors": count_parameters(IMKDLoss(cfg)),
    }

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    prep = Preprocessor(cfg, with_lidar=True, device=dev)
    prep_times = []
    for _ in range(max(3, repeats // 4)):
        sync()
        t0 = time.perf_counter()
        batch = to_device(collate([prep(sample)]), dev)
        sync()
        prep_times.append(time.perf_counter() - t0)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    times: dict[str, list[float]] = {k: [] for k in [*STAGES, "total", "teacher"]}
    with torch.no_grad():
        for it in range(warmup + repeats):
            marks = []
            sync()
            t = time.perf_counter()
            feats = student.image_features(batch)
            sync()
            marks.append(time.perf_counter())
            cam_bev, _ = student.camera_bev(feats, batch)
            sync()
            marks.append(time.perf_counter())
            radar_bev, intensity = student.radar_bev(batch)
            sync()
            marks.append(time.perf_counter())
            fused = student.fusion(cam_bev, radar_bev, torch.sigmoid(intensity))
            sync()
            marks.append(time.perf_counter())
            bev = student.bev_backbone(fused)
            sync()
            marks.append(time.perf_counter())
            preds = student.head(bev)
            decode(preds, cfg.bev_grid, cfg.head, cfg.classes)
            sync()
            marks.append(time.perf_counter())
            t_teacher = time.perf_counter()
            teacher(batch)
            sync()
            teacher_s = time.perf_counter() - t_teacher
            if it >= warmup:
                prev = t
                for stage, mark in zip(STAGES, marks):
                    times[stage].append(mark - prev)
                    prev = mark
                times["total"].append(marks[-1] - t)
                times["teacher"].append(teacher_s)
    result = {
        "config": name,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "latency_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
        "latency_ms_min_total": 1e3 * min(times["total"]),
        "preprocess_ms": 1e3 * statistics.median(prep_times),
        "params": params,
        "rss_before_model_mib": rss_before,
        "peak_rss_mib": _rss_mib(),
        "input": {"source": source, "cameras": int(batch["images"].shape[1]),
                  "image": list(batch["images"].shape[-2:]),
                  "radar_points": int(batch["radar_mask"].sum()),
                  "lidar_points": int(batch["lidar_mask"].sum()),
                  "bev": list(cfg.bev_grid.shape)},
    }
    if dev.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    if backends and dev.type == "cpu":
        result["backends"] = run_backends(cfg, student, batch, repeats, warmup, backends)
    return result


BACKEND_NAMES = ("eager", "compile", "torchscript", "onnxruntime")
# exported-graph module scopes -> the stage they belong to (first match wins)
ORT_STAGES = (("student.camera.backbone", "image_backbone"), ("student.camera.neck",
              "image_backbone"), ("student.camera", "depth_view_transform"),
              ("student.radar", "radar"), ("student.fusion", "fusion"),
              ("student.bev_backbone", "bev_backbone"), ("student.head_net", "head"))


def ort_stage_profile(onnx_path: Path, batch, runs: int) -> dict[str, float]:
    """ms per stage per run from onnxruntime's profiler (node kernel times)."""
    import onnx
    import onnxruntime as ort

    from imkd_core.backends import OnnxRuntimeBackend
    from imkd_core.export import read_export

    scope = {}
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        names = json.loads(meta.get("pkg.torch.onnx.name_scopes", "[]").replace("'", '"'))
        stage = next((stage for prefix, stage in ORT_STAGES
                      if any(n.startswith(prefix) for n in names)), "other")
        for key in (node.name, *node.output):  # ORT names fused nodes after either
            scope[key] = stage
    backend = OnnxRuntimeBackend(onnx_path, read_export(onnx_path), "cpu")
    options = ort.SessionOptions()
    options.intra_op_num_threads = backend.session.get_session_options().intra_op_num_threads
    options.enable_profiling = True
    options.profile_file_prefix = str(onnx_path.with_suffix(""))
    backend.session = ort.InferenceSession(str(onnx_path), options,
                                           providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        backend(batch)
    events = json.loads(Path(backend.session.end_profiling()).read_text())
    stages: dict[str, float] = {}
    originals = sorted(scope, key=len, reverse=True)
    for ev in events:
        if ev.get("cat") != "Node" or not ev["name"].endswith("_kernel_time"):
            continue
        node = ev["name"][: -len("_kernel_time")]
        if node not in scope:  # a fused node, e.g. relu_37_nchwc: named after one it took
            scope[node] = next((scope[o] for o in originals if node.startswith(o)), "other")
        stage = scope[node]
        stages[stage] = stages.get(stage, 0.0) + ev["dur"] / 1e3 / (runs + 1)
    return stages


def run_backends(cfg, student, batch, repeats: int, warmup: int, backends: list[str]) -> dict:
    """Median infer() ms per backend on the same batch, rounds interleaved."""
    import tempfile

    import torch

    from imkd_core.checkpoint import save_checkpoint
    from imkd_core.export import export_checkpoint
    from imkd_core.pipeline import DetectorPipeline

    eager = DetectorPipeline(student, cfg, device="cpu")
    out: dict = {"ms": {}, "failed": {}, "export_s": {}}
    calls = {"eager": eager.infer}
    tmp = Path(tempfile.mkdtemp(prefix="bench_models_"))
    ckpt = tmp / "student.pt"
    save_checkpoint(ckpt, student, cfg)
    for name in backends:
        t0 = time.perf_counter()
        try:
            if name == "compile":
                compiled = DetectorPipeline(torch.compile(student), cfg, device="cpu")
                compiled.infer(batch)  # compiles here, not in the timed rounds
                calls[name] = compiled.infer
            elif name == "torchscript":
                export_checkpoint(ckpt, "torchscript", tmp / "student.ts")
                calls[name] = DetectorPipeline.from_file(tmp / "student.ts", "cpu").infer
            elif name == "onnxruntime":
                export_checkpoint(ckpt, "onnx", tmp / "student.onnx")
                calls[name] = DetectorPipeline.from_file(tmp / "student.onnx", "cpu",
                                                         backend="onnxruntime").infer
        except Exception as exc:  # report it in the table, benchmark the rest
            out["failed"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        if name != "eager":
            out["export_s"][name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {name: [] for name in calls}
    for it in range(warmup + repeats):
        for name, call in calls.items():
            t = time.perf_counter()
            call(batch)
            if it >= warmup:
                times[name].append(time.perf_counter() - t)
    out["ms"] = {name: 1e3 * statistics.median(v) for name, v in times.items()}
    if "onnxruntime" in calls:
        out["ort_stages_ms"] = ort_stage_profile(tmp / "student.onnx", batch,
                                                 max(3, repeats // 3))
    return out


def format_table(results: list[dict]) -> str:
    names = [r["config"] for r in results]
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]

    def row(label, values):
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    row("device / threads", [f"{r['device']} / {r['threads']}" for r in results])
    row("input (image, BEV)", [f"6x{r['input']['image'][0]}x{r['input']['image'][1]}, "
                               f"{r['input']['bev'][0]}x{r['input']['bev'][1]}" for r in results])
    for stage in STAGES:
        row(f"{stage} ms", [f"{r['latency_ms'][stage]:.1f}" for r in results])
    row("**student forward ms** (median / min)",
        [f"**{r['latency_ms']['total']:.1f}** / {r['latency_ms_min_total']:.1f}"
         for r in results])
    row("sample", [r["input"]["source"] for r in results])
    row("radar / LiDAR points in the grid",
        [f"{r['input']['radar_points']} / {r['input']['lidar_points']}" for r in results])
    row("preprocess ms (6 images + points)", [f"{r['preprocess_ms']:.1f}" for r in results])
    row("teacher forward ms", [f"{r['latency_ms']['teacher']:.1f}" for r in results])
    for key in ["image_backbone", "depth_view_transform", "radar", "fusion", "bev_backbone",
                "head_decode", "student", "teacher", "imkd_adaptors"]:
        row(f"params {key}", [f"{r['params'][key] / 1e6:.3f} M" for r in results])
    row("peak RSS MiB (before model)",
        [f"{r['peak_rss_mib']:.0f} ({r['rss_before_model_mib']:.0f})" for r in results])
    if any("cuda_peak_mib" in r for r in results):
        row("CUDA peak MiB", [f"{r.get('cuda_peak_mib', float('nan')):.0f}" for r in results])
    if any("backends" in r for r in results):
        lines += ["", backend_table(results)]
    return "\n".join(lines)


def backend_table(results: list[dict]) -> str:
    """infer() ms per backend and its ratio to eager (> 1: faster), ORT's stages."""
    names = [r["config"] for r in results]
    lines = ["| forward (`infer`, no decode) | " + " | ".join(names) + " |",
             "|---" * (len(names) + 1) + "|"]
    for backend in BACKEND_NAMES:
        cells = []
        for r in results:
            b = r.get("backends", {})
            if backend in b.get("failed", {}):
                cells.append(f"failed: {b['failed'][backend]}")
            elif backend in b.get("ms", {}):
                ms, eager = b["ms"][backend], b["ms"]["eager"]
                cells.append(f"{ms:.1f} ms ({eager / ms:.2f}x)")
            else:
                cells.append("-")
        lines.append(f"| {backend} | " + " | ".join(cells) + " |")
    stages = [*dict.fromkeys([*STAGES[:-1], "head", "other"])]
    for stage in stages:
        cells = []
        for r in results:
            ort_ms = r.get("backends", {}).get("ort_stages_ms", {})
            eager = r["latency_ms"].get(stage if stage != "head" else "head_decode")
            e = f"{eager:.1f}" if eager is not None and stage != "other" else "-"
            cells.append(f"{ort_ms.get(stage, 0.0):.1f} (eager {e})")
        lines.append(f"| ORT {stage} ms (profiler) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "r50_256x704"])
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed forwards (default: 30 for tiny, 5 otherwise)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--world", type=Path, default=None,
                        help="a generated world's dataroot: benchmark on its first keyframe "
                             "(default: a synthetic 900x1600 sample)")
    parser.add_argument("--backends", nargs="*", default=list(BACKEND_NAMES),
                        choices=BACKEND_NAMES, help="compare these inference backends (CPU; "
                                                    "none: skip the comparison)")
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.single:
        repeats = args.repeats or (30 if args.single == "tiny" else 5)
        print(json.dumps(run_single(args.single, args.device, repeats, args.warmup, args.world,
                                    args.backends)))
        return 0

    results = []
    for name in args.configs:
        cmd = [sys.executable, __file__, "--single", name, "--device", args.device,
               "--warmup", str(args.warmup)]
        if args.repeats:
            cmd += ["--repeats", str(args.repeats)]
        if args.world:
            cmd += ["--world", str(args.world)]
        cmd += ["--backends", *args.backends]
        print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              env=dict(os.environ), check=False)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

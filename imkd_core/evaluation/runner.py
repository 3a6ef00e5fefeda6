"""`imkd evaluate`: a checkpoint over a split -> official results JSON, devkit metrics, report.

    imkd evaluate --checkpoint runs/student/checkpoints/last.pt --dataroot D --split val \\
        --out runs/student/eval

The detections are `DetectorPipeline.__call__` on each keyframe, the very call the ROS node
makes, so what is scored is what is deployed; Samples come from `data.dataset.KeyframeDataset`
with the options the trainer used for that model kind (`reader_options`), through the same
sample cache. Teacher checkpoints evaluate the same way (they read LiDAR). One keyframe at a
time: the pipeline is the batch-of-one inference path, and batching here would score a
different code path than the node runs. The steps are functions (`open_checkpoint`, `detect`,
`score`, `write_evaluation`) that `evaluation.robustness` runs with its sensor variants.

`DIR` receives `results_<split>.json` (the official submission format) and
`metrics_summary.json` (the devkit's, via `evaluation.metrics.evaluate_detections`), plus
`ap_per_class.png`, `pr_<class>.png` for the main classes (`PR_CLASSES`), `metrics.json`
(NDS, mAP, TP errors, per-class table, counts, what was evaluated; with
`by_condition` the same per scene condition under `subsets`), `report.md` (the same as
tables) and, for `OVERLAY_SAMPLES` keyframes spread over the split, `sample_<k>_cameras.png`
(the six images with the projected detections in class colours and the ground truth in
`GT_COLOR`; student checkpoints, which read cameras) and `sample_<k>_bev.png` (LiDAR points when
the model read them, radar points, the same boxes from above). The PNGs are written atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from imkd_core.atomic import write_atomic
from imkd_core.data.dataset import KeyframeDataset, reader_options
from imkd_core.evaluation.metrics import evaluate_detections
from imkd_core.geometry import BOX_EDGES, box_corners, project_to_image
from imkd_core.pipeline import DetectorPipeline
from imkd_core.sample import CAMERA_NAMES, CLASS_COLORS, CLASS_INDEX, GT_COLOR, Boxes, Sample

PR_CLASSES = ("car", "truck", "bus", "pedestrian")  # the precision-recall plots' classes
OVERLAY_SAMPLES = 3  # keyframes drawn (cameras + BEV), spread evenly over the split
OVERLAY_MIN_SCORE = 0.3  # detections drawn: at least this score, at most OVERLAY_MAX_BOXES
OVERLAY_MAX_BOXES = 100
TP_ERRORS = (("mATE", "trans_err"), ("mASE", "scale_err"), ("mAOE", "orient_err"),
             ("mAVE", "vel_err"), ("mAAE", "attr_err"))


def scene_conditions(description: str) -> list[str]:
    """The conditions a scene description names: "night" and/or "rain", else "day". The world
    writes them ("Night, ...", "Rain, ..."); real nuScenes descriptions use the same words. A
    night in the rain counts in both."""
    text = description.lower()
    found = [c for c in ("night", "rain") if c in text]
    return found or ["day"]


Variant = Callable[[Sample], Sample]  # a keyframe as decoded -> the keyframe the model gets


def open_checkpoint(checkpoint: str | os.PathLike, dataroot: str | os.PathLike, split: str,
                    device: str = "auto", cache_dir: str | os.PathLike | None = None
                    ) -> tuple[DetectorPipeline, KeyframeDataset]:
    """The pipeline of `checkpoint` and the keyframes of `split`, read as the trainer read
    them for that model kind (`reader_options`), through the sample cache when given."""
    pipe = DetectorPipeline.from_checkpoint(checkpoint, device=device)
    data = KeyframeDataset(dataroot, split, options=reader_options(pipe.kind, lidar=False),
                           cache_dir=cache_dir)
    return pipe, data


def detect(pipe: DetectorPipeline, data: KeyframeDataset, variants: Mapping[str, Variant],
           keep: Collection[int] = (), quiet: bool = False
           ) -> tuple[dict[str, dict[str, Boxes]], dict[int, Sample]]:
    """`pipe` on every keyframe of `data` once per variant: {variant: {token: Boxes}}, and the
    keyframes (as decoded) at the indices in `keep`. Each keyframe is decoded once, whatever
    the number of variants: they see the same Sample, changed by the variant."""
    results: dict[str, dict[str, Boxes]] = {name: {} for name in variants}
    kept: dict[int, Sample] = {}
    for index in tqdm(range(len(data)), desc=f"evaluate {data.split}", unit="sample",
                      disable=quiet, dynamic_ncols=True):
        sample = data.sample(index)
        for name, variant in variants.items():
            results[name][sample.token] = pipe(variant(sample))
        if index in keep:
            kept[index] = sample
    return results, kept


def condition_subsets(data: KeyframeDataset) -> dict[str, list[str]]:
    """Scene condition (`scene_conditions`) -> the tokens of `data` in scenes of it."""
    nusc = data.reader.nusc
    subsets: dict[str, list[str]] = {}
    for token in data.tokens:
        scene = nusc.get("scene", nusc.get("sample", token)["scene_token"])
        for condition in scene_conditions(scene["description"]):
            subsets.setdefault(condition, []).append(token)
    return subsets


def score(data: KeyframeDataset, results: Mapping[str, Boxes], out_dir: str | os.PathLike,
          meta: Mapping[str, bool], by_condition: bool = False,
          pr_curves: Sequence[str] = ()) -> dict[str, Any]:
    """The devkit's metrics of `results` (token -> Boxes) on `data`'s split (files under
    `out_dir`, as `evaluate_detections` writes them), per scene condition too when
    `by_condition`; without the devkit's `summary` (its metrics_summary.json holds it)."""
    subsets = condition_subsets(data) if by_condition else {}
    metrics = evaluate_detections(data.dataroot, data.version, data.split, results, out_dir,
                                  nusc=data.reader.nusc, meta=meta, subsets=subsets,
                                  pr_curves=pr_curves)
    metrics.pop("summary")
    return metrics


def submission_meta(kind: str, radar: bool = True) -> dict[str, bool]:
    """The submission's `meta`: the sensors a model of `kind` read (`radar`: if it got any)."""
    teacher = kind == "teacher"
    return {"use_camera": not teacher, "use_lidar": teacher, "use_radar": radar and not teacher,
            "use_map": False, "use_external": False}


def evaluate_checkpoint(checkpoint: str | os.PathLike, dataroot: str | os.PathLike,
                        out_dir: str | os.PathLike, split: str = "val", device: str = "auto",
                        cache_dir: str | os.PathLike | None = None, quiet: bool = False,
                        by_condition: bool = False) -> dict[str, Any]:
    """Detect on every keyframe of `split`, score with the devkit, write the report; returns
    the metrics (as `metrics.json`). `by_condition`: also per scene condition (`subsets`)."""
    pipe, data = open_checkpoint(checkpoint, dataroot, split, device, cache_dir)
    results, kept = detect(pipe, data, {"": lambda sample: sample}, overlay_indices(data),
                           quiet)
    return write_evaluation(checkpoint, pipe, data, results[""], kept, out_dir, by_condition)


def overlay_indices(data: KeyframeDataset) -> list[int]:
    """The keyframes the report draws: `OVERLAY_SAMPLES` spread evenly over the split."""
    return sorted(set(np.linspace(0, len(data) - 1, min(OVERLAY_SAMPLES, len(data))).round()
                      .astype(int).tolist()))


def write_evaluation(checkpoint: str | os.PathLike, pipe: DetectorPipeline,
                     data: KeyframeDataset, results: Mapping[str, Boxes],
                     overlays: Mapping[int, Sample], out_dir: str | os.PathLike,
                     by_condition: bool = False) -> dict[str, Any]:
    """Score `results` (the pipeline on every keyframe of `data`) and write the evaluation
    folder (module doc) with `overlays` (index -> keyframe) drawn; returns the metrics."""
    metrics = score(data, results, out_dir, submission_meta(pipe.kind), by_condition,
                    PR_CLASSES)
    metrics.update(checkpoint=str(checkpoint), kind=pipe.kind, dataroot=str(data.dataroot),
                   version=data.version, num_samples=len(data))
    out = Path(out_dir)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_ap_bars(metrics, out / "ap_per_class.png")
    pictures = []
    for k, index in enumerate(sorted(overlays)):
        sample = overlays[index]
        shown = _shown(results[sample.token])
        if sample.cameras:
            plot_cameras(sample, shown, out / f"sample_{k}_cameras.png")
            pictures.append(f"sample_{k}_cameras.png")
        plot_bev(sample, shown, out / f"sample_{k}_bev.png")
        pictures.append(f"sample_{k}_bev.png")
    (out / "report.md").write_text(report_markdown(metrics, pictures))
    return metrics


def _shown(boxes: Boxes) -> Boxes:
    """The detections worth drawing: the best `OVERLAY_MAX_BOXES` above `OVERLAY_MIN_SCORE`."""
    scores = boxes.scores if boxes.scores is not None else np.ones(len(boxes))
    order = np.argsort(-scores, kind="stable")
    keep = order[scores[order] >= OVERLAY_MIN_SCORE][:OVERLAY_MAX_BOXES]
    return boxes.select(keep)


def _save_png(fig, path: Path) -> None:
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def _box_sets(sample: Sample, predicted: Boxes):
    """(boxes, colour per box, line style) for the ground truth, then the detections."""
    gt = sample.gt if sample.gt is not None else Boxes.empty()
    yield gt.params, [GT_COLOR] * len(gt), "--"
    yield predicted.params, [CLASS_COLORS[int(c)] for c in predicted.labels], "-"


def plot_cameras(sample: Sample, predicted: Boxes, path: Path) -> None:
    """The six camera images (2 x 3) with ground-truth (dashed, GT_COLOR) and detected (class
    colours) boxes projected through each camera's K and pose."""
    from matplotlib.figure import Figure

    names = [n for n in CAMERA_NAMES if n in sample.cameras]
    fig = Figure(figsize=(15, 5.6))
    axes = fig.subplots(2, 3).ravel()
    for ax, name in zip(axes, names):
        cam = sample.cameras[name]
        h, w = cam.image.shape[:2]
        ax.imshow(cam.image)
        for params, colors, style in _box_sets(sample, predicted):
            if not len(params):
                continue
            corners = box_corners(params)  # (N, 8, 3)
            uv, depth = project_to_image(corners.reshape(-1, 3), cam.T_ego_cam, cam.K)
            uv, depth = uv.reshape(-1, 8, 2), depth.reshape(-1, 8)
            for box_uv, box_depth, color in zip(uv, depth, colors):
                if (box_depth <= 0.5).any():  # partly behind the camera: not drawn
                    continue
                inside = ((box_uv[:, 0] > -w) & (box_uv[:, 0] < 2 * w)
                          & (box_uv[:, 1] > -h) & (box_uv[:, 1] < 2 * h))
                if not inside.all():
                    continue
                for a, b in BOX_EDGES.reshape(-1, 2):
                    ax.plot(box_uv[[a, b], 0], box_uv[[a, b], 1], style, color=color, lw=1)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    for ax in axes[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{sample.token}: ground truth dashed, detections >= {OVERLAY_MIN_SCORE} "
                 "in class colours", fontsize=10)
    fig.tight_layout()
    _save_png(fig, path)


def plot_bev(sample: Sample, predicted: Boxes, path: Path, extent: float = 55.0) -> None:
    """Bird's-eye view in the keyframe ego frame: LiDAR points (grey, when read), radar points
    (orange), ground truth (dashed, GT_COLOR) and detections (class colours) from above."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 7))
    ax = fig.subplots()
    ax.set_facecolor("black")
    if sample.lidar is not None and len(sample.lidar.points):
        pts = sample.lidar.points
        ax.scatter(pts[:, 0], pts[:, 1], s=0.2, c="0.55", linewidths=0, label="LiDAR")
    radar = [r.points for r in sample.radars.values() if len(r.points)]
    if radar:
        pts = np.concatenate(radar)
        ax.scatter(pts[:, 0], pts[:, 1], s=6, c="orange", linewidths=0, label="radar")
    for params, colors, style in _box_sets(sample, predicted):
        if not len(params):
            continue
        corners = box_corners(params)[:, [0, 1, 2, 3, 0], :2]  # the bottom face, closed
        for box, color in zip(corners, colors):
            ax.plot(box[:, 0], box[:, 1], style, color=color, lw=1)
    ax.plot([0], [0], marker=(3, 0, -90), color="red", markersize=10)  # ego, facing +x
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xlabel("x forward (m)")
    ax.set_ylabel("y left (m)")
    if sample.lidar is not None or radar:
        ax.legend(loc="upper right", fontsize=8, markerscale=4)
    ax.set_title(f"{sample.token}: ground truth dashed, detections in class colours",
                 fontsize=9)
    fig.tight_layout()
    _save_png(fig, path)


def plot_ap_bars(metrics: dict[str, Any], path: Path) -> None:
    """Per-class AP as horizontal bars (a PNG next to the report)."""
    from matplotlib.figure import Figure  # no pyplot: no backend or global state to touch

    names = list(metrics["per_class"])
    fig = Figure(figsize=(6, 0.35 * len(names) + 1.2))
    ax = fig.subplots()
    ax.barh(names, [metrics["per_class"][n]["AP"] for n in names],
            color=[CLASS_COLORS[CLASS_INDEX[n]] for n in names])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("AP (mean over the 0.5, 1, 2, 4 m thresholds)")
    ax.set_title(f"{metrics['kind']} on {metrics['eval_set']}: mAP {metrics['mAP']:.3f}, "
                 f"NDS {metrics['NDS']:.3f}")
    fig.tight_layout()
    _save_png(fig, path)


def format_metric(value: float | None) -> str:
    """A metric in a table: four decimals; "n/a" for None or NaN."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def report_markdown(metrics: dict[str, Any], pictures: list[str] = ()) -> str:
    """metrics.json as a page: headline numbers, TP errors, then AP and errors per class, and
    the `pictures` (PNG names in the report's folder) at the end."""
    lines = [
        f"# Evaluation of `{metrics['checkpoint']}`",
        "",
        f"{metrics['kind']} on split `{metrics['eval_set']}` of `{metrics['dataroot']}` "
        f"({metrics['version']}): {metrics['num_samples']} keyframes, "
        f"{metrics['num_pred_boxes']} detections, {metrics['num_gt_boxes']} ground-truth boxes.",
        "",
        "| NDS | mAP | " + " | ".join(name for name, _ in TP_ERRORS) + " |",
        "| --- " * (2 + len(TP_ERRORS)) + "|",
        f"| {format_metric(metrics['NDS'])} | {format_metric(metrics['mAP'])} | "
        + " | ".join(format_metric(metrics[name]) for name, _ in TP_ERRORS) + " |",
        "",
        "| class | AP | ATE | ASE | AOE | AVE | AAE |",
        "| --- " * 7 + "|",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(f"| {name} | {format_metric(row['AP'])} | "
                     + " | ".join(format_metric(row[key]) for _, key in TP_ERRORS) + " |")
    lines += ["", "![AP per class](ap_per_class.png)", "",
              " ".join(f"![{name} precision-recall](pr_{name}.png)" for name in PR_CLASSES)]
    if metrics.get("subsets"):
        lines += ["", "By scene condition:", "",
                  "| condition | keyframes | NDS | mAP | " + " | ".join(n for n, _ in TP_ERRORS)
                  + " |", "| --- " * (4 + len(TP_ERRORS)) + "|"]
        for name, sub in metrics["subsets"].items():
            lines.append(f"| {name} | {sub['num_samples']} | {format_metric(sub['NDS'])} | "
                         f"{format_metric(sub['mAP'])} | "
                         + " | ".join(format_metric(sub[n]) for n, _ in TP_ERRORS) + " |")
    if pictures:
        lines += ["", "Sample keyframes (ground truth dashed, detections in class colours):", ""]
        lines += [f"![{Path(name).stem}]({name})" for name in pictures]
    return "\n".join(lines) + "\n"


__all__ = ["OVERLAY_SAMPLES", "PR_CLASSES", "Variant", "condition_subsets", "detect",
           "evaluate_checkpoint", "format_metric", "open_checkpoint", "overlay_indices",
           "plot_ap_bars", "plot_bev", "plot_cameras", "report_markdown", "scene_conditions",
           "score", "submission_meta", "write_evaluation"]

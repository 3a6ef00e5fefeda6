"""`imkd evaluate`: a checkpoint over a split -> official results JSON, devkit metrics, report.

    imkd evaluate --checkpoint runs/student/checkpoints/last.pt --dataroot D --split val \\
        --out runs/student/eval

The detections are `DetectorPipeline.__call__` on each keyframe, the very call the ROS node
makes, so what is scored is what is deployed; Samples come from `data.dataset.KeyframeDataset`
with the options the trainer used for that model kind (`reader_options`), through the same
sample cache. Teacher checkpoints evaluate the same way (they read LiDAR). One keyframe at a
time: the pipeline is the batch-of-one inference path, and batching here would score a
different code path than the node runs.

`DIR` receives `results_<split>.json` (the official submission format) and
`metrics_summary.json` (the devkit's, via `evaluation.metrics.evaluate_detections`), plus
`ap_per_class.png`, `pr_<class>.png` for the main classes (`PR_CLASSES`), `metrics.json`
(NDS, mAP, TP errors, per-class table, counts, what was evaluated; with
`by_condition` the same per scene condition under `subsets`) and `report.md` (the same as
tables).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from imkd_core.data.dataset import KeyframeDataset, reader_options
from imkd_core.evaluation.metrics import evaluate_detections
from imkd_core.pipeline import DetectorPipeline
from imkd_core.sample import CLASS_COLORS, CLASS_INDEX

PR_CLASSES = ("car", "truck", "bus", "pedestrian")  # the precision-recall plots' classes
TP_ERRORS = (("mATE", "trans_err"), ("mASE", "scale_err"), ("mAOE", "orient_err"),
             ("mAVE", "vel_err"), ("mAAE", "attr_err"))


def scene_conditions(description: str) -> list[str]:
    """The conditions a scene description names: "night" and/or "rain", else "day". The world
    writes them ("Night, ...", "Rain, ..."); real nuScenes descriptions use the same words. A
    night in the rain counts in both."""
    text = description.lower()
    found = [c for c in ("night", "rain") if c in text]
    return found or ["day"]


def evaluate_checkpoint(checkpoint: str | os.PathLike, dataroot: str | os.PathLike,
                        out_dir: str | os.PathLike, split: str = "val", device: str = "auto",
                        cache_dir: str | os.PathLike | None = None, quiet: bool = False,
                        by_condition: bool = False) -> dict[str, Any]:
    """Detect on every keyframe of `split`, score with the devkit, write the report; returns
    the metrics (as `metrics.json`). `by_condition`: also per scene condition (`subsets`)."""
    pipe = DetectorPipeline.from_checkpoint(checkpoint, device=device)
    data = KeyframeDataset(dataroot, split, options=reader_options(pipe.kind, lidar=False),
                           cache_dir=cache_dir)
    results = {}
    for index in tqdm(range(len(data)), desc=f"evaluate {split}", unit="sample",
                      disable=quiet, dynamic_ncols=True):
        sample = data.sample(index)
        results[sample.token] = pipe(sample)
    teacher = pipe.kind == "teacher"
    meta = {"use_camera": not teacher, "use_lidar": teacher, "use_radar": not teacher,
            "use_map": False, "use_external": False}
    nusc = data.reader.nusc
    subsets: dict[str, list[str]] = {}
    if by_condition:
        for token in data.tokens:
            scene = nusc.get("scene", nusc.get("sample", token)["scene_token"])
            for condition in scene_conditions(scene["description"]):
                subsets.setdefault(condition, []).append(token)
    metrics = evaluate_detections(data.dataroot, data.version, split, results, out_dir,
                                  nusc=nusc, meta=meta, subsets=subsets, pr_curves=PR_CLASSES)
    metrics.pop("summary")  # the devkit's own file, metrics_summary.json, holds it
    metrics.update(checkpoint=str(checkpoint), kind=pipe.kind, dataroot=str(data.dataroot),
                   version=data.version, num_samples=len(data))
    out = Path(out_dir)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_ap_bars(metrics, out / "ap_per_class.png")
    (out / "report.md").write_text(report_markdown(metrics))
    return metrics


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
    fig.savefig(path, dpi=100)


def _num(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def report_markdown(metrics: dict[str, Any]) -> str:
    """metrics.json as a page: headline numbers, TP errors, then AP and errors per class."""
    lines = [
        f"# Evaluation of `{metrics['checkpoint']}`",
        "",
        f"{metrics['kind']} on split `{metrics['eval_set']}` of `{metrics['dataroot']}` "
        f"({metrics['version']}): {metrics['num_samples']} keyframes, "
        f"{metrics['num_pred_boxes']} detections, {metrics['num_gt_boxes']} ground-truth boxes.",
        "",
        "| NDS | mAP | " + " | ".join(name for name, _ in TP_ERRORS) + " |",
        "| --- " * (2 + len(TP_ERRORS)) + "|",
        f"| {_num(metrics['NDS'])} | {_num(metrics['mAP'])} | "
        + " | ".join(_num(metrics[name]) for name, _ in TP_ERRORS) + " |",
        "",
        "| class | AP | ATE | ASE | AOE | AVE | AAE |",
        "| --- " * 7 + "|",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(f"| {name} | {_num(row['AP'])} | "
                     + " | ".join(_num(row[key]) for _, key in TP_ERRORS) + " |")
    lines += ["", "![AP per class](ap_per_class.png)", "",
              " ".join(f"![{name} precision-recall](pr_{name}.png)" for name in PR_CLASSES)]
    if metrics.get("subsets"):
        lines += ["", "By scene condition:", "",
                  "| condition | keyframes | NDS | mAP | " + " | ".join(n for n, _ in TP_ERRORS)
                  + " |", "| --- " * (4 + len(TP_ERRORS)) + "|"]
        for name, sub in metrics["subsets"].items():
            lines.append(f"| {name} | {sub['num_samples']} | {_num(sub['NDS'])} | "
                         f"{_num(sub['mAP'])} | "
                         + " | ".join(_num(sub[n]) for n, _ in TP_ERRORS) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["PR_CLASSES", "evaluate_checkpoint", "plot_ap_bars", "report_markdown",
           "scene_conditions"]

"""`imkd evaluate --robustness`: a student checkpoint's metrics with sensors taken away.

    robustness(checkpoint, dataroot, out_dir)  # -> out_dir/robustness.json, robustness.md

Rows (NDS, mAP, mATE, mAVE and ΔNDS against all sensors): all sensors; each of the model's
cameras out in turn (the CAM_FRONT row is the "front camera out" case), and the mean over
them; all radars out (camera only); and the all-sensors run scored alone per scene condition
present in the split (day / night / rain, `runner.scene_conditions`).

A sensor "out" is what the ROS node feeds the pipeline then: a camera absent from the Sample
(absent or stale in the node: blank image, `cam_valid` False, `preprocess`), and no radar in
`Sample.radars` (the node's `radars: none`). Every variant is `DetectorPipeline.__call__`
(`runner.detect`), the path `evaluate_checkpoint` and the node run, on a shallow copy of the
one decoded keyframe: each keyframe is read once for all variants. Each variant is scored by
the devkit (`runner.score`); its own files go to a temporary folder and are dropped (the
all-sensors files are the normal report's when `report_dir` is given). Teacher checkpoints
are refused: they read LiDAR alone, so no camera or radar can be taken from them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from imkd_core.atomic import write_text_atomic
from imkd_core.evaluation.runner import (
    Variant,
    detect,
    format_metric,
    open_checkpoint,
    overlay_indices,
    score,
    submission_meta,
    write_evaluation,
)
from imkd_core.sample import Sample

ALL_SENSORS = "all_sensors"
RADARS_OUT = "radars_out"
FRONT_CAMERA = "CAM_FRONT"
COLUMNS = ("NDS", "mAP", "mATE", "mAVE")  # the table's metrics (robustness.json keeps all)


def camera_out(name: str) -> str:
    """The variant name of `name` blanked."""
    return f"without_{name}"


def _without_camera(name: str) -> Variant:
    def variant(sample: Sample) -> Sample:
        return dataclasses.replace(
            sample, cameras={k: v for k, v in sample.cameras.items() if k != name})
    return variant


def _without_radars(sample: Sample) -> Sample:
    return dataclasses.replace(sample, radars={})


def variants(cameras: list[str]) -> dict[str, Variant]:
    """All sensors, each of `cameras` out, radars out: name -> Sample -> Sample."""
    out: dict[str, Variant] = {ALL_SENSORS: lambda sample: sample}
    out.update({camera_out(name): _without_camera(name) for name in cameras})
    out[RADARS_OUT] = _without_radars
    return out


def robustness(checkpoint: str | os.PathLike, dataroot: str | os.PathLike,
               out_dir: str | os.PathLike, split: str = "val", device: str = "auto",
               cache_dir: str | os.PathLike | None = None, quiet: bool = False,
               report_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Score `checkpoint` on `split` with all sensors, each camera out, radars out, and per
    scene condition; write `out_dir/robustness.json` and `robustness.md` (atomically) and
    return the former. `report_dir`: also write `evaluate_checkpoint`'s report of the
    all-sensors run there (per condition), from the same pass over the keyframes."""
    pipe, data = open_checkpoint(checkpoint, dataroot, split, device, cache_dir)
    if pipe.kind == "teacher":
        raise ValueError(f"{checkpoint}: a {pipe.kind} checkpoint reads LiDAR only; "
                         "robustness to cameras and radars out needs a student checkpoint")
    cameras = list(pipe.config.image.cameras)
    keep = overlay_indices(data) if report_dir is not None else ()
    results, kept = detect(pipe, data, variants(cameras), keep, quiet)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scored: dict[str, dict[str, Any]] = {}
    if report_dir is not None:
        scored[ALL_SENSORS] = write_evaluation(checkpoint, pipe, data, results[ALL_SENSORS],
                                               kept, report_dir, by_condition=True)
    for name, boxes in results.items():
        if name in scored:
            continue
        with tempfile.TemporaryDirectory(prefix=".devkit-", dir=out) as devkit:
            scored[name] = score(data, boxes, devkit,
                                 submission_meta(pipe.kind, radar=name != RADARS_OUT),
                                 by_condition=name == ALL_SENSORS)
    table = {
        "checkpoint": str(checkpoint), "kind": pipe.kind, "dataroot": str(data.dataroot),
        "version": data.version, "split": split, "num_samples": len(data),
        "cameras": cameras, "front_camera_out": camera_out(FRONT_CAMERA),
        "rows": _rows(scored, cameras, len(data)),
        "variants": {name: {k: v for k, v in m.items()
                            if k not in ("subsets", "checkpoint", "kind", "dataroot",
                                         "version", "num_samples", "eval_set")}
                     for name, m in scored.items()},
    }
    write_text_atomic(out / "robustness.json", json.dumps(table, indent=2))
    write_text_atomic(out / "robustness.md", robustness_markdown(table))
    return table


def _rows(scored: dict[str, dict[str, Any]], cameras: list[str],
          num_samples: int) -> list[dict[str, Any]]:
    """The table's rows, in order, each {row, variant, keyframes, NDS, mAP, mATE, mAVE,
    dNDS}; ΔNDS against the all-sensors NDS over the whole split."""
    base = scored[ALL_SENSORS]["NDS"]

    def row(label: str, variant: str, metrics: dict[str, Any], keyframes: int) -> dict:
        values = {c: metrics[c] for c in COLUMNS}
        return {"row": label, "variant": variant, "keyframes": keyframes, **values,
                "dNDS": values["NDS"] - base}

    rows = [row("all sensors", ALL_SENSORS, scored[ALL_SENSORS], num_samples)]
    for name in cameras:
        label = f"{name} out" + (" (front camera out)" if name == FRONT_CAMERA else "")
        rows.append(row(label, camera_out(name), scored[camera_out(name)], num_samples))
    if cameras:
        singles = [scored[camera_out(name)] for name in cameras]
        mean = {c: sum(m[c] for m in singles) / len(singles) for c in COLUMNS}
        rows.append(row(f"one camera out: mean over {len(cameras)}", "mean_camera_out", mean,
                        num_samples))
    rows.append(row("radars out (camera only)", RADARS_OUT, scored[RADARS_OUT], num_samples))
    for condition, sub in scored[ALL_SENSORS].get("subsets", {}).items():
        rows.append(row(f"{condition} (all sensors)", f"{ALL_SENSORS}/{condition}", sub,
                        sub["num_samples"]))
    return rows


def robustness_markdown(table: dict[str, Any]) -> str:
    """robustness.json as a page: one line of context, then the rows."""
    lines = [
        f"# Robustness of `{table['checkpoint']}`",
        "",
        f"{table['kind']} on split `{table['split']}` of `{table['dataroot']}` "
        f"({table['version']}): {table['num_samples']} keyframes. A camera out is fed blank "
        "(as the node does for an absent or stale camera); radars out: no radar points. "
        "ΔNDS: against all sensors on the whole split.",
        "",
        "| condition / variant | keyframes | " + " | ".join(COLUMNS) + " | ΔNDS |",
        "| --- " * (3 + len(COLUMNS)) + "|",
    ]
    for row in table["rows"]:
        lines.append(f"| {row['row']} | {row['keyframes']} | "
                     + " | ".join(format_metric(row[c]) for c in COLUMNS)
                     + f" | {row['dNDS']:+.4f} |")
    return "\n".join(lines) + "\n"


__all__ = ["ALL_SENSORS", "FRONT_CAMERA", "RADARS_OUT", "camera_out", "robustness",
           "robustness_markdown", "variants"]

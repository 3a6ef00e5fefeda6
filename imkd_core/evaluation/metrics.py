"""Official nuScenes detection evaluation (nuscenes-devkit `DetectionEval`), from our boxes.

`evaluate_detections(dataroot, version, eval_set, results, out_dir)` takes per sample token
either a `Boxes` in that keyframe's ego frame (the LIDAR_TOP keyframe's ego pose, as every
`Sample` uses) or a list of submission dicts, writes the official submission JSON (with `meta`)
and the devkit's metrics summary under `out_dir`, and returns the metrics as a plain dict.
Samples of the split without an entry count as "no detections" (the devkit demands every one).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from imkd_core.geometry import ego_to_nuscenes_boxes
from imkd_core.sample import CLASSES, Boxes

EVAL_CONFIG = "detection_cvpr_2019"
_CYCLES = ("bicycle", "motorcycle")
_VEHICLES = ("car", "truck", "bus", "trailer", "construction_vehicle")
DEFAULT_META = {"use_camera": False, "use_lidar": False, "use_radar": False, "use_map": False,
                "use_external": False}


def default_attribute(name: str, speed: float) -> str:
    """The nuScenes attribute a detector without an attribute head should report."""
    if name in _VEHICLES:
        return "vehicle.moving" if speed > 0.5 else "vehicle.parked"
    if name in _CYCLES:
        return "cycle.with_rider"
    if name == "pedestrian":
        return "pedestrian.moving" if speed > 0.3 else "pedestrian.standing"
    return ""


def _valid_attribute(name: str, attribute: str) -> bool:
    if not attribute:
        return name in ("barrier", "traffic_cone")
    prefix = attribute.split(".")[0]
    return ((name in _VEHICLES and prefix == "vehicle") or (name in _CYCLES and prefix == "cycle")
            or (name == "pedestrian" and prefix == "pedestrian"))


def boxes_to_submission(sample_token: str, boxes: Boxes, T_map_ego: np.ndarray) -> list[dict]:
    """Ego-frame detections -> submission dicts (global frame, nuScenes conventions)."""
    if len(boxes) == 0:
        return []
    glob = ego_to_nuscenes_boxes(boxes.params, T_map_ego)
    scores = (np.ones(len(boxes), np.float32) if boxes.scores is None
              else np.asarray(boxes.scores, np.float32))
    out = []
    for i in range(len(boxes)):
        name = CLASSES[int(boxes.labels[i])]
        attribute = boxes.attributes[i] if boxes.attributes else ""
        if not _valid_attribute(name, attribute):
            attribute = default_attribute(name, float(np.hypot(*boxes.params[i, 7:9])))
        out.append({
            "sample_token": sample_token,
            "translation": [float(v) for v in glob["translation"][i]],
            "size": [max(float(v), 1e-3) for v in glob["size"][i]],
            "rotation": [float(v) for v in glob["rotation"][i]],
            "velocity": [float(v) for v in glob["velocity"][i, :2]],
            "detection_name": name,
            "detection_score": float(scores[i]),
            "attribute_name": attribute,
        })
    return out


def _keyframe_pose(nusc, sample_token: str) -> np.ndarray:
    from imkd_core.geometry import make_transform

    sample = nusc.get("sample", sample_token)
    sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    return make_transform(pose["rotation"], pose["translation"])


def split_sample_tokens(nusc, eval_set: str) -> list[str]:
    """Sample tokens of the scenes in an official split (as the devkit's evaluation sees them)."""
    from nuscenes.utils.splits import create_splits_scenes

    scenes = set(create_splits_scenes()[eval_set])
    return [s["token"] for s in nusc.sample
            if nusc.get("scene", s["scene_token"])["name"] in scenes]


def build_submission(nusc, eval_set: str,
                     results: Mapping[str, Boxes | Sequence[dict] | Sequence[Boxes]],
                     meta: Mapping | None = None) -> dict:
    """The official submission dict for `eval_set`: every split sample present."""
    tokens = split_sample_tokens(nusc, eval_set)
    if not tokens:
        raise ValueError(f"no samples of split {eval_set!r} in {nusc.dataroot} ({nusc.version})")
    known = set(tokens)
    unknown = [t for t in results if t not in known]
    if unknown:
        raise ValueError(f"{len(unknown)} result sample tokens are not in split {eval_set!r} "
                         f"(first: {unknown[0]})")
    submission: dict[str, list[dict]] = {}
    for token in tokens:
        value = results.get(token, [])
        if isinstance(value, Boxes):
            value = [value]
        entries: list[dict] = []
        for item in value:
            if isinstance(item, Boxes):
                entries.extend(boxes_to_submission(token, item, _keyframe_pose(nusc, token)))
            else:
                entry = dict(item)
                entry["sample_token"] = token
                entries.append(entry)
        submission[token] = entries
    return {"meta": dict(meta or DEFAULT_META), "results": submission}


def evaluate_detections(dataroot: str | Path, version: str, eval_set: str,
                        results: Mapping[str, Boxes | Sequence[dict] | Sequence[Boxes]],
                        out_dir: str | Path, *, nusc=None, meta: Mapping | None = None,
                        config_name: str = EVAL_CONFIG, verbose: bool = False,
                        subsets: Mapping[str, Sequence[str]] | None = None,
                        pr_curves: Sequence[str] = ()) -> dict:
    """Run nuscenes-devkit's detection evaluation; return {'mAP', 'NDS', 'mATE', ..., 'per_class'}.

    Writes `out_dir/results_<eval_set>.json` (official format) and `out_dir/metrics_summary.json`.
    Pass an already loaded `nusc` (nuscenes.NuScenes) to skip loading the tables again.
    `subsets`: name -> sample tokens of the split; each is scored alone by the same evaluator
    (its boxes restricted to those samples) into `result['subsets'][name]`.
    `pr_curves`: classes whose precision-recall curves (one per distance threshold, the
    devkit's rendering) go to `out_dir/pr_<class>.png`.
    """
    from nuscenes import NuScenes
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if nusc is None:
        nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=verbose)
    submission = build_submission(nusc, eval_set, results, meta)
    result_path = out_dir / f"results_{eval_set}.json"
    result_path.write_text(json.dumps(submission))
    evaluator = DetectionEval(nusc, config=config_factory(config_name),
                              result_path=str(result_path), eval_set=eval_set,
                              output_dir=str(out_dir), verbose=verbose)
    metrics, metric_data = evaluator.evaluate()
    if pr_curves:
        from nuscenes.eval.detection.render import class_pr_curve

        cfg = evaluator.cfg
        for name in pr_curves:
            class_pr_curve(metric_data, metrics, name, cfg.min_precision, cfg.min_recall,
                           savepath=str(out_dir / f"pr_{name}.png"))
    summary = metrics.serialize()
    (out_dir / "metrics_summary.json").write_text(json.dumps(summary, indent=2))
    result = {**_metrics_dict(summary, evaluator), "eval_set": eval_set, "summary": summary}
    if subsets:
        from nuscenes.eval.common.data_classes import EvalBoxes

        def restrict(boxes: EvalBoxes, tokens: Sequence[str]) -> EvalBoxes:
            out = EvalBoxes()
            for token in tokens:
                out.add_boxes(token, boxes[token])
            return out

        gt, pred = evaluator.gt_boxes, evaluator.pred_boxes
        result["subsets"] = {}
        for name, tokens in subsets.items():
            evaluator.gt_boxes, evaluator.pred_boxes = restrict(gt, tokens), restrict(pred, tokens)
            sub, _ = evaluator.evaluate()
            result["subsets"][name] = {**_metrics_dict(sub.serialize(), evaluator),
                                       "num_samples": len(tokens)}
        evaluator.gt_boxes, evaluator.pred_boxes = gt, pred
    return result


def _metrics_dict(summary: dict, evaluator) -> dict:
    """The devkit's serialised metrics as our flat dict (headline, TP errors, per class)."""
    tp = summary["tp_errors"]
    return {
        "mAP": float(summary["mean_ap"]),
        "NDS": float(summary["nd_score"]),
        "mATE": float(tp["trans_err"]), "mASE": float(tp["scale_err"]),
        "mAOE": float(tp["orient_err"]), "mAVE": float(tp["vel_err"]),
        "mAAE": float(tp["attr_err"]),
        "per_class": {name: {"AP": float(summary["mean_dist_aps"][name]),
                             **{k: float(v) for k, v in summary["label_tp_errors"][name].items()}}
                      for name in summary["mean_dist_aps"]},
        "num_gt_boxes": int(sum(len(b) for b in evaluator.gt_boxes.boxes.values())),
        "num_pred_boxes": int(sum(len(b) for b in evaluator.pred_boxes.boxes.values())),
    }


def ground_truth_submission(nusc, eval_set: str) -> dict[str, list[dict]]:
    """The split's ground truth as detections (score 1, devkit velocities), keeping only boxes
    the devkit's evaluation keeps (at least one LiDAR or radar point). A perfect detector."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    attribute_name = {a["token"]: a["name"] for a in nusc.attribute}
    out: dict[str, list[dict]] = {}
    for token in split_sample_tokens(nusc, eval_set):
        entries = []
        for ann_token in nusc.get("sample", token)["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            name = category_to_detection_name(ann["category_name"])
            if name is None or ann["num_lidar_pts"] + ann["num_radar_pts"] == 0:
                continue
            velocity = np.nan_to_num(nusc.box_velocity(ann_token)[:2])
            attrs = [attribute_name[t] for t in ann["attribute_tokens"]]
            entries.append({"translation": ann["translation"], "size": ann["size"],
                            "rotation": ann["rotation"], "velocity": velocity.tolist(),
                            "detection_name": name, "detection_score": 1.0,
                            "attribute_name": attrs[0] if attrs else ""})
        out[token] = entries
    return out

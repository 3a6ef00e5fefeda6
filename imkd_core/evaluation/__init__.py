"""Evaluation: the official nuScenes detection metrics, and the evaluation runner.

- `metrics`: our boxes -> the nuScenes submission format -> nuscenes-devkit's `DetectionEval`
  (mAP, NDS and the true-positive errors, per class), plus the split's sample tokens and a
  ground-truth submission to check the chain end to end.
- `runner` (`imkd evaluate`): a checkpoint and a dataroot -> `pipeline.DetectorPipeline` over
  every keyframe of a split -> `metrics.evaluate_detections`, with the results JSON, metrics and
  a report written to an output folder. It reads Samples the way the trainer does
  (`data.dataset`), so what is trained is what is scored.
- `robustness` (`imkd evaluate --robustness`): the runner's pass with each camera out, the
  radars out and per scene condition, as one table.

This package's `__init__` imports none of them: `data` uses `metrics` (the world's `--check`, the
radar baseline), and must not reach the runner's pipeline through it.
"""

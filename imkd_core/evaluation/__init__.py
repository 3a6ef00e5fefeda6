"""Evaluation: the official nuScenes detection metrics, and the home of the evaluation runner.

- `metrics`: our boxes -> the nuScenes submission format -> nuscenes-devkit's `DetectionEval`
  (mAP, NDS and the true-positive errors, per class), plus the split's sample tokens and a
  ground-truth submission to check the chain end to end.
- The evaluation runner (the training issue adds it, as `evaluation/runner.py`): a checkpoint
  and a dataroot or bag -> `pipeline.DetectorPipeline` over every keyframe of a split ->
  `metrics.evaluate_detections`, with the detections and metrics written next to the
  checkpoint. It reads Samples the way the trainer does (`data.dataset`), so what is trained is
  what is scored.
"""

"""Training: `train.loop`, the one loop that trains the LiDAR teacher
(`models.detector.Teacher`) and then the camera-radar student (`models.detector.Student`) with
the IMKD losses (`distill.IMKDLoss`, teacher frozen with `models.freeze`); `imkd train` in
`imkd_core.cli` calls it. It builds on:

- `imkd_core.data.dataset`: `KeyframeDataset` yielding `Preprocessor(config, train=True)`
  tensors batched by `preprocess.collate`, in `EpochSampler` order (sharded by rank under
  DDP), through the sample cache (or `BagDataset` over nuscenes2bag bags);
- `imkd_core.config.ModelConfig` (`TrainConfig`: batch size, learning rate and schedule,
  epochs, seed; `apply_overrides` for ablations from the command line);
- `imkd_core.device.resolve_device` and `imkd_core.checkpoint` (`save_checkpoint` /
  `load_checkpoint`): a checkpoint written here is what `pipeline.DetectorPipeline
  .from_checkpoint` and the ROS node load; training never imports the inference pipeline.

`train.distributed` is what changes under torchrun (process group, rank, synchronised
BatchNorm); the same loop runs in every process.

Scoring a checkpoint is `imkd_core.evaluation.runner` (`imkd evaluate`).
"""

"""Training: the home of the training loop (the training issue fills it; nothing lives here yet).

What goes here: one readable loop, in one file, that trains the LiDAR teacher
(`models.detector.Teacher`) and then the camera-radar student (`models.detector.Student`) with
the IMKD losses (`distill.IMKDLoss`, teacher frozen with `models.freeze`), on one GPU or under
`torchrun` with DistributedDataParallel. It builds on:

- `imkd_core.data.dataset`: the torch Dataset/DataLoader that yields `Preprocessor(config,
  train=True)` tensors (augmentation included) batched by `preprocess.collate`;
- `imkd_core.config.ModelConfig` (`TrainConfig` holds batch size, learning rate, epochs, seed;
  `apply_overrides` for ablations from the command line);
- `imkd_core.device` (`resolve_device`, `unwrap_model` for DDP) and `imkd_core.checkpoint`
  (`save_checkpoint` / `load_checkpoint`): a checkpoint written here is what
  `pipeline.DetectorPipeline.from_checkpoint` and the ROS node load; training never imports the
  inference pipeline to save;
- `imkd_core.evaluation` to score a checkpoint on the val split.

The `imkd train` / `imkd distill` subcommands (`imkd_core.cli`) will call into it.
"""

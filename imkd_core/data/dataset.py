"""The training Dataset: its home (the training issue fills it; nothing lives here yet).

What goes here: a torch `Dataset` (and the `DataLoader` settings that go with it) over a
nuScenes dataroot (real, or `imkd world`) or over rosbag2 bags, one item per keyframe of a
split: the `Sample` from `data.nuscenes.NuScenesReader` or `data.bag_reader.read_bag_samples`
(both through the one assembler, `data.assemble`, with `data.options.ReaderOptions`), turned into
model tensors by `preprocess.Preprocessor(config, train=True)` with a per-item random generator
(so workers and epochs draw reproducible augmentations), batched by `preprocess.collate`. A
sample cache belongs here too: decoding images and aggregating sweeps costs more than a
training step of the `tiny` model, so decoded Samples (or their tensors before augmentation)
are kept on disk keyed by dataroot, token and reader options.
"""

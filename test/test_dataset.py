"""The training Dataset and its sample cache: tensor shapes, augmentation reproducible per
(seed, epoch, index), cache hit / miss / invalidation, corrupt entries and interrupted writes."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from tiny_world import make_tiny_world

from imkd_core.config import load_model_config
from imkd_core.data import dataset as dataset_module
from imkd_core.data.dataset import EpochSampler, KeyframeDataset, SampleCache, sample_to_arrays
from imkd_core.data.nuscenes import NuScenesDataError
from imkd_core.data.options import ReaderOptions
from imkd_core.preprocess import Preprocessor, collate


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_tiny_world(tmp_path_factory.mktemp("world") / "nuscenes")


@pytest.fixture(scope="module")
def config():
    return load_model_config("tiny")


def _same_sample(a, b) -> None:
    x, y = sample_to_arrays(a), sample_to_arrays(b)
    assert sorted(x) == sorted(y)
    for key in x:
        np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_items_are_the_preprocessors_training_tensors(world, config):
    pre = Preprocessor(config, train=True, with_lidar=True)
    data = KeyframeDataset(world, "train", pre, seed=3)
    assert len(data) == 3
    item = data[0]
    assert item["images"].shape == (6, 3, config.image.height, config.image.width)
    assert item["radar_points"].shape[1] == 7 and item["lidar_points"].shape[1] == 5
    assert item["gt_boxes"].shape[1] == 9 and len(item["gt_labels"]) == len(item["gt_boxes"])
    batch = collate([data[0], data[1]])
    assert batch["images"].shape[0] == 2 and batch["lidar_mask"].shape[0] == 2
    # a student without distillation reads no LiDAR: the options decide, the same class serves
    student = KeyframeDataset(world, "val", Preprocessor(config, train=True),
                              options=ReaderOptions(load_lidar=False))
    assert "lidar_points" not in student[0] and len(student) == 3


def test_augmentation_depends_only_on_seed_epoch_and_index(world, config):
    pre = Preprocessor(config, train=True, with_lidar=True)
    a, b = KeyframeDataset(world, "train", pre, seed=3), KeyframeDataset(world, "train", pre,
                                                                        seed=3)
    b[2]  # b draws in another order first: a's item 1 must not notice
    for key, value in a[1].items():
        torch.testing.assert_close(b[1][key], value, rtol=0, atol=0)
    before = a[1]["bev_aug"]
    a.set_epoch(1)
    assert not torch.equal(a[1]["bev_aug"], before)


def test_epoch_sampler_resumes_inside_an_epoch():
    full = list(EpochSampler(10, seed=1, epoch=4))
    assert sorted(full) == list(range(10)) and full != list(range(10))
    assert list(EpochSampler(10, seed=1, epoch=4, start=6)) == full[6:]
    assert list(EpochSampler(10, seed=1, epoch=5)) != full
    assert len(EpochSampler(10, seed=1, start=6)) == 4


def test_cache_miss_then_hit_gives_the_readers_samples(world, tmp_path):
    plain = KeyframeDataset(world, "train")
    cached = KeyframeDataset(world, "train", cache_dir=tmp_path)
    for i in range(len(cached)):
        _same_sample(cached[i], plain[i])
    assert (cached.cache.misses, cached.cache.hits) == (3, 0)
    again = KeyframeDataset(world, "train", cache_dir=tmp_path)  # a later epoch / process
    for i in range(len(again)):
        _same_sample(again[i], plain[i])
    assert (again.cache.misses, again.cache.hits) == (0, 3)
    assert len(list(again.cache.dir.glob("*.npz"))) == 3


def test_cache_key_changes_with_options_and_with_the_data(world, tmp_path):
    base = SampleCache(tmp_path, world, "v1.0-trainval", ReaderOptions())
    assert SampleCache(tmp_path, world, "v1.0-trainval", ReaderOptions()).key == base.key
    assert SampleCache(tmp_path, world, "v1.0-trainval",
                       ReaderOptions(radar_sweeps=3)).key != base.key
    table = world / "v1.0-trainval" / "sample_annotation.json"
    st = table.stat()
    try:
        os.utime(table, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the tables were rewritten
        assert SampleCache(tmp_path, world, "v1.0-trainval", ReaderOptions()).key != base.key
    finally:
        os.utime(table, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_corrupt_entry_is_rebuilt_with_a_warning_naming_it(world, tmp_path):
    data = KeyframeDataset(world, "train", cache_dir=tmp_path)
    good = data[0]
    path = data.cache.path(data.tokens[0])
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.warns(UserWarning, match=str(path)):
        rebuilt = data[0]
    _same_sample(rebuilt, good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _same_sample(KeyframeDataset(world, "train", cache_dir=tmp_path)[0], good)


def test_an_interrupted_write_leaves_no_entry(world, tmp_path, monkeypatch):
    data = KeyframeDataset(world, "train", cache_dir=tmp_path)

    def dies_half_way(f, **arrays):
        f.write(b"PK\x03\x04 half an entry")
        raise KeyboardInterrupt  # SIGTERM or Ctrl-C in the middle of the write

    monkeypatch.setattr(dataset_module.np, "savez", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        data[0]
    monkeypatch.undo()
    assert list(data.cache.dir.iterdir()) == [data.cache.dir / "key.json"]
    # what SIGKILL leaves (a temporary file) is never taken for an entry
    (data.cache.dir / f".{data.tokens[0]}.npz.killed.tmp").write_bytes(b"junk")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _same_sample(data[0], KeyframeDataset(world, "train")[0])
    assert data.cache.misses == 2 and data.cache.path(data.tokens[0]).is_file()


def test_a_split_without_scenes_names_the_dataroot_and_split(world):
    with pytest.raises(NuScenesDataError, match="mini_val"):
        KeyframeDataset(world, "mini_val")


@pytest.fixture(scope="module")
def bag(world, tmp_path_factory):
    from imkd_ros.nuscenes2bag import convert  # a test may use the ROS side to make a bag

    out = tmp_path_factory.mktemp("bag") / "world_bag"
    convert(world, out, progress=False)
    return out


def test_bag_dataset_gives_the_dataroots_samples_and_caches_them(world, bag, tmp_path, config):
    from imkd_core.data.dataset import BagDataset

    options = ReaderOptions()
    by_token = {}
    for split in ("train", "val"):
        data = KeyframeDataset(world, split, options=options)
        by_token.update({t: (data, i) for i, t in enumerate(data.tokens)})
    bags = BagDataset([bag], options=options, cache_dir=tmp_path)
    assert sorted(bags.tokens) == sorted(by_token) and len(bags) == 6
    for i, token in enumerate(bags.tokens):
        data, j = by_token[token]
        sample = bags[i]
        assert sample.gt is not None and len(sample.gt) > 0  # from the /imkd/keyframes records
        _same_sample(sample, data[j])
    assert bags.cache.misses == 6  # one pass over the bag filled the cache
    again = BagDataset([bag], Preprocessor(config, train=True, with_lidar=True),
                       options=options, cache_dir=tmp_path, seed=3)
    item = again[2]
    assert (again.cache.misses, again.cache.hits) == (0, 1)
    assert item["gt_boxes"].shape[1] == 9 and item["lidar_points"].shape[1] == 5
    assert BagDataset([bag], options=options, cache_dir=tmp_path).cache.key == bags.cache.key
    assert BagDataset([bag], options=ReaderOptions(radar_sweeps=3),
                      cache_dir=tmp_path).cache.key != bags.cache.key

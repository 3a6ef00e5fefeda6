"""The training Dataset: the keyframes of a split as model tensors, with a sample cache.

`KeyframeDataset(dataroot, split, transform)` is a torch `Dataset` over the keyframes of an
official split of a nuScenes dataroot (real, or `imkd world`). Item `i` is
`transform(sample_i, rng=item_rng(seed, epoch, i))`: the transform is the trainer's
`preprocess.Preprocessor(config, train=True, with_lidar=...)`, passed in rather than imported
because `data` sits below `preprocess` (docs/ARCHITECTURE.md §Layers). Teacher, student and
distillation batches all come from one Sample; which sensors are read is the `ReaderOptions`.

Why the generator is derived from (seed, epoch, index) rather than carried along: the
augmentation of an item is then a function of where it is in training, not of what was drawn
before it, so worker processes, and a run resumed in the middle of an epoch, draw exactly the
augmentations an uninterrupted single-process run draws. `EpochSampler` does the same for the
order: a permutation per (seed, epoch), started at any position, and under DDP sharded by rank
so that the ranks' batches together are the batch one process would take.

`BagDataset(bags, transform)` is the same over the keyframes of `nuscenes2bag` rosbag2 files
(ground truth from their keyframe records), read front to back into the cache.

The sample cache (`SampleCache`): reading a keyframe (decoding six images, aggregating
6 radar sweeps x 5 radars and 10 LiDAR sweeps) costs about as much as a `tiny` training step,
so each decoded, un-augmented Sample is written once as an `.npz` under
`cache_dir/<key>/<token>.npz`, where the key hashes the dataroot's identity (path, table
version, size and mtime of every table file and of `world.json`) and the reader options: a
regenerated world or other options get a new key, never a stale entry. Entries are written to
a temporary file in the same folder and renamed, so a reader sees a whole entry or none,
however many processes share the cache and wherever a writer is killed. An entry that still
fails to load (disk damage, a hand-edited file) is rebuilt from the dataroot with a warning
naming the file: the cache is derived data and the dataroot stays the source of truth. Images
are stored raw (fast to read; about 2.6 MB per 800x450 keyframe, 26 MB at nuScenes' 1600x900).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from imkd_core.atomic import write_atomic, write_text_atomic
from imkd_core.data.nuscenes import (
    NUSCENES_TABLES,
    NuScenesDataError,
    NuScenesReader,
    dataroot_version,
)
from imkd_core.data.options import ReaderOptions
from imkd_core.sample import Boxes, CameraData, LidarData, RadarData, Sample

CACHE_FORMAT = 1  # bump when the entry layout changes: every key changes with it
Transform = Callable[..., dict[str, torch.Tensor]]  # transform(sample, rng=generator)


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation generator of item `index` in `epoch`: independent of draw history."""
    return np.random.default_rng([seed, epoch, index])


# ------------------------------------------------------------------------------ Sample <-> npz
def sample_to_arrays(sample: Sample) -> dict[str, np.ndarray]:
    """A Sample as flat named arrays (no pickles: strings become unicode arrays)."""
    a: dict[str, np.ndarray] = {
        "token": np.array(sample.token), "timestamp": np.array(sample.timestamp, np.int64),
        "T_map_ego": np.asarray(sample.T_map_ego), "scene_name": np.array(sample.scene_name),
    }
    for name, cam in sample.cameras.items():
        a[f"camera/{name}/image"] = cam.image
        a[f"camera/{name}/K"] = np.asarray(cam.K)
        a[f"camera/{name}/T"] = np.asarray(cam.T_ego_cam)
        a[f"camera/{name}/stamp"] = np.array(cam.stamp, np.int64)
    for name, radar in sample.radars.items():
        a[f"radar/{name}/points"] = radar.points
        a[f"radar/{name}/T"] = np.asarray(radar.T_ego_radar)
        a[f"radar/{name}/stamp"] = np.array(radar.stamp, np.int64)
    if sample.lidar is not None:
        a["lidar/points"] = sample.lidar.points
        a["lidar/T"] = np.asarray(sample.lidar.T_ego_lidar)
        a["lidar/stamp"] = np.array(sample.lidar.stamp, np.int64)
    if sample.gt is not None:
        for f in dataclasses.fields(Boxes):
            value = getattr(sample.gt, f.name)
            if value is not None:  # lists of strings keep their length (empty: "no metadata")
                a[f"gt/{f.name}"] = np.array(value, dtype=str) if isinstance(value, list) \
                    else np.asarray(value)
    return a


def sample_from_arrays(a: dict[str, np.ndarray]) -> Sample:
    """The inverse of `sample_to_arrays`."""
    def names(prefix: str) -> list[str]:  # sensor names in stored order
        seen = dict.fromkeys(k.split("/")[1] for k in a if k.startswith(prefix + "/"))
        return list(seen)

    cameras = {n: CameraData(image=a[f"camera/{n}/image"], K=a[f"camera/{n}/K"],
                             T_ego_cam=a[f"camera/{n}/T"], stamp=int(a[f"camera/{n}/stamp"]))
               for n in names("camera")}
    radars = {n: RadarData(points=a[f"radar/{n}/points"], T_ego_radar=a[f"radar/{n}/T"],
                           stamp=int(a[f"radar/{n}/stamp"])) for n in names("radar")}
    lidar = LidarData(points=a["lidar/points"], T_ego_lidar=a["lidar/T"],
                      stamp=int(a["lidar/stamp"])) if "lidar/points" in a else None
    gt = None
    if "gt/params" in a:
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(Boxes):
            value = a.get(f"gt/{f.name}")
            if value is not None and f.name in ("attributes", "instance_tokens"):
                value = [str(v) for v in value]
            if value is not None:
                kwargs[f.name] = value
        gt = Boxes(**kwargs)
    return Sample(token=str(a["token"]), timestamp=int(a["timestamp"]), T_map_ego=a["T_map_ego"],
                  cameras=cameras, radars=radars, lidar=lidar, gt=gt,
                  scene_name=str(a["scene_name"]))


# ------------------------------------------------------------------------------------ cache
def dataroot_identity(dataroot: str | Path, version: str) -> dict[str, Any]:
    """What makes two dataroots the same data: path, version, and each table file's size and
    mtime (plus the world manifest's): regenerating or editing the tables changes it."""
    root = Path(dataroot).resolve()
    files = [root / version / f"{t}.json" for t in NUSCENES_TABLES] + [root / "world.json"]
    stats = {}
    for path in files:
        if path.is_file():
            st = path.stat()
            stats[str(path.relative_to(root))] = [st.st_size, st.st_mtime_ns]
    return {"dataroot": str(root), "version": version, "files": stats}


def bags_identity(bags: list[str | Path]) -> dict[str, Any]:
    """What makes bags the same data: each bag's path and the size and mtime of its files."""
    ident = {}
    for bag in bags:
        root = Path(bag).resolve()
        ident[str(root)] = {p.name: [p.stat().st_size, p.stat().st_mtime_ns]
                            for p in sorted(root.iterdir()) if p.is_file()}
    return {"bags": ident}


def _key(identity: dict[str, Any], options: ReaderOptions) -> str:
    ident = {"format": CACHE_FORMAT, "data": identity, "options": repr(options)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def cache_key(dataroot: str | Path, version: str, options: ReaderOptions) -> str:
    """sha256 (first 20 hex) of the dataroot identity, the reader options and the format."""
    return _key(dataroot_identity(dataroot, version), options)


class SampleCache:
    """Decoded Samples on disk, one `.npz` per token under `root/<key>/` (see module doc)."""

    def __init__(self, root: str | Path, dataroot: str | Path | None, version: str | None,
                 options: ReaderOptions, identity: dict[str, Any] | None = None):
        """The cache of a dataroot (`dataroot`, `version`), or of other data described by
        `identity` (`bags_identity`; dataroot and version then None)."""
        identity = identity if identity is not None else dataroot_identity(dataroot, version)
        self.key = _key(identity, options)
        self.dir = Path(root) / self.key
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "key.json"  # what the key stands for, for a person browsing the cache
        if not info.exists():
            write_text_atomic(info, json.dumps(
                {"data": identity, "options": repr(options), "format": CACHE_FORMAT}, indent=2))
        self.hits = 0
        self.misses = 0

    def path(self, token: str) -> Path:
        return self.dir / f"{token}.npz"

    def has(self, token: str) -> bool:
        return self.path(token).exists()

    def get(self, token: str, build: Callable[[], Sample]) -> Sample:
        """The cached Sample of `token`, or `build()` written to the cache and returned."""
        path = self.path(token)
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    sample = sample_from_arrays({k: z[k] for k in z.files})
                self.hits += 1
                return sample
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                warnings.warn(f"sample cache entry {path} is unreadable ({exc}); rebuilding it",
                              stacklevel=2)
        self.misses += 1
        sample = build()
        arrays = sample_to_arrays(sample)

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, **arrays)

        write_atomic(path, save)
        return sample


# ---------------------------------------------------------------------------------- dataset
def reader_options(kind: str, lidar: bool = True) -> ReaderOptions:
    """What a model kind reads: the LiDAR teacher only LiDAR (and the ground truth); the
    student cameras and radar, plus LiDAR when `lidar` (its distillation and depth losses).
    Training and evaluation share this, so a model is scored on what it was trained on."""
    if kind == "teacher":
        return ReaderOptions(cameras=(), load_radar=False)
    return ReaderOptions(load_lidar=lidar)


class _KeyframeItems(Dataset):
    """What both keyframe datasets share: item i = transform(sample(i), rng=item_rng(seed,
    epoch, i)), `set_epoch`, and the length of `tokens`. Subclasses set `tokens`, `transform`,
    `seed` and define `sample(index)`."""

    tokens: list[str]
    transform: Transform | None
    seed: int
    epoch: int = 0

    def sample(self, index: int) -> Sample:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> Any:
        sample = self.sample(index)
        if self.transform is None:
            return sample
        return self.transform(sample, rng=item_rng(self.seed, self.epoch, index))


class KeyframeDataset(_KeyframeItems):
    """The keyframes of `split` in a dataroot: item i = transform(sample_i, rng=item_rng(...)).

    `transform=None` gives the Samples themselves. `cache_dir=None`: no cache. Call
    `set_epoch(e)` before each epoch (before the DataLoader iterator is made, so workers copy
    it) to get that epoch's augmentations.
    """

    def __init__(self, dataroot: str | Path, split: str, transform: Transform | None = None,
                 options: ReaderOptions | None = None, version: str | None = None,
                 cache_dir: str | Path | None = None, seed: int = 0):
        self.dataroot = Path(dataroot)
        self.version = version or dataroot_version(self.dataroot)
        self.options = options or ReaderOptions()
        self.reader = NuScenesReader(self.dataroot, self.version, self.options)
        self.tokens = self.reader.sample_tokens(split=split)
        if not self.tokens:
            raise NuScenesDataError(
                f"{self.dataroot / self.version}: no keyframes of split {split!r} (its scenes "
                f"are not in scene.json; scenes here: {self.reader.scene_names[:5]}...)")
        self.split = split
        self.transform = transform
        self.cache = SampleCache(cache_dir, self.dataroot, self.version, self.options) \
            if cache_dir is not None else None
        self.seed = seed
        self.epoch = 0

    def sample(self, index: int) -> Sample:
        token = self.tokens[index]
        if self.cache is None:
            return self.reader.get_sample(token)
        return self.cache.get(token, lambda: self.reader.get_sample(token))


class BagDataset(_KeyframeItems):
    """The keyframes of rosbag2 files written by `nuscenes2bag` (every keyframe of every bag,
    in the bags' order), as `KeyframeDataset` gives a dataroot's: the same items, transform,
    augmentation per (seed, epoch, index) and sample cache; the ground truth is the one in
    each bag's `/imkd/keyframes` records.

    A bag is read front to back (`read_bag_samples`), not by keyframe: the first item asked
    for from a bag reads all of that bag's keyframes into the cache (or, with
    `cache_dir=None`, into memory: meant for small bags), so later items and epochs decode
    nothing. The cache key covers the bags' files and the reader options."""

    def __init__(self, bags: list[str | Path], transform: Transform | None = None,
                 options: ReaderOptions | None = None, cache_dir: str | Path | None = None,
                 seed: int = 0):
        from imkd_core.data.bag_reader import read_keyframe_records  # rosbags: only for bags

        self.bags = [Path(b) for b in bags]
        self.options = options or ReaderOptions()
        self.tokens: list[str] = []
        self.bag_of: dict[str, Path] = {}
        for bag in self.bags:
            for record in read_keyframe_records(bag):
                if record.gt is None:
                    raise NuScenesDataError(f"{bag}: keyframe {record.token} has no ground "
                                            "truth: training needs bags with /gt records")
                self.tokens.append(record.token)
                self.bag_of[record.token] = bag
        if not self.tokens:
            raise NuScenesDataError(f"{[str(b) for b in self.bags]}: no keyframes")
        self.transform = transform
        self.cache = SampleCache(cache_dir, None, None, self.options,
                                 identity=bags_identity(self.bags)) \
            if cache_dir is not None else None
        self.memory: dict[str, Sample] = {}
        self.seed = seed
        self.epoch = 0

    def _read_bag(self, bag: Path) -> None:
        from imkd_core.data.bag_reader import read_bag_samples

        for sample in read_bag_samples(bag, self.options):
            if self.cache is None:
                self.memory[sample.token] = sample
            elif not self.cache.has(sample.token):
                self.cache.get(sample.token, lambda s=sample: s)

    def sample(self, index: int) -> Sample:
        token = self.tokens[index]
        if self.cache is None:
            if token not in self.memory:
                self._read_bag(self.bag_of[token])
            return self.memory[token]
        if not self.cache.has(token):
            self._read_bag(self.bag_of[token])
        return self.cache.get(token, lambda: self._rebuild(token))

    def _rebuild(self, token: str) -> Sample:
        """A cache entry that failed to load: read its bag again for it alone."""
        from imkd_core.data.bag_reader import read_bag_samples

        for sample in read_bag_samples(self.bag_of[token], self.options):
            if sample.token == token:
                return sample
        raise NuScenesDataError(f"{self.bag_of[token]}: keyframe {token} is gone from the bag")


class EpochSampler(Sampler[int]):
    """Indices 0..n-1 in the order of (seed, epoch) (shuffled, or in order), from `start` on:
    the same order every time, so a resumed epoch continues where the killed one stopped.

    Under DDP each of `world_size` ranks takes every `world_size`-th index of the order from
    its `rank` on (the order padded by wrapping around to a multiple of `world_size`, so all
    ranks make the same number of steps); `start` counts this rank's items. Batch k of size b
    on every rank then covers positions k*b*world_size ... (k+1)*b*world_size - 1 of the
    order: the batch of size b*world_size that one process would take."""

    def __init__(self, n: int, seed: int, epoch: int = 0, start: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"EpochSampler: rank {rank} outside 0..{world_size - 1}")
        self.n, self.seed, self.epoch, self.start, self.shuffle = n, seed, epoch, start, shuffle
        self.rank, self.world_size = rank, world_size

    def order(self) -> np.ndarray:
        """The whole epoch's order (before sharding)."""
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def per_rank(self) -> int:
        """How many items each rank takes in an epoch."""
        return -(-self.n // self.world_size)

    def __iter__(self) -> Iterator[int]:
        order = self.order()
        padded = np.resize(order, self.per_rank() * self.world_size)  # repeats from the start
        return iter(int(i) for i in padded[self.rank::self.world_size][self.start:])

    def __len__(self) -> int:
        return max(0, self.per_rank() - self.start)

__all__ = [
    "CACHE_FORMAT",
    "BagDataset",
    "EpochSampler",
    "KeyframeDataset",
    "SampleCache",
    "bags_identity",
    "cache_key",
    "dataroot_identity",
    "item_rng",
    "reader_options",
    "sample_from_arrays",
    "sample_to_arrays",
]

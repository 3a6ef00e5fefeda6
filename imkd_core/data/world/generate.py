"""Generate a nuScenes-format world: scenes in parallel worker processes, tables merged in order.

`generate_world(out_dir, config)` writes into a hidden temporary folder next to `out_dir` and
renames it into place only when everything is written, so an interrupted run never leaves a
half-written world behind. Every random draw comes from `numpy.random.SeedSequence([seed, scene,
...])` keyed by what is being drawn, so the output does not depend on the number of workers or
the order in which they finish: the same config gives the same bytes.
One scene's sensors, files and table rows: `imkd_core.data.world.scene_writer`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

from imkd_core.data.world.config import WorldConfig
from imkd_core.data.world.scene_writer import run_scene
from imkd_core.data.world.tables import (
    CHANNELS,
    TABLE_NAMES,
    attribute_table,
    category_table,
    sensor_table,
    visibility_table,
    write_tables,
)

GENERATOR_VERSION = "1"


# ================================================================================ scene names
def scene_names(config: WorldConfig) -> list[tuple[str, str]]:
    """(official scene name, split) per scene index: train scenes first, then val, each taken in
    order from nuscenes-devkit's official lists, so the devkit's split selection finds them."""
    from nuscenes.utils import splits

    if config.version == "v1.0-mini":
        train, val = splits.mini_train, splits.mini_val
    else:
        train, val = splits.train, splits.val
    n_val = config.num_val_scenes
    n_train = config.scenes - n_val
    if n_train > len(train) or n_val > len(val):
        raise ValueError(f"{config.version} has {len(train)} train and {len(val)} val scene "
                         f"names; asked for {n_train} and {n_val}")
    return [(name, "train") for name in train[:n_train]] + [(name, "val") for name in val[:n_val]]


# ================================================================================ the world
def _prepare_dirs(root: Path) -> None:
    for folder in ("samples", "sweeps"):
        for channel, _ in CHANNELS:
            (root / folder / channel).mkdir(parents=True, exist_ok=True)
    (root / "maps").mkdir(parents=True, exist_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(out: Path) -> None:
    """Temporary folders of runs that were killed (their process is gone)."""
    for tmp in out.parent.glob(f".{out.name}.partial-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or (int(pid) != os.getpid() and not _pid_alive(int(pid))):
            shutil.rmtree(tmp, ignore_errors=True)


def _run_parallel(config: WorldConfig, names, tmp: Path, n_workers: int, bar) -> list[dict]:
    """One worker process per scene, at most n_workers at a time. Workers are fresh
    interpreters (`python -m imkd_core.data.world.worker`): no fork hazards, and callers need
    no `if __name__ == "__main__"` guard."""
    import subprocess
    import sys

    import imkd_core

    jobs_dir = tmp / ".jobs"
    jobs_dir.mkdir()
    env = dict(os.environ)
    package_root = str(Path(imkd_core.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    pending = list(range(len(names)))
    running: dict[int, subprocess.Popen] = {}
    results: list[dict | None] = [None] * len(names)
    try:
        while pending or running:
            while pending and len(running) < n_workers:
                i = pending.pop(0)
                job = {"config": config.to_dict(), "index": i, "name": names[i][0],
                       "root": str(tmp), "result": str(jobs_dir / f"{i}.json")}
                (jobs_dir / f"{i}.job.json").write_text(json.dumps(job))
                log = open(jobs_dir / f"{i}.log", "wb")  # closed when the worker ends
                running[i] = subprocess.Popen(
                    [sys.executable, "-m", "imkd_core.data.world.worker",
                     str(jobs_dir / f"{i}.job.json")], stdout=log, stderr=subprocess.STDOUT,
                    env=env)
                running[i].log = log  # type: ignore[attr-defined]
            time.sleep(0.05)
            for i, proc in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                proc.log.close()  # type: ignore[attr-defined]
                del running[i]
                if code != 0:
                    tail = (jobs_dir / f"{i}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"world worker for scene {i} ({names[i][0]}) failed "
                                       f"with exit code {code}:\n{tail}")
                results[i] = json.loads((jobs_dir / f"{i}.json").read_text())
                if bar:
                    bar.update(1)
    finally:
        for proc in running.values():
            proc.kill()
            proc.wait()
            proc.log.close()  # type: ignore[attr-defined]
    shutil.rmtree(jobs_dir)
    return results


def generate_world(out_dir: str | Path, config: WorldConfig | None = None, *,
                   workers: int | None = None, overwrite: bool = False, progress: bool = False,
                   stats: dict | None = None) -> Path:
    """Generate the world described by `config` into `out_dir` (a nuScenes dataroot).

    workers: processes (default: all cores, at most one per scene); 1 runs in this process.
    overwrite: replace an existing, non-empty `out_dir` (only once the new world is complete);
    an empty directory (`mktemp -d`) is taken without it.
    progress: show a progress bar over scenes.
    stats: if given, filled with wall time, per-stage CPU seconds (process time, summed over
    scenes) and record counts.
    Returns the dataroot path.
    """
    config = config or WorldConfig()
    out = Path(out_dir).resolve()
    empty_dir = out.is_dir() and not any(out.iterdir())
    if out.exists() and not empty_dir and not overwrite:
        raise FileExistsError(f"{out} exists and is not an empty directory; pass overwrite=True "
                              "(CLI: --overwrite) to replace it")
    names = scene_names(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    t_start = time.perf_counter()
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(names)))
    bar = None
    try:
        _prepare_dirs(tmp)
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(names), unit="scene", desc="imkd world")
        if n_workers == 1:
            results = []
            for i, (name, _) in enumerate(names):
                results.append(run_scene(config, i, name, tmp))
                if bar:
                    bar.update(1)
        else:
            results = _run_parallel(config, names, tmp, n_workers, bar)
        tables: dict[str, list[dict]] = {name: [] for name in TABLE_NAMES}
        tables["attribute"] = attribute_table()
        tables["category"] = category_table()
        tables["visibility"] = visibility_table()
        tables["sensor"] = sensor_table()
        for res in results:
            for name, rows in res["rows"].items():
                tables[name].extend(rows)
        write_tables(tmp / config.version, tables)
        manifest = {
            "generator": "imkd_core.data.world", "generator_version": GENERATOR_VERSION,
            "config": config.to_dict(),
            "scenes": [dict(r["scene"], split=split) for r, (_, split) in zip(results, names)],
        }
        (tmp / "world.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists() and overwrite:
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:  # rename(2) replaces an empty directory and refuses one that has filled meanwhile
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bar:
            bar.close()
    if stats is not None:
        cpu: dict[str, float] = defaultdict(float)
        for res in results:
            for k, v in res["timings"].items():
                cpu[k] += v
        stats.update({"wall_s": time.perf_counter() - t_start, "workers": n_workers,
                      "cpu_s": dict(cpu), "scenes": len(results),
                      "samples": len(tables["sample"]), "sample_data": len(tables["sample_data"]),
                      "annotations": len(tables["sample_annotation"])})
    return out


__all__ = ["GENERATOR_VERSION", "generate_world", "scene_names"]

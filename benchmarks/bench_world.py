"""World generator benchmark: wall time, CPU per stage and disk size of a generated world.

    .venv/bin/python benchmarks/bench_world.py [--scenes 10] [--samples 40]
        [--image-size 800x450] [--workers 0] [--workdir DIR] [--keep] [--json F]

The issue's target: a 10-scene x 40-sample world at 800x450 in <= 10 min on the 2-core machine,
using both cores. The machine may be shared: the load average before and after is printed, and
`cpu_s` (summed over workers) is the number that does not depend on the neighbours.
Prints a Markdown table (and writes JSON with --json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imkd_core.data.world import WorldConfig, generate_world  # noqa: E402
from imkd_core.data.world.config import parse_image_size  # noqa: E402

TARGET_S = 600.0


def _du(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=10)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--image-size", default="800x450")
    ap.add_argument("--workers", type=int, default=0, help="0: all cores")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the generated world")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    width, height = parse_image_size(args.image_size)
    config = WorldConfig(scenes=args.scenes, samples_per_scene=args.samples, seed=args.seed,
                         image_width=width, image_height=height)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_world_"))
    out = workdir / "world"
    load_before = os.getloadavg()
    stats: dict = {}
    t0 = time.perf_counter()
    generate_world(out, config, workers=args.workers or None, overwrite=True, progress=True,
                   stats=stats)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    sizes = {}
    for part in ("samples", "sweeps", "maps", config.version):
        sizes[part] = _du(out / part)
    total_bytes, total_files = _du(out)
    result = {
        "config": config.to_dict(), "cores": os.cpu_count(), "workers": stats["workers"],
        "wall_s": wall, "cpu_s": stats["cpu_s"], "cpu_total_s": sum(stats["cpu_s"].values()),
        "samples": stats["samples"], "sample_data": stats["sample_data"],
        "annotations": stats["annotations"], "disk_bytes": total_bytes, "files": total_files,
        "disk_by_folder": {k: {"bytes": b, "files": n} for k, (b, n) in sizes.items()},
        "loadavg_before": load_before, "loadavg_after": load_after,
        "target_s": TARGET_S, "within_target": wall <= TARGET_S,
    }
    rows = [
        ("world", f"{config.scenes} scenes x {config.samples_per_scene} samples, "
                  f"{width}x{height}, seed {config.seed}"),
        ("workers / cores", f"{stats['workers']} / {os.cpu_count()}"),
        ("wall time", f"{wall:.1f} s (target <= {TARGET_S:.0f} s: "
                      f"{'met' if wall <= TARGET_S else 'MISSED'})"),
        ("throughput", f"{stats['samples'] / wall:.2f} keyframes/s "
                       f"({stats['sample_data'] / wall:.1f} sensor files/s)"),
        ("CPU (all workers)", ", ".join(f"{k} {v:.1f} s" for k, v in
                                        sorted(stats["cpu_s"].items(), key=lambda kv: -kv[1]))),
        ("disk", f"{total_bytes / 1e6:.1f} MB in {total_files} files"),
        *((f"  {k}/", f"{b / 1e6:.1f} MB, {n} files") for k, (b, n) in sizes.items()),
        ("records", f"{stats['samples']} samples, {stats['sample_data']} sample_data, "
                    f"{stats['annotations']} annotations"),
        ("load average", f"{load_before[0]:.2f} before, {load_after[0]:.2f} after "
                         "(other processes share the machine)"),
    ]
    print("\n| world generator | |\n|---|---|")
    for key, value in rows:
        print(f"| {key} | {value} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.keep or args.workdir:
        print(f"\nworld kept at {out}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

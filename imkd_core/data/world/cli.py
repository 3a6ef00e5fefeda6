"""`imkd world`: generate the synthetic nuScenes-format world from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imkd_core.data.world.config import (
    CONDITIONS,
    VERSIONS,
    WorldConfig,
    parse_conditions,
    parse_image_size,
)


def _arg_type(parser):
    def convert(text: str):
        try:
            return parser(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parser.__name__
    return convert


def add_subcommand(sub) -> argparse.ArgumentParser:
    """Register `world` on the `imkd` sub-parsers."""
    defaults = WorldConfig()
    p = sub.add_parser(
        "world", help="generate a synthetic world in nuScenes format",
        description="Generate a nuScenes-format dataset (all 13 tables, samples/, sweeps/, "
                    "maps/) that nuscenes-devkit loads and evaluates unmodified. Same seed, "
                    "same bytes.")
    p.add_argument("--out", required=True, type=Path,
                   help="dataroot to create (a new path or an empty directory)")
    p.add_argument("--scenes", type=int, default=defaults.scenes)
    p.add_argument("--samples-per-scene", type=int, default=defaults.samples_per_scene,
                   help="keyframes per scene (2 Hz)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--val-fraction", type=float, default=defaults.val_fraction,
                   help="fraction of scenes named from the official val split")
    p.add_argument("--image-size", type=_arg_type(parse_image_size),
                   default=defaults.image_size, metavar="WxH")
    p.add_argument("--conditions", type=_arg_type(parse_conditions),
                   default=defaults.conditions, metavar=",".join(CONDITIONS),
                   help="assigned to scenes round-robin")
    p.add_argument("--version", choices=VERSIONS, default=defaults.version)
    p.add_argument("--lidar-azimuth-steps", type=int, default=defaults.lidar_azimuth_steps,
                   help="LiDAR rays per beam and turn (nuScenes: ~1084)")
    p.add_argument("--no-sweeps", action="store_true",
                   help="keyframes only (no LiDAR/radar sweeps between them)")
    p.add_argument("--density", type=float, default=defaults.density,
                   help="object density relative to the default")
    p.add_argument("--workers", type=int, default=0, help="processes (0: all cores)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out that is not an empty directory")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--check", action="store_true",
                   help="afterwards, load with nuscenes-devkit and evaluate the ground truth and "
                        "the naive radar baseline on the val split")
    p.set_defaults(func=run)
    return p


def _disk_usage(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(args: argparse.Namespace) -> int:
    from imkd_core.data.world.generate import generate_world

    width, height = args.image_size
    try:
        config = WorldConfig(
            scenes=args.scenes, samples_per_scene=args.samples_per_scene, seed=args.seed,
            val_fraction=args.val_fraction, image_width=width, image_height=height,
            conditions=tuple(args.conditions), version=args.version,
            lidar_azimuth_steps=args.lidar_azimuth_steps, sweeps=not args.no_sweeps,
            density=args.density)
    except ValueError as exc:
        print(f"imkd world: {exc}", file=sys.stderr)
        return 2

    stats: dict = {}
    try:
        out = generate_world(args.out, config, workers=args.workers or None,
                             overwrite=args.overwrite, progress=not args.no_progress,
                             stats=stats)
    except FileExistsError as exc:
        print(f"imkd world: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("imkd world: interrupted; nothing was written", file=sys.stderr)
        return 130
    size = _disk_usage(out)
    print(f"wrote {out}: {stats['scenes']} scenes ({config.num_val_scenes} val), "
          f"{stats['samples']} samples, {stats['sample_data']} sample_data, "
          f"{stats['annotations']} annotations, {size / 1e6:.1f} MB in {stats['wall_s']:.1f} s "
          f"with {stats['workers']} workers")
    if args.check:
        return check_world(out, config)
    return 0


def check_world(dataroot: Path, config: WorldConfig) -> int:
    """Load with the devkit; evaluate ground truth (expect NDS 1) and the radar baseline."""
    import tempfile

    from nuscenes import NuScenes

    from imkd_core.data.baselines import radar_cluster_baseline
    from imkd_core.evaluation.metrics import evaluate_detections, ground_truth_submission

    nusc = NuScenes(version=config.version, dataroot=str(dataroot), verbose=False)
    eval_set = "mini_val" if config.version == "v1.0-mini" else "val"
    if config.num_val_scenes == 0:
        print("check: no val scenes, nothing to evaluate")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        gt = evaluate_detections(dataroot, config.version, eval_set,
                                 ground_truth_submission(nusc, eval_set), Path(tmp) / "gt",
                                 nusc=nusc)
        base = evaluate_detections(dataroot, config.version, eval_set,
                                   radar_cluster_baseline(nusc, eval_set), Path(tmp) / "radar",
                                   nusc=nusc)
    print(f"check: devkit loads {len(nusc.scene)} scenes, {len(nusc.sample)} samples; "
          f"ground truth as detections: NDS {gt['NDS']:.4f} mAP {gt['mAP']:.4f}; "
          f"radar-cluster baseline: NDS {base['NDS']:.4f} mAP {base['mAP']:.4f} "
          f"(car AP {base['per_class']['car']['AP']:.3f})")
    return 0 if gt["NDS"] >= 0.99 else 1

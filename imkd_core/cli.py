"""The `imkd` command line: one entry point, a subcommand per job (world, train, evaluate,
export, benchmark). The training and evaluation modules import torch and the devkit, so their
subcommands import them only when they run."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from imkd_core import __version__
from imkd_core.data.world.cli import add_subcommand as add_world_subcommand
from imkd_core.interrupts import stop_signals_as_keyboard_interrupt


def _doctor(_args: argparse.Namespace) -> int:
    """Report which parts of the environment import, and the torch device that `auto` picks."""
    ok = True
    for module in ("torch", "numpy", "nuscenes", "rosbags", "rclpy", "vision_msgs.msg",
                   "tf2_msgs.msg", "sensor_msgs.msg", "visualization_msgs.msg"):
        try:
            mod = importlib.import_module(module)
            version = getattr(mod, "__version__", "")
            print(f"  ok       {module} {version}".rstrip())
        except Exception as exc:  # report every failure, not just the first
            ok = False
            print(f"  MISSING  {module}: {exc}")
    try:
        from imkd_core.device import resolve_device

        print(f"  device   auto -> {resolve_device('auto')}")
    except ImportError:
        pass
    return 0 if ok else 1


def default_cache_dir() -> Path:
    """Where decoded Samples are cached between runs: $XDG_CACHE_HOME/imkd/samples."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imkd" / "samples"


def _add_cache_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                   help="sample cache (default: %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="decode every keyframe every time")


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train the LiDAR teacher or the camera-radar student",
        description="Train on a nuScenes dataroot (real, or `imkd world`). The run directory "
                    "gets config.yaml, command.txt, log.jsonl and checkpoints/ (last.pt, "
                    "epoch_NNN.pt); `--resume RUN_DIR` continues a run exactly.")
    p.add_argument("kind", choices=("teacher", "student"))
    p.add_argument("--dataroot", type=Path,
                   help="nuScenes dataroot (a resumed run reads its own)")
    p.add_argument("--bag", dest="bags", action="append", default=[], type=Path, metavar="BAG",
                   help="train on the keyframes of this nuscenes2bag rosbag2 instead of "
                        "--dataroot's split (repeatable; --dataroot then only evaluates)")
    p.add_argument("--config", default="tiny", help="tiny | r50_256x704 | a YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=5e-4 (repeatable)")
    p.add_argument("--teacher", type=Path, help="teacher checkpoint to distil from (student)")
    p.add_argument("--out", type=Path, help="new run directory")
    p.add_argument("--epochs", type=int, help="default: train.teacher_epochs/student_epochs")
    p.add_argument("--seed", type=int, help="default: train.seed")
    p.add_argument("--split", default="train")
    _add_cache_options(p)
    p.add_argument("--save-every", type=int, default=0, metavar="STEPS",
                   help="also checkpoint every STEPS steps inside an epoch")
    p.add_argument("--eval-every", type=int, default=0, metavar="EPOCHS",
                   help="evaluate on --eval-split every EPOCHS epochs; keep best.pt by NDS")
    p.add_argument("--eval-split", default="val")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar: a line per epoch")
    p.set_defaults(func=_train)


# Options a resumed run takes from its run directory, not from the command line.
_FIXED_ON_RESUME = ("config", "overrides", "teacher", "out", "epochs", "seed", "split",
                    "cache_dir", "no_cache", "save_every", "eval_every", "eval_split", "bags")


def _train(args: argparse.Namespace) -> int:
    from imkd_core.config import apply_overrides, load_model_config
    from imkd_core.data.bag_writer import BagError
    from imkd_core.data.nuscenes import NuScenesDataError
    from imkd_core.train.loop import (
        RunSettings,
        TrainError,
        check_new_run,
        read_run,
        train,
    )

    defaults = vars(build_parser().parse_args(["train", args.kind]))
    run = args.resume or args.out
    try:
        if args.resume is not None:
            changed = [f"--{k.replace('_', '-')}" for k in _FIXED_ON_RESUME
                       if getattr(args, k) != defaults[k]]
            if changed:
                raise TrainError(f"--resume takes the run's settings from {args.resume}; "
                                 f"drop {', '.join(changed)}")
            settings, _ = read_run(args.resume)
            if settings.kind != args.kind:
                raise TrainError(f"{args.resume}: a {settings.kind} run, not a {args.kind} run")
            if args.dataroot is not None and settings.dataroot is not None and \
                    Path(args.dataroot).resolve() != Path(settings.dataroot):
                raise TrainError("--dataroot cannot change on resume (the run's data position "
                                 "refers to its data)")
        else:
            if (args.dataroot is None and not args.bags) or args.out is None:
                raise TrainError("--dataroot (or --bag) and --out are required (or --resume "
                                 "RUN_DIR)")
            config = load_model_config(args.config)
            extra = [f"train.seed={args.seed}"] if args.seed is not None else []
            if args.epochs is not None:
                extra.append(f"train.{args.kind}_epochs={args.epochs}")
            config = apply_overrides(config, [*args.overrides, *extra])
            settings = RunSettings(
                kind=args.kind,
                dataroot=str(Path(args.dataroot).resolve()) if args.dataroot else None,
                teacher=str(Path(args.teacher).resolve()) if args.teacher else None,
                split=args.split, cache_dir=None if args.no_cache else str(args.cache_dir),
                save_every=args.save_every, eval_every=args.eval_every,
                eval_split=args.eval_split, bags=[str(b.resolve()) for b in args.bags])
            check_new_run(run, settings)
    except KeyError as exc:  # an override naming a missing key
        print(f"imkd train: {exc.args[0]}", file=sys.stderr)
        return 2
    except (TrainError, NuScenesDataError, FileNotFoundError, ValueError, TypeError) as exc:
        print(f"imkd train: {exc}", file=sys.stderr)
        return 2
    try:
        if args.resume is not None:
            settings = config = None  # train() reads them from the run directory
        last = train(run, settings, config, device=args.device, quiet=args.quiet,
                     command=["imkd", *args.argv])
    except (TrainError, NuScenesDataError, BagError) as exc:
        print(f"imkd train: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"imkd train: interrupted; continue with --resume {run}", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 speaks for the job
        print(f"imkd train: done; checkpoint {last}")
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="score a checkpoint with the official nuScenes metrics",
        description="Run DetectorPipeline over every keyframe of a split and score it with "
                    "nuscenes-devkit; --out gets results_<split>.json, metrics_summary.json, "
                    "metrics.json and report.md.")
    p.add_argument("--checkpoint", type=Path, required=True, help="student or teacher .pt")
    p.add_argument("--dataroot", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--out", type=Path, required=True)
    _add_cache_options(p)
    p.add_argument("--by-condition", action="store_true",
                   help="also score each scene condition (day / night / rain) alone")
    p.add_argument("--robustness", action="store_true",
                   help="student checkpoints: also score each camera out, the radars out and "
                        "each scene condition, in the same pass (--out/robustness/; implies "
                        "--by-condition)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from imkd_core.data.nuscenes import NuScenesDataError
    from imkd_core.evaluation.robustness import ALL_SENSORS, robustness
    from imkd_core.evaluation.runner import evaluate_checkpoint

    cache_dir = None if args.no_cache else args.cache_dir
    try:
        if args.robustness:  # one pass: the report is the all-sensors variant's
            table = robustness(args.checkpoint, args.dataroot, args.out / "robustness",
                               args.split, device=args.device, cache_dir=cache_dir,
                               quiet=args.quiet, report_dir=args.out)
            metrics = table["variants"][ALL_SENSORS]
        else:
            metrics = evaluate_checkpoint(args.checkpoint, args.dataroot, args.out, args.split,
                                          device=args.device, quiet=args.quiet,
                                          cache_dir=cache_dir, by_condition=args.by_condition)
    except FileNotFoundError as exc:
        print(f"imkd evaluate: {exc.filename}: no such file", file=sys.stderr)
        return 2
    except (NuScenesDataError, ValueError) as exc:  # bad dataroot / split / not a checkpoint
        print(f"imkd evaluate: {exc}", file=sys.stderr)
        return 2
    print(f"imkd evaluate: NDS {metrics['NDS']:.4f}, mAP {metrics['mAP']:.4f}; "
          f"report {args.out / 'report.md'}")
    if args.robustness:
        print(f"imkd evaluate: robustness {args.out / 'robustness' / 'robustness.md'}")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="export a student checkpoint for ONNX Runtime or TorchScript",
        description="Write the student network (input tensors -> head maps) as one file that "
                    "carries its model config and the checkpoint's SHA-256; the node and "
                    "DetectorPipeline.from_file run it (backend onnxruntime for ONNX, torch "
                    "for TorchScript). Fixed camera set and image size, radar point count "
                    "dynamic; ONNX opset 18, standard operators only.")
    p.add_argument("--checkpoint", type=Path, required=True, help="student checkpoint (.pt)")
    p.add_argument("--format", choices=("onnx", "torchscript", "checkpoint"), default="onnx",
                   help="checkpoint: the weights and config alone, without the training "
                        "state (what models/ ships; a teacher too)")
    p.add_argument("--out", type=Path, required=True, help="file to write (.onnx / .ts / .pt)")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from imkd_core.checkpoint import release_checkpoint
    from imkd_core.export import export_checkpoint

    try:
        if args.format == "checkpoint":
            release_checkpoint(args.checkpoint, args.out)
            size = args.out.stat().st_size / 2**20
            print(f"imkd export: {args.checkpoint} -> {args.out} (weights only, {size:.1f} MiB)")
            return 0
        info = export_checkpoint(args.checkpoint, args.format, args.out)
    except FileNotFoundError as exc:
        print(f"imkd export: {exc.filename}: no such file", file=sys.stderr)
        return 2
    except ValueError as exc:  # ExportError, or a file that is not a checkpoint
        print(f"imkd export: {exc}", file=sys.stderr)
        return 2
    opset = f", opset {info.opset}" if info.opset else ""
    print(f"imkd export: {info.config.name} -> {args.out} ({args.format}{opset}; cameras "
          f"{len(info.cameras)} x {info.image_size[0]}x{info.image_size[1]})")
    return 0


def _add_benchmark(sub) -> None:
    p = sub.add_parser("benchmark", help="benchmarks that train and score models end to end")
    kinds = p.add_subparsers(dest="benchmark", required=True)
    kd = kinds.add_parser(
        "kd", help="the distillation benchmark: teacher, baseline, IMKD and its ablations",
        description="Train the teacher once and every student variant of the spec on one "
                    "schedule, score each on val (overall and per condition) and write "
                    "OUT/report.md, results.json and PNGs. Resumable: rerun the same command to "
                    "skip finished runs and continue an interrupted one.")
    kd.add_argument("--spec", default="kd", help="kd | a YAML file (default: %(default)s, "
                                                 "config/benchmark/kd.yaml)")
    kd.add_argument("--out", type=Path, default=Path("benchmark"),
                    help="benchmark directory (default: %(default)s)")
    kd.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a spec key, e.g. --set schedule.student_epochs=4, "
                         "--set imkd.seeds=[0] (repeatable)")
    kd.add_argument("--dry-run", action="store_true",
                    help="print the runs and the projected time; train nothing")
    kd.set_defaults(func=_benchmark_kd)


def _benchmark_kd(args: argparse.Namespace) -> int:
    from imkd_core.benchmark.kd import BenchmarkError, run_benchmark
    from imkd_core.benchmark.spec import SpecError, load_spec

    try:
        spec = load_spec(args.spec, args.sets)
        results = run_benchmark(spec, args.out, dry_run=args.dry_run,
                                echo=lambda line: print(line, flush=True))
    except (SpecError, BenchmarkError) as exc:
        print(f"imkd benchmark kd: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"imkd benchmark kd: interrupted; rerun the same command to continue in "
              f"{args.out}", file=sys.stderr)
        return 130
    if not args.dry_run:
        print(f"imkd benchmark kd: done in {results['wall_s'] / 60:.1f} min (all sessions); "
              f"report {args.out / 'report.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imkd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"imkd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", help="check that the environment is complete")
    doctor.set_defaults(func=_doctor)
    add_world_subcommand(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_export(sub)
    _add_benchmark(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line as typed, for the run directory's command.txt
    try:
        # Ctrl-C and SIGTERM: commands that leave something to resume say so themselves
        with stop_signals_as_keyboard_interrupt():
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"imkd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The `imkd` command line: one entry point, a subcommand per job (world, train, distill,
evaluate, export, benchmark arrive with the issues that build them)."""

from __future__ import annotations

import argparse
import importlib
import sys

from imkd_core import __version__
from imkd_core.data.world.cli import add_subcommand as add_world_subcommand


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imkd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"imkd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", help="check that the environment is complete")
    doctor.set_defaults(func=_doctor)
    add_world_subcommand(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

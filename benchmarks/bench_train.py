"""Training throughput: samples/s, the share of step time spent waiting for data, peak RSS.

    .venv/bin/python benchmarks/bench_train.py [--scenes 2] [--samples-per-scene 8]
        [--epochs 3] [--num-workers 0] [--dataroot D] [--workdir DIR] [--json F]

Runs `imkd train` (the `tiny` config, batch 2) as it is used: the teacher, the student without
distillation (detection + depth) and the student distilled from that teacher, each with a fresh
sample cache and without one, on a synthetic world (generated unless --dataroot is given; the
default is 1 train scene of 8 keyframes at 800x450). Each run is its own process, so its peak
RSS is its own (`os.wait4`). The numbers come from the run's `log.jsonl`: the first epoch
(cache misses) apart from the later ones (cache hits), because the issue's target is data wait
<= 10 % of step time after the first epoch. The machine may be shared: compare rows of one run.

Prints a Markdown table (and writes JSON with --json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _epochs(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("event") == "epoch"]


def _train(args: list[str], run: Path) -> dict:
    """One `imkd train` in its own process -> its epoch summaries and peak RSS (MB)."""
    proc = subprocess.Popen([sys.executable, "-m", "imkd_core.cli", "train", *args,
                             "--out", str(run), "--quiet"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"imkd train {' '.join(args)} failed:\n{proc.stderr.read().decode()}")
    epochs = _epochs(run)
    later = epochs[1:] or epochs
    step_s = [e["samples_per_s"] for e in later]
    return {
        "first_samples_per_s": epochs[0]["samples_per_s"],
        "first_data_wait": epochs[0]["data_wait_share"],
        "samples_per_s": sum(step_s) / len(step_s),
        "data_wait": sum(e["data_wait_share"] for e in later) / len(later),
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: kilobytes
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataroot", type=Path, help="an existing world or nuScenes dataroot")
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--samples-per-scene", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--workdir", type=Path, help="keep runs here (default: a temp dir)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        dataroot = args.dataroot
        if dataroot is None:
            from imkd_core.data.world import WorldConfig, generate_world

            dataroot = generate_world(work / "world", WorldConfig(
                scenes=args.scenes, samples_per_scene=args.samples_per_scene,
                val_fraction=0.5), overwrite=True)
        common = ["--dataroot", str(dataroot), "--epochs", str(args.epochs),
                  "--set", f"train.num_workers={args.num_workers}"]
        rows = []
        teacher = None
        for name, kind in (("teacher", "teacher"), ("student", "student"),
                           ("student + IMKD", "student")):
            extra = ["--teacher", str(teacher)] if name == "student + IMKD" else []
            for cached in (True, False):
                tag = f"{name.replace(' + ', '_')}_{'cache' if cached else 'nocache'}"
                cache = ["--cache-dir", str(work / f"cache_{tag}")] if cached else ["--no-cache"]
                result = _train([kind, *common, *extra, *cache], work / tag)
                rows.append({"run": name, "cache": cached, **result})
                if kind == "teacher" and cached:
                    teacher = work / tag / "checkpoints" / "last.pt"

    print(f"`imkd train`, tiny config, batch 2, {args.epochs} epochs, "
          f"num_workers={args.num_workers}, {os.cpu_count()} CPU cores\n")
    print("| run | cache | samples/s (1st epoch) | samples/s (later) | data wait (1st) "
          "| data wait (later) | peak RSS MB |")
    print("| --- " * 7 + "|")
    for r in rows:
        print(f"| {r['run']} | {'yes' if r['cache'] else 'no'} | "
              f"{r['first_samples_per_s']:.2f} | {r['samples_per_s']:.2f} | "
              f"{r['first_data_wait']:.0%} | {r['data_wait']:.0%} | {r['peak_rss_mb']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

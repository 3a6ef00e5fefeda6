"""Release a trained student and its teacher into models/ with their card (a maintainer's tool).

    .venv/bin/python scripts/release_model.py --best-of BENCHMARK_DIR [--test-world DIR]
    .venv/bin/python scripts/release_model.py --student RUN_DIR --teacher RUN_DIR [--out models]

`--best-of benchmark` ships the finished student run of `imkd benchmark kd` with the highest
val NDS (from its results.json) and the benchmark's teacher. Picking the best of many runs on
val makes that val NDS optimistic, so every release is also scored on the test world
(`TEST_WORLD`: a seed nothing trains or is selected on), the unbiased number.

Writes, each atomically: `imkd_tiny_student.pt` and `imkd_tiny_teacher.pt` (weights and config,
no training state: `imkd export --format checkpoint`), and `imkd_tiny_student.json`, the card:
where the weights came from (each run's command, world, steps, wall time; with --best-of the
candidates' val NDS), the val and test metrics of both (overall and per condition), the
student's robustness table on val (`evaluation.robustness`), and its metrics on the check world,
a small world of the same generator that test/test_shipped_model.py regenerates to check that
the file reproduces them. models/README.md's tables between the `<!-- card -->` markers are
made from the card.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from imkd_core.atomic import write_atomic
from imkd_core.benchmark.kd import BenchmarkError, ensure_world
from imkd_core.checkpoint import release_checkpoint
from imkd_core.data.world import WorldConfig, generate_world
from imkd_core.evaluation.robustness import robustness
from imkd_core.evaluation.runner import evaluate_checkpoint
from imkd_core.export import file_sha256

STUDENT, TEACHER, CARD = "imkd_tiny_student.pt", "imkd_tiny_teacher.pt", "imkd_tiny_student.json"
# The check world: 3 val scenes (day, night, rain) x 4 keyframes, a seed no run trains on.
CHECK_WORLD = WorldConfig(scenes=3, samples_per_scene=4, seed=123, val_fraction=1.0)
# The test world: 6 scenes (2 day, 2 night, 2 rain) x 30 keyframes, a seed no run trains on
# and no choice is made on (the benchmark world is seed 0, the demo's 2026).
TEST_WORLD = WorldConfig(scenes=6, samples_per_scene=30, seed=7, val_fraction=1.0)
METRICS = ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE")


def run_record(run: Path) -> dict:
    """What a run directory says about how its weights were made."""
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in log if r.get("event") == "epoch"]
    started = (run / "run.json").stat().st_mtime
    finished = (run / "checkpoints" / "last.pt").stat().st_mtime
    return {"command": (run / "command.txt").read_text().strip(),
            "run": json.loads((run / "run.json").read_text()),
            "steps": epochs[-1]["step"], "epochs": len(epochs),
            "wall_time_s": round(finished - started),
            "mean_samples_per_s": round(sum(e["samples_per_s"] for e in epochs) / len(epochs), 2),
            "final_loss": round(epochs[-1]["loss"], 4)}


def summary(metrics: dict) -> dict:
    out = {k: round(float(metrics[k]), 4) for k in METRICS}
    out["per_class_AP"] = {name: round(float(row["AP"]), 4)
                           for name, row in metrics["per_class"].items()}
    out["conditions"] = {name: {k: round(float(sub[k]), 4) for k in ("NDS", "mAP")}
                         for name, sub in metrics.get("subsets", {}).items()}
    return out


def best_run(benchmark: Path) -> tuple[Path, dict]:
    """The finished student run of an `imkd benchmark kd` directory with the highest val NDS,
    and the record of that choice for the card."""
    results = json.loads((benchmark / "results.json").read_text())
    done = {r["name"]: round(r["metrics"]["NDS"], 4) for r in results["runs"]
            if r["kind"] == "student" and r["status"] == "done" and r.get("metrics")}
    if not done:
        raise ValueError(f"{benchmark / 'results.json'}: no finished student run")
    picked = max(done, key=done.__getitem__)
    return benchmark / "runs" / picked, {
        "rule": "highest val NDS among the benchmark's finished student runs",
        "picked": picked, "candidates": dict(sorted(done.items(), key=lambda kv: -kv[1]))}


def pair(metrics: dict) -> str:
    return f"{metrics['NDS']:.3f} / {metrics['mAP']:.3f}"


def card_tables(card: dict) -> str:
    """The markdown the README shows between its card markers."""
    s, t = card["student"], card["teacher"]
    lines = []
    if "selection" in card:
        sel = card["selection"]
        lines += [f"Picked: `{sel['picked']}`, the {sel['rule']} ({len(sel['candidates'])}); "
                  "its val NDS is therefore optimistic, its test NDS is not.", ""]
    lines += ["| model | split | NDS | mAP | mATE | mASE | mAOE | mAVE | mAAE |",
              "|---|---|" + "---|" * 7]
    for name, entry in (("student (shipped)", s), ("teacher", t)):
        for split in ("val", "test"):
            m = entry[split]
            lines.append(f"| {name} | {split} | "
                         + " | ".join(f"{m[k]:.3f}" for k in METRICS) + " |")
    lines += ["", "NDS / mAP per scene condition:", "",
              "| condition | student val | student test | teacher val | teacher test |",
              "|---|---|---|---|---|"]
    for cond in s["val"]["conditions"]:
        cells = [pair(entry[split]["conditions"][cond])
                 for entry in (s, t) for split in ("val", "test")]
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    lines += ["", "Robustness (student, val):", "",
              "| input | NDS | mAP | ΔNDS |", "|---|---|---|---|"]
    for row in card["robustness"]["rows"]:
        lines.append(f"| {row['row']} | {row['NDS']:.3f} | {row['mAP']:.3f} | "
                     f"{row['dNDS']:+.3f} |")
    tw, c = card["test_world"], card["check"]
    lines += ["", f"Test world: {tw['scenes']} scenes x {tw['samples_per_scene']} keyframes, "
                  f"seed {tw['seed']}. Check world ({c['keyframes']} keyframes, seed "
                  f"{c['world']['seed']}; test/test_shipped_model.py): NDS {c['NDS']:.4f}, "
                  f"mAP {c['mAP']:.4f}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--best-of", type=Path, metavar="BENCHMARK_DIR",
                        help="ship the benchmark's finished student run with the highest val "
                             "NDS, and its teacher")
    parser.add_argument("--student", type=Path, help="student run directory")
    parser.add_argument("--teacher", type=Path,
                        help="teacher run directory (--best-of: BENCHMARK_DIR/runs/teacher)")
    parser.add_argument("--test-world", type=Path,
                        help="the test world's directory, generated if absent (default: a "
                             "temporary one)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "models")
    parser.add_argument("--checkpoint", default="last.pt", help="file in each run's checkpoints/")
    args = parser.parse_args(argv)
    card: dict = {"recipe": {}, "student": {}, "teacher": {}}
    if args.best_of is not None:
        if args.student is not None:
            parser.error("--best-of picks the student: give it or --student, not both")
        try:
            args.student, card["selection"] = best_run(args.best_of)
        except (OSError, ValueError, KeyError) as exc:
            parser.error(f"--best-of {args.best_of}: {exc}")
        args.teacher = args.teacher or args.best_of / "runs" / "teacher"
        print(f"picked {card['selection']['picked']} of {len(card['selection']['candidates'])} "
              "finished student runs (highest val NDS)", flush=True)
    if args.student is None or args.teacher is None:
        parser.error("give --best-of BENCHMARK_DIR, or --student and --teacher")
    out: Path = args.out
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        test_world = args.test_world or Path(tmp) / "test_world"
        try:
            ensure_world(test_world, TEST_WORLD, echo=print)
        except BenchmarkError as exc:  # --test-world holds another world
            parser.error(f"--test-world: {exc}")
        for role, run, name in (("student", args.student, STUDENT),
                                ("teacher", args.teacher, TEACHER)):
            record = run_record(run)
            release_checkpoint(run / "checkpoints" / args.checkpoint, out / name,
                               {"card": CARD, "trained": record["command"]})
            dataroot = Path(record["run"]["dataroot"])
            report = run / "release_eval"
            if role == "student":  # one pass: the robustness variants and the normal report
                card["robustness"] = robustness(out / name, dataroot, run / "release_robustness",
                                                device="cpu", quiet=True, report_dir=report)
                metrics = json.loads((report / "metrics.json").read_text())
            else:
                metrics = evaluate_checkpoint(out / name, dataroot, report, "val", device="cpu",
                                              quiet=True, by_condition=True)
            test = evaluate_checkpoint(out / name, test_world, run / "release_test", "val",
                                       device="cpu", quiet=True, by_condition=True)
            card[role] = {"file": name, "sha256": file_sha256(out / name),
                          "bytes": (out / name).stat().st_size, "val": summary(metrics),
                          "test": summary(test)}
            card["recipe"][role] = record
            card["world"] = json.loads((dataroot / "world.json").read_text())["config"]
            print(f"{role}: val NDS {metrics['NDS']:.4f} mAP {metrics['mAP']:.4f}; "
                  f"test NDS {test['NDS']:.4f} mAP {test['mAP']:.4f}", flush=True)
        world = generate_world(Path(tmp) / "check_world", CHECK_WORLD, workers=2)
        check = evaluate_checkpoint(out / STUDENT, world, Path(tmp) / "eval", "val",
                                    device="cpu", quiet=True)
    card["test_world"] = TEST_WORLD.to_dict()
    card["check"] = {"world": CHECK_WORLD.to_dict(), "split": "val",
                     "keyframes": check["num_samples"], "NDS": check["NDS"], "mAP": check["mAP"]}
    write_atomic(out / CARD, lambda tmp: Path(tmp).write_text(json.dumps(card, indent=1)))
    readme = out / "README.md"
    text = readme.read_text()
    block = re.compile(r"(<!-- card: [^\n]*-->\n).*?(<!-- /card -->)", re.S)
    if not block.search(text):
        print(f"{readme}: no <!-- card: ... --> block to fill", file=sys.stderr)
        return 1
    text = block.sub(lambda m: m.group(1) + card_tables(card) + m.group(2), text)
    write_atomic(readme, lambda tmp: Path(tmp).write_text(text))
    print(f"released into {out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

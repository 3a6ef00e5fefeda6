"""Release a trained student and its teacher into models/ with their card (a maintainer's tool).

    .venv/bin/python scripts/release_model.py --student RUN_DIR --teacher RUN_DIR [--out models]

Writes, each atomically: `imkd_tiny_student.pt` and `imkd_tiny_teacher.pt` (weights and config,
no training state: `imkd export --format checkpoint`), and `imkd_tiny_student.json`, the card:
where the weights came from (each run's command, world, steps, wall time), the val metrics of
both on their training world's val split (overall and per condition), the student's robustness
table (`evaluation.robustness`), and its metrics on the check world, a small world of the same
generator that test/test_shipped_model.py regenerates to check that the file reproduces them.
models/README.md's tables between the `<!-- card -->` markers are made from the card.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from imkd_core.atomic import write_atomic
from imkd_core.checkpoint import release_checkpoint
from imkd_core.data.world import WorldConfig, generate_world
from imkd_core.evaluation.robustness import robustness
from imkd_core.evaluation.runner import evaluate_checkpoint
from imkd_core.export import file_sha256

STUDENT, TEACHER, CARD = "imkd_tiny_student.pt", "imkd_tiny_teacher.pt", "imkd_tiny_student.json"
# The check world: 3 val scenes (day, night, rain) x 4 keyframes, a seed no run trains on.
CHECK_WORLD = WorldConfig(scenes=3, samples_per_scene=4, seed=123, val_fraction=1.0)
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


def card_tables(card: dict) -> str:
    """The markdown the README shows between its card markers."""
    s, t = card["student"], card["teacher"]
    lines = ["| model | NDS | mAP | mATE | mASE | mAOE | mAVE | mAAE |", "|---|" + "---|" * 7]
    for name, entry in (("student (shipped)", s), ("teacher", t)):
        m = entry["val"]
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in METRICS) + " |")
    lines += ["", "| condition | student NDS | student mAP | teacher NDS | teacher mAP |",
              "|---|---|---|---|---|"]
    for cond, sm in s["val"]["conditions"].items():
        tm = t["val"]["conditions"].get(cond, {})
        lines.append(f"| {cond} | {sm['NDS']:.3f} | {sm['mAP']:.3f} | "
                     f"{tm.get('NDS', float('nan')):.3f} | {tm.get('mAP', float('nan')):.3f} |")
    lines += ["", "Robustness (student, val):", "",
              "| input | NDS | mAP | ΔNDS |", "|---|---|---|---|"]
    for row in card["robustness"]["rows"]:
        lines.append(f"| {row['row']} | {row['NDS']:.3f} | {row['mAP']:.3f} | "
                     f"{row['dNDS']:+.3f} |")
    c = card["check"]
    lines += ["", f"Check world ({c['keyframes']} keyframes, seed {c['world']['seed']}; "
                  f"test/test_shipped_model.py): NDS {c['NDS']:.4f}, mAP {c['mAP']:.4f}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", type=Path, required=True, help="student run directory")
    parser.add_argument("--teacher", type=Path, required=True, help="teacher run directory")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "models")
    parser.add_argument("--checkpoint", default="last.pt", help="file in each run's checkpoints/")
    args = parser.parse_args(argv)
    out: Path = args.out
    card: dict = {"recipe": {}, "student": {}, "teacher": {}}
    t0 = time.perf_counter()
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
        card[role] = {"file": name, "sha256": file_sha256(out / name),
                      "bytes": (out / name).stat().st_size, "val": summary(metrics)}
        card["recipe"][role] = record
        card["world"] = json.loads((dataroot / "world.json").read_text())["config"]
        print(f"{role}: NDS {metrics['NDS']:.4f} mAP {metrics['mAP']:.4f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        world = generate_world(Path(tmp) / "world", CHECK_WORLD, workers=2)
        check = evaluate_checkpoint(out / STUDENT, world, Path(tmp) / "eval", "val",
                                    device="cpu", quiet=True)
    world_dict = {k: v for k, v in asdict(CHECK_WORLD).items() if k != "conditions"}
    card["check"] = {"world": world_dict, "split": "val", "keyframes": check["num_samples"],
                     "NDS": check["NDS"], "mAP": check["mAP"]}
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

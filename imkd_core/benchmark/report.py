"""The distillation benchmark's numbers, targets and pages: `summarize` (per-variant mean and
seed spread, overall and per condition; the issue-15 targets, met or not) for results.json, and
`write_report` (report.md, nds_map.png, conditions.png, loss_curves.png).

Statistics: a variant's spread is the sample standard deviation of its seeds (n - 1); the noise
of a comparison is the pooled standard deviation of the two variants' seeds. NDS and mAP are
shown in points (x 100) where differences are compared with the targets.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

CONDITIONS = ("day", "night", "rain")
TEACHER_MARGIN = 8.0  # NDS points
IMKD_MARGIN = 3.0  # NDS points
TIME_BUDGET_MIN = 150.0  # the budget for the whole benchmark (2-core CPU)
PLOTS = ("nds_map.png", "conditions.png", "loss_curves.png")


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """A run's log.jsonl records (a half line from a kill is skipped)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def pooled_std(a: list[float], b: list[float]) -> float | None:
    dof = len(a) + len(b) - 2
    if len(a) < 2 or len(b) < 2:
        return None
    _, sa = mean_std(a)
    _, sb = mean_std(b)
    return math.sqrt(((len(a) - 1) * sa ** 2 + (len(b) - 1) * sb ** 2) / dof)


def variant_stats(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per variant (and `teacher`): finished seeds, mean and std of NDS / mAP / mATE, overall and
    per condition, in the spec's order."""
    spec = {v["name"]: v for v in results["spec"]["variants"]}
    order = ["teacher", *spec]
    stats: dict[str, dict[str, Any]] = {}
    for name in order:
        runs = [r for r in results["runs"] if (r["variant"] or "teacher") == name]
        done = [r for r in runs if r["status"] == "done"]
        entry: dict[str, Any] = {
            "role": "teacher" if name == "teacher" else spec[name]["role"],
            "description": "LiDAR teacher" if name == "teacher" else spec[name]["description"],
            "removes": "" if name == "teacher" else spec[name]["removes"],
            "planned": len(runs), "seeds": [r["seed"] for r in done]}
        for key in ("NDS", "mAP", "mATE"):
            values = [r["metrics"][key] for r in done]
            entry[key], entry[f"{key}_std"] = mean_std(values)
            entry[f"{key}_values"] = values
        entry["conditions"] = {}
        for cond in CONDITIONS:
            values = [r["metrics"]["conditions"][cond]["NDS"] for r in done
                      if cond in r["metrics"].get("conditions", {})]
            if values:
                m, s = mean_std(values)
                entry["conditions"][cond] = {"NDS": m, "NDS_std": s, "NDS_values": values}
        entry["robustness"] = robustness_means([r["robustness"] for r in done
                                                if r.get("robustness")])
        stats[name] = entry
    return stats


def robustness_means(tables: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Seeds' robustness rows -> one row per sensor variant: mean NDS and ΔNDS over the seeds
    that have it (rows matched by their variant key, in the first table's order)."""
    out = []
    for first in tables[0] if tables else []:
        rows = [row for table in tables for row in table if row["variant"] == first["variant"]]
        out.append({"row": first["row"], "variant": first["variant"], "seeds": len(rows),
                    "NDS": mean_std([r["NDS"] for r in rows])[0],
                    "dNDS": mean_std([r["dNDS"] for r in rows])[0]})
    return out


def _points(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f}"


def targets(results: dict[str, Any], stats: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with its value, `met` (True / False / None: not measured yet)
    and how it was judged."""
    spec = results["spec"]["variants"]
    base_name = next(v["name"] for v in spec if v["role"] == "baseline")
    full_name = next(v["name"] for v in spec if v["role"] == "full")
    base, full, teacher = stats[base_name], stats[full_name], stats["teacher"]
    out: list[dict[str, Any]] = []

    gap = None if teacher["NDS"] is None or base["NDS"] is None else teacher["NDS"] - base["NDS"]
    out.append({"id": "teacher", "target": f"teacher NDS >= {base_name} + {TEACHER_MARGIN:g}",
                "value": gap, "met": None if gap is None else 100 * gap >= TEACHER_MARGIN,
                "detail": f"teacher - {base_name} = {_points(gap)} NDS points"})

    gain = None if full["NDS"] is None or base["NDS"] is None else full["NDS"] - base["NDS"]
    noise = pooled_std(full["NDS_values"], base["NDS_values"])
    enough = len(full["seeds"]) >= 3 and len(base["seeds"]) >= 3
    met = None
    if gain is not None and noise is not None and enough:
        met = 100 * gain >= IMKD_MARGIN and gain > 2 * noise
    out.append({"id": "imkd_gain",
                "target": f"{full_name} >= {base_name} + {IMKD_MARGIN:g} NDS (mean of 3 seeds) "
                          f"and > 2x the pooled seed std",
                "value": gain, "noise": noise, "met": met,
                "detail": f"gain {_points(gain)}, 2x pooled std "
                          f"{'n/a' if noise is None else f'{200 * noise:.2f}'} "
                          f"({len(full['seeds'])} + {len(base['seeds'])} seeds)"})

    # one stage removed: its cost judged against the noise of a difference of means (the seed
    # std of the two main arms, scaled for the seeds on each side) and, where the ablation ran
    # a seed the full arm also ran, against that paired seed
    costs, beyond = {}, {}
    full_by_seed = dict(zip(full["seeds"], full["NDS_values"]))
    for v in spec:
        if v["role"] != "ablation":
            continue
        abl = stats[v["name"]]
        cost = None if full["NDS"] is None or abl["NDS"] is None else full["NDS"] - abl["NDS"]
        spread = None if noise is None or not abl["seeds"] else \
            noise * (1 / len(full["seeds"]) + 1 / len(abl["seeds"])) ** 0.5
        if cost is None:
            met, verdict = None, "not measured yet"
        elif spread is None:
            met, verdict = cost >= 0, "noise not measured yet"
        elif abs(cost) <= spread:
            met, verdict = True, "within noise"
        else:
            met = cost > 0
            verdict = "costs NDS beyond noise" if met else "removing it helps beyond noise"
        paired = [full_by_seed[seed] - nds for seed, nds in zip(abl["seeds"], abl["NDS_values"])
                  if seed in full_by_seed]
        if cost is not None:
            costs[v["name"]] = cost
            beyond[v["name"]] = spread is not None and cost > spread
        out.append({"id": f"ablation:{v['name']}",
                    "target": f"removing {v['removes'] or v['name']} costs NDS (>= 0 within "
                              f"noise)",
                    "value": cost, "met": met,
                    "detail": f"{full_name} - {v['name']} = {_points(cost)} NDS points "
                              f"(noise {'n/a' if spread is None else f'{100 * spread:.2f}'}"
                              + (f"; paired seeds {_points(sum(paired) / len(paired))}"
                                 if paired else "") + f"): {verdict}"})
    if costs:
        top = max(costs, key=costs.get)
        removes = next(v["removes"] or v["name"] for v in spec if v["name"] == top)
        out.append({"id": "most_important", "target": "the stage that matters most",
                    "value": costs[top], "met": None,
                    "detail": f"{removes}: removing it costs {_points(costs[top])} NDS points "
                              f"({len(costs)} ablation(s) measured"
                              + ("" if beyond[top] else "; no ablation beyond noise, so not "
                                 "shown") + ")"})

    for cond in ("night", "rain"):
        f_c, b_c = full["conditions"].get(cond), base["conditions"].get(cond)
        g = None if f_c is None or b_c is None else f_c["NDS"] - b_c["NDS"]
        out.append({"id": f"gain:{cond}", "target": f"{full_name} gain over {base_name} >= 0 "
                                                    f"on {cond} scenes",
                    "value": g, "met": None if g is None else g >= 0,
                    "detail": f"{_points(g)} NDS points on {cond}"})
    # the benchmark proper: an investigation's extra variants are not part of its budget
    extras = {v["name"] for v in spec if v["role"] == "extra"}
    extras_s = sum(r["train_s"] + r["eval_s"] for r in results["runs"] if r["variant"] in extras)
    finished = all(r["status"] == "done" for r in results["runs"] if r["variant"] not in extras)
    total = results["wall_s"] - extras_s
    if not finished:
        total += results["projection"]["total_s"]
    out.append({"id": "time", "target": f"the whole benchmark <= {TIME_BUDGET_MIN:g} min on "
                                        f"this machine",
                "value": total, "met": total <= 60 * TIME_BUDGET_MIN if finished else None,
                "detail": f"{total / 60:.0f} min" + ("" if finished else
                                                     " (so far + projected)")
                          + (f"; extra variants not counted ({extras_s / 60:.0f} min)"
                             if extras_s else "")})
    return out


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    stats = variant_stats(results)
    return {"variants": stats, "targets": targets(results, stats)}


# ---------------------------------------------------------------------------------- the page
def _f(x: float | None, std: float | None = None) -> str:
    if x is None:
        return "–"
    return f"{x:.4f}" if std is None else f"{x:.4f} ± {std:.4f}"


def _met(value: bool | None) -> str:
    return "pending" if value is None else "**met**" if value else "not met"


def _minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f}"


def report_markdown(results: dict[str, Any]) -> str:
    spec, world, summary = results["spec"], results["world"], results["summary"]
    stats = summary["variants"]
    runs = results["runs"]
    done = sum(r["status"] == "done" for r in runs)
    wc = world["config"]
    sched = spec["schedule"]
    base_name = next(v["name"] for v in spec["variants"] if v["role"] == "baseline")
    lines = [
        "# IMKD distillation benchmark (`imkd benchmark kd`)",
        "",
        f"{done} of {len(runs)} runs done (updated {results['updated']}); wall time so far "
        f"{_minutes(results['wall_s'])} min (world generation, training and evaluation, summed "
        f"over sessions); still to go, projected: {_minutes(results['projection']['total_s'])} "
        f"min.",
        "",
        "## Setup",
        "",
        f"- World `{world['path']}`: {wc['scenes']} scenes x {wc['samples_per_scene']} keyframes, "
        f"{wc['image_width']}x{wc['image_height']}, seed {wc['seed']}; "
        f"{world['train_samples']} train / {world['val_samples']} val keyframes; scenes per "
        f"condition: train {world['scenes_per_condition']['train']}, val "
        f"{world['scenes_per_condition']['val']}.",
        f"- Model config `{spec['model']}` for every run (the teacher is its `lidar` section); "
        f"students: {sched['student_epochs']} epochs each, the same schedule for every variant "
        f"(equal steps); teacher: "
        + (f"{sched['teacher_epochs']} epoch(s)" if sched["teacher_epochs"] is not None
           else "the model config's `train.teacher_epochs`")
        + (f"; batch {sched['batch_size']}" if sched["batch_size"] else "")
        + (f"; shared overrides `{sched['overrides']}`" if sched["overrides"] else "") + ".",
        f"- Scored on val with the official nuScenes metrics (nuscenes-devkit), overall and per "
        f"scene condition. Machine: {results['machine']['cpus']} CPUs; the load average during "
        f"each run is in the runs table.",
        "",
        "## Targets",
        "",
        "| target | result | status |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {t['target']} | {t['detail']} | {_met(t['met'])} |" for t in summary["targets"]]
    lines += ["", "## Variants (val)", "",
              f"Mean ± sample std over the finished seeds; Δ in NDS points against `{base_name}`.",
              "", "| variant | role | seeds | NDS | mAP | mATE | Δ NDS | what |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    base = stats[base_name]["NDS"]
    for name, s in stats.items():
        delta = "–" if s["NDS"] is None or base is None else f"{100 * (s['NDS'] - base):+.2f}"
        lines.append(f"| {name} | {s['role']} | {len(s['seeds'])}/{s['planned']} | "
                     f"{_f(s['NDS'], s['NDS_std'])} | {_f(s['mAP'], s['mAP_std'])} | "
                     f"{_f(s['mATE'])} | {delta} | {s['description']} |")
    lines += ["", "![NDS and mAP per variant](nds_map.png)", "", "## Per condition (val NDS)", "",
              "| variant | " + " | ".join(CONDITIONS) + " |",
              "| --- " * (1 + len(CONDITIONS)) + "|"]
    for name, s in stats.items():
        cells = []
        for cond in CONDITIONS:
            c = s["conditions"].get(cond)
            b = stats[base_name]["conditions"].get(cond)
            cell = _f(c["NDS"]) if c else "–"
            if c and b and name not in (base_name, "teacher"):
                cell += f" ({100 * (c['NDS'] - b['NDS']):+.2f})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "![NDS per condition](conditions.png)", ""]
    lines += robustness_lines(stats)
    lines += ["## Runs", "",
              "| run | status | steps | NDS | mAP | train min | eval min | samples/s | "
              "load mean (max) | sessions |", "| --- " * 10 + "|"]
    for r in runs:
        m = r["metrics"] or {}
        load = "–" if r["load_mean"] is None else f"{r['load_mean']:.2f} ({r['load_max']:.2f})"
        lines.append(f"| {r['name']} | {r['status']} | {r['steps']} | {_f(m.get('NDS'))} | "
                     f"{_f(m.get('mAP'))} | {_minutes(r['train_s'])} | {_minutes(r['eval_s'])} | "
                     f"{r['samples_per_s'] or '–'} | {load} | {r['sessions']} |")
    lines += ["", "Load: the 1-minute load average sampled during training (2 cores: above 2, "
              "the run shared the machine and its minutes are not comparable; its steps are).",
              "", "## Loss curves", "", "![training losses](loss_curves.png)", "",
              "Detection loss (heatmap + box) is comparable across variants; the total adds "
              "each variant's distillation and auxiliary terms.", ""]
    lines += ["Run directories: `runs/<run>/` (`imkd train`, resumable), evaluations in "
              "`runs/<run>/val/`, configs in `configs/`, process output in `logs/`."]
    return "\n".join(lines) + "\n"


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def robustness_lines(stats: dict[str, dict[str, Any]]) -> list[str]:
    """The robustness section: val NDS (and Δ against all sensors) of every variant scored
    with sensors taken away, mean over its seeds; nothing when none was."""
    names = [n for n, s in stats.items() if s.get("robustness")]
    if not names:
        return []
    lines = ["## Robustness (val NDS with sensors taken away)", "",
             "A camera out is fed blank, as the node does for an absent camera; radars out: no "
             "radar points (`imkd evaluate --robustness`). NDS (Δ against all sensors), mean "
             "over the variant's seeds.", "",
             "| sensors | " + " | ".join(f"{n} ({_seeds(stats[n]['robustness'][0]['seeds'])})"
                                         for n in names) + " |",
             "| --- " * (1 + len(names)) + "|"]
    rows = {n: {r["variant"]: r for r in stats[n]["robustness"]} for n in names}
    for first in stats[names[0]]["robustness"]:
        cells = []
        for n in names:
            r = rows[n].get(first["variant"])
            cells.append("–" if r is None else f"{r['NDS']:.4f} ({100 * r['dNDS']:+.2f})")
        lines.append(f"| {first['row']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


# ---------------------------------------------------------------------------------- the plots
def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def plot_variants(stats: dict[str, dict[str, Any]], path: Path) -> None:
    """NDS and mAP per variant: bars at the mean, error bars one std, a dot per seed."""
    from matplotlib.figure import Figure

    names = list(stats)
    fig = Figure(figsize=(max(6.0, 1.1 * len(names) + 2), 4.2))
    ax = fig.subplots()
    width = 0.38
    for j, (key, color) in enumerate((("NDS", "#1f77b4"), ("mAP", "#ff7f0e"))):
        xs = [i + (j - 0.5) * width for i in range(len(names))]
        means = [stats[n][key] or 0.0 for n in names]
        stds = [stats[n][f"{key}_std"] or 0.0 for n in names]
        ax.bar(xs, means, width, yerr=stds, capsize=3, color=color, alpha=0.8, label=key)
        for x, n in zip(xs, names):
            vals = stats[n][f"{key}_values"]
            ax.plot([x] * len(vals), vals, "k.", markersize=4)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("val score")
    ax.set_title("NDS and mAP per variant (mean ± std over seeds, dots: seeds)")
    ax.legend()
    fig.subplots_adjust(left=0.09, right=0.98, top=0.91, bottom=0.24)  # tight_layout: slow
    fig.savefig(path, dpi=100, format="png")


def plot_conditions(stats: dict[str, dict[str, Any]], path: Path) -> None:
    """NDS per scene condition, one bar group per condition, a bar per variant."""
    from matplotlib.figure import Figure

    names = list(stats)
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    width = 0.8 / max(1, len(names))
    groups = [*CONDITIONS, "all"]
    for i, (name, color) in enumerate(zip(names, _colors(len(names)))):
        means, stds = [], []
        for g in groups:
            c = stats[name] if g == "all" else stats[name]["conditions"].get(g, {})
            means.append(c.get("NDS") or 0.0)
            stds.append(c.get("NDS_std") or 0.0)
        xs = [k + (i - (len(names) - 1) / 2) * width for k in range(len(groups))]
        ax.bar(xs, means, width, yerr=stds, capsize=2, color=color, label=name)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("val NDS")
    ax.set_title("NDS per scene condition (mean ± std over seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.91, bottom=0.09)
    fig.savefig(path, dpi=100, format="png")


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_losses(results: dict[str, Any], out: Path, path: Path) -> None:
    """Per run: the detection loss and the total loss against the step (moving average)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    ax_det, ax_total = fig.subplots(1, 2)
    variants = ["teacher", *(v["name"] for v in results["spec"]["variants"])]
    colors = dict(zip(variants, _colors(len(variants))))
    labelled = set()
    for r in results["runs"]:
        steps = [rec for rec in read_log(out / "runs" / r["name"]) if "event" not in rec]
        if not steps:
            continue
        name = r["variant"] or "teacher"
        x = [rec["step"] for rec in steps]
        window = max(1, len(steps) // 40)
        det = [rec.get("loss/det_heatmap", 0.0) + rec.get("loss/det_bbox", 0.0) for rec in steps]
        total = [rec["loss/total"] for rec in steps]
        label = None if name in labelled else name
        labelled.add(name)
        style = "--" if name == "teacher" else "-"
        ax_det.plot(x, _smooth(det, window), style, color=colors[name], lw=1, label=label)
        ax_total.plot(x, _smooth(total, window), style, color=colors[name], lw=1)
    for ax, title in ((ax_det, "detection loss (heatmap + box)"),
                      (ax_total, "total loss (with distillation terms)")):
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.set_yscale("log")
    if labelled:
        ax_det.legend(fontsize=7)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.91, bottom=0.12, wspace=0.15)
    fig.savefig(path, dpi=100, format="png")


def write_report(results: dict[str, Any], out: str | Path, plots: bool = True) -> Path:
    """report.md and (`plots`) its PNGs in `out` (results must carry `summary`); returns the
    page."""
    from imkd_core.atomic import write_atomic, write_text_atomic

    out = Path(out)
    stats = results["summary"]["variants"]
    for name, draw in zip(PLOTS if plots else (), (lambda p: plot_variants(stats, p),
                                   lambda p: plot_conditions(stats, p),
                                   lambda p: plot_losses(results, out, p))):
        write_atomic(out / name, draw)
    page = out / "report.md"
    write_text_atomic(page, report_markdown(results))
    return page


__all__ = ["CONDITIONS", "PLOTS", "mean_std", "plot_conditions", "plot_losses", "plot_variants",
           "pooled_std", "read_log", "report_markdown", "summarize", "targets", "variant_stats",
           "write_report"]

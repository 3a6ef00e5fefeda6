"""`imkd benchmark kd`: the distillation benchmark, resumable run by run.

    imkd benchmark kd [--spec kd] [--out benchmark] [--set schedule.student_epochs=4]

What it does, in order: generate the spec's world unless it is there (`data.world`, atomic);
train the teacher once; train every student variant with the same schedule (`spec.plan_runs`,
seed-major); score each run's final checkpoint with `imkd evaluate --by-condition` (the official
devkit metrics, overall and per day / night / rain); after every run write `results.json`
(atomic) and `report.md` + PNGs (`benchmark.report`).

The benchmark directory (`--out`):
- `world/` (the spec's world unless its path is elsewhere), `cache/` (decoded keyframes);
- `configs/<run>.yaml`: the resolved model config each run trains with;
- `runs/<run>/`: an `imkd train` run directory (exact resume), plus `val/` (the evaluation's
  files) and `benchmark.json` (the run's attempts: wall time, steps, machine load; its metrics);
- `logs/<run>.log`: the output of its processes; `results.json`, `report.md`, `*.png`.

Resumable: a run is finished when `benchmark.json` holds its metrics; a run directory without
its final epoch checkpoint is continued with `imkd train --resume` (the steps after its last
checkpoint are redone, bit for bit); a trained but unscored run is only scored. So stopping the
command (Ctrl-C, SIGTERM, a session that ends, even SIGKILL: the children die with it) and
running it again continues where it was. Runs are `imkd` subprocesses: each gets its own
memory, and a kill can only cost steps since the last checkpoint (`schedule.save_every`). A
lock file keeps two benchmarks out of one directory. A run directory made with another config
(the model config or the spec changed since) is an error, not silently mixed in: the results
of one benchmark come from one configuration.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import yaml

from imkd_core.atomic import write_text_atomic
from imkd_core.benchmark.report import PLOTS, read_log, summarize, write_report
from imkd_core.benchmark.spec import BenchmarkSpec, RunPlan, plan_runs
from imkd_core.config import config_from_dict
from imkd_core.data.world.config import WorldConfig

FORMAT = "imkd-benchmark-kd/1"
HEADLINE = ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE")
LOAD_INTERVAL_S = 10.0

Echo = Callable[[str], None]


class BenchmarkError(RuntimeError):
    """A benchmark that cannot go on: the message names the run, file or setting at fault."""


# ------------------------------------------------------------------------------------ world
def world_summary(config: WorldConfig) -> dict[str, Any]:
    """Keyframe counts and scenes per condition of each split, from the config alone (the
    generator gives scene i the condition `conditions[i % n]`, train scenes first)."""
    n_val = config.num_val_scenes
    n_train = config.scenes - n_val
    conditions: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    for i in range(config.scenes):
        split = "train" if i < n_train else "val"
        cond = config.conditions[i % len(config.conditions)]
        conditions[split][cond] = conditions[split].get(cond, 0) + 1
    return {"config": config.to_dict(), "train_scenes": n_train, "val_scenes": n_val,
            "train_samples": n_train * config.samples_per_scene,
            "val_samples": n_val * config.samples_per_scene, "scenes_per_condition": conditions}


def ensure_world(path: Path, config: WorldConfig, echo: Echo) -> float:
    """The world at `path`, generated if absent; refuses one made with another config.
    Returns the seconds spent generating (0 when it was there)."""
    manifest = path / "world.json"
    if manifest.is_file():
        have = json.loads(manifest.read_text()).get("config", {})
        want = config.to_dict()
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        if diff:
            raise BenchmarkError(f"{path}: a world made with another config (differs in "
                                 f"{', '.join(diff)}); remove it or point world.path elsewhere")
        return 0.0
    if path.exists() and any(path.iterdir()):
        raise BenchmarkError(f"{path}: exists, is not empty and holds no world.json")
    from imkd_core.data.world import generate_world

    echo(f"world: generating {config.scenes} scenes x {config.samples_per_scene} keyframes "
         f"into {path}")
    t0 = time.perf_counter()
    generate_world(path, config)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------ machine load
class LoadSampler:
    """The 1-minute load average at the start, every `interval` s and at the end of a block."""

    def __init__(self, interval: float = LOAD_INTERVAL_S,
                 tick: Callable[[], None] | None = None):
        self.interval, self.tick = interval, tick
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LoadSampler:
        self.samples.append(os.getloadavg()[0])
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(os.getloadavg()[0])
            if self.tick is not None:
                self.tick()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        s = self.samples or [os.getloadavg()[0]]
        return {"start": round(s[0], 2), "mean": round(sum(s) / len(s), 2),
                "max": round(max(s), 2), "end": round(s[-1], 2)}


# ----------------------------------------------------------------------------------- backend
class Backend(Protocol):
    """How runs are trained and scored (the tests substitute a fake one)."""

    def train(self, plan: RunPlan, run_dir: Path, config_file: Path, teacher: Path | None,
              resume: bool, log: Path) -> None: ...

    def evaluate(self, plan: RunPlan, checkpoint: Path, out_dir: Path, log: Path
                 ) -> dict[str, Any]: ...


def _libc_prctl() -> Callable[..., int] | None:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_PRCTL = _libc_prctl()  # looked up here: the child between fork and exec only calls it


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the benchmark process dies, even by SIGKILL, so
    no orphaned training keeps writing into a run directory that a rerun resumes."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SubprocessBackend:
    """`imkd train` / `imkd evaluate` in child processes; their output goes to the run's log
    file and, prefixed with the run's name, to `echo`."""

    def __init__(self, dataroot: Path, cache_dir: Path | None, device: str = "auto",
                 threads: int | None = None, save_every: int = 0, echo: Echo = print):
        self.dataroot, self.cache_dir, self.device = dataroot, cache_dir, device
        self.threads, self.save_every, self.echo = threads, save_every, echo

    def _cache_args(self) -> list[str]:
        return ["--no-cache"] if self.cache_dir is None else ["--cache-dir", str(self.cache_dir)]

    def _run(self, label: str, args: list[str], log: Path) -> None:
        import imkd_core

        env = dict(os.environ)
        package_root = str(Path(imkd_core.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
        if self.threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        cmd = [sys.executable, "-m", "imkd_core.cli", *args]
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=env, preexec_fn=_die_with_parent)
            try:
                for line in proc.stdout:
                    f.write(line)
                    f.flush()
                    if line.strip() and "it/s]" not in line:  # not the devkit's progress bars
                        self.echo(f"  [{label}] {line.rstrip()}")
                proc.wait()
            except BaseException:  # Ctrl-C, SIGTERM: stop the child cleanly, then go
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise
        if proc.returncode != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(True)[-25:])
            raise BenchmarkError(f"{label}: `{' '.join(args[:2])}` exited with "
                                 f"{proc.returncode}; log {log}:\n{tail}")

    def train(self, plan: RunPlan, run_dir: Path, config_file: Path, teacher: Path | None,
              resume: bool, log: Path) -> None:
        if resume:
            args = ["train", plan.kind, "--resume", str(run_dir)]
        else:
            args = ["train", plan.kind, "--dataroot", str(self.dataroot), "--config",
                    str(config_file), "--out", str(run_dir), "--save-every",
                    str(self.save_every), *self._cache_args()]
            if teacher is not None:
                args += ["--teacher", str(teacher)]
        self._run(plan.name, [*args, "--device", self.device, "--quiet"], log)

    def evaluate(self, plan: RunPlan, checkpoint: Path, out_dir: Path, log: Path
                 ) -> dict[str, Any]:
        self._run(plan.name, ["evaluate", "--checkpoint", str(checkpoint), "--dataroot",
                              str(self.dataroot), "--split", "val", "--out", str(out_dir),
                              "--by-condition", *self._cache_args(), "--device", self.device,
                              "--quiet", *(["--robustness"] if plan.robustness else [])], log)
        return json.loads((out_dir / "metrics.json").read_text())


# --------------------------------------------------------------------------------- run state
def final_checkpoint(run_dir: Path, plan: RunPlan) -> Path:
    """The last epoch's checkpoint: written whole (atomic) once every step is done."""
    return run_dir / "checkpoints" / f"epoch_{plan.epochs:03d}.pt"


def scored(record: dict[str, Any], plan: RunPlan) -> bool:
    """The run's evaluation is done: its metrics, and its robustness table if it asks for
    one (a variant given `robustness` after it was scored is evaluated again, not retrained)."""
    return "metrics" in record and (not plan.robustness or "robustness" in record)


def steps_done(run_dir: Path) -> int:
    return max((r.get("step", 0) for r in read_log(run_dir) if "event" not in r), default=0)


def throughput(run_dir: Path) -> float | None:
    """Samples per second of training compute over all logged steps (data wait included)."""
    steps = [r for r in read_log(run_dir) if "event" not in r and r.get("step_s")]
    seconds = sum(r["step_s"] for r in steps)
    samples = sum(r["samples_per_s"] * r["step_s"] for r in steps)
    return samples / seconds if seconds > 0 else None


def checkpoint_step(run_dir: Path) -> int:
    """The step of the run's last.pt: where a resume continues (0 without one)."""
    path = run_dir / "checkpoints" / "last.pt"
    if not path.exists():
        return 0
    from imkd_core.checkpoint import load_checkpoint  # torch: only when a run resumes

    try:
        return int(load_checkpoint(path)["extra"]["position"]["step"])
    except (OSError, ValueError, KeyError):
        return 0


def read_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "benchmark.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "benchmark.json", json.dumps(record, indent=2) + "\n")


def _dotted_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _dotted_diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def check_run_config(run_dir: Path, plan: RunPlan) -> None:
    """A run directory must hold the config the spec asks for now. Both are compared resolved
    (`config_from_dict`): a key added to `ModelConfig` after the run was made takes its
    default, which is the behaviour the run had, so new switches do not orphan finished runs."""
    path = run_dir / "config.yaml"
    if not path.exists():
        return
    have = yaml.safe_load(path.read_text())
    with contextlib.suppress(KeyError, TypeError, ValueError):  # unreadable: compare it raw
        have = config_from_dict(have).to_dict()
    want = yaml.safe_load(yaml.safe_dump(plan.config.to_dict()))
    have = yaml.safe_load(yaml.safe_dump(have))
    diff = _dotted_diff(have, want)
    if diff:
        shown = ", ".join(diff[:6]) + (" ..." if len(diff) > 6 else "")
        raise BenchmarkError(f"{run_dir}: trained with another config than the spec gives now "
                             f"(differs in {shown}); remove the run directory to redo it, or use "
                             f"another --out")


def metrics_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """What the benchmark keeps of `metrics.json`: headline, AP per class, per condition."""
    out = {k: metrics[k] for k in HEADLINE if k in metrics}
    out["AP"] = {name: row["AP"] for name, row in metrics.get("per_class", {}).items()}
    out["num_samples"] = metrics.get("num_samples")
    out["conditions"] = {name: {k: sub[k] for k in (*HEADLINE, "num_samples") if k in sub}
                         for name, sub in (metrics.get("subsets") or {}).items()}
    return out


# -------------------------------------------------------------------------------- projection
def _rate_class(plan: RunPlan) -> str:
    return "teacher" if plan.kind == "teacher" else "student_kd" if plan.distil else "student"


def project(spec: BenchmarkSpec, out: Path, runs: list[RunPlan], world_ready: bool
            ) -> dict[str, Any]:
    """Seconds still to go per part: measured throughputs of this benchmark's own runs where
    there are any, else the spec's estimates."""
    est = spec.estimate
    world = world_summary(spec.world.world_config())
    rates = {"teacher": est.teacher_samples_per_s, "student": est.student_samples_per_s,
             "student_kd": est.student_kd_samples_per_s}
    source = dict.fromkeys(rates, "estimate")
    measured: dict[str, list[float]] = {}
    eval_walls: list[float] = []
    for plan in runs:
        run_dir = out / "runs" / plan.name
        rate = throughput(run_dir)
        if rate:
            measured.setdefault(_rate_class(plan), []).append(rate)
        eval_walls += [a["wall_s"] for a in read_record(run_dir).get("attempts", [])
                       if a["stage"] == "eval" and a.get("ok")]
    for key, values in measured.items():
        rates[key], source[key] = sum(values) / len(values), "measured"
    eval_s = (sum(eval_walls) / len(eval_walls) if eval_walls else
              world["val_samples"] / est.eval_samples_per_s + est.eval_overhead_s)
    cfg = spec.world.world_config()
    world_s = 0.0 if world_ready else (cfg.scenes * cfg.samples_per_scene
                                       * est.world_cpu_s_per_sample
                                       / max(1, min(os.cpu_count() or 1, cfg.scenes)))
    per_run: dict[str, dict[str, float]] = {}
    for plan in runs:
        run_dir = out / "runs" / plan.name
        if scored(read_record(run_dir), plan):
            per_run[plan.name] = {"train_s": 0.0, "eval_s": 0.0}
            continue
        train_s = 0.0
        if not final_checkpoint(run_dir, plan).exists():
            total = plan.epochs * world["train_samples"]
            done = steps_done(run_dir) * plan.config.train.batch_size
            train_s = max(0, total - done) / rates[_rate_class(plan)]
        factor = est.robustness_eval_factor if plan.robustness else 1.0
        per_run[plan.name] = {"train_s": train_s, "eval_s": eval_s * factor}
    teacher = per_run.get("teacher", {"train_s": 0.0, "eval_s": 0.0})
    students = [v for k, v in per_run.items() if k != "teacher"]
    parts = {"world_s": world_s, "teacher_s": teacher["train_s"],
             "students_s": sum(v["train_s"] for v in students),
             "eval_s": teacher["eval_s"] + sum(v["eval_s"] for v in students)}
    return {**{k: round(v, 1) for k, v in parts.items()}, "total_s": round(sum(parts.values()), 1),
            "samples_per_s": {k: round(v, 2) for k, v in rates.items()},
            "rate_source": source, "runs": per_run}


def projection_line(p: dict[str, Any]) -> str:
    def m(s: float) -> str:
        return f"{s / 60:.1f}"

    rates = ", ".join(f"{k} {v:.2f}/s ({p['rate_source'][k]})"
                      for k, v in p["samples_per_s"].items())
    return (f"projected time to go: {m(p['total_s'])} min = world {m(p['world_s'])} + teacher "
            f"{m(p['teacher_s'])} + students {m(p['students_s'])} + evaluation "
            f"{m(p['eval_s'])} (training samples/s: {rates})")


# ------------------------------------------------------------------------------------ runner
@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise BenchmarkError(f"{out}: another `imkd benchmark kd` is running there (pid "
                                 f"{f.read().strip() or '?'})") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _attempt(record: dict[str, Any], run_dir: Path, stage: str, body: Callable[[], Any],
             **fields: Any) -> Any:
    """Run `body`, recording its wall time, machine load and outcome in the run's record
    (also when it is interrupted)."""
    attempt = {"stage": stage, "started": _now(), **fields, "ok": False}
    record.setdefault("attempts", []).append(attempt)
    write_record(run_dir, record)
    t0 = time.perf_counter()

    def update() -> None:
        attempt["wall_s"] = round(time.perf_counter() - t0, 1)
        attempt["load"] = sampler.summary()
        write_record(run_dir, record)

    # the record is brought up to date while it runs: a SIGKILL loses at most one interval
    sampler = LoadSampler(tick=update)
    try:
        with sampler:
            result = body()
        attempt["ok"] = True
        return result
    finally:
        if stage == "train":
            attempt["to_step"] = steps_done(run_dir)
        update()


def collect_results(spec: BenchmarkSpec, out: Path, runs: list[RunPlan],
                    projection: dict[str, Any], world: dict[str, Any]) -> dict[str, Any]:
    """results.json: the spec, the world, the machine, and per run its status, metrics,
    training and evaluation wall time, throughput and machine load."""
    rows = []
    for plan in runs:
        run_dir = out / "runs" / plan.name
        record = read_record(run_dir)
        attempts = record.get("attempts", [])
        train = [a for a in attempts if a["stage"] == "train"]
        evals = [a for a in attempts if a["stage"] == "eval"]
        loads = [a["load"]["mean"] for a in train if "load" in a]
        status = ("done" if scored(record, plan) else
                  "trained" if final_checkpoint(run_dir, plan).exists() else
                  "partial" if (run_dir / "run.json").exists() else "pending")
        rate = throughput(run_dir)
        rows.append({
            "name": plan.name, "kind": plan.kind, "variant": plan.variant, "role": plan.role,
            "seed": plan.seed, "distil": plan.distil, "status": status,
            "epochs": plan.epochs, "steps": steps_done(run_dir),
            "train_s": round(sum(a.get("wall_s", 0.0) for a in train), 1),
            "eval_s": round(sum(a.get("wall_s", 0.0) for a in evals), 1),
            "sessions": len(train),
            "samples_per_s": round(rate, 3) if rate else None,
            "load_mean": round(sum(loads) / len(loads), 2) if loads else None,
            "load_max": max((a["load"]["max"] for a in train if "load" in a), default=None),
            "metrics": record.get("metrics"),
            "robustness": record.get("robustness"),
        })
    world_s = read_json(out / "world_record.json").get("generate_s", 0.0)
    results = {
        "format": FORMAT, "updated": _now(), "spec": spec.to_dict(), "world": world,
        "world_generate_s": world_s,
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform,
                    "load_now": round(os.getloadavg()[0], 2)},
        "wall_s": round(world_s + sum(r["train_s"] + r["eval_s"] for r in rows), 1),
        "projection": projection, "runs": rows,
    }
    results["summary"] = summarize(results)
    return results


def publish(results: dict[str, Any], out: Path, plots: bool = True) -> None:
    """results.json (atomic), then report.md and (`plots`) its PNGs."""
    write_text_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    write_report(results, out, plots=plots)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _one_run(out: Path, runs: list[RunPlan], index: int, plan: RunPlan, backend: Backend,
             teacher_ckpt: Path, echo: Echo) -> None:
    """Train `plan` (new, or resumed from its run directory) unless trained, then score it."""
    run_dir = out / "runs" / plan.name
    record = read_record(run_dir)
    record.update(name=plan.name, kind=plan.kind, variant=plan.variant, role=plan.role,
                  seed=plan.seed, distil=plan.distil)
    config_file = out / "configs" / f"{plan.name}.yaml"
    write_text_atomic(config_file, yaml.safe_dump(plan.config.to_dict(), sort_keys=False))
    log = out / "logs" / f"{plan.name}.log"
    checkpoint = final_checkpoint(run_dir, plan)
    tag = f"[{index}/{len(runs)}] {plan.name}"
    if not checkpoint.exists():
        resume = (run_dir / "run.json").exists()
        start = checkpoint_step(run_dir) if resume else 0
        echo(f"{tag}: " + (f"resuming at step {start}" if resume else "training")
             + f" ({plan.epochs} epochs)")
        _attempt(record, run_dir, "train",
                 lambda: backend.train(plan, run_dir, config_file,
                                       teacher_ckpt if plan.distil else None, resume, log),
                 from_step=start, resumed=resume)
        if not checkpoint.exists():
            raise BenchmarkError(f"{plan.name}: training ended without {checkpoint}")
    echo(f"{tag}: evaluating {checkpoint.name} on val"
         + (", also with sensors taken away" if plan.robustness else ""))
    metrics = _attempt(record, run_dir, "eval",
                       lambda: backend.evaluate(plan, checkpoint, run_dir / "val", log))
    record["metrics"] = metrics_summary(metrics)
    if plan.robustness:  # the rows of `imkd evaluate --robustness`, in the table's order
        table = json.loads((run_dir / "val" / "robustness" / "robustness.json").read_text())
        record["robustness"] = [{k: row[k] for k in ("row", "variant", "NDS", "mAP", "dNDS")}
                                for row in table["rows"]]
    write_record(run_dir, record)
    m = record["metrics"]
    echo(f"{tag}: NDS {m['NDS']:.4f}, mAP {m['mAP']:.4f}")


def run_benchmark(spec: BenchmarkSpec, out: str | os.PathLike, backend: Backend | None = None,
                  dry_run: bool = False, echo: Echo = print) -> dict[str, Any]:
    """Run (or continue) the benchmark of `spec` in directory `out`; returns results.json's
    content. `dry_run`: print the plan and the projected time, change nothing."""
    out = Path(out).resolve()
    runs = plan_runs(spec)
    world_config = spec.world.world_config()
    world_path = (out / spec.world.path).resolve()
    # relative to `out` when inside it: results.json and the report then read the same on
    # every clone
    shown = world_path.relative_to(out) if world_path.is_relative_to(out) else world_path
    world = {"path": str(shown), **world_summary(world_config)}
    for split, conds in world["scenes_per_condition"].items():
        missing = [c for c in ("day", "night", "rain") if c not in conds]
        if missing:
            echo(f"note: no {'/'.join(missing)} scenes in {split}: those comparisons are n/a")
    for plan in runs:
        check_run_config(out / "runs" / plan.name, plan)
    world_ready = (world_path / "world.json").is_file()
    projection = project(spec, out, runs, world_ready)
    done = sum(scored(read_record(out / "runs" / p.name), p) for p in runs)
    echo(f"imkd benchmark kd: {len(runs)} runs (teacher + {len(runs) - 1} students), "
         f"{done} done; world {world_path} ({world['train_samples']} train / "
         f"{world['val_samples']} val keyframes); {os.cpu_count()} CPUs, load "
         f"{os.getloadavg()[0]:.2f}")
    echo(projection_line(projection))
    if dry_run:
        for plan in runs:
            p = projection["runs"][plan.name]
            echo(f"  {plan.name:<16} {plan.kind:<8} {plan.epochs:>3} epochs  "
                 f"{(p['train_s'] + p['eval_s']) / 60:6.1f} min")
        return collect_results(spec, out, runs, projection, world)

    with _locked(out):
        t0 = time.perf_counter()
        generate_s = ensure_world(world_path, world_config, echo)
        if generate_s:
            write_text_atomic(out / "world_record.json",
                              json.dumps({"generate_s": round(generate_s, 1)}) + "\n")
        cache = out / "cache" if spec.cache else None
        if backend is None:
            backend = SubprocessBackend(world_path, cache, spec.device, spec.threads,
                                        spec.schedule.save_every, echo)
        (out / "configs").mkdir(parents=True, exist_ok=True)
        teacher_ckpt = final_checkpoint(out / "runs" / "teacher", runs[0])
        changed = False
        try:
            for index, plan in enumerate(runs, 1):
                if scored(read_record(out / "runs" / plan.name), plan):
                    continue
                changed = True
                _one_run(out, runs, index, plan, backend, teacher_ckpt, echo)
                projection = project(spec, out, runs, True)
                echo(f"this session {(time.perf_counter() - t0) / 60:.1f} min; "
                     + projection_line(projection))
                # the page after every run; the plots (seconds each) when this session ends
                publish(collect_results(spec, out, runs, projection, world), out, plots=False)
        except BaseException:  # stopped or failed: the page and plots show what is done
            with contextlib.suppress(Exception):
                publish(collect_results(spec, out, runs, projection, world), out, plots=changed)
            raise
        results = collect_results(spec, out, runs, projection, world)
        publish(results, out, plots=changed or not all((out / n).exists() for n in PLOTS))
    return results


__all__ = ["FORMAT", "Backend", "BenchmarkError", "LoadSampler", "SubprocessBackend",
           "check_run_config", "collect_results", "ensure_world", "final_checkpoint",
           "metrics_summary", "project", "projection_line", "publish", "run_benchmark",
           "steps_done", "throughput", "world_summary"]

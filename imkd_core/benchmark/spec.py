"""What `imkd benchmark kd` runs: a typed spec loaded from YAML (`config/benchmark/kd.yaml`) and
the run plan it expands to.

A spec names the world (its `WorldConfig`, generated when absent), the model config (a name or
a file: the teacher's settings are its `lidar` section, never repeated here), one schedule that
every student shares, and the variants. A variant is a name, a role, whether it distils from the
teacher, config overrides (dotted keys, as `imkd train --set`) and its seeds; adding a variant to
the YAML is all an extra experiment needs. Roles tell the report what to compare: one
`baseline`, one `full` (IMKD), `ablation`s (full minus one stage, `removes` says which) and
`extra`s (shown, not part of the targets).

Each run's resolved `ModelConfig` is computed here, before anything trains, so a bad override
fails in a second rather than after the teacher's twenty minutes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imkd_core.config import ModelConfig, apply_overrides, from_dict, load_model_config, to_plain
from imkd_core.data.world.config import WorldConfig

ROLES = ("baseline", "full", "ablation", "extra")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SpecError(ValueError):
    """A spec that cannot run: the message names the file or key at fault."""


@dataclass
class WorldSpec:
    """The benchmark's world: where it lives (relative to the benchmark directory unless
    absolute) and the `WorldConfig` fields that generate it."""

    path: str = "world"
    config: dict[str, Any] = field(default_factory=dict)

    def world_config(self) -> WorldConfig:
        return WorldConfig.from_dict(self.config)


@dataclass
class ScheduleSpec:
    """One schedule for every student (equal steps, not equal minutes: the machine is shared)."""

    student_epochs: int = 8
    teacher_epochs: int | None = None  # None: the model config's train.teacher_epochs
    batch_size: int | None = None  # None: the model config's train.batch_size
    save_every: int = 50  # steps between mid-epoch checkpoints: what a kill can lose
    overrides: dict[str, Any] = field(default_factory=dict)  # every run, teacher included


@dataclass
class TeacherSpec:
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class VariantSpec:
    name: str
    role: str = "extra"
    teacher: bool = True  # distil from the benchmark's teacher
    overrides: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    removes: str = ""  # ablations: the stage removed, as the report names it
    description: str = ""
    # also score each of its runs with sensors taken away (`imkd evaluate --robustness`: each
    # camera out, radars out; ~5x an evaluation), shown in the report's robustness table
    robustness: bool = False


@dataclass
class EstimateSpec:
    """Throughputs for the projected time until this benchmark has measured its own (quiet
    2-core machine, tiny config, batch 2; issue 15)."""

    teacher_samples_per_s: float = 6.7
    student_samples_per_s: float = 4.0
    student_kd_samples_per_s: float = 3.1
    eval_samples_per_s: float = 5.0
    eval_overhead_s: float = 40.0  # process start, model load, the devkit (x conditions)
    robustness_eval_factor: float = 5.0  # an evaluation with --robustness / one without
    world_cpu_s_per_sample: float = 3.0


@dataclass
class BenchmarkSpec:
    name: str = "kd"
    model: str = "tiny"
    device: str = "auto"
    threads: int | None = None  # torch threads per run (OMP_NUM_THREADS); None: torch's default
    cache: bool = True  # decoded keyframes cached under the benchmark directory
    world: WorldSpec = field(default_factory=WorldSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    variants: list[VariantSpec] = field(default_factory=list)
    estimate: EstimateSpec = field(default_factory=EstimateSpec)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def variant(self, role: str) -> VariantSpec | None:
        return next((v for v in self.variants if v.role == role), None)

    def validate(self) -> BenchmarkSpec:
        if not self.variants:
            raise SpecError("variants: none given")
        names = [v.name for v in self.variants]
        for v in self.variants:
            if not _NAME.match(v.name) or v.name == "teacher":
                raise SpecError(f"variants: name {v.name!r} must be letters, digits, '_', '.', "
                                f"'-' (and not 'teacher')")
            if v.role not in ROLES:
                raise SpecError(f"variants.{v.name}.role: {v.role!r} is not one of {ROLES}")
            if not v.seeds or len(set(v.seeds)) != len(v.seeds):
                raise SpecError(f"variants.{v.name}.seeds: need distinct seeds, got {v.seeds}")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SpecError(f"variants: names {dupes} appear more than once")
        for role in ("baseline", "full"):
            count = sum(v.role == role for v in self.variants)
            if count != 1:
                raise SpecError(f"variants: need exactly one with role {role!r}, got {count}")
        overrides = {"schedule.overrides": self.schedule.overrides,
                     "teacher.overrides": self.teacher.overrides,
                     **{f"variants.{v.name}.overrides": v.overrides for v in self.variants}}
        for key, value in overrides.items():
            if not isinstance(value, dict):
                raise SpecError(f"{key}: expected a mapping of dotted config keys to values, "
                                f"got {type(value).__name__}")
        if self.schedule.student_epochs < 1 or (self.schedule.teacher_epochs or 1) < 1:
            raise SpecError("schedule: epochs must be >= 1")
        if self.schedule.save_every < 0:
            raise SpecError("schedule.save_every must be >= 0")
        try:
            self.world.world_config()
        except (TypeError, ValueError) as exc:
            raise SpecError(f"world.config: {exc}") from exc
        return self


@dataclass(frozen=True)
class RunPlan:
    """One training run of the benchmark and how it is scored."""

    name: str  # run directory name: `teacher` or `<variant>-s<seed>`
    kind: str  # teacher | student
    variant: str | None
    role: str | None
    seed: int
    distil: bool  # trained with the teacher
    config: ModelConfig
    robustness: bool = False  # evaluated with sensors taken away too

    @property
    def epochs(self) -> int:
        tc = self.config.train
        return tc.teacher_epochs if self.kind == "teacher" else tc.student_epochs


# ----------------------------------------------------------------------------------- loading
def spec_dirs() -> list[Path]:
    """Where named specs live: the source tree, then every ament prefix's share directory."""
    dirs = [Path(__file__).resolve().parents[2] / "config" / "benchmark"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share" / "imkd_ros" / "config" / "benchmark")
    return dirs


def find_spec(path_or_name: str | os.PathLike) -> Path:
    candidate = Path(path_or_name)
    if candidate.is_file():
        return candidate
    name = str(path_or_name)
    name = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    for directory in spec_dirs():
        if (directory / name).is_file():
            return directory / name
    raise SpecError(f"benchmark spec {path_or_name!r}: not a file, and no {name} in "
                    f"{[str(d) for d in spec_dirs()]}")


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """`a.b.c` into nested dicts; a list of named mappings (variants) is indexed by name."""
    node: Any = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = next((v for v in node if isinstance(v, dict) and v.get("name") == part), None)
            if node is None:
                raise SpecError(f"--set {key}: no variant named {part!r}")
            continue
        if not isinstance(node, dict):
            raise SpecError(f"--set {key}: {'.'.join(parts[:i])} is not a section")
        if part in ("overrides", "config"):  # free-form mappings whose keys contain dots
            node = node.setdefault(part, {})
            node[".".join(parts[i + 1:])] = value
            return
        node = node.setdefault(part, {})
    if isinstance(node, list):
        raise SpecError(f"--set {key}: cannot replace a whole variant")
    node[parts[-1]] = value


def spec_from_dict(data: dict[str, Any], sets: list[str] = (), source: str = "spec"
                   ) -> BenchmarkSpec:
    """A validated spec from a YAML mapping plus `--set key=value` items (values parse as YAML;
    e.g. `schedule.student_epochs=2`, `world.config.scenes=6`, `imkd.seeds=[0]`: a variant
    by name, `schedule.overrides.train.lr=5e-4`)."""
    data = json.loads(json.dumps(data or {}))  # a deep copy of plain YAML data
    for item in sets:
        if "=" not in item:
            raise SpecError(f"--set {item!r} is not key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        value = yaml.safe_load(text)
        if "." in key and key.split(".", 1)[0] in {v.get("name") for v in
                                                   data.get("variants", [])}:
            key = f"variants.{key}"
        _set_dotted(data, key, value)
    try:
        return from_dict(BenchmarkSpec, data).validate()
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from exc
    except (KeyError, TypeError) as exc:
        raise SpecError(f"{source}: {exc.args[0] if exc.args else exc}") from exc


def _read_spec(path_or_name: str | os.PathLike, seen: tuple[Path, ...] = ()
               ) -> tuple[Path, dict[str, Any]]:
    """A spec file's mapping with its `extends:` chain resolved: the base's keys, this file's
    top-level keys replacing them, and `variants` appended (a variant of the same name
    replaces the base's). So an experiment spec names only what it adds, and shares the base's
    world, teacher and finished runs when it runs into the same --out."""
    path = find_spec(path_or_name)
    if path.resolve() in seen:
        raise SpecError(f"{path}: `extends` loops back to itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec is a mapping, not {type(data).__name__}")
    base_name = data.pop("extends", None)
    if base_name is None:
        return path, data
    base_path = path.parent / str(base_name)
    base_ref = base_path if base_path.is_file() else str(base_name)
    _, base = _read_spec(base_ref, (*seen, path.resolve()))
    added = data.pop("variants", [])
    if not isinstance(added, list) or not all(isinstance(v, dict) for v in added):
        raise SpecError(f"{path}: variants must be a list of mappings")
    variants = {v.get("name"): v for v in base.get("variants", [])}
    variants.update({v.get("name"): v for v in added})
    return path, {**base, **data, "variants": list(variants.values())}


def load_spec(path_or_name: str | os.PathLike = "kd", sets: list[str] = ()) -> BenchmarkSpec:
    path, data = _read_spec(path_or_name)
    return spec_from_dict(data, sets, source=str(path))


# ---------------------------------------------------------------------------------- the plan
def run_config(spec: BenchmarkSpec, kind: str, seed: int,
               overrides: dict[str, Any]) -> ModelConfig:
    """The model config plus the shared schedule, the run's overrides and its seed."""
    s = spec.schedule
    items: dict[str, Any] = dict(s.overrides)
    items.update(overrides)
    if s.batch_size is not None:
        items["train.batch_size"] = s.batch_size
    items["train.student_epochs"] = s.student_epochs
    if s.teacher_epochs is not None:
        items["train.teacher_epochs"] = s.teacher_epochs
    items["train.seed"] = seed
    try:
        return apply_overrides(load_model_config(spec.model), items)
    except (KeyError, TypeError, ValueError, FileNotFoundError) as exc:
        raise SpecError(f"{kind} seed {seed}: {exc.args[0] if exc.args else exc}") from exc


def plan_runs(spec: BenchmarkSpec) -> list[RunPlan]:
    """The teacher, then the students seed-major (every variant's first seed before any second
    seed), so a benchmark stopped half-way already compares every variant."""
    t = spec.teacher
    runs = [RunPlan("teacher", "teacher", None, None, t.seed, False,
                    run_config(spec, "teacher", t.seed, t.overrides))]
    depth = max(len(v.seeds) for v in spec.variants)
    for i in range(depth):
        for v in spec.variants:
            if i < len(v.seeds):
                seed = v.seeds[i]
                try:
                    config = run_config(spec, "student", seed, v.overrides)
                except SpecError as exc:
                    raise SpecError(f"variants.{v.name}: {exc}") from exc
                runs.append(RunPlan(f"{v.name}-s{seed}", "student", v.name, v.role, seed,
                                    v.teacher, config, v.robustness))
    return runs


__all__ = ["ROLES", "BenchmarkSpec", "EstimateSpec", "RunPlan", "ScheduleSpec", "SpecError",
           "TeacherSpec", "VariantSpec", "WorldSpec", "find_spec", "load_spec", "plan_runs",
           "run_config", "spec_dirs", "spec_from_dict"]

"""`make demo` (`python -m imkd_ros.demo`): the whole story on one machine, scored through ROS.

    python -m imkd_ros.demo [--checkpoint PT] [--out demo] [--scenes 3] [--samples-per-scene 8]
                            [--image-size 800x450] [--domain-id 42] [--train [recipe options]]

1. world    a small synthetic world in OUT/world (seed `DEMO_SEED`, not the training worlds'),
            every scene in `val`, day / night / rain round-robin; reused while its world.json
            holds the same config (`generate_world` renames a world into place only when it is
            complete, so what is there is whole)
2. bags     `nuscenes2bag` in OUT/bag/<scene>, images as the world's JPEGs (`BAG_IMAGES`):
            one bag per scene, because the converter keeps each scene's own log time and
            the world's scenes lie days apart (one bag would replay for days); reused while
            OUT/bag/source.json names this very world
3. ROS      per bag: the recorder (`imkd_ros.score.record_live`) in a thread, then `ros2 launch
            imkd_ros detector.launch.py bag:=... trigger:=keyframes` in its own process group
            (output in OUT/launch.log) until every keyframe has its Detection3DArray; Ctrl-C to
            the group, which must end with status 0 and no traceback. The recording (arrays,
            arrow markers for the velocities, the node's ~/debug/<stage>_ms) is scored with the
            devkit into OUT/ros
4. offline  `evaluate_checkpoint` with the same checkpoint on the same keyframes, into
            OUT/offline
5. report   OUT/report.md: ROS path vs offline metrics (PASS when the NDS agree within
            `NDS_TOLERANCE`; exit status 1 otherwise), latency percentiles per stage, the node's
            boxes on the cameras and in BEV, AP per class

DDS stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) on `--domain-id`. With
`--train`, a teacher and then a student are first trained from scratch (`TrainRecipe`, `imkd
world` + `imkd train`), and that student is the checkpoint. Exit status: 0 pass, 1 the NDS
differ, 2 the demo could not run (message on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imkd_core.atomic import write_text_atomic
from imkd_core.data.world.config import WorldConfig, parse_image_size
from imkd_core.interrupts import stop_signals_as_keyboard_interrupt

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CHECKPOINT = REPO_ROOT / "models" / "imkd_tiny_student.pt"
DEMO_SEED = 2026  # the shipped model trained on worlds of seed 0: never seen here
DEFAULT_DOMAIN_ID = 42
NDS_TOLERANCE = 1e-3
PICTURE_SCENES = 3  # camera + BEV pictures: the middle keyframe of each of the first scenes
LAUNCH_STOP_S = 30.0  # Ctrl-C -> every launched process gone
# Bag replay rate: half speed leaves the node's one callback thread headroom on a loaded 2-core
# machine. When its callbacks fall behind the replay (as they did with raw images, even at a
# quarter speed), its synchroniser gives up a keyframe whose radar sweeps left its cache before
# the keyframe record was taken (`keyframes_dropped` in ~/debug/status), and /tf poses come
# after `tf_wait`; the demo needs every keyframe, detected on the inputs offline reads.
REPLAY_RATE = 0.5
# The node's parameters that differ from config/detector.yaml here. score_threshold: every box
# the model keeps (its head.score_threshold) is published, as offline they are all scored (the
# shipped 0.2 is for RViz). tf_wait: a frame waits for the /tf poses of all its sweeps (on a
# loaded machine /tf can lag the sensor topics by more than the shipped 0.1 s), instead of
# holding the last pose, which would detect on other inputs than offline.
NODE_OVERRIDES = {"score_threshold": 0.0, "tf_wait": 2.0}
# s: after the recording, for the replay to end by itself (Ctrl-C in its last moments kills it)
REPLAY_END_S = 30.0
# How long a bag may take, when --timeout is not given: start-up, the replay, and per keyframe.
RECORD_STARTUP_S = 60.0
RECORD_PER_KEYFRAME_S = 15.0
RECORD_IDLE_S = 2.0  # after the last expected array: anything late would arrive by then


class DemoError(RuntimeError):
    """The demo cannot go on; the message says which step and why."""


@dataclass(frozen=True)
class TrainRecipe:
    """`--train`: the world and schedule the teacher and then the student train on (tiny
    config). A few tens of minutes on a 2-core CPU (README, Demo)."""

    scenes: int = 6
    samples_per_scene: int = 30
    seed: int = 0  # the benchmark's seed; the demo scores on DEMO_SEED
    teacher_epochs: int = 10
    student_epochs: int = 10
    config: str = "tiny"


@dataclass
class Steps:
    """Wall time per step, printed as each ends and as a table at the end."""

    times: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, what: str, fn, *args, **kwargs):
        print(f"[{len(self.times) + 1}] {name}: {what} ...", flush=True)
        start = time.monotonic()
        result = fn(*args, **kwargs)
        self.times[name] = time.monotonic() - start
        print(f"[{len(self.times)}] {name}: done in {self.times[name]:.1f} s", flush=True)
        return result

    def table(self) -> list[str]:
        lines = ["| step | wall time (s) |", "| --- | --- |"]
        lines += [f"| {name} | {seconds:.1f} |" for name, seconds in self.times.items()]
        lines.append(f"| total | {sum(self.times.values()):.1f} |")
        return lines


# --- 1. world ---------------------------------------------------------------------------------

def world_is_current(world: Path, config: WorldConfig) -> bool:
    """True when `world` is a complete world generated from exactly `config` by this
    generator version (world.json is written last, inside the folder that is renamed into
    place: a world without it, or with another config, is not trusted)."""
    from imkd_core.data.world.generate import GENERATOR_VERSION

    try:
        manifest = json.loads((world / "world.json").read_text())
    except (OSError, ValueError):
        return False
    return (manifest.get("generator_version") == GENERATOR_VERSION
            and manifest.get("config") == config.to_dict()
            and (world / config.version / "sample.json").is_file())


def ensure_world(world: Path, config: WorldConfig, workers: int = 2) -> bool:
    """Generate `world` unless it is current; returns whether it was reused. Replacing an old
    world is atomic (`generate_world(overwrite=True)` swaps only a complete one in)."""
    from imkd_core.data.world.generate import generate_world

    if world_is_current(world, config):
        return True
    generate_world(world, config, workers=workers, overwrite=world.exists())
    return False


# --- 2. bags ----------------------------------------------------------------------------------

# The bags carry the world's JPEG files as sensor_msgs/CompressedImage (the node decodes the
# same bytes with the same codec as the offline reader): with 1 MB raw images the node's
# callbacks could not keep up with the replay on a loaded 2-core machine (REPLAY_RATE).
BAG_IMAGES = "compressed"


def _world_stamp(world: Path) -> dict:
    manifest = (world / "world.json").read_text()
    return {"world": str(world.resolve()), "world_json": manifest, "images": BAG_IMAGES}


def ensure_bags(world: Path, bag_dir: Path) -> tuple[list[Path], bool]:
    """One bag per val scene of `world` in `bag_dir`; returns (bags, reused). Reused while
    `bag_dir/source.json` (written last) records this world.json; otherwise the stamp goes
    first, then the old bags, so an interrupted conversion is never taken for a finished one."""
    from imkd_ros.nuscenes2bag import convert

    stamp_path = bag_dir / "source.json"
    stamp = _world_stamp(world)
    scenes = [s["name"] for s in json.loads(stamp["world_json"])["scenes"]
              if s["split"] == "val"]
    if not scenes:
        raise DemoError(f"bag: {world} has no val scene")
    bags = [bag_dir / name for name in scenes]
    try:
        reused = json.loads(stamp_path.read_text()) == {**stamp, "scenes": scenes}
    except (OSError, ValueError):
        reused = False
    if reused and all((b / "metadata.yaml").is_file() for b in bags):
        return bags, True
    stamp_path.unlink(missing_ok=True)
    if bag_dir.exists():
        shutil.rmtree(bag_dir)
    bag_dir.mkdir(parents=True)
    for name, bag in zip(scenes, bags):
        convert(world, bag, scenes=[name], images=BAG_IMAGES, progress=False)
    write_text_atomic(stamp_path, json.dumps({**stamp, "scenes": scenes}, indent=1))
    return bags, False


# --- 3. the ROS path --------------------------------------------------------------------------

def launch_env(domain_id: int) -> dict[str, str]:
    """The environment of `ros2 launch` (and of this process's recorder): DDS on this machine
    only, on `domain_id`; AMENT_PREFIX_PATH with this venv, as its activate script sets it, so
    launch finds imkd_ros; torch with this process's thread count, so the node's reductions
    run in the offline evaluation's order and give the same boxes."""
    import torch

    return {**os.environ, "AMENT_PREFIX_PATH": ament_prefix_path(),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain_id),
            "PYTHONUNBUFFERED": "1", "RCUTILS_COLORIZED_OUTPUT": "0",
            "OMP_NUM_THREADS": str(torch.get_num_threads())}


def ament_prefix_path() -> str:
    """AMENT_PREFIX_PATH with this venv on it, as `source .venv/bin/activate` sets it (`make
    test` and `make demo` run .venv/bin/python without activating): where launch and `ros2`
    find imkd_ros."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return os.pathsep.join(prefixes if sys.prefix in prefixes else [*prefixes, sys.prefix])


def ros2_executable() -> str:
    """The `ros2` command of this venv (or PATH's)."""
    bindir = Path(sys.executable).parent
    exe = shutil.which("ros2", path=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    if not exe:
        raise DemoError(f"ROS path: no `ros2` executable in {bindir} or on PATH (`make setup` "
                        "installs ros2cli and ros2launch)")
    return exe


def timing_topics() -> dict[str, str]:
    """~/debug/<stage>_ms topic of the detector -> stage."""
    from imkd_ros.detector_node import TIMINGS
    from imkd_ros.parameters import NODE_NAME

    return {f"/{NODE_NAME}/debug/{stage}_ms": stage for stage in TIMINGS}


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _since(path: Path, offset: int) -> str:
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def _stop_launch(launch: subprocess.Popen) -> int:
    """Ctrl-C to the launch's process group, as a terminal sends it; SIGKILL after
    `LAUNCH_STOP_S` (then the status is -9, which fails the demo)."""
    if launch.poll() is None:
        os.killpg(launch.pid, signal.SIGINT)
    try:
        return launch.wait(timeout=LAUNCH_STOP_S)
    except subprocess.TimeoutExpired:
        os.killpg(launch.pid, signal.SIGKILL)
        return launch.wait()


def node_params_file(out: Path) -> Path:
    """The node's parameter file for the demo: config/detector.yaml with `NODE_OVERRIDES`."""
    import yaml

    # the checkout's (make demo), else the installed one
    source = next((path for path in (REPO_ROOT / "config" / "detector.yaml",
                                     Path(sys.prefix) / "share" / "imkd_ros" / "config" /
                                     "detector.yaml") if path.is_file()), None)
    if source is None:
        raise DemoError(f"ROS path: no config/detector.yaml in {REPO_ROOT} or {sys.prefix}")
    data = yaml.safe_load(source.read_text())
    data["/**"]["ros__parameters"].update(NODE_OVERRIDES)
    path = out / "detector.yaml"
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
    return path


def record_bag(bag: Path, checkpoint: Path, log_path: Path, env: dict[str, str], device: str,
               rate: float, timeout_s: float | None, params_file: Path):
    """One `ros2 launch` over `bag`, recorded until each of its keyframes has an array."""
    from imkd_core.data.bag_reader import read_keyframe_records
    from imkd_ros.parameters import NODE_NAME
    from imkd_ros.score import record_live

    keyframes = read_keyframe_records(bag)
    if timeout_s is None:
        span_s = (keyframes[-1].timestamp - keyframes[0].timestamp) / 1e9 + 1.0
        timeout_s = RECORD_STARTUP_S + span_s / rate + RECORD_PER_KEYFRAME_S * len(keyframes)
    ready = threading.Event()
    result: dict = {}

    def record() -> None:
        try:
            result["recording"] = record_live(
                f"/{NODE_NAME}/output/detections", markers_topic=f"/{NODE_NAME}/output/markers",
                keyframes_topic=None, keyframes=keyframes, float_topics=list(timing_topics()),
                idle_s=RECORD_IDLE_S, timeout_s=timeout_s, ready=ready)
        except BaseException as exc:  # reported by the main thread
            result["error"] = exc
        finally:
            ready.set()

    recorder = threading.Thread(target=record, name="demo-recorder", daemon=True)
    recorder.start()
    ready.wait(timeout=120)
    if "error" in result or not ready.is_set():
        raise DemoError(f"ROS path: the recorder did not start: {result.get('error')}")
    with open(log_path, "a") as log:
        log.write(f"=== ros2 launch: bag {bag} ===\n")
        log.flush()
        start = log_path.stat().st_size
        launch = subprocess.Popen(
            [ros2_executable(), "launch", "imkd_ros", "detector.launch.py", f"bag:={bag}",
             "trigger:=keyframes", f"checkpoint:={checkpoint}", f"device:={device}",
             f"rate:={rate:g}", f"params_file:={params_file}",
             f"compressed:={str(BAG_IMAGES == 'compressed').lower()}"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        while recorder.is_alive():
            recorder.join(timeout=0.5)
            if launch.poll() is not None and recorder.is_alive():
                raise DemoError(f"ROS path: ros2 launch exited ({launch.returncode}) before "
                                f"every keyframe of {bag.name} had detections; {log_path}:\n"
                                + _tail(log_path))
        deadline = time.monotonic() + REPLAY_END_S
        while (time.monotonic() < deadline and launch.poll() is None
               and "imkd-replay-2]: process has finished cleanly" not in _since(log_path, start)):
            time.sleep(0.2)
    finally:
        code = _stop_launch(launch)
    text = _since(log_path, start)
    if code != 0 or "Traceback" in text or "process has died" in text:
        raise DemoError(f"ROS path: ros2 launch over {bag.name} ended with status {code} or a "
                        f"traceback; {log_path}:\n" + _tail(log_path))
    if "error" in result:
        raise DemoError(f"ROS path: the recorder failed: {result['error']}")
    recording = result["recording"]
    missing = [k.token for k in keyframes if k.timestamp not in recording.detections]
    if missing:
        raise DemoError(f"ROS path: no Detection3DArray for {len(missing)} of {len(keyframes)} "
                        f"keyframes of {bag.name} ({', '.join(missing)}) within "
                        f"{timeout_s:.0f} s ({'; '.join(recording.notes) or 'no notes'}); "
                        f"{log_path}:\n" + _tail(log_path))
    return recording


def run_ros_path(bags: list[Path], checkpoint: Path, out: Path, env: dict[str, str],
                 device: str, rate: float, timeout_s: float | None):
    """Every bag through `ros2 launch`; the recordings merged into one, scored into OUT/ros.
    Returns (recording, metrics)."""
    from imkd_ros.score import Recording, score

    log_path = out / "launch.log"
    log_path.write_text("")
    params_file = node_params_file(out)
    # this process's recorder joins the same domain as the launched nodes
    for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID"):
        os.environ[key] = env[key]
    merged = Recording(detections={}, keyframes=[], timings={})
    for bag in bags:
        recording = record_bag(bag, checkpoint, log_path, env, device, rate, timeout_s,
                               params_file)
        merged.detections.update(recording.detections)
        merged.keyframes.extend(recording.keyframes)
        for topic, values in recording.timings.items():
            merged.timings.setdefault(topic, []).extend(values)
        merged.frames.update(recording.frames)
        merged.skipped.update(recording.skipped)
        merged.duplicates += recording.duplicates
        merged.boxes_with_velocity += recording.boxes_with_velocity
        merged.markers_topic = recording.markers_topic
        merged.notes += recording.notes
    metrics = score(merged, out / "world", out / "ros")
    return merged, metrics


# --- 5. report --------------------------------------------------------------------------------

def latency_rows(timings: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """stage -> count, p50, p90, p99 (ms) of the node's ~/debug/<stage>_ms values."""
    rows = {}
    for topic, stage in timing_topics().items():
        values = np.asarray(timings.get(topic, ()), dtype=float)
        if len(values):
            p50, p90, p99 = np.percentile(values, [50, 90, 99])
            rows[stage] = {"count": len(values), "p50": p50, "p90": p90, "p99": p99}
    return rows


def _fmt(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4f}"


def metric_rows(ros: dict, offline: dict) -> list[tuple[str, float, float]]:
    """(name, ROS path, offline) for the headline numbers, TP errors and per-class AP."""
    names = ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE")
    rows = [(n, ros[n], offline[n]) for n in names]
    rows += [(f"AP {c}", ros["per_class"][c]["AP"], offline["per_class"][c]["AP"])
             for c in offline["per_class"]]
    return rows


def draw_pictures(world: Path, recording, out: Path) -> list[str]:
    """The node's boxes (the `_shown` ones) on the six cameras and in BEV for the middle
    keyframe of each of the first `PICTURE_SCENES` scenes; returns the PNG names."""
    from imkd_core.data.dataset import KeyframeDataset, reader_options
    from imkd_core.evaluation.runner import _shown, plot_bev, plot_cameras
    from imkd_ros.score import match_samples

    boxes = match_samples(recording)
    by_scene: dict[str, list[str]] = {}
    for record in recording.keyframes:
        by_scene.setdefault(record.scene, []).append(record.token)
    data = KeyframeDataset(world, "val", options=reader_options("student", lidar=True))
    pictures = []
    for scene, tokens in list(by_scene.items())[:PICTURE_SCENES]:
        token = tokens[len(tokens) // 2]
        sample = data.sample(data.tokens.index(token))
        shown = _shown(boxes[token])
        plot_cameras(sample, shown, out / f"cameras_{scene}.png")
        plot_bev(sample, shown, out / f"bev_{scene}.png")
        pictures += [f"cameras_{scene}.png", f"bev_{scene}.png"]
    return pictures


def report_text(*, world: Path, config: WorldConfig, checkpoint: Path, rate: float, recording,
                ros: dict, offline: dict, latency: dict, pictures: list[str], steps: Steps,
                passed: bool) -> str:
    manifest = json.loads((world / "world.json").read_text())
    per_scene: dict[str, int] = {}
    for record in recording.keyframes:
        per_scene[record.scene] = per_scene.get(record.scene, 0) + 1
    nds_diff = ros["NDS"] - offline["NDS"]
    lines = [
        "# imkd_ros demo",
        "",
        "A checkpoint detects objects on a synthetic nuScenes-format world twice: through ROS "
        "(`ros2 launch imkd_ros detector.launch.py bag:=... trigger:=keyframes`: the bag "
        "replayed, the detector node, its Detection3DArray + MarkerArray recorded and scored "
        "with nuscenes-devkit) and offline (`imkd evaluate`, the same pipeline without ROS). "
        "Both must score the same: what is evaluated is what is deployed.",
        "",
        "## World",
        "",
        f"`{world}`: seed {config.seed} (the shipped model trains on seed 0), "
        f"{config.image_width}x{config.image_height} images, every scene in `val`.",
        "",
        "| scene | condition | keyframes |",
        "| --- | --- | --- |",
    ]
    for scene in manifest["scenes"]:
        lines.append(f"| {scene['name']} | {scene['condition']} | "
                     f"{per_scene.get(scene['name'], 0)} |")
    lines += [
        "",
        f"Checkpoint: `{checkpoint}` ({offline['kind']}). The node ran with "
        "config/detector.yaml but "
        + ", ".join(f"`{k}: {v:g}`" for k, v in NODE_OVERRIDES.items())
        + " (`detector.yaml` here; `imkd_ros/demo.py` says why), one `ros2 launch` per "
        f"scene's bag (`bag/`), replayed at rate {rate:g}.",
        "",
        "## Metrics: ROS path vs offline",
        "",
        "| metric | ROS path | offline | ROS - offline |",
        "| --- | --- | --- | --- |",
    ]
    for name, a, b in metric_rows(ros, offline):
        lines.append(f"| {name} | {_fmt(a)} | {_fmt(b)} | {_fmt(a - b)} |")
    lines += [
        "",
        f"**{'PASS' if passed else 'FAIL'}**: |NDS_ros - NDS_offline| = {abs(nds_diff):.2e} "
        f"({'<=' if passed else '>'} {NDS_TOLERANCE:g}).",
        "",
        f"{ros.get('num_pred_boxes', 'n/a')} detections on {len(recording.keyframes)} "
        f"keyframes through ROS, {offline['num_pred_boxes']} offline; "
        f"{offline['num_gt_boxes']} ground-truth boxes.",
        "",
        "## Latency (the node's ~/debug/<stage>_ms, ms)",
        "",
        "| stage | count | p50 | p90 | p99 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for stage, row in latency.items():
        lines.append(f"| {stage} | {row['count']} | {row['p50']:.1f} | {row['p90']:.1f} | "
                     f"{row['p99']:.1f} |")
    lines += ["", "## Pictures (the node's detections; ground truth dashed)", "",
              "![AP per class, ROS path](ap_per_class.png)", ""]
    lines += [f"![{Path(name).stem}]({name})" for name in pictures]
    lines += ["", "## Step times", "", *steps.table(), "",
              "More: `ros/` (the ROS path's devkit output), `offline/report.md`, `launch.log`."]
    return "\n".join(lines) + "\n"


# --- --train ----------------------------------------------------------------------------------

def _imkd(*args: str) -> None:
    command = [sys.executable, "-m", "imkd_core.cli", *args]
    print("  $ imkd " + " ".join(args), flush=True)
    if subprocess.run(command).returncode != 0:
        raise DemoError(f"train: `imkd {' '.join(args)}` failed")


def _train_run(kind: str, run: Path, *args: str) -> Path:
    """`imkd train KIND` into `run`, continued with --resume when it is there already."""
    if (run / "run.json").exists():
        _imkd("train", kind, "--resume", str(run), "--quiet")
    else:
        _imkd("train", kind, "--out", str(run), "--quiet", *args)
    return run / "checkpoints" / "last.pt"


def train_checkpoint(out: Path, recipe: TrainRecipe, steps: Steps) -> Path:
    """The teacher, then the student distilled from it, on a training world; the student's
    checkpoint."""
    world = out / "train" / "world"
    config = WorldConfig(scenes=recipe.scenes, samples_per_scene=recipe.samples_per_scene,
                         seed=recipe.seed)
    steps.run("train world", f"{recipe.scenes} scenes x {recipe.samples_per_scene} keyframes, "
              f"seed {recipe.seed}", ensure_world, world, config)
    common = ("--dataroot", str(world), "--config", recipe.config)
    teacher = steps.run("teacher", f"{recipe.teacher_epochs} epochs", _train_run, "teacher",
                        out / "train" / "teacher", *common, "--epochs",
                        str(recipe.teacher_epochs))
    return steps.run("student", f"{recipe.student_epochs} epochs, distilled", _train_run,
                     "student", out / "train" / "student", *common, "--epochs",
                     str(recipe.student_epochs), "--teacher", str(teacher))


# --- the demo ---------------------------------------------------------------------------------

def run_demo(args: argparse.Namespace) -> int:
    """The five steps (see the module docstring); returns the exit status."""
    from imkd_core.evaluation.runner import evaluate_checkpoint, plot_ap_bars

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps()
    if args.train:
        checkpoint = train_checkpoint(out, TrainRecipe(
            scenes=args.train_scenes, samples_per_scene=args.train_samples_per_scene,
            teacher_epochs=args.teacher_epochs, student_epochs=args.student_epochs), steps)
    else:
        checkpoint = (args.checkpoint or SHIPPED_CHECKPOINT).resolve()
    if not checkpoint.is_file():
        raise DemoError(f"no shipped model at {checkpoint}; pass --checkpoint"
                        if args.checkpoint is None and not args.train
                        else f"checkpoint {checkpoint}: no such file")
    width, height = args.image_size
    config = WorldConfig(scenes=args.scenes, samples_per_scene=args.samples_per_scene,
                         seed=args.seed, val_fraction=1.0, image_width=width,
                         image_height=height, lidar_azimuth_steps=args.lidar_azimuth_steps)
    world = out / "world"
    reused = steps.run("world", f"{config.scenes} scenes x {config.samples_per_scene} "
                       f"keyframes, {width}x{height}, seed {config.seed}", ensure_world, world,
                       config, args.workers)
    if reused:
        print(f"    reused {world} (same config)")
    bags, reused = steps.run("bag", "nuscenes2bag, one bag per scene", ensure_bags, world,
                             out / "bag")
    if reused:
        print(f"    reused {out / 'bag'} (same world)")
    env = launch_env(args.domain_id)
    recording, ros = steps.run(
        "ROS path", f"ros2 launch over {len(bags)} bag(s), domain {args.domain_id}",
        run_ros_path, bags, checkpoint, out, env, args.device, args.rate, args.timeout)
    offline = steps.run("offline", "evaluate_checkpoint on the same keyframes",
                        evaluate_checkpoint, checkpoint, world, out / "offline", "val",
                        device=args.device, quiet=True)

    def report() -> tuple[bool, dict]:
        latency = latency_rows(recording.timings)
        plot_ap_bars({**ros, "kind": f"{offline['kind']} via ROS", "eval_set": "val"},
                     out / "ap_per_class.png")
        pictures = draw_pictures(world, recording, out)
        passed = abs(ros["NDS"] - offline["NDS"]) <= NDS_TOLERANCE
        write_text_atomic(out / "report.md", report_text(
            world=world, config=config, checkpoint=checkpoint, rate=args.rate,
            recording=recording, ros=ros,
            offline=offline, latency=latency, pictures=pictures, steps=steps, passed=passed))
        return passed, latency

    passed, latency = steps.run("report", "report.md and PNGs", report)
    print("\n".join(["", *steps.table(), ""]))
    e2e = latency.get("end_to_end", {}).get("p50", float("nan"))
    print(f"report {out / 'report.md'}")
    print(f"NDS {ros['NDS']:.4f} (offline {offline['NDS']:.4f}: "
          f"{'PASS' if passed else 'FAIL'}), mAP {ros['mAP']:.4f}, "
          f"p50 end-to-end latency {e2e:.1f} ms")
    return 0 if passed else 1


def build_parser() -> argparse.ArgumentParser:
    recipe = TrainRecipe()
    p = argparse.ArgumentParser(prog="python -m imkd_ros.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path,
                   help=f"student checkpoint (default: the shipped {SHIPPED_CHECKPOINT})")
    p.add_argument("--out", type=Path, default=Path("demo"), help="default: %(default)s")
    p.add_argument("--scenes", type=int, default=3, help="default: %(default)s")
    p.add_argument("--samples-per-scene", type=int, default=8, help="default: %(default)s")
    p.add_argument("--image-size", type=parse_image_size, default=(800, 450),
                   metavar="WxH", help="default: 800x450")
    p.add_argument("--lidar-azimuth-steps", type=int,
                   default=WorldConfig.lidar_azimuth_steps, help="default: %(default)s")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="world seed (default: "
                                                                "%(default)s)")
    p.add_argument("--workers", type=int, default=2, help="world generation processes")
    p.add_argument("--domain-id", type=int, default=DEFAULT_DOMAIN_ID,
                   help="ROS_DOMAIN_ID of the launched nodes and the recorder "
                        "(default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (node and offline)")
    p.add_argument("--rate", type=float, default=REPLAY_RATE,
                   help="bag replay rate (default: %(default)s)")
    p.add_argument("--timeout", type=float,
                   help=f"s per bag for every keyframe's detections (default: "
                        f"{RECORD_STARTUP_S:g} + the replay + {RECORD_PER_KEYFRAME_S:g} per "
                        "keyframe)")
    t = p.add_argument_group("--train: train the checkpoint first (TrainRecipe)")
    t.add_argument("--train", action="store_true",
                   help="teacher + distilled student from scratch; ignores --checkpoint")
    t.add_argument("--train-scenes", type=int, default=recipe.scenes)
    t.add_argument("--train-samples-per-scene", type=int, default=recipe.samples_per_scene)
    t.add_argument("--teacher-epochs", type=int, default=recipe.teacher_epochs)
    t.add_argument("--student-epochs", type=int, default=recipe.student_epochs)
    return p


def main(argv: list[str] | None = None) -> int:
    from imkd_ros.score import ScoreError

    args = build_parser().parse_args(argv)
    if not 0 <= args.domain_id <= 101:
        print(f"demo: --domain-id {args.domain_id} must be in 0..101", file=sys.stderr)
        return 2
    try:
        with stop_signals_as_keyboard_interrupt():
            return run_demo(args)
    except (DemoError, ScoreError, ValueError, FileExistsError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("demo: interrupted; run it again to continue (the world and bags are reused)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

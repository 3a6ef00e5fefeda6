"""The training loop: one file, read top to bottom (nanoGPT style), for teacher and student.

    imkd train teacher --dataroot D --out runs/teacher
    imkd train student --dataroot D --teacher runs/teacher/checkpoints/last.pt --out runs/student

What a run directory holds, and why each piece is there:
- `run.json`: the settings of the run (kind, dataroot, teacher, split, cache, save interval),
  written before the first step (once data, teacher and model are built), so
  `--resume RUN_DIR` needs nothing else from the command line and works even when the run was
  killed before its first checkpoint;
- `config.yaml`: the resolved `ModelConfig` (YAML + `--set` overrides + `--epochs`/`--seed`);
  `command.txt`: each command line that ran in it (the first, then every resume);
- `log.jsonl`: one record per step (losses, lr, grad norm, samples/s, data wait) and one per
  epoch (means, data-wait share); on resume the records after the checkpoint are dropped, so the
  log reads as one uninterrupted run;
- `checkpoints/last.pt` (every `save_every` steps and at each epoch end),
  `checkpoints/epoch_NNN.pt` and, with `eval_every`, `checkpoints/best.pt` (the epoch of the
  best NDS on `eval_split`; each evaluation's report in `eval/epoch_NNN/`):
  `checkpoint.save_checkpoint` files (atomic, `weights_only`) that
  `DetectorPipeline.from_checkpoint` loads, with the training state in `extra`: optimizer,
  scheduler, the IMKD adaptors, the torch RNG states, the data position and the best NDS. With
  `train.ema_decay` the checkpoint's weights are the moving average (what is evaluated and
  deployed) and the raw training weights ride in `extra`;
- `tensorboard/`: the same per-step scalars as TensorBoard event files (`tensorboard --logdir
  RUN_DIR`); a resume purges the events after its checkpoint, as it trims the log.

The data are a dataroot's split (`KeyframeDataset`) or the keyframes of rosbag2 files written by
`nuscenes2bag` (`BagDataset`, `settings.bags`); evaluation always scores a dataroot (the devkit
reads its tables).

Under torchrun (`train.distributed`) every rank runs this loop with `train.batch_size` samples
per step; DistributedDataParallel averages the gradients, BatchNorm is synchronised and the
losses' normalisers are global, so N processes x batch b compute the steps of one process x
batch N*b (a test checks it). Rank 0 alone writes the run directory, logs and evaluates. A run
resumes with the number of processes it was started with (its data position counts in steps of
N*b samples). With `train.amp` on CUDA the forward passes run under `torch.autocast` (float16)
with a `GradScaler`; on the CPU the flag does nothing.

Exact resume: the data order is `EpochSampler(seed, epoch)` and each item's augmentation is
drawn from `item_rng(seed, epoch, index)` (`data.dataset`), so nothing about the data depends on
what ran before; with the weights, optimizer, scheduler and RNG states restored, a resumed run
computes the same steps as an uninterrupted one (bit for bit on the CPU with a fixed thread
count). A SIGKILL can only lose the steps after the last `last.pt`: checkpoints are renamed
into place whole, never half-written.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from imkd_core.atomic import write_atomic, write_text_atomic
from imkd_core.checkpoint import load_checkpoint, save_checkpoint
from imkd_core.config import ModelConfig, config_from_dict
from imkd_core.data.dataset import BagDataset, EpochSampler, KeyframeDataset, reader_options
from imkd_core.device import resolve_device
from imkd_core.distill.losses import IMKDLoss, teacher_loss
from imkd_core.evaluation.runner import evaluate_checkpoint
from imkd_core.models.detector import build_model, freeze
from imkd_core.preprocess import Preprocessor, collate, to_device
from imkd_core.train import distributed

KINDS = ("teacher", "student")


class TrainError(ValueError):
    """A run that cannot start: the message names the file or setting at fault."""


@dataclass
class RunSettings:
    """Everything of a run but the model config; stored as `run.json` in the run directory."""

    kind: str  # teacher | student
    dataroot: str | None  # the training data's dataroot (None: `bags` only), and evaluation's
    teacher: str | None = None  # teacher checkpoint (student only; None: no distillation)
    split: str = "train"
    cache_dir: str | None = None  # sample cache (data.dataset.SampleCache); None: no cache
    save_every: int = 0  # also write last.pt every N steps inside an epoch (0: epoch ends)
    eval_every: int = 0  # score every N epochs on `eval_split`, keep best.pt by NDS (0: never)
    eval_split: str = "val"
    bags: list[str] = field(default_factory=list)  # train on these nuscenes2bag bags instead
    world_size: int = 1  # processes (torchrun); a resume needs the same number


def epochs_of(config: ModelConfig, kind: str) -> int:
    return config.train.teacher_epochs if kind == "teacher" else config.train.student_epochs


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 down to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def load_teacher(path: str | os.PathLike, config: ModelConfig, device: torch.device
                 ) -> nn.Module:
    """A frozen teacher from a teacher checkpoint on the student's BEV grid."""
    try:
        payload = load_checkpoint(path)
    except (OSError, ValueError) as exc:  # missing, not a checkpoint, corrupt
        raise TrainError(f"--teacher {path}: cannot load ({exc})") from exc
    if payload.get("kind") != "teacher":
        raise TrainError(f"{path}: a {payload.get('kind')} checkpoint; --teacher needs a teacher "
                         f"checkpoint (from `imkd train teacher`)")
    teacher_config = config_from_dict(payload["config"])
    if teacher_config.bev_grid != config.bev_grid:
        raise TrainError(f"{path}: the teacher's BEV grid {teacher_config.bev_grid} differs from "
                         f"the student's {config.bev_grid}; the feature losses need one grid")
    # The student's run prepares the LiDAR the teacher reads (its `lidar` section): it must
    # prepare it as the teacher's training did, or the teacher sees another input.
    prepared = [(key, a, b) for key, a, b in (
        ("lidar.pillars.max_points", teacher_config.lidar.pillars.max_points,
         config.lidar.pillars.max_points),
        ("lidar.ground_below", teacher_config.lidar.ground_below, config.lidar.ground_below),
        ("lidar.max_dt", teacher_config.lidar.max_dt, config.lidar.max_dt)) if a != b]
    if prepared:
        raise TrainError(f"{path}: the teacher was trained on LiDAR prepared with "
                         + ", ".join(f"{k}={a}" for k, a, _ in prepared)
                         + "; this config prepares it with "
                         + ", ".join(f"{k}={b}" for k, _, b in prepared)
                         + " (pass --set for each, or the teacher's config)")
    teacher = build_model("teacher", teacher_config)
    teacher.load_state_dict(payload["state_dict"])
    return freeze(teacher.to(device))


def check_new_run(run: Path, settings: RunSettings) -> None:
    """Refuse to start a run over another one, or with settings that cannot work."""
    if (run / "run.json").exists():
        raise TrainError(f"{run}: already holds a run; continue it with --resume {run} or give "
                         f"another --out")
    if settings.kind not in KINDS:
        raise TrainError(f"model kind must be one of {KINDS}, not {settings.kind!r}")
    if settings.teacher is not None and settings.kind != "student":
        raise TrainError("--teacher is for `imkd train student`")
    if settings.dataroot is None and not settings.bags:
        raise TrainError("training needs --dataroot or --bag")
    if settings.eval_every and settings.dataroot is None:
        raise TrainError("--eval-every needs --dataroot: the devkit scores against a "
                         "dataroot's tables (the bags train, the dataroot evaluates)")


def read_run(run: str | os.PathLike) -> tuple[RunSettings, ModelConfig]:
    """The settings and config of an existing run directory (for `--resume`)."""
    run = Path(run)
    try:
        settings = RunSettings(**json.loads((run / "run.json").read_text()))
        config = config_from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    except FileNotFoundError as exc:
        raise TrainError(f"{run}: not a run directory ({exc.filename} missing)") from exc
    return settings, config


def train(run: str | os.PathLike, settings: RunSettings | None = None,
          config: ModelConfig | None = None, device: str = "auto", quiet: bool = False,
          command: list[str] | None = None) -> Path:
    """Start a run in directory `run` (`settings` and `config` given), or continue the run
    there (neither given); returns the path of its final checkpoint. A new run's directory is
    written only once its data, teacher and model are built, so bad input leaves none. Under
    torchrun every rank calls this with the same arguments (`train.distributed`)."""
    env, dev = distributed.setup(resolve_device(device))
    try:
        return _train(Path(run), settings, config, env, dev, quiet or not env.main, command)
    finally:
        distributed.teardown()


def _train(run: Path, settings: RunSettings | None, config: ModelConfig | None,
           env: distributed.Dist, dev: torch.device, quiet: bool,
           command: list[str] | None) -> Path:
    new = settings is not None
    if new:
        check_new_run(run, settings)
        settings.world_size = env.world_size
    else:
        settings, config = read_run(run)
        if settings.world_size != env.world_size:
            raise TrainError(f"{run}: trained by {settings.world_size} process(es), resumed by "
                             f"{env.world_size}; resume with torchrun --nproc_per_node (x "
                             f"--nnodes) = {settings.world_size} (its data position counts "
                             f"steps of {settings.world_size} x train.batch_size samples)")
    tc = config.train
    ckpt_dir = run / "checkpoints"
    resume = load_checkpoint(ckpt_dir / "last.pt") if (ckpt_dir / "last.pt").exists() else None

    # ---- model, teacher, losses
    torch.manual_seed(tc.seed)
    model = build_model(settings.kind, config).to(dev).train()
    teacher = load_teacher(settings.teacher, config, dev) if settings.teacher else None
    imkd = None
    if settings.kind == "student":
        channels = teacher.encoder.out_channels if teacher is not None else None
        imkd = IMKDLoss(config, teacher_channels=channels).to(dev).train()
    if env.enabled:  # the batch statistics of all ranks together (module doc)
        model = distributed.sync_batchnorm(model, dev)
        imkd = distributed.sync_batchnorm(imkd, dev) if imkd is not None else None
    params = [p for m in (model, imkd) if m is not None for p in m.parameters()
              if p.requires_grad]
    # EMA of the weights and BN statistics: what the checkpoints' `state_dict` holds when on
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay),
                        use_buffers=True) if tc.ema_decay > 0 else None
    step_module: nn.Module = _Step(model, imkd, config)
    if env.enabled:
        # a student without a teacher has adaptors no loss uses: DDP must look for them
        step_module = DistributedDataParallel(
            step_module, device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=settings.kind == "student")
    amp = tc.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if amp else None

    # ---- data: the teacher reads LiDAR only; the student LiDAR only where a loss uses it
    d = config.distill
    with_lidar = settings.kind == "teacher" or teacher is not None or d.depth.enabled \
        or d.intensity_prediction.enabled
    transform = Preprocessor(config, train=True, with_lidar=with_lidar)
    options = reader_options(settings.kind, with_lidar)
    if settings.bags:
        dataset = BagDataset(settings.bags, transform, options=options,
                             cache_dir=settings.cache_dir, seed=tc.seed)
    else:
        dataset = KeyframeDataset(settings.dataroot, settings.split, transform,
                                  options=options, cache_dir=settings.cache_dir, seed=tc.seed)
    epochs = epochs_of(config, settings.kind)
    per_rank = EpochSampler(len(dataset), tc.seed, world_size=env.world_size).per_rank()
    steps_per_epoch = math.ceil(per_rank / tc.batch_size)
    total_steps = epochs * steps_per_epoch
    warmup = min(tc.warmup_steps, total_steps // 10)
    distributed.barrier(env)  # every rank has checked its input before rank 0 writes
    if new and env.main:
        run.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
        write_text_atomic(run / "run.json", json.dumps(asdict(settings), indent=2))
    if env.main:
        with open(run / "command.txt", "a") as f:
            f.write(shlex.join(command if command is not None else sys.argv) + "\n")

    # ---- optimizer, schedule
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, tc.min_lr_ratio))

    # ---- resume: weights, optimizer, schedule, adaptors, RNG, data position
    epoch, step_in_epoch, step = 0, 0, 0
    best: dict[str, Any] = {}  # {"NDS", "epoch"} of best.pt
    if resume is not None:
        extra = resume["extra"]
        if ema is None:
            model.load_state_dict(resume["state_dict"])
        else:
            model.load_state_dict(extra["train_weights"])
            ema.module.load_state_dict(resume["state_dict"])
            ema.n_averaged.copy_(extra["ema_n_averaged"])
        if imkd is not None:
            imkd.load_state_dict(extra["imkd_loss"])
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        if scaler is not None and extra.get("scaler"):
            scaler.load_state_dict(extra["scaler"])
        torch.set_rng_state(extra["rng"]["torch"])
        if dev.type == "cuda" and extra["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(extra["rng"]["cuda"])
        epoch, step_in_epoch, step = (extra["position"][k] for k in
                                      ("epoch", "step_in_epoch", "step"))
        best = extra["best"]
    log = run / "log.jsonl"
    board = None
    if env.main:
        _trim_log(log, step)
        from torch.utils.tensorboard import SummaryWriter  # slow to import: rank 0 only

        # purge_step: the events a killed run wrote after its checkpoint are redone
        board = SummaryWriter(str(run / "tensorboard"),
                              purge_step=step + 1 if resume is not None else None)

    def save(path: Path) -> None:
        position = {"epoch": epoch, "step_in_epoch": step_in_epoch, "step": step}
        if step_in_epoch == steps_per_epoch:  # an epoch end: the next step starts the next one
            position = {"epoch": epoch + 1, "step_in_epoch": 0, "step": step}
        extra: dict[str, Any] = {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if dev.type == "cuda" else []},
            "position": position, "run": asdict(settings), "best": best,
            "scaler": scaler.state_dict() if scaler is not None else {},
        }
        if imkd is not None:
            extra["imkd_loss"] = imkd.state_dict()
        if ema is not None:
            extra["train_weights"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            extra["ema_n_averaged"] = ema.n_averaged.detach().cpu()
        try:
            save_checkpoint(path, model if ema is None else ema.module, config, extra=extra)
        except OSError as exc:  # a full disk, a quota: the previous checkpoint is intact
            raise TrainError(f"{path}: cannot write the checkpoint ({exc.strerror or exc}); "
                             f"{run} keeps its previous one: free space, then --resume "
                             f"{run}") from exc
        board.flush()  # events up to the checkpoint are on disk with it

    def autocast():
        return torch.autocast("cuda", dtype=torch.float16) if amp else nullcontext()

    # ---- the loop
    last = ckpt_dir / "last.pt"
    while epoch < epochs:
        dataset.set_epoch(epoch)
        start = step_in_epoch * tc.batch_size
        sampler = EpochSampler(len(dataset), tc.seed, epoch, start=start, rank=env.rank,
                               world_size=env.world_size)
        loader = DataLoader(dataset, batch_size=tc.batch_size, sampler=sampler,
                            collate_fn=collate, num_workers=tc.num_workers,
                            generator=torch.Generator().manual_seed(tc.seed + epoch))
        bar = tqdm(total=steps_per_epoch, initial=step_in_epoch, disable=quiet,
                   desc=f"{settings.kind} epoch {epoch + 1}/{epochs}", unit="step",
                   dynamic_ncols=True)
        sums = {"loss": 0.0, "data_s": 0.0, "step_s": 0.0, "samples": 0, "steps": 0}
        t0 = time.perf_counter()
        for batch in loader:
            t_data = time.perf_counter()
            batch = to_device(batch, dev)
            with autocast():
                if teacher is not None:
                    with torch.no_grad():
                        teacher_out = teacher(batch)
                else:
                    teacher_out = None
                losses = step_module(batch, teacher_out)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                losses["total"].backward()
            else:
                scaler.scale(losses["total"]).backward()
                scaler.unscale_(optimizer)  # clip the true gradients
            grad_norm = nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip > 0
                                                 else float("inf"))
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)
                scaler.update()
            lr = optimizer.param_groups[0]["lr"]  # this step's; the scheduler sets the next's
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            step, step_in_epoch = step + 1, step_in_epoch + 1
            # the logged losses are those of the whole batch: the mean over ranks
            names = list(losses)
            values = distributed.mean_over_ranks(
                torch.stack([losses[k].detach().float() for k in names]), env).tolist()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            n = int(batch["bev_aug"].shape[0]) * env.world_size
            record = {"step": step, "epoch": epoch, "lr": lr,
                      **{f"loss/{k}": v for k, v in zip(names, values)},
                      "grad_norm": float(grad_norm), "data_s": t_data - t0, "step_s": t1 - t0,
                      "samples_per_s": n / (t1 - t0)}
            for key, value in (("loss", record["loss/total"]), ("data_s", record["data_s"]),
                               ("step_s", record["step_s"]), ("samples", n), ("steps", 1)):
                sums[key] += value
            if env.main:
                _append(log, record)
                for key, value in record.items():
                    if key not in ("step", "epoch"):
                        board.add_scalar(key, value, step)
                bar.set_postfix(loss=f"{record['loss/total']:.3f}",
                                samples_s=f"{sums['samples'] / sums['step_s']:.2f}",
                                data=f"{sums['data_s'] / sums['step_s']:.0%}")
                bar.update(1)
                if settings.save_every and step % settings.save_every == 0 \
                        and step_in_epoch < steps_per_epoch:
                    save(last)
            t0 = time.perf_counter()
        bar.close()
        if not env.main:
            distributed.barrier(env)  # rank 0 checkpoints and evaluates
            epoch, step_in_epoch = epoch + 1, 0
            continue
        if sums["steps"]:
            summary = {"event": "epoch", "epoch": epoch, "step": step,
                       "loss": sums["loss"] / sums["steps"],
                       "samples_per_s": sums["samples"] / sums["step_s"],
                       "data_wait_share": sums["data_s"] / sums["step_s"]}
            _append(log, summary)  # before the checkpoint: a resume trims it with the steps
            for key in ("loss", "samples_per_s", "data_wait_share"):
                board.add_scalar(f"epoch/{key}", summary[key], step)
            if quiet:
                print(f"{settings.kind} epoch {epoch + 1}/{epochs}: loss {summary['loss']:.4f}, "
                      f"{summary['samples_per_s']:.2f} samples/s, data wait "
                      f"{summary['data_wait_share']:.0%} of step time", flush=True)
        epoch_path = ckpt_dir / f"epoch_{epoch + 1:03d}.pt"
        save(epoch_path)
        if settings.eval_every and (epoch + 1) % settings.eval_every == 0:
            # building the evaluated model draws initial weights: keep training's RNG apart
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                metrics = evaluate_checkpoint(epoch_path, settings.dataroot,
                                              run / "eval" / epoch_path.stem,
                                              split=settings.eval_split, device=str(dev),
                                              cache_dir=settings.cache_dir, quiet=True)
            _append(log, {"event": "eval", "epoch": epoch, "step": step,
                          "split": settings.eval_split, "NDS": metrics["NDS"],
                          "mAP": metrics["mAP"]})
            board.add_scalar("eval/NDS", metrics["NDS"], step)
            board.add_scalar("eval/mAP", metrics["mAP"], step)
            if not best or metrics["NDS"] > best["NDS"]:
                best = {"NDS": metrics["NDS"], "epoch": epoch + 1}
                write_atomic(ckpt_dir / "best.pt",
                             lambda tmp, src=epoch_path: shutil.copyfile(src, tmp))
            if quiet:
                print(f"{settings.kind} epoch {epoch + 1}: {settings.eval_split} NDS "
                      f"{metrics['NDS']:.4f}, mAP {metrics['mAP']:.4f} (best: epoch "
                      f"{best['epoch']})", flush=True)
        save(last)  # last: the data position past this epoch, and the best so far
        distributed.barrier(env)
        epoch, step_in_epoch = epoch + 1, 0
    if board is not None:
        board.close()
    return last


class _Step(nn.Module):
    """The trained modules as one: the model's forward and its losses. One module, so that one
    DistributedDataParallel wrapper averages the gradients of the model and the IMKD
    adaptors alike."""

    def __init__(self, model: nn.Module, imkd: IMKDLoss | None, config: ModelConfig):
        super().__init__()
        self.model, self.imkd, self.config = model, imkd, config

    def forward(self, batch: dict[str, torch.Tensor], teacher_out: dict | None
                ) -> dict[str, torch.Tensor]:
        out = self.model(batch)
        if self.imkd is None:
            return teacher_loss(out, batch, self.config)
        return self.imkd(out, batch, teacher_out)


def _append(path: Path, record: dict) -> None:
    """One JSONL record, flushed at once (a killed run loses at most a half line)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _trim_log(path: Path, step: int) -> None:
    """Drop the records a killed run wrote after its last checkpoint (they are redone)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError):
            pass  # the half line a SIGKILL left
    write_text_atomic(path, "".join(f"{line}\n" for line in kept))


__all__ = ["KINDS", "RunSettings", "TrainError", "check_new_run", "load_teacher", "lr_factor",
           "read_run", "train"]

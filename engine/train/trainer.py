"""The shared trainer: one loop for every architecture and recipe, read top to bottom.

    fit:  restore → for each epoch: train_one_epoch → evaluate (every validation ECG exactly once, across all
          processes) → step the scheduler → save checkpoints (rank 0, atomic) → history.csv and TensorBoard

Recipes (engine/train/recipes.py) differ only in settings: optimizer and schedule (engine/train/optim.py registries; a
schedule is stepped after every step and after every epoch, and says when to stop), loss, an exponential moving
average (EMA) of the weights — when on, the EMA weights are
what is validated and saved as ``model`` (the raw ones travel as ``raw_model`` for resuming) — and which epoch is
"best" (lowest validation MAE or loss, or simply the last: no selection on the validation split). ``--resume``
restores everything from the last complete epoch, so an interrupted CPU/fp32 run ends with the same weights as an
uninterrupted one. bf16 autocast, DDP and ``torch.compile`` are a few plain lines (``wrap``), not a framework.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from dataloader.augment import Augment
from dataloader.tensor_augment import device_augment
from engine.predict.inference import forward, predict
from engine.runs import HISTORY, LAST, TENSORBOARD, best_checkpoint_name, epoch_checkpoint_name
from models.checkpoint import ModelBundle, save_checkpoint, unwrap
from utils.calibration import Calibration
from utils.cli import RESULT
from utils.errors import TrainingDiverged
from utils.io import write_csv
from utils.metrics import bias_correction_from_sums, gap_line_sums
from utils.runtime import (
    all_gather_arrays,
    all_reduce_sum,
    autocast,
    broadcast_buffers,
    is_main,
    place_model,
    rng_state,
    set_rng_state,
)

from .losses import per_sample_loss, regression_loss
from .optim import Schedule, make_optimizer, make_schedule
from .recipes import Recipe

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "train_loss", "valid_loss", "valid_mae", "lr", "seconds"]


@dataclasses.dataclass
class TrainConfig:
    """How to train: the recipe (what is learned) and run-time switches (how the work runs)."""

    recipe: Recipe
    max_steps_per_epoch: int = 0
    compile: bool = False
    sync_bn: bool = False
    fast_layout: bool = False  # channels-last where it pays off (everything but --precision fp32)
    progress: bool = True
    provenance: dict = dataclasses.field(default_factory=dict)  # the command line, saved for people to read
    on_epoch: Callable[[int, float], None] | None = None  # (epoch, its seconds) after every epoch


@dataclasses.dataclass
class Progress:
    """Where a run stands: restored from a checkpoint, updated after every epoch."""

    epoch: int = 0
    best: float = math.inf
    history: list = dataclasses.field(default_factory=list)

    def record(self, row: dict, metric: str) -> bool:
        """Append an epoch's row; True when it is the best so far by ``metric`` (always, for "last")."""
        self.epoch = row["epoch"]
        self.history.append(row)
        if metric == "last":
            return True
        improved = row[metric] < self.best
        if not math.isnan(row[metric]):
            self.best = min(self.best, row[metric])
        return improved


class EMA:
    """An exponential moving average of a model's weights (buffers — BatchNorm statistics — are copied). The decay
    ramps up as min(decay, (1 + n) / (10 + n)) over the first updates, so early averages are not dominated by the
    random initialisation."""

    def __init__(self, model: nn.Module, decay: float, updates: int = 0):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, updates

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, current in zip(self.model.parameters(), model.parameters()):
            average.lerp_(current.detach(), 1 - decay)
        self.copy_buffers(model)

    @torch.no_grad()
    def copy_buffers(self, model: nn.Module) -> None:
        for average, current in zip(self.model.buffers(), model.buffers()):
            average.copy_(current)


def on_device(batch: dict, augment: Augment | None, device: torch.device) -> dict:
    """The batch with the rest of its augmentation done on ``device``, where the loader left it a seed
    (``--augment_on device``: dataloader/tensor_augment.py); otherwise as it came."""
    if augment is None or "augment_seed" not in batch:
        return batch
    return {**batch, "x": device_augment(batch["x"].to(device, non_blocking=True), augment,
                                         int(batch["augment_seed"]))}


@torch.no_grad()
def ema_statistics(ema: EMA, model: nn.Module, loader, cfg: TrainConfig, device: torch.device, precision: str,
                   sex: bool, augment: Augment | None = None) -> None:
    """The EMA weights' BatchNorm statistics: copied from the trained weights (``ema_bn`` copy), or recomputed for
    the EMA weights by one pass over this epoch's augmented training batches (``recompute``: the trained weights'
    statistics describe other weights). Every rank then uses rank 0's, which it saves."""
    if cfg.recipe.ema_bn == "copy":
        ema.copy_buffers(model)
        return
    norms = [m for m in ema.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum, norm.training = None, True  # a cumulative average over the pass
    steps = min(len(loader), cfg.max_steps_per_epoch or len(loader))
    for _, batch in zip(range(steps), loader):
        with autocast(device, precision):
            forward(ema.model, on_device(batch, augment, device), device, sex)
    for norm, momentum in zip(norms, momenta):
        norm.momentum, norm.training = momentum, False
    broadcast_buffers(ema.model)


def restore(start: dict | None, model: nn.Module, optimizer, schedule: Schedule, exact: bool) -> Progress:
    """Optimizer, schedule and progress from a checkpoint's content (``--resume`` or ``--pretrained``; the saved
    ``model`` weights are already in the model — with EMA they are the average, and ``raw_model`` holds the trained
    weights). ``exact`` (resume) also restores the RNG states. A checkpoint without schedule state (the seed's) has
    its epochs replayed."""
    if start is None:
        return Progress()
    if "raw_model" in start:
        model.load_state_dict(start["raw_model"], strict=True)
    if "optimizer" in start:
        optimizer.load_state_dict(start["optimizer"])
    progress = Progress(int(start.get("epoch", 0)), float(start.get("best", math.inf)), list(start.get("history", [])))
    if "scheduler" in start:
        schedule.load_state_dict(start["scheduler"])
    else:
        schedule.replay(progress.epoch)
    if exact and "rng" in start:
        set_rng_state(start["rng"])
        threads = start.get("threads")
        if threads and threads != torch.get_num_threads():
            logger.info(f"note: this run used {threads} CPU threads and now has {torch.get_num_threads()}; the "
                        f"result will not be bit-identical to an uninterrupted run (set OMP_NUM_THREADS={threads})")
    return progress


def wrap(model: nn.Module, device: torch.device, world: int, compiled: bool) -> nn.Module:
    """DDP when launched by torchrun, then torch.compile when asked (the training forward)."""
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    return torch.compile(net) if compiled else net


def train_one_epoch(net: nn.Module, bundle: ModelBundle, loader, optimizer, schedule: Schedule, ema: EMA | None,
                    cfg: TrainConfig, epoch: int, device: torch.device, precision: str,
                    augment: Augment | None = None) -> float:
    """One pass over this rank's shard (at most ``max_steps_per_epoch`` steps); the mean loss over all ranks.
    ``augment``: the part of the augmentation done on ``device`` (:func:`on_device`)."""
    loss_fn = regression_loss(cfg.recipe.loss)
    loader.sampler.set_epoch(epoch)
    net.train()
    steps = min(len(loader), cfg.max_steps_per_epoch or len(loader))
    bar = tqdm(total=steps, unit="step", desc=f"epoch {epoch}/{cfg.recipe.nepoch}", leave=False,
               disable=not (is_main() and cfg.progress))
    total, count = 0.0, 0.0
    for step, batch in zip(range(1, steps + 1), loader):
        batch = on_device(batch, augment, device)
        y, w = (batch[k].to(device, non_blocking=True) for k in ("y", "w"))
        with autocast(device, precision):
            raw = forward(net, batch, device, bundle.takes_sex)
        loss = loss_fn(bundle.head(raw), y, w)
        value = loss.item()
        check_finite(value, epoch, step, device, optimizer.param_groups[0]["lr"], precision)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.after_step()
        if ema is not None:
            ema.update(unwrap(net))
        total, count = total + value * len(y), count + len(y)
        bar.update()
        bar.set_postfix(loss=f"{value:.3f}")
    bar.close()
    total, count = all_reduce_sum([total, count], device)
    return total / count if count else math.nan


def check_finite(loss: float, epoch: int, step: int, device: torch.device, lr: float, precision: str) -> None:
    """Stop at the first non-finite training loss on any process (every process stops together, so none waits
    forever for the others), before the step that would spread it into the weights."""
    bad = not math.isfinite(loss)
    if dist.is_initialized():
        bad = all_reduce_sum([float(bad)], device)[0] > 0
    if bad:
        raise TrainingDiverged(
            f"training diverged at epoch {epoch}, step {step}: the loss is {loss} (not finite). Nothing from this "
            f"epoch was saved; the run folder holds the epochs before it. Lower the learning rate (--lr_initial, "
            f"{lr:g} now){' or train in --precision fp32' if precision != 'fp32' else ''}, then start again with "
            f"--overwrite")


def evaluate(model: nn.Module, bundle: ModelBundle, loader, loss: str, device: torch.device, precision: str,
             progress: bool = False) -> dict:
    """Validation over every record once across ranks: {'mae', 'loss', 'n', 'bias_correction' (or None),
    'calibration' (the validation ages and residuals, for intervals; None without records)}."""
    result = predict(model, bundle.head, loader, device, precision, progress=progress, desc="validate",
                     sex=bundle.takes_sex)
    age, target, weight = result["age"], result["target"], result["weight"]
    losses = weight * per_sample_loss(loss, age, target)
    n, abs_err, loss_sum, *line = all_reduce_sum(
        [len(age), float(np.abs(age - target).sum()), float(losses.sum()), *gap_line_sums(age, target)], device)
    try:
        correction = bias_correction_from_sums(line)
    except ValueError:  # too few records, or predictions that barely follow age
        correction = None
    predicted, ages = all_gather_arrays([age, target])
    finite = bool(np.isfinite(predicted).all())  # non-finite ages: check_validation stops the run
    return {"n": n, "mae": abs_err / n if n else math.nan, "loss": loss_sum / n if n else math.nan,
            "bias_correction": correction,
            "calibration": Calibration.of(predicted, ages) if n and finite else None}


def save_epoch(run: Path, bundle: ModelBundle, optimizer, schedule: Schedule, progress: Progress, cfg: TrainConfig,
               improved: bool, ema_state: dict) -> None:
    """Checkpoints of this epoch (best, per-epoch for the seed recipe, last — written last: the resume point) and
    history.csv. Every checkpoint loads with weights_only=True."""
    row = progress.history[-1]
    state = {"optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(), "epoch": progress.epoch,
             "best": progress.best, "history": progress.history, "rng": rng_state(),
             "options": {**cfg.provenance, "train_median_age": bundle.facts.median_age},  # provenance only
             "threads": torch.get_num_threads(), "valid_mae": row["valid_mae"], "valid_loss": row["valid_loss"],
             **ema_state}
    if improved:
        save_checkpoint(run / best_checkpoint_name(cfg.recipe.checkpoints), bundle, **state)
    if cfg.recipe.checkpoints == "every_epoch":
        save_checkpoint(run / epoch_checkpoint_name(progress.epoch), bundle, **state)
    save_checkpoint(run / LAST, bundle, **state)
    write_csv(run / HISTORY, pd.DataFrame(progress.history, columns=HISTORY_COLUMNS))


def log_epoch(writer: SummaryWriter, row: dict, improved: bool) -> None:
    for key, tag in (("train_loss", "train/loss"), ("valid_loss", "valid/loss"), ("valid_mae", "valid/mae"),
                     ("lr", "lr")):
        writer.add_scalar(tag, row[key], row["epoch"])
    writer.flush()
    logger.log(RESULT, f"epoch {row['epoch']}: train_loss {row['train_loss']:.4f}  valid_loss {row['valid_loss']:.4f}  "
                f"valid_mae {row['valid_mae']:.4f}  lr {row['lr']:.2e}  {row['seconds']:.1f}s"
                f"{'  (best)' if improved else ''}")


def start_training(bundle: ModelBundle, cfg: TrainConfig, device: torch.device, world: int, steps: int,
            start: dict | None, resumed: bool):
    """(model on the device, EMA or None, optimizer, schedule, progress restored from ``start``)."""
    model = place_model(bundle.model, device, cfg.fast_layout, training=True)
    if cfg.sync_bn and world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    recipe = cfg.recipe
    ema = EMA(model, recipe.ema, int((start or {}).get("ema_updates", 0))) if recipe.ema else None  # = saved weights
    optimizer = make_optimizer(model.parameters(), recipe)
    schedule = make_schedule(optimizer, recipe, steps)
    progress = restore(start, model, optimizer, schedule, exact=resumed)
    if start is not None:
        logger.info(f"starting after epoch {progress.epoch} from {bundle.source}")
    return model, ema, optimizer, schedule, progress


def fit(bundle: ModelBundle, train_loader, valid_loader, cfg: TrainConfig, run: Path, device: torch.device,
        precision: str, start: dict | None = None, resumed: bool = False, world: int = 1) -> Progress:
    """Train ``bundle.model`` from ``start`` (a checkpoint's content, or None); returns the run's progress and leaves
    the weights to use (the EMA ones when on) in ``bundle.model``. Each checkpoint carries the age-gap bias
    correction fitted on its own epoch's validation predictions."""
    steps = min(len(train_loader), cfg.max_steps_per_epoch or len(train_loader))
    model, ema, optimizer, schedule, progress = start_training(bundle, cfg, device, world, steps, start, resumed)
    net = wrap(model, device, world, cfg.compile)
    evaluated = ema.model if ema else model
    eval_net = torch.compile(evaluated) if cfg.compile else evaluated
    bundle.model = evaluated
    writer = SummaryWriter(str(run / TENSORBOARD), purge_step=progress.epoch + 1 if progress.epoch else None) \
        if is_main() else None
    augment = cfg.recipe.augment_parts(bundle.preprocessing.fs)[1]  # the device's part (--augment_on device)
    for epoch in range(progress.epoch + 1, cfg.recipe.nepoch + 1):
        started, lr = time.time(), optimizer.param_groups[0]["lr"]
        train_loss = train_one_epoch(net, bundle, train_loader, optimizer, schedule, ema, cfg, epoch, device,
                                     precision, augment)
        broadcast_buffers(model)  # every rank validates with rank 0's BatchNorm statistics, which it saves
        if ema is not None:
            ema_statistics(ema, model, train_loader, cfg, device, precision, bundle.takes_sex, augment)
        valid = evaluate(eval_net, bundle, valid_loader, cfg.recipe.loss, device, precision,
                         is_main() and cfg.progress)
        check_validation(valid, epoch, train_loss)
        schedule.after_epoch(valid["loss"])
        row = {"epoch": epoch, "train_loss": train_loss, "valid_loss": valid["loss"], "valid_mae": valid["mae"],
               "lr": lr, "seconds": round(time.time() - started, 3)}
        improved = progress.record(row, cfg.recipe.best_metric)
        bundle.bias_correction, bundle.calibration = valid["bias_correction"], valid["calibration"]
        if is_main():
            ema_state = {"raw_model": model.state_dict(), "ema_updates": ema.updates} if ema else {}
            save_epoch(run, bundle, optimizer, schedule, progress, cfg, improved, ema_state)
            log_epoch(writer, row, improved and cfg.recipe.best_metric != "last")  # "last": no selection
            if cfg.on_epoch is not None:
                cfg.on_epoch(epoch, row["seconds"])
        if schedule.finished():
            logger.info(f"the learning rate fell below {cfg.recipe.min_lr:g}: stopping after epoch {epoch}")
            break
    if writer is not None:
        writer.close()
    return progress


def check_validation(valid: dict, epoch: int, train_loss: float) -> None:
    if valid["n"] and not math.isfinite(valid["mae"]):
        raise TrainingDiverged(f"training diverged at epoch {epoch}: the model gives non-finite ages on the "
                               f"validation records (training loss {train_loss:.4g}). Nothing from this epoch was "
                               f"saved; lower the learning rate (--lr_initial) and start again with --overwrite")

"""The shared trainer: one loop for every architecture and recipe, read top to bottom.

Per epoch: train (bf16 autocast when asked, DDP when launched by torchrun) → validate over every validation ECG
exactly once → step the scheduler → checkpoints (rank 0, atomic) → history.csv and TensorBoard.
``--resume`` restores model, optimizer, scheduler, RNG states and history from the last complete epoch, so an
interrupted CPU/fp32 run ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import ModelBundle, save_checkpoint, torch_load, unwrap
from .io import write_csv
from .losses import per_sample_loss, regression_loss
from .runtime import all_reduce_sum, autocast, broadcast_buffers, is_main, place_model, rng_state, set_rng_state

HISTORY_COLUMNS = ["epoch", "train_loss", "valid_loss", "valid_mae", "lr", "seconds"]


@dataclass
class TrainConfig:
    nepoch: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    loss: str = "l1"
    scheduler: str = "step"
    decay_epoch: int = 20
    decay_gamma: float = 0.1
    patience: int = 7
    lr_factor: float = 0.1
    min_lr: float = 1e-7
    best_metric: str = "valid_mae"
    checkpoints: str = "every_epoch"  # or "best_only" (Lima: model.pth)
    max_steps_per_epoch: int = 0
    compile: bool = False
    progress: bool = True
    options: dict = field(default_factory=dict)


def best_checkpoint_name(checkpoints: str) -> str:
    """``model.pth`` for the best-only recipe (the published folder layout), else ``best.pt``."""
    return "model.pth" if checkpoints == "best_only" else "best.pt"


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.decay_epoch, gamma=cfg.decay_gamma)
    # as Lima et al.: the scheduler may go one factor below min_lr, and training stops once lr < min_lr
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=cfg.patience, factor=cfg.lr_factor,
                                                      min_lr=cfg.lr_factor * cfg.min_lr)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The run's most recent complete epoch: ``last.pt``, else the highest ``epoch_NNN.pt`` (seed runs)."""
    if (run_dir / "last.pt").exists():
        return run_dir / "last.pt"
    epochs = sorted(run_dir.glob("epoch_*.pt"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    return epochs[-1] if epochs else None


@torch.no_grad()
def predict(model: nn.Module, head, loader, device: torch.device, precision: str, loss: str | None = None,
            progress: bool = False, desc: str = "predict") -> dict:
    """Ages for every row of ``loader`` (this rank's shard): {'index', 'age'} and, given targets and a loss
    name, the sums needed for exact cross-rank metrics."""
    from tqdm import tqdm

    model.eval()
    indices, ages = [], []
    sums = {"n": 0.0, "abs_err": 0.0, "loss": 0.0}
    for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        x = batch["x"].to(device, non_blocking=True)
        with autocast(device, precision):
            raw = model(x)
        age = head(raw)
        indices.append(batch["index"].numpy())
        ages.append(age.cpu().numpy().astype(np.float64))
        if loss is not None:
            y, w = batch["y"].to(device), batch["w"].to(device)
            sums["n"] += len(y)
            sums["abs_err"] += (age - y).abs().double().sum().item()
            sums["loss"] += (w * per_sample_loss(loss, age, y)).double().sum().item()
    return {"index": np.concatenate(indices) if indices else np.zeros(0, np.int64),
            "age": np.concatenate(ages) if ages else np.zeros(0), **sums}


def fit(bundle: ModelBundle, train_loader, valid_loader, cfg: TrainConfig, run_dir: Path, device: torch.device,
        precision: str, resume_from: Path | None = None, init_from: dict | None = None, world: int = 1,
        sync_bn: bool = False, fast_layout: bool = False, log=print) -> dict:
    """Train ``bundle.model``; returns {'best': value, 'epoch': last epoch, 'history': [...]}."""
    main = is_main()
    model = place_model(bundle.model, device, fast_layout, training=True)
    if sync_bn and world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    loss_fn = regression_loss(cfg.loss)
    start_epoch, history = 0, []
    best = math.inf

    # ---- where to start: resume (same run), or pretrained weights (seed's --pretrained) ----
    state = torch_load(resume_from) if resume_from is not None else init_from
    if state is not None:
        from .checkpoint import clean_state_dict

        unwrap(model).load_state_dict(clean_state_dict(state["model"]), strict=True)
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state.get("epoch", 0))
        history = list(state.get("history", []))
        best = float(state.get("best", math.inf))
        if "rng" in state and resume_from is not None:
            set_rng_state(state["rng"])
            threads = state.get("threads")
            if main and threads and threads != torch.get_num_threads() and device.type == "cpu":
                log(f"note: this run used {threads} CPU threads and now has {torch.get_num_threads()}; the "
                    f"result will not be bit-identical to an uninterrupted run (set OMP_NUM_THREADS={threads})")
        if main:
            log(f"starting after epoch {start_epoch} from {resume_from or 'pretrained weights'}")
    if cfg.scheduler == "step" and state is not None and "scheduler" not in state:
        with warnings.catch_warnings():  # a seed checkpoint has no scheduler state: replay its steps
            warnings.simplefilter("ignore")
            for _ in range(start_epoch):
                scheduler.step()

    net = model
    if world > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)

    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "logs"), purge_step=start_epoch + 1 if start_epoch else None)

    from tqdm import tqdm

    epoch = start_epoch
    for epoch in range(start_epoch + 1, cfg.nepoch + 1):
        started = time.time()
        lr = optimizer.param_groups[0]["lr"]
        train_loader.sampler.set_epoch(epoch)
        net.train()
        steps = len(train_loader) if not cfg.max_steps_per_epoch else min(len(train_loader),
                                                                          cfg.max_steps_per_epoch)
        bar = tqdm(total=steps * train_loader.batch_size * world, unit="ECG", desc=f"epoch {epoch}/{cfg.nepoch}",
                   disable=not (main and cfg.progress), leave=False)
        train_sum, train_n = 0.0, 0.0
        for step, batch in enumerate(train_loader):
            if step >= steps:
                break
            x = batch["x"].to(device, non_blocking=True)
            y = batch["y"].to(device, non_blocking=True)
            w = batch["w"].to(device, non_blocking=True)
            with autocast(device, precision):
                raw = net(x)
            loss = loss_fn(bundle.head(raw), y, w)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            train_sum += loss.item() * len(y)
            train_n += len(y)
            bar.update(len(y) * world)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        train_sum, train_n = all_reduce_sum([train_sum, train_n], device)
        broadcast_buffers(model)

        result = predict(unwrap(net) if cfg.compile else model, bundle.head, valid_loader, device, precision,
                         loss=cfg.loss, progress=main and cfg.progress, desc="validate")
        n, abs_err, valid_loss_sum = all_reduce_sum([result["n"], result["abs_err"], result["loss"]], device)
        valid_mae = abs_err / n if n else math.nan
        valid_loss = valid_loss_sum / n if n else math.nan
        train_loss = train_sum / train_n if train_n else math.nan

        if cfg.scheduler == "step":
            scheduler.step()
        else:
            scheduler.step(valid_loss)
        history.append({"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss,
                        "valid_mae": valid_mae, "lr": lr, "seconds": round(time.time() - started, 3)})
        metric = valid_mae if cfg.best_metric == "valid_mae" else valid_loss
        improved = metric < best
        best = min(best, metric) if not math.isnan(metric) else best

        if main:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                     "best": best, "history": history, "rng": rng_state(), "options": cfg.options,
                     "threads": torch.get_num_threads(),
                     "valid_mae": valid_mae, "valid_loss": valid_loss}
            if improved:
                save_checkpoint(run_dir / best_checkpoint_name(cfg.checkpoints),
                                bundle, **state)
            if cfg.checkpoints == "every_epoch":
                save_checkpoint(run_dir / f"epoch_{epoch:03d}.pt", bundle, **state)
            save_checkpoint(run_dir / "last.pt", bundle, **state)  # written last: resume point
            write_csv(run_dir / "history.csv", pd.DataFrame(history, columns=HISTORY_COLUMNS))
            for key in ("train_loss", "valid_loss", "valid_mae", "lr"):
                writer.add_scalar(key.replace("_", "/", 1) if key != "lr" else "lr", history[-1][key], epoch)
            writer.flush()
            log(f"epoch {epoch}: train_loss {train_loss:.4f}  valid_loss {valid_loss:.4f}  valid_mae "
                f"{valid_mae:.4f}  lr {lr:.2e}  {history[-1]['seconds']:.1f}s{'  (best)' if improved else ''}")
        if cfg.scheduler == "plateau" and optimizer.param_groups[0]["lr"] < cfg.min_lr:
            if main:
                log(f"learning rate fell below {cfg.min_lr:g}: stopping after epoch {epoch}")
            break
    if writer is not None:
        writer.close()
    with contextlib.suppress(Exception):
        bundle.model = unwrap(model)
    return {"best": best, "epoch": epoch, "history": history}

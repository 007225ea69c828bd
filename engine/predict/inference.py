"""Inference: batches of model inputs → ages, and a reader → one age per record (test-time augmentation and the
stored age-gap bias correction included).

``predict`` is also the trainer's validation pass, so the validation MAE logged during training is exactly what a
later prediction run over the same records computes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dataloader.augment import Augment
from dataloader.dataset import ECGDataset, ViewDataset, eval_loader
from dataloader.labels import table_sex
from dataloader.records import Reader
from dataloader.sources import CacheConfig
from models.checkpoint import ModelBundle
from models.input_stage import InputStage
from models.preprocessing import cpu_part, in_graph, tta_specs
from utils.errors import CheckpointError
from utils.metrics import apply_bias_correction, ensemble_mean, stored_correction
from utils.paths import CACHE_DIR
from utils.runtime import autocast, place_model

from .windows import ensemble_record_ages, window_means

INPUT_BATCH = 64  # model inputs per PyTorch forward pass in predict_inputs


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """How to run a model over records (test_interface's options, typed)."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    batch_size: int = 8
    workers: int = 0
    tta: int = 1
    bias_correction: bool = False
    fast_layout: bool = True  # channels-last where it pays off (everything but --precision fp32)
    graph_preprocessing: bool | None = None  # the input stage with the network (None: on a GPU only, see below)
    cache: CacheConfig = CacheConfig(folder=Path(CACHE_DIR))
    progress: bool = False


def forward(net: nn.Module, batch: dict, device: torch.device, sex: bool = False) -> torch.Tensor:
    """The network's raw output for a batch; a network that takes the person's sex (``sex``: its bundle's
    ``takes_sex``) also gets the batch's sex codes."""
    x = batch["x"].to(device, non_blocking=True)
    if sex:
        return net(x, batch["sex"].to(device, non_blocking=True))
    return net(x)


@torch.no_grad()
def predict(model: nn.Module, head, loader, device: torch.device, precision: str, progress: bool = False,
            desc: str = "predict", sex: bool = False, stage: InputStage | None = None) -> dict:
    """Ages of every row of ``loader`` (this rank's shard): {'index', 'age', 'target', 'weight'} as arrays; with
    ``stage`` the rows are the CPU's windows and the stage (in fp32, whatever ``precision``) makes the inputs."""
    model.eval()
    stage = stage.to(device) if stage is not None else None  # once, not per batch
    out = {"index": [], "age": [], "target": [], "weight": []}
    for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        if stage is not None:
            batch = batch | {"x": stage(batch["x"].to(device, non_blocking=True))}
        with autocast(device, precision):
            raw = forward(model, batch, device, sex)
        out["age"].append(head(raw).cpu().numpy().astype(np.float64))
        out["index"].append(batch["index"].numpy())
        out["target"].append(batch["y"].numpy().astype(np.float64))
        out["weight"].append(batch["w"].numpy().astype(np.float64))
    empty = {"index": np.zeros(0, np.int64), "age": np.zeros(0), "target": np.zeros(0), "weight": np.zeros(0)}
    return {k: np.concatenate(v) if v else empty[k] for k, v in out.items()}


def predict_records(bundle: ModelBundle, reader: Reader, cfg: InferenceConfig) -> tuple[np.ndarray, dict, np.ndarray]:
    """Ages for every record of ``reader`` (NaN for bad ones), {id: reason} of the bad records and every record's
    fingerprint. With
    ``cfg.tta`` N the age is the mean over N windows covering the record (one cache holds them all; identical
    windows are predicted once); with ``cfg.bias_correction`` the model's stored correction is applied."""
    return predict_ensemble([bundle], reader, cfg)


def _corrected(bundle: ModelBundle, ages: np.ndarray, cfg: InferenceConfig) -> np.ndarray:
    if not cfg.bias_correction:
        return ages
    try:
        return apply_bias_correction(ages, stored_correction(bundle.bias_correction, bundle.source))
    except ValueError as exc:
        raise CheckpointError(f"{bundle.source}: {exc}") from exc


def predict_rows(bundle: ModelBundle, source, table, positions: np.ndarray, cfg: InferenceConfig,
                 stage: InputStage | None = None) -> np.ndarray:
    """Ages of the records at ``positions`` of an open source (whose reader's table is ``table``), in that order:
    the mean over each record's windows, identical windows predicted once (``stage``: see :func:`predict`). Also
    training's out-of-fold prediction."""
    sex = table_sex(table)
    model = place_model(bundle.model, cfg.device, cfg.fast_layout, training=False)

    def row_ages(rows: np.ndarray, owners: np.ndarray) -> np.ndarray:
        loader = eval_loader(ECGDataset(source, rows, sex=sex[owners]), cfg.batch_size, cfg.workers,
                             pin=cfg.device.type == "cuda")
        result = predict(model, bundle.head, loader, cfg.device, cfg.precision, cfg.progress,
                         desc=f"{bundle.arch} on {len(positions)} ECGs", sex=bundle.takes_sex, stage=stage)
        ages = np.empty(len(rows))
        ages[result["index"]] = result["age"]
        return ages

    return window_means(source, positions, row_ages)


def predict_ensemble(bundles: list[ModelBundle], reader: Reader,
                     cfg: InferenceConfig) -> tuple[np.ndarray, dict, np.ndarray]:
    """The mean age over ``bundles`` (each with its own preprocessing and, if asked, bias correction), the union
    of their bad records and every record's fingerprint, every record read and preprocessed once for all of them
    (engine/predict/windows.py); with the cache off the loader workers become the pass's preprocessing processes
    and the models read from memory. With
    :func:`graph_preprocessing` the project's recipes' band-pass and z-score run with the network, on the CPU's
    windows."""
    for bundle in bundles:  # a broken correction is refused before any work
        if cfg.bias_correction:
            stored_correction(bundle.bias_correction, bundle.source)
    streamed = not cfg.cache.enabled
    member_cfg = dataclasses.replace(cfg, workers=0) if streamed else cfg
    stages = [InputStage(b.preprocessing) if in_graph(b.preprocessing) and graph_preprocessing(cfg) else None
              for b in bundles]
    members = [(tta_specs(cpu_part(b.preprocessing) if s is not None else b.preprocessing, cfg.tta),
                lambda source, good, b=b, s=s: predict_rows(b, source, reader.table, good, member_cfg, s))
               for b, s in zip(bundles, stages)]
    ages, bad, prints = ensemble_record_ages(reader, members, cfg.cache, workers=cfg.workers if streamed else 0)
    return ensemble_mean([_corrected(b, a, cfg) for b, a in zip(bundles, ages)]), bad, prints


def graph_preprocessing(cfg: InferenceConfig) -> bool:
    """Whether the project's recipes' band-pass and z-score run with the network (models/input_stage.py). By
    default on a GPU, where CPU workers could not keep up with it, and in a streamed pass (``--cache off``) whose
    worker processes then only read, check and resample beside the model (0.94× the wall time on 2,000 HDF5 ECGs
    on 2 cores: bench/README.md, "Preprocessing in the graph"); otherwise the scipy path, whose output the cache
    keeps (a cached input is filtered once, not at every pass — training's validation, a second prediction)."""
    if cfg.graph_preprocessing is not None:
        return cfg.graph_preprocessing
    return cfg.device.type == "cuda" or (not cfg.cache.enabled and cfg.workers > 0)


def predict_views(bundles: list[ModelBundle], source, positions: np.ndarray, sex: np.ndarray, augment: Augment,
                  views: int, view_seed: int, cfg: InferenceConfig) -> np.ndarray:
    """The mean age of ``bundles`` (which read ``source``'s preprocessing) for each stored view of the records at
    ``positions``: (len(positions), views), view v of position p as ViewDataset draws it for training."""
    rows = np.repeat(np.asarray(positions, dtype=np.int64), views)
    dataset = ViewDataset(source, rows, views, augment, view_seed, sex=sex[rows],
                          fixed=np.tile(np.arange(views), len(positions)))
    ages = []
    for bundle in bundles:
        model = place_model(bundle.model, cfg.device, cfg.fast_layout, training=False)
        result = predict(model, bundle.head, eval_loader(dataset, cfg.batch_size, cfg.workers), cfg.device,
                         cfg.precision, cfg.progress, desc=f"{bundle.arch} on {len(rows)} views", sex=bundle.takes_sex)
        member = np.empty(len(rows))
        member[result["index"]] = result["age"]
        ages.append(member)
    return ensemble_mean(ages).reshape(len(positions), views)


@torch.no_grad()
def predict_inputs(bundles: list[ModelBundle], x: np.ndarray, sex: np.ndarray, bias_correction: bool = False,
                   batch_size: int = INPUT_BATCH, device: torch.device | None = None) -> np.ndarray:
    """The mean age (B,) of ``bundles`` for model inputs ``x`` (B, 12, L) in fp32 on ``device`` (the CPU by
    default), each member's bias correction applied first when asked."""
    device = device or torch.device("cpu")
    ages = []
    for bundle in bundles:
        model = bundle.model.to(device).eval()
        member = np.concatenate([
            bundle.head(forward(model, {"x": torch.from_numpy(x[i:i + batch_size]),
                                        "sex": torch.from_numpy(sex[i:i + batch_size])}, device,
                                bundle.takes_sex)).cpu().double().numpy() for i in range(0, len(x), batch_size)])
        if bias_correction:
            member = apply_bias_correction(member, stored_correction(bundle.bias_correction, bundle.source))
        ages.append(member)
    return ensemble_mean(ages)

"""Training and inference throughput: the seed code's way of running vs this project's default path, side by side
in one run, same machine, same batch.

    python bench/throughput.py --arch ResDenseNet --batch_size 16 --device cpu --json

Seed path (as the challenge entry runs): fp32; every ECG read from its .npy file and preprocessed (crop, z-score,
filtfilt) inside ``__getitem__`` with ``num_workers=0``; inference one ECG at a time.
Default path (train_interface / test_interface defaults): preprocessing done once into the memory-mapped cache,
batches fetched whole and augmented as the architecture's recipe trains (its crops, scaling, noise, …), default
worker count, ``--precision auto`` (bf16 autocast where the hardware runs it fast),
channels-last for ResDenseNet (CUDA; CPU inference) and ``torch.compile`` on CUDA; inference from the cache in
test_interface's default batch (8 on CPUs, 4 × batch on GPUs).

A train step is forward + backward + optimizer step (L1 loss through the model's head). The last line printed is
one JSON object: train/infer samples per second of both paths and their ratios, the fraction of each training
loop's time spent waiting for the loader's batch (``data_wait_fraction``) and, with ``--augment_on device``,
augmenting it on the device (``augment_fraction``), peak resident memory, the cache build time and, on CUDA,
model FLOP utilisation.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from dataloader.augment import Augment
from dataloader.dataset import ECGDataset, default_workers, eval_loader, train_loader
from dataloader.records import NpyFolderReader
from dataloader.sources import build_cache, resolve_cache_dtype
from dataloader.wfdb_records import PTBXLReader
from engine.train.recipes import RECIPES
from engine.train.trainer import on_device
from models.preprocessing import PRESETS, preprocess
from models.registry import ADULT_HEAD, LINEAR_HEAD, MODELS, default_recipe, get_model
from utils.paths import ROOT
from utils.runtime import (
    autocast,
    configure_backends,
    cpu_has_fast_bf16,
    default_infer_batch,
    place_model,
    resolve_precision,
)
from utils.settings import PRECISIONS

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def write_records(folder: Path, n: int) -> None:
    """n MAIC-layout .npy files (12 × 5000 at 500 Hz): real PTB-XL records when ../shared is present."""
    folder.mkdir(parents=True, exist_ok=True)
    source = ROOT.parent / "shared" / "data" / "ptbxl"
    reader = PTBXLReader(source) if source.exists() else None
    rng = np.random.default_rng(0)
    for i in range(n):
        signal = reader.load(i % len(reader)).signal if reader else rng.normal(size=(12, 5000)).astype(np.float32)
        np.save(folder / f"ecg_adult_{i}.npy", signal.reshape(-1))


class SeedDataset(torch.utils.data.Dataset):
    """The seed's loader: np.load + preprocessing (filtfilt) per item."""

    def __init__(self, reader: NpyFolderReader, spec, ages):
        self.reader, self.spec, self.ages = reader, spec, ages

    def __len__(self):
        return len(self.reader)

    def __getitem__(self, i):
        record = self.reader.load(i)
        return torch.from_numpy(preprocess(record.signal, record.fs, self.spec)), torch.tensor(self.ages[i])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_training(model, head, batches, steps: int, warmup: int, device, precision: str, compiled=None,
                  augment: Augment | None = None) -> dict:
    """Mean samples/s over ``steps`` steps after ``warmup``, the batches' dicts (``x``, ``y``, and an
    ``augment_seed`` where ``augment`` runs on ``device``: --augment_on device); the fractions of the time spent
    waiting for the loader's batch on the device (``data_wait_fraction``) and augmenting it there
    (``augment_fraction``) measured apart."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    net = compiled or model
    model.train()
    wait = augmenting = compute = 0.0
    samples = 0
    iterator = iter(batches)
    for step in range(warmup + steps):
        started = time.perf_counter()
        batch = next(iterator)
        x, y = batch["x"].to(device, non_blocking=True), batch["y"].to(device, non_blocking=True)
        sync(device)
        fetched = time.perf_counter()
        x = on_device({**batch, "x": x}, augment, device)["x"]
        sync(device)
        augmented = time.perf_counter()
        with autocast(device, precision):
            raw = net(x)
        loss = (head(raw) - y).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(device)
        done = time.perf_counter()
        if step >= warmup:
            wait += fetched - started
            augmenting += augmented - fetched
            compute += done - augmented
            samples += len(y)
    total = wait + augmenting + compute
    return {"samples_per_s": samples / total, "data_wait_fraction": wait / total,
            "augment_fraction": augmenting / total}


@torch.no_grad()
def time_inference(net, head, batches, device, precision: str, warmup: int = 1) -> float:
    net.eval()
    samples, elapsed = 0, 0.0
    for i, x in enumerate(batches):
        started = time.perf_counter()
        x = x.to(device, non_blocking=True)
        with autocast(device, precision):
            head(net(x)).cpu()
        sync(device)
        if i >= warmup:
            elapsed += time.perf_counter() - started
            samples += len(x)
    return samples / elapsed


def forward_flops(model, length: int, device) -> float:
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 12, length, device=device))
    return float(counter.get_total_flops())


def seed_path(model, head, reader, spec, ages, args, device) -> tuple[dict, float]:
    """The seed's way: fp32, per-item preprocessing, num_workers=0; inference one ECG at a time."""
    seed_data = SeedDataset(reader, spec, ages)
    seed_loader = torch.utils.data.DataLoader(seed_data, batch_size=args.batch_size, shuffle=True, num_workers=0,
                                              drop_last=True)
    train = time_training(model, head, ({"x": x, "y": y} for x, y in seed_loader), args.steps, args.warmup, device,
                          "fp32")
    one_by_one = (seed_data[i][0][None] for i in range(args.n_infer))
    return train, time_inference(model, head, one_by_one, device, "fp32", warmup=2)


def default_path(head, reader, spec, ages, args, device, precision, tmp: Path, result: dict) -> tuple[dict, float]:
    """This project's default path: the cache, batched loading, precision/layout/compile as the interfaces."""
    started = time.perf_counter()
    cache = build_cache(reader, spec, tmp / "cache", dtype=resolve_cache_dtype("auto", precision), progress=False)
    result["cache_build_s"] = time.perf_counter() - started
    fast_model = place_model(get_model(args.arch), device, fast_layout=True, training=True)
    compiled = torch.compile(fast_model) if device.type == "cuda" else None
    recipe = RECIPES[default_recipe(args.arch)]
    recipe = dataclasses.replace(recipe, augment_on=args.augment_on or recipe.augment_on)
    augment, (loader_part, device_part) = recipe.augment(spec.fs), recipe.augment_parts(spec.fs)  # as it trains
    workers = default_workers(device, cached=True) if args.workers is None else args.workers
    result["train_workers"], result["augment_on"] = workers, recipe.augment_on
    dataset = ECGDataset(cache, np.arange(len(reader)), ages, augment=loader_part, device_seed=device_part is not None)
    loader = train_loader(dataset, args.batch_size, seed=0, workers=workers, pin=device.type == "cuda")
    train = time_training(fast_model, head, _cycle(loader), args.steps, args.warmup + (2 if compiled else 0), device,
                          precision, compiled, device_part)
    result["loader"] = loader_capacity(cache, ages, args.batch_size, args.steps, augment, train["samples_per_s"])
    result["infer_batch_size"] = default_infer_batch(device, args.batch_size)  # test_interface's default
    infer_loader = eval_loader(ECGDataset(cache, np.arange(args.n_infer)), result["infer_batch_size"],
                               default_workers(device, cached=True),
                               pin=device.type == "cuda")
    infer_model = compiled or place_model(fast_model, device, fast_layout=True, training=False)
    return train, time_inference(infer_model, head, (b["x"] for b in infer_loader), device, precision)


def loader_capacity(cache, ages: np.ndarray, batch: int, steps: int, augment: Augment | None,
                    consumption: float) -> dict:
    """ECG/s one loader worker delivers from the cache — plain and with the recipe's whole augmentation — against
    the training step's consumption (ECG/s): how many workers keep a step fed."""
    delivered = {}
    for name, settings in (("plain", None), ("augmented", augment)):
        loader = train_loader(ECGDataset(cache, np.arange(len(ages)), ages, augment=settings), batch, seed=0,
                              workers=1, pin=False)
        batches = _cycle(loader)
        next(batches)  # the worker started
        started = time.perf_counter()
        for _ in range(steps):
            next(batches)
        delivered[name] = steps * batch / (time.perf_counter() - started)
    return {"per_worker_ecg_per_s": delivered, "step_consumption_ecg_per_s": consumption,
            "workers_needed": consumption / delivered["augmented"]}


def quantized_scopes(tmp: Path, x: np.ndarray, sex: np.ndarray) -> dict:
    """tmp/model.onnx in int8, the whole network and its convolutions only (engine/quantize.SCOPES), calibrated on
    ``x``: {engine name: quantize_int8's result}, each written to tmp/<engine name>.onnx (measured, not enforced)."""
    from engine.deploy.quantize import SCOPES, quantize_int8

    return {name: quantize_int8(tmp / "model.onnx", tmp / f"{name}.onnx", (x, sex), (x, sex),
                                limits=(float("inf"), float("inf")), scopes=(scope,))
            for name, scope in (("onnxruntime_int8", SCOPES[0]), ("onnxruntime_int8_conv", SCOPES[1]))}


def onnx_path(model, head, spec, reader, args, tmp: Path, result: dict) -> float:
    """Every engine on the same inputs and batch, interleaved (the second round is kept): PyTorch's default path
    (what --precision auto picks here, fast layout), PyTorch fp32 eager, onnxruntime fp32 and int8 (quantized_scopes);
    returns onnxruntime fp32's ECG/s (result: every engine's, ratios to PyTorch fp32, largest differences, flags)."""
    from engine.deploy.export import export_onnx
    from engine.deploy.onnx_model import OnnxModel
    from models.checkpoint import ModelBundle
    from models.registry import model_args
    from models.schema import UNKNOWN_SEX
    from utils.machine import cpu_flags
    from utils.runtime import autocast, place_model, resolve_precision

    model = model.cpu().eval()
    bundle = ModelBundle(model, args.arch, model_args(args.arch), spec, head)
    x = np.stack([preprocess(r.signal, r.fs, spec) for r in map(reader.load, range(args.n_infer))])
    sex = np.full(len(x), UNKNOWN_SEX, np.float32)
    export_onnx([bundle], tmp / "model.onnx", x[:args.infer_batch_size], sex[:args.infer_batch_size],
                graph=False)  # the network alone, on the inputs every engine here gets
    int8 = quantized_scopes(tmp, x, sex)
    sessions = {"onnxruntime": OnnxModel.load(tmp / "model.onnx"),
                **{name: OnnxModel.load(tmp / f"{name}.onnx") for name in int8}}
    default = resolve_precision(args.precision, torch.device("cpu"))
    fast = place_model(copy.deepcopy(model), torch.device("cpu"), fast_layout=True, training=False)
    batches = [x[i:i + args.infer_batch_size] for i in range(0, len(x), args.infer_batch_size)]

    def run(engine: str, batch: np.ndarray) -> np.ndarray:
        if engine in sessions:
            return sessions[engine].member_ages(batch, sex[:len(batch)])[:, 0]
        with torch.no_grad(), autocast(torch.device("cpu"), default if engine == "torch_default" else "fp32"):
            net = fast if engine == "torch_default" else model
            return head(net(torch.from_numpy(batch))).double().numpy()

    timed = {}
    for engine in [*("torch_fp32", "torch_default", *sessions)] * 2:
        started = time.perf_counter()
        outputs = np.concatenate([run(engine, batch) for batch in batches])
        timed[engine] = (len(x) / (time.perf_counter() - started), outputs)
    reference = timed["torch_fp32"]
    result.update({"engine": "onnxruntime", "onnx_batch_size": args.infer_batch_size, "cpu_flags": cpu_flags(),
                   "torch_default_precision": default,
                   "int8_mean_difference_years": int8["onnxruntime_int8"]["mean_difference_years"],
                   "int8_conv_mean_difference_years": int8["onnxruntime_int8_conv"]["mean_difference_years"],
                   "torch_eager_infer_samples_per_s": reference[0],
                   **{f"{e}_infer_samples_per_s": t[0] for e, t in timed.items()},
                   **{f"{e}_vs_torch_fp32": t[0] / reference[0] for e, t in timed.items() if e != "torch_fp32"},
                   **{f"{e}_max_difference_years": float(np.max(np.abs(t[1] - reference[1])))
                      for e, t in timed.items() if e != "torch_fp32"},
                   "onnxruntime_vs_torch": timed["onnxruntime"][0] / reference[0],
                   "onnx_max_difference_years": float(np.max(np.abs(timed["onnxruntime"][1] - reference[1])))})
    return timed["onnxruntime"][0]


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="ResDenseNet", choices=tuple(MODELS))
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--steps", type=int, default=3, help="timed training steps per path")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--infer_records", type=int, default=None, help="ECGs for inference (default 4 batches)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="the default path's")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--augment_on", default=None, choices=("loader", "device"),
                   help="where the default path's augmentation after the crops runs (train_interface --augment_on; "
                        "default: the architecture's recipe's)")
    p.add_argument("--workers", type=int, default=None, help="the default path's loader workers (default: "
                   "train_interface's for the architecture's recipe)")
    p.add_argument("--engine", default="torch", choices=("torch", "onnxruntime"),
                   help="onnxruntime: inference also by the model's ONNX export (engine/deploy/export.py) in fp32 and "
                        "int8 "
                        "(engine/deploy/quantize.py), against PyTorch's default path and fp32 eager at the same batch "
                        "(--infer_batch_size), with the CPU's flags; infer_samples_per_s is then onnxruntime fp32's")
    p.add_argument("--infer_batch_size", type=int, default=64, help="the batch of the --engine onnxruntime comparison")
    p.add_argument("--quick", action="store_true", help="a smoke test: batch 2, one step, no warm-up, 4 ECGs")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.warmup, args.infer_records, args.infer_batch_size = 2, 1, 0, 4, 2
    args.n_infer = args.infer_records or 4 * args.batch_size
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is available")
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    precision = resolve_precision(args.precision, device)
    configure_backends(device, precision, deterministic=False)
    torch.manual_seed(0)
    recipe = RECIPES[default_recipe(args.arch)]  # the architecture's own recipe: its preprocessing and head
    spec = PRESETS[recipe.preprocessing]
    head = ADULT_HEAD if recipe.head == "sigmoid" else LINEAR_HEAD
    result = {"arch": args.arch, "device": args.device, "batch_size": args.batch_size, "precision": precision,
              "threads": torch.get_num_threads(), "steps": args.steps,
              **({"gpu": torch.cuda.get_device_name()} if device.type == "cuda" else
                 {"cpu_fast_bf16": cpu_has_fast_bf16()})}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "records"
        write_records(folder, max(args.batch_size * (args.warmup + args.steps), args.n_infer))
        reader = NpyFolderReader(folder)
        ages = np.linspace(20, 90, len(reader)).astype(np.float32)
        model = get_model(args.arch).to(device)
        result["forward_gflop_per_ecg"] = forward_flops(model, spec.length, device) / 1e9
        say(f"seed path: fp32, per-item preprocessing, num_workers=0 ({args.arch}, batch {args.batch_size})")
        seed_train, seed_infer = seed_path(model, head, reader, spec, ages, args, device)
        say(f"default path: cache, batched, precision {precision}")
        fast_train, fast_infer = default_path(head, reader, spec, ages, args, device, precision, Path(tmp), result)
        if args.engine == "onnxruntime":
            say(f"onnxruntime vs PyTorch eager fp32, batch {args.infer_batch_size}")
            fast_infer = onnx_path(model, head, spec, reader, args, Path(tmp), result)
    result.update(summary(result, seed_train, seed_infer, fast_train, fast_infer))
    print(json.dumps(result))
    return result


def summary(result: dict, seed_train: dict, seed_infer: float, fast_train: dict, fast_infer: float) -> dict:
    out = {"train_samples_per_s": fast_train["samples_per_s"], "infer_samples_per_s": fast_infer,
           "seed_train_samples_per_s": seed_train["samples_per_s"], "seed_infer_samples_per_s": seed_infer,
           "train_speedup": fast_train["samples_per_s"] / seed_train["samples_per_s"],
           "infer_speedup": fast_infer / seed_infer, "data_wait_fraction": fast_train["data_wait_fraction"],
           "augment_fraction": fast_train["augment_fraction"],
           "seed_data_wait_fraction": seed_train["data_wait_fraction"],
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if "gpu" in result:
        peak = next((v for k, v in PEAK_BF16.items() if k in result["gpu"]), None)
        flops = result["forward_gflop_per_ecg"] * 1e9
        out["mfu_train"] = 3 * flops * out["train_samples_per_s"] / peak if peak else None
        out["mfu_infer"] = flops * out["infer_samples_per_s"] / peak if peak else None
    return out


def _cycle(loader):
    """The loader's batches, epoch after epoch."""
    epoch = 0
    while True:
        epoch += 1
        loader.sampler.set_epoch(epoch)
        yield from loader


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

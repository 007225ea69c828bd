"""torch.distributed on CPU (gloo, 2 processes via torchrun), crash safety (kill -9 + --resume), determinism."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import ROOT, TINY

TRAIN = [sys.executable, str(ROOT / "train_interface.py")]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def train_args(data: Path, tmp: Path, env: str, *extra: str) -> list[str]:
    return ["--data_root", str(data), "--mode", "adult", "--arch", "ResDenseNet", *TINY["ResDenseNet"],
            "--batch_size", "8", "--device", "cpu", "--precision", "fp32", "--env", env, "--log_dir",
            str(tmp / "log"), "--cache_dir", str(tmp / "cache"), "--dataset_dir", str(tmp / "dataset"), "--quiet",
            *extra]


# every process gets the same thread count: CPU fp32 results are bit-identical only for equal thread counts
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def test_ddp_shards_are_disjoint_and_ranks_stay_identical(tmp_path):
    result = run([*TORCHRUN, str(ROOT / "tests" / "ddp_probe.py"), str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    for epoch in ("1", "2"):
        shard0, shard1 = set(ranks[0]["seen"][epoch]), set(ranks[1]["seen"][epoch])
        # 22 rows → 11 per rank; the global batch of 4 is 2 per rank, the last partial batch is dropped
        assert not shard0 & shard1 and len(shard0) == len(shard1) == 10
    assert ranks[0]["seen"]["1"] != ranks[0]["seen"]["2"]  # reshuffled every epoch
    assert ranks[0]["params"] == ranks[1]["params"]  # identical weights after a step
    assert ranks[0]["state"] == ranks[1]["state"]  # and identical BN statistics once rank 0's are broadcast


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def test_two_process_run_logs_exact_validation_mae(maic_adult, tmp_path):
    result = run([*TORCHRUN, *TRAIN[1:], *train_args(maic_adult, tmp_path, "ddp", "--nepoch", "2",
                                                       "--infer_batch_size", "2")])
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "log" / "ResDenseNet_ddp"
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == [1, 2]  # one writer: no duplicated rows
    assert sorted(p.name for p in run_dir.glob("*.pt")) == ["best.pt", "epoch_001.pt", "epoch_002.pt", "last.pt"]
    assert not any(k.startswith("module.") for k in _state(run_dir / "last.pt"))
    assert result.stdout.count("epoch 2:") == 1  # only rank 0 logs
    # a single-process evaluation of the saved checkpoint over the same validation records
    from dataloader.records import NpyFolderReader
    from models.checkpoint import load_bundle
    from models.preprocessing import preprocess

    bundle = load_bundle(run_dir / "last.pt")
    valid = pd.read_csv(tmp_path / "dataset" / "valid_dataset_adult.csv")
    reader = NpyFolderReader(maic_adult / "ECG_adult_numpy_train")
    index = {rid: i for i, rid in enumerate(reader.ids)}
    x = torch.stack([torch.from_numpy(preprocess(reader.load(index[f]).signal, 500, bundle.preprocessing))
                     for f in valid["Filename"]])
    with torch.no_grad():
        mae = (bundle.head(bundle.model(x)) - torch.tensor(valid["Age"].values)).abs().mean().item()
    assert history["valid_mae"].iloc[-1] == pytest.approx(mae, abs=1e-4)


def test_kill_9_then_resume_reaches_the_same_weights(maic_adult, tmp_path):
    epochs = ["--nepoch", "4"]
    reference = run([*TRAIN, *train_args(maic_adult, tmp_path, "whole", *epochs)])
    assert reference.returncode == 0, reference.stderr[-3000:]

    victim = subprocess.Popen([*TRAIN, *train_args(maic_adult, tmp_path, "killed", *epochs)], cwd=ROOT, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "log" / "ResDenseNet_killed"
    deadline = time.time() + 300
    while not (run_dir / "epoch_001.pt").exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    time.sleep(random.Random(0).uniform(0.0, 1.5))  # somewhere in epoch 2, possibly mid-write
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    resumed = run([*TRAIN, *train_args(maic_adult, tmp_path, "killed", *epochs, "--resume")])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list(run_dir.glob(".*.tmp"))
    whole, again = _state(tmp_path / "log" / "ResDenseNet_whole" / "last.pt"), _state(run_dir / "last.pt")
    for key in whole:
        assert torch.equal(whole[key], again[key]), key
    assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == [1, 2, 3, 4]


def test_same_seed_same_checkpoint(maic_adult, tmp_path):
    from conftest import cli

    import train_interface

    for env in ("a", "b"):
        argv = train_args(maic_adult, tmp_path, env, "--nepoch", "1")
        assert cli(train_interface, argv, tmp_path) == 0
    a, b = (_state(tmp_path / "log" / f"ResDenseNet_{env}" / "last.pt") for env in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_process_cross_validation(ptbxl, tmp_path):
    argv = [*TORCHRUN, *TRAIN[1:], "--arch", "ECGEfficientNet", "--width", "0.25", "--input", str(ptbxl),
            "--ptbxl_rate", "100", "--folds", "2", "--seeds", "1", "--partner", "none", "--nepoch", "1", "--batch_size",
            "16", "--device", "cpu", "--on_bad", "skip", "--env", "cv", "--log_dir", str(tmp_path / "log"),
            "--cache_dir", str(tmp_path / "cache"), "--quiet"]
    result = run(argv)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "log" / "ECGEfficientNet_cv"
    oof = pd.read_csv(run_dir / "oof.csv")
    assert len(oof) == 349 and oof["predicted_age"].notna().all() and set(oof["fold"]) == {0, 1}
    assert result.stdout.count("2-fold cross-validation") == 1  # rank 0 alone writes and logs

"""The shared trainer: outputs of a run, exact resume, seed-style --pretrained, tiny widths on real records."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, cli

import train_interface

BASE = ["--mode", "adult", "--arch", "ResDenseNet", *TINY["ResDenseNet"], "--batch_size", "8", "--device", "cpu",
        "--precision", "fp32", "--seed", "7"]


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_run_outputs_and_exact_resume(maic_adult, tmp_path):
    data = ["--data_root", str(maic_adult)]
    assert cli(train_interface, [*BASE, *data, "--nepoch", "3", "--env", "full"], tmp_path) == 0
    run = tmp_path / "log" / "ResDenseNet_full"
    for name in ("options.json", "epoch_001.pt", "epoch_003.pt", "best.pt", "last.pt", "history.csv",
                 "learning_curves.png", "split.csv"):
        assert (run / name).exists(), name
    assert next((run / "logs").glob("events.out.tfevents.*")).stat().st_size > 0
    history = pd.read_csv(run / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "valid_loss", "valid_mae", "lr", "seconds"]
    assert history["epoch"].tolist() == [1, 2, 3]
    options = json.loads((run / "options.json").read_text())
    assert options["lr_initial"] == 1e-3 and options["decay_epoch"] == 20 and options["loss"] == "l1"
    ckpt = torch.load(run / "epoch_002.pt", weights_only=True)
    assert {"model", "optimizer", "epoch", "scheduler", "options"} <= set(ckpt) and ckpt["epoch"] == 2
    assert ckpt["preprocessing"]["bandpass"] == [1.0, 47.0] or tuple(ckpt["preprocessing"]["bandpass"]) == (1, 47)

    # the same run in two pieces: 2 epochs, then --resume to 3
    assert cli(train_interface, [*BASE, *data, "--nepoch", "2", "--env", "split"], tmp_path) == 0
    assert cli(train_interface, [*BASE, *data, "--nepoch", "3", "--env", "split", "--resume"], tmp_path) == 0
    resumed = tmp_path / "log" / "ResDenseNet_split"
    full, again = _weights(run / "last.pt"), _weights(resumed / "last.pt")
    assert full.keys() == again.keys()
    for key in full:
        assert torch.equal(full[key], again[key]), key
    cols = ["epoch", "train_loss", "valid_loss", "valid_mae", "lr"]
    pd.testing.assert_frame_equal(pd.read_csv(run / "history.csv")[cols], pd.read_csv(resumed / "history.csv")[cols])


def test_validation_counts_every_record_once(maic_adult, tmp_path):
    """3 validation records with a validation batch of 2: the seed would drop the last partial batch."""
    from dataloader.records import NpyFolderReader
    from models.checkpoint import load_bundle

    assert cli(train_interface, [*BASE, "--data_root", str(maic_adult), "--nepoch", "1", "--env", "v",
                                 "--infer_batch_size", "2"], tmp_path) == 0
    run = tmp_path / "log" / "ResDenseNet_v"
    logged = pd.read_csv(run / "history.csv")["valid_mae"].iloc[0]
    valid = pd.read_csv(tmp_path / "dataset" / "valid_dataset_adult.csv")
    assert len(valid) == 3
    bundle = load_bundle(run / "last.pt")
    from models.preprocessing import preprocess

    reader = NpyFolderReader(maic_adult / "ECG_adult_numpy_train")
    index = {rid: i for i, rid in enumerate(reader.ids)}
    x = torch.stack([torch.from_numpy(preprocess(reader.load(index[f]).signal, 500, bundle.preprocessing))
                     for f in valid["Filename"]])
    with torch.no_grad():
        ages = bundle.head(bundle.model(x))
    assert logged == pytest.approx((ages - torch.tensor(valid["Age"].values)).abs().mean().item(), abs=1e-4)
    # the checkpoint keeps those validation predictions and residuals: its interval calibration
    calibration = bundle.calibration
    assert calibration.source == "validation" and calibration.n == 3
    np.testing.assert_allclose(np.sort(calibration.predicted), np.sort(ages.numpy()), atol=1e-4)
    np.testing.assert_allclose(np.sort(calibration.ages), np.sort(valid["Age"].to_numpy()), atol=1e-4)


def test_pretrained_seed_checkpoint_continues_from_its_epoch(maic_adult, tmp_path):
    from models.registry import get_model

    model = get_model("ResDenseNet", out_ch=16, mid_ch=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seed_ckpt = tmp_path / "seed_epoch_1.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1}, seed_ckpt)
    assert cli(train_interface, [*BASE, "--data_root", str(maic_adult), "--nepoch", "2", "--env", "ft",
                                 "--pretrained", "--pretrain_model_path", str(seed_ckpt)], tmp_path) == 0
    history = pd.read_csv(tmp_path / "log" / "ResDenseNet_ft" / "history.csv")
    assert history["epoch"].tolist() == [2]


def test_lima_recipe_defaults():
    import options

    args = options.parse_train(["--arch", "ResNet1d"])
    assert (args.recipe, args.loss, args.sample_weights, args.scheduler, args.nepoch, args.head) == \
        ("lima", "mse", "inverse_age", "plateau", 70, "linear")
    args = options.parse_train(["--mode", "child"])
    assert (args.arch, args.loss, args.scheduler, args.age_min, args.age_max, args.batch_size, args.nepoch,
            args.seed) == ("ResUDenseNet", "l1", "step", 0.0, 9.0, 32, 60, 1234)

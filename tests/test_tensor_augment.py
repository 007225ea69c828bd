"""The augmentation on the training device (``--augment_on device``): each operation's distribution and shape of
effect against the numpy path's definition, reproducibility from the loader's per-batch seed, the split between
loader and device, and a training run that uses it."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_MODERN

import train_interface
from dataloader import tensor_augment as ta
from dataloader.augment import STEPS as NUMPY_STEPS
from dataloader.augment import Augment
from dataloader.dataset import ECGDataset
from engine.train.recipes import RECIPES
from engine.train.trainer import on_device


@pytest.fixture()
def x():
    return torch.from_numpy(np.random.default_rng(1).standard_normal((64, 12, 2000)).astype(np.float32))


def generator(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_scalings_are_per_record_and_per_lead_factors_in_their_ranges(x):
    factor = ta.amplitude_scale(x, generator(), 0.2) / x  # one factor per record, within [0.8, 1.2]
    assert torch.allclose(factor, factor[:, :1, :1].expand_as(factor), atol=1e-4)
    assert factor.min() >= 0.8 - 1e-4 and factor.max() <= 1.2 + 1e-4 and factor[:, 0, 0].std() > 0.05
    lead = ta.lead_scale(x, generator(), 0.1) / x  # one factor per record and lead: 1 + 0.1·N(0, 1)
    assert torch.allclose(lead, lead[..., :1].expand_as(lead), atol=1e-3)
    assert abs(lead[..., 0].mean().item() - 1) < 0.02 and abs(lead[..., 0].std().item() - 0.1) < 0.02


def test_noise_wander_and_dropouts_do_what_the_numpy_path_defines(x):
    noise = ta.gaussian_noise(x, generator(), 0.05) - x  # white, standard deviation 0.05
    assert abs(noise.std().item() - 0.05) < 1e-3 and abs(noise.mean().item()) < 1e-3
    wander = ta.baseline_wander(x, generator(), 0.3, 500.0) - x  # a slow sinusoid per record and lead
    g = generator()  # drawn as documented: frequency U(0.05, 0.5) Hz, phase U(0, 2π), amplitude U(0, 0.3)
    freq, phase, amplitude = (low + (high - low) * torch.rand((64, 12, 1), generator=g)
                              for low, high in ((0.05, 0.5), (0, 2 * np.pi), (0, 0.3)))
    expected = amplitude * torch.sin(2 * np.pi * freq * torch.arange(2000) / 500.0 + phase)
    torch.testing.assert_close(wander, expected, atol=1e-5, rtol=0)
    assert wander.abs().max() <= 0.3 + 1e-5 and amplitude.max() > 0.25 and freq.min() >= 0.05
    dropped = ta.lead_dropout(x, generator(), 0.3)
    zeroed = (dropped == 0).all(dim=-1)  # whole leads, about 30 % of them, the others untouched
    assert 0.25 < zeroed.float().mean().item() < 0.35
    assert torch.equal(dropped[~zeroed], x[~zeroed])
    coarse = ta.coarse_dropout(x, generator(), 0.5)
    gaps = (coarse == 0).all(dim=1)  # (B, T): a segment of 10 % across every lead, in about half the records
    widths = gaps.sum(dim=-1)
    assert set(widths.tolist()) <= {0, 200} and 0.3 < (widths > 0).float().mean().item() < 0.7
    for row in torch.nonzero(widths).flatten():
        where = torch.nonzero(gaps[row]).flatten()
        assert where[-1] - where[0] == 199  # one contiguous segment


def test_a_batch_seed_gives_the_same_augmentation_and_the_loader_keeps_its_crops(x):
    settings = Augment(crop_samples=1000, scale=0.1, lead_scale=0.05, noise=0.05, wander=0.1, lead_dropout=0.1,
                       coarse_dropout=0.2, fs=500.0)
    crops, rest = settings.split()
    assert crops == Augment(crop_samples=1000, fs=500.0) and rest == dataclasses.replace(settings, crop_samples=0)
    assert Augment(noise=0.1).split() == (None, Augment(noise=0.1)) and Augment().split() == (None, None)
    assert list(ta.STEPS) == list(NUMPY_STEPS)  # every augmentation has its twin on the device, in the same order
    first, again = ta.device_augment(x, rest, 11), ta.device_augment(x, rest, 11)
    assert torch.equal(first, again) and not torch.equal(first, ta.device_augment(x, rest, 12))

    class Source:
        def read(self, rows):
            return x.numpy()[rows]

    plain = ECGDataset(Source(), np.arange(64), augment=crops, seed=3)
    seeded = ECGDataset(Source(), np.arange(64), augment=crops, seed=3, device_seed=True)
    batch = seeded.__getitems__([5, 9, 2])
    assert torch.equal(batch["x"], plain.__getitems__([5, 9, 2])["x"])  # the crops drawn first, as before
    assert batch["x"].shape == (3, 12, 1000) and "augment_seed" not in plain.__getitems__([5, 9, 2])
    assert int(batch["augment_seed"]) == int(seeded.__getitems__([5, 9, 2])["augment_seed"])  # by the rows
    assert int(batch["augment_seed"]) != int(seeded.__getitems__([5, 9, 3])["augment_seed"])
    device = torch.device("cpu")
    done = on_device(batch, rest, device)
    assert torch.equal(done["x"], ta.device_augment(batch["x"], rest, int(batch["augment_seed"])))
    unseeded = plain.__getitems__([5, 9, 2])
    assert on_device(unseeded, rest, device) is unseeded  # a stored view or a loader-augmented batch: untouched


def test_the_projects_recipes_augment_on_the_training_device_unless_asked():
    for name in ("modern", "baseline"):  # the crops in the loader, the rest on the device
        recipe = RECIPES[name]
        assert recipe.augment_on == "device" and recipe.augment_parts(100.0) == recipe.augment(100.0).split()
        in_loader = dataclasses.replace(recipe, augment_on="loader")  # --augment_on loader: all of it in numpy
        assert in_loader.augment_parts(100.0) == (recipe.augment(100.0), None)
    assert RECIPES["maic"].augment_parts(500.0) == (None, None)  # the seed recipes: no augmentation anywhere


def test_a_run_trains_with_its_augmentation_on_the_device(ptbxl, tmp_path):
    argv = [*TINY_MODERN, "--input", str(ptbxl), "--ptbxl_rate", "100", "--folds", "2", "--nepoch", "1",
            "--augment_on", "device", "--env", "dev", "--log_dir", str(tmp_path / "log"), "--cache_dir",
            str(tmp_path / "cache"), "--quiet"]
    assert train_interface.entry(argv) == 0
    run = tmp_path / "log" / "ECGEfficientNet_dev"
    history = pd.read_csv(run / "fold_0" / "history.csv")
    assert np.isfinite(history["train_loss"]).all() and len(pd.read_csv(run / "oof.csv")) == 349
    assert '"augment_on": "device"' in (run / "run.json").read_text()

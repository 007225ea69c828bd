"""The modern recipe: ECGEfficientNet, augmentation, EMA, cosine schedule, K-fold cross-validation and ensembles."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_MODERN
from torch.utils.flop_counter import FlopCounterMode

import options
import report_interface
import test_interface
import train_interface
from dataloader import augment as aug
from dataloader.splits import kfold_split
from engine.train.members import build_bundle, init_head_bias
from engine.train.optim import cosine_with_warmup
from engine.train.trainer import EMA
from models.checkpoint import load_bundle
from models.registry import get_model
from utils import metrics


@pytest.mark.parametrize("samples", [1000, 2500, 5000, 7777])
def test_any_length_from_two_seconds(samples):
    model = get_model("ECGEfficientNet").eval()
    with torch.no_grad():
        assert model(torch.randn(3, 12, samples)).shape == (3,)


def test_cost_per_ten_second_ecg_and_ensemble_budget():
    """The default model on a 10-s ECG at its recipe's rate ≤ 0.5 GFLOP; the default 5-fold run's whole ensemble
    (every seed and the partners of every fold) ≤ 3 GFLOP."""
    from engine.train.recipes import RECIPES
    from models.preprocessing import PRESETS

    recipe = RECIPES["modern"]

    def gflop(name):
        model = get_model(name).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, 12, int(10 * PRESETS[recipe.preprocessing].fs)))
        return counter.get_total_flops() / 1e9

    one = gflop("ECGEfficientNet")
    assert 0.1 < one <= 0.5 and 5 * one <= 1.5  # one model, and one model per fold
    partner = gflop(recipe.partner)
    assert 0.1 < partner <= 0.5  # the partner of the defaults: the baseline's network
    assert 5 * (recipe.seeds * one + recipe.partners * partner) <= 3.0  # the default run's whole ensemble


def test_sex_input_is_used_only_when_asked():
    torch.manual_seed(0)
    model = get_model("ECGEfficientNet", sex_input=True).eval()
    x = torch.randn(2, 12, 2500)
    with torch.no_grad():
        male, female = model(x, torch.ones(2)), model(x, torch.zeros(2))
    assert not torch.allclose(male, female)
    plain = get_model("ECGEfficientNet").eval()
    assert plain.fc.in_features + 1 == model.fc.in_features


# ---- augmentations against independent numpy computations -------------------------------------------------------
@pytest.fixture()
def batch():
    return np.random.default_rng(1).standard_normal((4, 12, 600)).astype(np.float32)


def test_random_crop(batch):
    out = aug.random_crop(batch, np.random.default_rng(7), 250)
    starts = np.random.default_rng(7).integers(0, 600 - 250 + 1, size=4)
    np.testing.assert_array_equal(out, np.stack([batch[i, :, s:s + 250] for i, s in enumerate(starts)]))


def test_amplitude_scale_and_noise(batch):
    factors = np.random.default_rng(7).uniform(0.8, 1.2, size=(4, 1, 1))
    np.testing.assert_allclose(aug.amplitude_scale(batch, np.random.default_rng(7), 0.2), batch * factors, rtol=1e-6)
    noise = 0.05 * np.random.default_rng(7).standard_normal(batch.shape)
    np.testing.assert_allclose(aug.gaussian_noise(batch, np.random.default_rng(7), 0.05), batch + noise, atol=1e-6)


def test_baseline_wander(batch):
    rng = np.random.default_rng(7)
    freq, phase = rng.uniform(0.05, 0.5, (4, 12, 1)), rng.uniform(0, 2 * np.pi, (4, 12, 1))
    amplitude = rng.uniform(0, 0.3, (4, 12, 1))
    expected = batch + amplitude * np.sin(2 * np.pi * freq * np.arange(600) / 500.0 + phase)
    np.testing.assert_allclose(aug.baseline_wander(batch, np.random.default_rng(7), 0.3, 500.0), expected, atol=1e-5)


def test_lead_and_coarse_dropout(batch):
    keep = np.random.default_rng(7).random((4, 12, 1)) >= 0.3
    np.testing.assert_array_equal(aug.lead_dropout(batch, np.random.default_rng(7), 0.3), batch * keep)
    rng = np.random.default_rng(7)
    hit, starts = rng.random(4) < 0.5, rng.integers(0, 600 - 60 + 1, size=4)
    expected = batch.copy()
    for i in range(4):
        if hit[i]:
            expected[i, :, starts[i]:starts[i] + 60] = 0
    np.testing.assert_array_equal(aug.coarse_dropout(batch, np.random.default_rng(7), 0.5), expected)


def test_augment_is_reproducible_and_off_by_default(batch):
    settings = aug.Augment(crop_samples=300, scale=0.1, noise=0.05, wander=0.1, lead_dropout=0.1, coarse_dropout=0.2)
    first = settings(batch, np.random.default_rng(3))
    assert first.shape == (4, 12, 300)
    np.testing.assert_array_equal(first, settings(batch, np.random.default_rng(3)))
    np.testing.assert_array_equal(aug.Augment()(batch, np.random.default_rng(3)), batch)
    seed_args = options.parse_train(["--mode", "child"])
    assert options.train_settings(seed_args).recipe.augment(500.0) is None  # the seed recipes stay exact


# ---- schedule, EMA, folds ----------------------------------------------------------------------------------------
def test_cosine_with_warmup_by_hand():
    factor = cosine_with_warmup(4, 14)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(9) == pytest.approx(0.5) and factor(14) == pytest.approx(0.0)


def test_ema_tracks_the_average():
    model = torch.nn.Linear(3, 1)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = ema.model.weight.clone()
    ema.update(model)  # first update: decay min(0.5, 2/11)
    torch.testing.assert_close(ema.model.weight, before + (1 - 2 / 11) * (model.weight - before))


def test_folds_are_patient_disjoint_and_cover_every_record_once():
    rng = np.random.default_rng(0)
    patients = rng.integers(0, 60, 200).astype(str)
    ages = rng.uniform(20, 90, 200)
    folds = kfold_split(ages, patients, 5, seed=3)
    assert folds.shape == (200,) and set(folds) == {0, 1, 2, 3, 4}
    for p in np.unique(patients):
        assert len(set(folds[patients == p])) == 1
    no_patients = kfold_split(ages, None, 5, seed=3)
    sizes = np.bincount(no_patients)
    assert sizes.max() - sizes.min() <= 1  # one record per "patient": balanced
    means = [ages[no_patients == k].mean() for k in range(5)]
    assert max(means) - min(means) < 5  # age-stratified
    np.testing.assert_array_equal(no_patients, kfold_split(ages, None, 5, seed=3))


@pytest.fixture
def cv_run(modern_cv_run):
    return modern_cv_run


def test_cross_validation_outputs(cv_run, ptbxl):
    _, run = cv_run
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    assert list(oof.columns) == ["id", "age", "predicted_age", "fold"]
    database = pd.read_csv(ptbxl / "ptbxl_database.csv")
    aged = database[database["age"] < 300]
    assert sorted(oof["id"]) == sorted(aged["ecg_id"].astype(str)) and oof["predicted_age"].notna().all()
    patients = aged.set_index(aged["ecg_id"].astype(str))["patient_id"]
    assert not set(patients[oof.loc[oof["fold"] == 0, "id"]]) & set(patients[oof.loc[oof["fold"] == 1, "id"]])
    cv = json.loads((run / "cv.json").read_text())
    assert cv["folds"] == 2 and [f["n"] for f in cv["per_fold"]] == oof["fold"].value_counts().sort_index().tolist()
    assert cv["pooled"]["mae"] == pytest.approx((oof["predicted_age"] - oof["age"]).abs().mean())
    lo, hi = cv["pooled"]["mae_ci95"]
    assert lo <= cv["pooled"]["mae"] <= hi
    # PTB-XL names each record's patient: the interval resamples whole patients, a patient's ECGs together
    assert cv["pooled"]["ci_resampled"] == "patients"
    assert cv["pooled"]["n_patients"] == patients[oof["id"]].nunique() < len(oof)
    assert [lo, hi] == metrics.bootstrap_ci(oof["predicted_age"], oof["age"], seed=cv["seed"],
                                            clusters=patients[oof["id"]].tolist())


def test_ema_weights_are_what_is_saved(cv_run):
    _, run = cv_run
    state = torch.load(run / "fold_0" / "last.pt", weights_only=True)
    assert state["ema_updates"] > 0
    differs = [k for k in state["raw_model"] if k.endswith("weight") and not torch.equal(state["model"][k],
                                                                                          state["raw_model"][k])]
    assert differs
    best = torch.load(run / "fold_0" / "best.pt", weights_only=True)  # the last epoch: no selection
    assert all(torch.equal(best["model"][k], state["model"][k]) for k in state["model"])


def test_ensemble_is_the_mean_of_the_fold_models_and_reports(cv_run, cinc, tmp_path):
    tmp, run = cv_run
    common = ["--input", str(cinc), "--on_bad", "skip", "--cache_dir", str(tmp / "cache"), "--quiet"]
    outputs = {}
    for name, weights in (("fold0", [str(run / "fold_0")]), ("fold1", [str(run / "fold_1")]),
                          ("ensemble", [str(run)])):
        outputs[name] = tmp_path / f"{name}.csv"
        assert test_interface.entry([*common, "--weights", *weights, "--output", str(outputs[name])]) == 0
    ages = {name: pd.read_csv(path, dtype={"ids": str}).set_index("ids")["predicted_age"]
            for name, path in outputs.items()}
    np.testing.assert_allclose(ages["ensemble"], (ages["fold0"] + ages["fold1"]) / 2, atol=1e-6)
    assert len(ages["ensemble"]) == 48
    both = tmp_path / "both.csv"  # several --weights values: every model of every run
    assert test_interface.entry([*common, "--weights", str(run / "fold_0"), str(run), "--output", str(both)]) == 0
    np.testing.assert_allclose(pd.read_csv(both)["predicted_age"],
                               (2 * ages["fold0"] + ages["fold1"]).to_numpy() / 3, atol=1e-6)
    out = tmp_path / "report"
    assert report_interface.entry(["--predictions", str(outputs["ensemble"]), "--labels", str(cinc), "--out",
                                   str(out), "--n_boot", "200"]) == 0
    assert json.loads((out / "report.json").read_text())["n"] == 48


def test_head_bias_starts_at_the_training_mean(cv_run):
    _, run = cv_run
    options_json = json.loads((run / "fold_0" / "options.json").read_text())
    assert options_json["head_bias_init"] == "mean" and options_json["recipe"] == "modern"
    assert load_bundle(run / "fold_0").arch == "ECGEfficientNet"


def test_head_bias_init_and_sex_codes_reach_the_network(tmp_path):
    from dataloader.dataset import sex_codes

    args = options.parse_train(["--recipe", "modern", "--width", "0.25", "--sex_input"])
    bundle = build_bundle(options.train_settings(args))
    init_head_bias(bundle, 47.5)
    assert bundle.model.fc.bias.item() == 47.5 and bundle.model.sex_input
    with torch.no_grad():
        bundle.model.fc.weight.zero_()
        bundle.model.fc.weight[0, -1] = 10.0  # the sex feature alone moves the age
        ages = bundle.model.eval()(torch.randn(3, 12, 1000), torch.from_numpy(sex_codes(["M", "F", None])))
    np.testing.assert_allclose(ages.numpy(), [57.5, 47.5, 52.5], atol=1e-5)


def test_resume_continues_every_fold(ptbxl, tmp_path):
    """A step schedule may be extended by --resume (a cosine one may not: its epoch count shapes every epoch)."""
    argv = [*TINY_MODERN, "--scheduler", "step", "--input", str(ptbxl), "--ptbxl_rate", "100", "--folds", "2",
            "--env", "res", "--log_dir",
            str(tmp_path / "log"), "--cache_dir", str(tmp_path / "cache"), "--quiet"]
    assert train_interface.entry([*argv, "--nepoch", "1"]) == 0
    assert train_interface.entry([*argv, "--nepoch", "2", "--resume"]) == 0
    run = tmp_path / "log" / "ECGEfficientNet_res"
    for k in (0, 1):
        assert pd.read_csv(run / f"fold_{k}" / "history.csv")["epoch"].tolist() == [1, 2]
    assert len(pd.read_csv(run / "oof.csv")) == 349

"""The plain baseline and the options it brought: BaselineNet, per-lead amplitude scaling, the one-cycle
schedule, zero-initialised output, average-only pooling and BatchNorm statistics recomputed for the EMA weights."""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import options
import train_interface
from dataloader import augment as aug
from engine.runs import manifest_differences
from engine.train.members import build_bundle, init_output
from engine.train.optim import make_schedule
from engine.train.recipes import RECIPES
from engine.train.settings import absent_values
from engine.train.trainer import EMA, TrainConfig, ema_statistics
from models.registry import get_model


def result_options(args, precision):
    return options.train_settings(args).result_options(precision)


def partner_args(args):
    """The partner's resolved options as a namespace (None without a partner)."""
    partner = options.train_settings(args).partner()
    return None if partner is None else argparse.Namespace(**partner.options)



def test_baseline_net_is_the_described_network():
    model = get_model("BaselineNet")
    assert sum(p.numel() for p in model.parameters()) == 372_977  # "373 k parameters"
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert len(convs) == 18 and [c.out_channels for c in convs[::3]] == [32, 48, 64, 96, 128, 160]
    assert [(c.kernel_size[0], c.stride[0], c.groups > 1) for c in convs[:3]] == [(7, 2, False), (7, 1, True),
                                                                                   (1, 1, False)]
    assert sum(isinstance(m, nn.GELU) for m in model.modules()) == 18
    assert model(torch.randn(2, 12, 4096)).shape == (2,) and model(torch.randn(2, 12, 5000)).shape == (2,)


def test_baseline_recipe_starts_at_the_training_mean_for_every_ecg():
    args = options.parse_train(["--arch", "BaselineNet"])
    assert args.recipe == "baseline" and args.scheduler == "onecycle" and args.lr_initial == 3e-3
    bundle = build_bundle(options.train_settings(args))
    init_output(bundle, options.train_settings(args).recipe, 61.5)
    ages = bundle.model.eval()(torch.randn(3, 12, 5000))
    torch.testing.assert_close(ages, torch.full((3,), 61.5))


def test_lead_scale_by_hand():
    x = np.random.default_rng(0).normal(size=(3, 12, 50)).astype(np.float32)
    factors = 1 + 0.1 * np.random.default_rng(5).standard_normal((3, 12, 1))
    np.testing.assert_allclose(aug.lead_scale(x, np.random.default_rng(5), 0.1), x * factors, rtol=1e-6)


def test_one_cycle_peaks_at_the_learning_rate_after_the_warm_up():
    recipe = dataclasses.replace(RECIPES["baseline"], nepoch=10, warmup_epochs=1.0, lr_initial=3e-3)
    optimizer = torch.optim.AdamW(nn.Linear(1, 1).parameters(), lr=recipe.lr_initial)
    schedule = make_schedule(optimizer, recipe, steps_per_epoch=10)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.after_step()
    assert rates[0] == pytest.approx(3e-3 / 25) and max(rates) == pytest.approx(3e-3)
    assert int(np.argmax(rates)) in (9, 10) and rates[-1] < 3e-3 / 1000


def test_average_pooling_option_changes_only_the_output_layer():
    both, average = get_model("ECGEfficientNet", width=0.25), get_model("ECGEfficientNet", width=0.25, pooling="avg")
    assert both.fc.in_features == 2 * average.fc.in_features
    with pytest.raises(ValueError, match="pooling must be one of avgmax, avg"):
        get_model("ECGEfficientNet", pooling="max")


def test_ema_statistics_recomputed_for_the_ema_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(12, 4, 3), nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model[0].weight.mul_(3.0)  # the trained weights move away from the average
    batches = [{"x": torch.randn(4, 12, 20), "sex": torch.zeros(4)} for _ in range(3)]
    recipe = dataclasses.replace(RECIPES["baseline"], ema_bn="recompute")
    ema_statistics(ema, model, batches, TrainConfig(recipe), torch.device("cpu"), "fp32", sex=False)
    with torch.no_grad():  # per batch, the EMA convolution's channels over samples × positions
        flat = [ema.model[0](b["x"]).transpose(0, 1).reshape(4, -1) for b in batches]
    # a cumulative average over the pass: the mean of the batches' means and of their unbiased variances
    torch.testing.assert_close(ema.model[1].running_mean, torch.stack([f.mean(dim=1) for f in flat]).mean(dim=0))
    torch.testing.assert_close(ema.model[1].running_var, torch.stack([f.var(dim=1) for f in flat]).mean(dim=0))
    assert not ema.model[1].training and ema.model[1].momentum == 0.1
    copied = EMA(model, decay=0.9)
    ema_statistics(copied, model, batches, TrainConfig(RECIPES["modern"]), torch.device("cpu"), "fp32", sex=False)
    torch.testing.assert_close(copied.model[1].running_mean, model[1].running_mean)


def predicted_ages(weights, ptbxl, tmp_path, name: str):
    """test_interface's ages for the 100-Hz PTB-XL records with ``weights`` (a member, a run folder or an ONNX
    file), by record id."""
    import pandas as pd
    from conftest import cli

    import test_interface

    out = tmp_path / f"{name}.csv"
    assert cli(test_interface, ["--input", str(ptbxl), "--ptbxl_rate", "100", "--weights", str(weights), "--output",
                                str(out), "--on_bad", "skip", "--precision", "fp32"], tmp_path) == 0
    return pd.read_csv(out, dtype={"ids": str}).set_index("ids")["predicted_age"]


def test_seeds_per_fold_train_and_average(ptbxl, tmp_path):
    import json

    import pandas as pd
    from conftest import TINY_MODERN, cli


    argv = [*TINY_MODERN, "--input", str(ptbxl), "--ptbxl_rate", "100", "--folds", "2", "--seeds", "2", "--nepoch",
            "1", "--env", "seeds"]
    assert cli(train_interface, argv, tmp_path) == 0
    run = tmp_path / "log" / "ECGEfficientNet_seeds"
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["members"] == ["fold_0_seed_0", "fold_0_seed_1", "fold_1_seed_0", "fold_1_seed_1"]
    assert json.loads((run / "cv.json").read_text())["seeds"] == 2
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str}).set_index("id")
    ages = {member: predicted_ages(run / member, ptbxl, tmp_path, member) for member in manifest["members"][:2]}
    fold0 = oof.index[oof["fold"] == 0]
    assert (ages["fold_0_seed_0"][fold0] - ages["fold_0_seed_1"][fold0]).abs().max() > 1e-3  # two different models
    np.testing.assert_allclose(oof.loc[fold0, "predicted_age"],
                               (ages["fold_0_seed_0"][fold0] + ages["fold_0_seed_1"][fold0]) / 2, atol=1e-4)


def test_a_partner_architecture_trains_beside_each_fold_and_joins_the_ensemble(ptbxl, tmp_path):
    """--partner BaselineNet --partners 2: each fold trains an ECGEfficientNet and two BaselineNets (with the baseline
    recipe but the given epochs and width, each its own seed); the out-of-fold age is the mean of the fold's three
    models, and the run folder stands for all six models at prediction time."""
    import json

    import pandas as pd
    from conftest import TINY_MODERN, cli

    import export_interface
    from engine.deploy.onnx_model import OnnxModel
    from models.checkpoint import load_bundle

    argv = [*TINY_MODERN, "--input", str(ptbxl), "--ptbxl_rate", "100", "--folds", "2", "--nepoch", "1", "--env",
            "partner", "--partner", "BaselineNet", "--partners", "2"]
    assert cli(train_interface, argv, tmp_path) == 0
    run = tmp_path / "log" / "ECGEfficientNet_partner"
    manifest = json.loads((run / "run.json").read_text())
    fold_models = {k: [f"fold_{k}", f"fold_{k}_BaselineNet_0", f"fold_{k}_BaselineNet_1"] for k in (0, 1)}
    assert manifest["members"] == [*fold_models[0], *fold_models[1]]
    cv = json.loads((run / "cv.json").read_text())
    assert manifest["complete"] and (cv["partner"], cv["partners"]) == ("BaselineNet", 2)
    partner = json.loads((run / "fold_0_BaselineNet_1" / "options.json").read_text())
    assert (partner["arch"], partner["recipe"], partner["nepoch"], partner["width"]) == \
        ("BaselineNet", "baseline", 1, 0.25)
    assert partner["lr_initial"] == RECIPES["baseline"].lr_initial and partner["crop_seconds"] == 8.192
    main, other = (load_bundle(run / m / "best.pt") for m in ("fold_0", "fold_0_BaselineNet_0"))
    assert (main.arch, other.arch) == ("ECGEfficientNet", "BaselineNet") and main.preprocessing == other.preprocessing
    ages = {weights: predicted_ages(run / weights, ptbxl, tmp_path, weights.strip(".") or "run")
            for weights in [*manifest["members"], "."]}
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str}).set_index("id")
    for k in (0, 1):
        held_out = oof.index[oof["fold"] == k]
        np.testing.assert_allclose(oof.loc[held_out, "predicted_age"],
                                   sum(ages[m][held_out] for m in fold_models[k]) / 3, atol=1e-4)
    # the two partners of a fold are two models (their own seeds), not one trained twice
    assert (ages["fold_0_BaselineNet_0"] - ages["fold_0_BaselineNet_1"]).abs().max() > 1e-3
    np.testing.assert_allclose(ages["."], sum(ages[m] for m in manifest["members"]) / 6, atol=1e-4)
    # both architectures in one ONNX graph (they share the preprocessing), predicting what PyTorch predicts: a fold's
    # ECGEfficientNet and one of its BaselineNets
    onnx, mixed = tmp_path / "mixed.onnx", ["fold_0", "fold_0_BaselineNet_0"]
    assert export_interface.entry(["--weights", *(str(run / m) for m in mixed), "--output", str(onnx),
                                   "--check_input", str(ptbxl), "--check_records", "4", "--quiet"]) == 0
    assert OnnxModel.load(onnx).archs == ["ECGEfficientNet", "BaselineNet"]
    np.testing.assert_allclose(predicted_ages(onnx, ptbxl, tmp_path, "onnx"), sum(ages[m] for m in mixed) / 2,
                               atol=1e-3)
    # the same experiment resumes (nothing left to train); without the partner it is another one
    assert cli(train_interface, [*argv, "--resume"], tmp_path) == 0
    np.testing.assert_allclose(pd.read_csv(run / "oof.csv", dtype={"id": str}).set_index("id")["predicted_age"],
                               oof["predicted_age"], atol=1e-6)
    for other in (["--partner", "none"], ["--partners", "1"]):
        assert cli(train_interface, [*argv, *other, "--resume"], tmp_path) == 2


def test_the_recipe_sets_the_models_per_fold_of_a_cross_validated_run():
    """The modern recipe's models per fold (its seeds and its partner architecture) apply to K-fold runs; a single
    split trains one model unless --seeds or --partner is given (then it is an error); the seed recipes train one
    model per fold."""
    from utils.errors import UserError

    modern = RECIPES["modern"]
    assert (modern.seeds, modern.partner, modern.partners) == (1, "BaselineNet", 2)
    assert all((RECIPES[name].seeds, RECIPES[name].partner, RECIPES[name].partners) == (1, "none", 1)
               for name in ("maic", "lima", "baseline"))
    cross_validated = options.parse_train(["--recipe", "modern", "--folds", "5"])
    assert (cross_validated.seeds, cross_validated.partner, cross_validated.partners) == (1, "BaselineNet", 2)
    single = options.parse_train(["--recipe", "modern"])
    assert (single.seeds, single.partner, single.partners) == (1, "none", 1)
    assert options.parse_train(["--recipe", "modern", "--folds", "5", "--partner", "none"]).partners == 1
    assert options.parse_train(["--recipe", "modern", "--folds", "5", "--seeds", "3"]).seeds == 3
    assert options.parse_train(["--mode", "child", "--folds", "5"]).partner == "none"
    for extra in (["--seeds", "2"], ["--partner", "BaselineNet"], ["--partners", "2"]):
        with pytest.raises(UserError, match="--seeds > 1 or a --partner needs --folds > 1"):
            options.parse_train(["--recipe", "modern", *extra])
    with pytest.raises(UserError, match="--partners 3 needs a --partner architecture"):
        options.parse_train(["--recipe", "modern", "--folds", "5", "--partner", "none", "--partners", "3"])
    for wrong in (["--seeds", "0"], ["--partners", "0"]):
        with pytest.raises(UserError, match=" ".join(wrong)):
            options.parse_train(["--recipe", "modern", "--folds", "5", *wrong])
    with pytest.raises(UserError, match="every model of the run must read the sex"):
        options.parse_train(["--recipe", "modern", "--folds", "5", "--sex_input"])


def test_the_partner_has_its_own_recipe_but_what_was_given():
    """The partner's options: its recipe's, except the recipe options given on the command line and the run's
    preprocessing; of the model options only those it takes; one model per fold. A run without a partner keeps the
    manifest options it had before partners existed (so earlier runs stay resumable)."""
    args = options.parse_train(["--recipe", "modern", "--folds", "5", "--nepoch", "3", "--width", "0.5", "--pooling",
                                "avg", "--preprocessing", "modern_100hz", "--seeds", "2"])
    partner = partner_args(args)
    baseline = RECIPES["baseline"]
    assert (partner.arch, partner.recipe, partner.nepoch, partner.width, partner.pooling) == \
        ("BaselineNet", "baseline", 3, 0.5, None)
    assert (partner.lr_initial, partner.scheduler, partner.crop_seconds, partner.weight_decay) == \
        (baseline.lr_initial, baseline.scheduler, baseline.crop_seconds, baseline.weight_decay)
    assert (partner.preprocessing, partner.seeds, partner.partner, partner.partners) == ("modern_100hz", 1, "none", 1)
    assert (args.lr_initial, args.scheduler, args.pooling, args.seeds) == (1e-3, "cosine", "avg", 2)  # unchanged
    assert partner_args(options.parse_train(["--recipe", "modern"])) is None
    with_partner = result_options(args, "fp32")
    assert with_partner["partner"] == "BaselineNet" and with_partner["partners"] == 2
    # the run's models per fold are not recipe options a partner keeps
    assert "nepoch" in with_partner["recipe_given"] and "seeds" not in with_partner["recipe_given"]
    alone = result_options(options.parse_train(["--recipe", "modern", "--folds", "5", "--partner", "none"]),
                                   "fp32")
    # a manifest from before partners existed (no partner, recipe_given or partners) is the same experiment
    before = {k: v for k, v in alone.items() if k not in ("partner", "recipe_given", "partners")}
    assert manifest_differences({"options": before, "members": []}, {"options": alone, "members": []},
                                absent_values()) == []
    assert (alone["partner"], alone["recipe_given"], alone["partners"]) == ("none", [], 1)
    # one partner per fold: the manifest options of a partner run from before --partners existed
    one = result_options(options.parse_train(["--recipe", "modern", "--folds", "5", "--partners", "1"]),
                                 "fp32")
    assert one["partner"] == "BaselineNet" and one["recipe_given"] == []
    before = {k: v for k, v in one.items() if k != "partners"}
    assert manifest_differences({"options": before, "members": []}, {"options": one, "members": []},
                                absent_values()) == []


def test_an_option_of_another_architecture_is_an_error():
    from utils.errors import UserError

    with pytest.raises(UserError, match="--pooling: option.s. of other architectures; BaselineNet takes --width"):
        build_bundle(options.train_settings(options.parse_train(["--arch", "BaselineNet", "--pooling", "avg"])))
    with pytest.raises(UserError, match="--out_ch"):
        build_bundle(options.train_settings(options.parse_train(["--recipe", "modern", "--out_ch", "16"])))

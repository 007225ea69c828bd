"""The checkpoint schema: training facts kept with the model, the command line only as provenance, and earlier
checkpoint formats still loading (issue: one place per fact)."""
from __future__ import annotations

import torch
from conftest import TINY, cli, need

import options
import train_interface
from engine.train.members import build_bundle
from models.checkpoint import FORMAT, TrainingFacts, load_bundle, save_checkpoint


def tiny_modern():
    return build_bundle(options.train_settings(options.parse_train(["--recipe", "modern", "--width", "0.25"])))


def test_training_facts_are_the_schema_not_the_command_line(tmp_path):
    bundle = tiny_modern()
    bundle.facts = TrainingFacts.of([30.0, 50.0, 70.0, 90.0])
    path = save_checkpoint(tmp_path / "m.pt", bundle, options={"train_median_age": 1.0, "lr_initial": 5})
    state = torch.load(path, weights_only=True)
    assert state["format"] == FORMAT and state["training"]["median_age"] == 60.0
    loaded = load_bundle(path)
    assert loaded.facts == TrainingFacts(n=4, median_age=60.0, mean_age=60.0, sd_age=state["training"]["sd_age"],
                                         min_age=30.0, max_age=90.0)  # the options' 1.0 is never read


def test_format_1_checkpoints_still_load(tmp_path):
    """This project's format 1 kept the median in its options and called ECGEfficientNet's final convolution
    'head'."""
    bundle = tiny_modern()
    state = {**bundle.metadata(), "format": "ecg-age/1", "options": {"train_median_age": 47.5}}
    del state["training"]
    weights = bundle.model.state_dict()
    state["model"] = {(k.replace("conv_head.", "head.", 1) if k.startswith("conv_head.") else k): v
                      for k, v in weights.items()}
    torch.save(state, tmp_path / "old.pt")
    loaded = load_bundle(tmp_path / "old.pt")
    assert loaded.facts.median_age == 47.5
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in weights.items())


def test_implausible_facts_are_dropped_not_used():
    facts = TrainingFacts.from_dict({"n": -3, "median_age": 1e9, "mean_age": "x", "sd_age": float("nan"),
                                     "min_age": 20.0, "max_age": True})
    assert facts == TrainingFacts(min_age=20.0)


def test_a_trained_checkpoint_carries_its_training_facts(maic_adult, tmp_path):
    assert cli(train_interface, ["--data_root", str(need(maic_adult)), "--arch", "ResNet1d", *TINY["ResNet1d"],
                                 "--nepoch", "1", "--batch_size", "8", "--device", "cpu", "--env", "facts"],
               tmp_path) == 0
    import pandas as pd

    split = pd.read_csv(tmp_path / "log" / "ResNet1d_facts" / "split.csv", dtype={"id": str})
    labels = pd.read_csv(maic_adult / "ECG_adult_age_train.csv", dtype={"FILENAME": str}).set_index("FILENAME")
    train_ages = labels.loc[split.loc[split["split"] == "train", "id"], "AGE"]
    facts = load_bundle(tmp_path / "log" / "ResNet1d_facts").facts
    assert facts.n == len(train_ages) and facts.median_age == float(train_ages.median())
    assert facts.min_age == train_ages.min() and facts.max_age == train_ages.max()

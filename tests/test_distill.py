"""Distillation (--teacher): one network per fold learns the teacher ensemble's age (fold k from fold k's teachers
only, on the teacher's own folds) — on stored augmented views the teacher scored (consistent teaching) or per
record —, validated and calibrated on the true ages; a teacher on other folds is refused."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_MODERN

import options
import train_interface
from dataloader.augment import Augment, stored_views
from dataloader.dataset import ViewDataset
from dataloader.formats import open_reader
from dataloader.sources import open_source
from engine.predict.inference import InferenceConfig, predict_ensemble
from engine.runs import run_members
from engine.train.data import Records
from engine.train.distill import teacher_ages, teacher_targets
from models.checkpoint import load_ensemble


def student_argv(ptbxl, run, tmp, *extra):
    return [*TINY_MODERN, "--input", str(ptbxl), "--ptbxl_rate", "100", "--folds", "2", "--nepoch", "2", "--teacher",
            str(run), "--env", "student", "--log_dir", str(tmp / "log"), "--cache_dir", str(tmp / "cache"), "--quiet",
            *extra]


@pytest.fixture(scope="module")
def student(ptbxl, modern_cv_run, tmp_path_factory):
    _, run = modern_cv_run
    tmp = tmp_path_factory.mktemp("student")
    assert train_interface.entry(student_argv(ptbxl, run, tmp)) == 0
    return tmp, tmp / "log" / "ECGEfficientNet_student"


def test_the_student_is_one_network_per_fold_on_the_teachers_folds(student, modern_cv_run):
    _, teacher = modern_cv_run
    _, run = student
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["members"] == ["fold_0", "fold_1"] and manifest["complete"]
    assert isinstance(manifest["options"]["teacher"], str) and manifest["options"]["teacher_weight"] == 0.7
    assert manifest["options"]["teacher_views"] == 8
    ours, theirs = (pd.read_csv(r / "oof.csv", dtype={"id": str}) for r in (run, teacher))
    assert ours["id"].tolist() == theirs["id"].tolist() and (ours["fold"] == theirs["fold"]).all()
    assert (ours["age"] == theirs["age"]).all()  # paired record by record with the teacher's out-of-fold ages
    assert json.loads((run / "fold_0" / "options.json").read_text())["teacher"] == [str(teacher)]


def teacher_setup(ptbxl, teacher, tmp, *extra):
    """(the student's settings, the teacher's folds, the held-out inference configuration a run uses)."""
    settings = options.train_settings(options.parse_train(student_argv(ptbxl, teacher, tmp, *extra)))
    cfg = InferenceConfig(device=torch.device("cpu"), precision="fp32", workers=0,
                          cache=settings.cache.config("fp32", progress=False))
    folds = pd.read_csv(teacher / "folds.csv", dtype={"id": str})
    return settings, pd.Series(folds["fold"].to_numpy(), index=folds["id"]), cfg


def test_fold_k_learns_only_from_fold_k_teachers(student, modern_cv_run, ptbxl):
    """--teacher_views 0: the targets are 0.7 × the fold's own teacher's record age + 0.3 × the true age."""
    _, teacher = modern_cv_run
    tmp, _ = student
    settings, assignment, held_out = teacher_setup(ptbxl, teacher, tmp, "--teacher_views", "0")
    reader = open_reader(ptbxl, ptbxl_rate=100)
    records = Records(reader, None, np.arange(len(reader)))
    spec = load_ensemble(run_members(teacher)[:1])[0].preprocessing
    targets, _ = teacher_targets(settings, records, spec, held_out, assignment)
    ages = pd.to_numeric(reader.table["age"], errors="coerce").to_numpy(float)
    cfg = InferenceConfig(cache=held_out.cache)
    for k, member in enumerate(run_members(teacher)):
        taught, _, _ = predict_ensemble(load_ensemble([member]), reader, cfg)
        known = np.isfinite(taught)
        assert targets[k].shape == (len(reader),)
        np.testing.assert_allclose(targets[k][known], (0.7 * taught + 0.3 * ages)[known], rtol=1e-5)
    assert not np.allclose(targets[0], targets[1], equal_nan=True)


def test_each_stored_view_carries_its_own_teacher_age(student, modern_cv_run, ptbxl):
    """Default (8 views): fold k's target for view v of a training record is 0.7 × fold k's teacher on exactly that
    augmented view (recomputed here from the view's seed) + 0.3 × the true age; held-out records keep the truth."""
    _, teacher = modern_cv_run
    tmp, _ = student
    settings, assignment, held_out = teacher_setup(ptbxl, teacher, tmp)
    reader = open_reader(ptbxl, ptbxl_rate=100)
    bundle = load_ensemble([run_members(teacher)[0]])[0]
    source, bad = open_source(reader, bundle.preprocessing, held_out.cache)
    usable = np.array([i for i, rid in enumerate(reader.ids) if rid not in bad and rid in assignment.index])
    records = Records(reader, source, usable)
    targets, _ = teacher_targets(settings, records, bundle.preprocessing, held_out, assignment)
    ages = records.ages.astype(float)
    folds = assignment.reindex(reader.ids).to_numpy()
    augment = settings.recipe.augment(bundle.preprocessing.fs)
    rows = usable[folds[usable] != 0][:5]
    x = stored_views(augment, np.repeat(source.read(rows), 8, axis=0), 5, np.repeat(rows, 8), np.tile(np.arange(8), 5))
    model = bundle.model.eval()
    with torch.no_grad():
        taught = bundle.head(model(torch.from_numpy(x))).double().numpy().reshape(5, 8)
    assert targets[0].shape == (len(reader), 8)
    np.testing.assert_allclose(targets[0][rows], 0.7 * taught + 0.3 * ages[rows, None], atol=1e-3)
    assert np.ptp(targets[0][rows], axis=1).min() > 0  # the views differ, and so do their ages
    held_out = usable[folds[usable] == 0]
    np.testing.assert_array_equal(targets[0][held_out], np.repeat(ages[held_out, None], 8, axis=1))


def test_a_teacher_of_another_preprocessing_gives_its_record_age_to_every_view(student, modern_cv_run, ptbxl):
    """Mixed teachers: the members that read the student's preprocessing score the views, another member's
    whole-record age stands for all of a record's views, and the ensemble's age is their equal-weight mean."""
    import dataclasses

    _, teacher = modern_cv_run
    tmp, _ = student
    settings, _, held_out = teacher_setup(ptbxl, teacher, tmp)
    reader = open_reader(ptbxl, ptbxl_rate=100)
    same, other = load_ensemble(run_members(teacher))
    spec = same.preprocessing
    other.preprocessing = dataclasses.replace(spec, fs=250.0, length=2500)  # pooled: any length runs
    source, bad = open_source(reader, spec, held_out.cache)
    usable = np.array([i for i, rid in enumerate(reader.ids) if rid not in bad])
    rows = usable[:6]
    mixed = teacher_ages(settings, [same, other], Records(reader, source, usable), rows, spec, held_out)
    views = teacher_ages(settings, [same], Records(reader, source, usable), rows, spec, held_out)
    whole, _, _ = predict_ensemble([other], reader, held_out)
    assert mixed.shape == views.shape == (len(reader), 8)
    np.testing.assert_allclose(mixed[rows], (views[rows] + whole[rows, None]) / 2, rtol=1e-6)


def test_a_view_dataset_draws_the_stored_views():
    """Training draws one of the K stored views per row — the very array the teacher scored — with its target."""
    x = np.random.default_rng(0).standard_normal((10, 12, 500)).astype(np.float32)
    augment = Augment(crop_samples=250, scale=0.1, noise=0.05, lead_dropout=0.1)
    source = type("Memory", (), {"read": lambda self, rows: x[rows]})()
    dataset = ViewDataset(source, np.arange(10), 4, augment, 7, targets=np.arange(40).reshape(10, 4), seed=3)
    drawn = [dataset.__getitems__([2, 5, 7]), dataset.__getitems__([5, 2, 7])]
    for batch in drawn:
        positions = batch["index"].numpy()
        views = batch["y"].numpy().astype(int) - 4 * positions
        assert ((0 <= views) & (views < 4)).all()
        np.testing.assert_array_equal(batch["x"].numpy(), stored_views(augment, x[positions], 7, positions, views))
    assert drawn[0]["x"].shape == (3, 12, 250)
    with pytest.raises(ValueError, match="rows, views"):
        ViewDataset(source, np.arange(10), 3, augment, 7, targets=np.zeros((10, 4)))


def test_a_teacher_on_other_folds_is_refused(ptbxl, modern_cv_run, tmp_path, capsys):
    _, teacher = modern_cv_run
    code = train_interface.entry(student_argv(ptbxl, teacher, tmp_path, "--split_seed", "99"))
    assert code == 2 and "its folds are not this run's" in capsys.readouterr().err
    assert not (tmp_path / "log" / "ECGEfficientNet_student" / "fold_0").exists()  # refused before any training

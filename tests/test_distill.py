"""Distillation (--teacher): one network per fold learns the teacher ensemble's age (fold k from fold k's teachers
only, on the teacher's own folds), validated and calibrated on the true ages; a teacher on other folds is refused."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_MODERN

import options
import train_interface
from dataloader.formats import open_reader
from engine.experiment import Experiment, Place, Records
from engine.inference import InferenceConfig, predict_ensemble
from engine.runs import run_members
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
    ours, theirs = (pd.read_csv(r / "oof.csv", dtype={"id": str}) for r in (run, teacher))
    assert ours["id"].tolist() == theirs["id"].tolist() and (ours["fold"] == theirs["fold"]).all()
    assert (ours["age"] == theirs["age"]).all()  # paired record by record with the teacher's out-of-fold ages
    assert json.loads((run / "fold_0" / "options.json").read_text())["teacher"] == [str(teacher)]


def test_fold_k_learns_only_from_fold_k_teachers(student, modern_cv_run, ptbxl):
    """The targets: 0.7 × the fold's own teacher + 0.3 × the true age, for every record."""
    _, teacher = modern_cv_run
    tmp, _ = student
    settings = options.train_settings(options.parse_train(student_argv(ptbxl, teacher, tmp)))
    experiment = Experiment(settings, Place(__import__("torch").device("cpu"), "fp32"))
    reader = open_reader(ptbxl, ptbxl_rate=100)
    records = Records(reader, None, np.arange(len(reader)))
    folds = pd.read_csv(teacher / "folds.csv", dtype={"id": str})
    targets = experiment.teacher_targets(records, pd.Series(folds["fold"].to_numpy(), index=folds["id"]))
    ages = pd.to_numeric(reader.table["age"], errors="coerce").to_numpy(float)
    cfg = InferenceConfig(cache=experiment.held_out_cfg.cache)
    for k, member in enumerate(run_members(teacher)):
        taught, _ = predict_ensemble(load_ensemble([member]), reader, cfg)
        known = np.isfinite(taught)
        np.testing.assert_allclose(targets[k][known], (0.7 * taught + 0.3 * ages)[known], rtol=1e-5)
    assert not np.allclose(targets[0], targets[1], equal_nan=True)


def test_a_teacher_on_other_folds_is_refused(ptbxl, modern_cv_run, tmp_path, capsys):
    _, teacher = modern_cv_run
    code = train_interface.entry(student_argv(ptbxl, teacher, tmp_path, "--split_seed", "99"))
    assert code == 2 and "its folds are not this run's" in capsys.readouterr().err
    assert not (tmp_path / "log" / "ECGEfficientNet_student" / "fold_0").exists()  # refused before any training

"""Calibrated intervals (issue 18): the finite-sample conformal quantile, bands that widen where errors are larger,
coverage on held-out records, the columns and report they make, and models that have no calibration."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import options
import report_interface
import test_interface
from engine.train.members import build_bundle
from models.checkpoint import load_bundle, save_checkpoint
from utils.calibration import Calibration, conformal_quantile, interval_coverage, records_needed, significant_gaps
from utils.errors import CheckpointError
from utils.paths import prediction_notes


@pytest.mark.parametrize("n", [9, 10, 57, 200, 1001])
@pytest.mark.parametrize("level", [0.5, 0.8, 0.9, 0.95])
def test_conformal_quantile_is_the_finite_sample_order_statistic(n, level):
    scores = np.random.default_rng(n).exponential(5.0, n)
    rank = math.ceil((n + 1) * level)
    if rank > n:
        assert conformal_quantile(scores, level) == math.inf and n < records_needed(level)
        return
    # independent computation: numpy's inverted-CDF quantile at (rank − ½) / n is the rank-th smallest value
    assert conformal_quantile(scores, level) == np.quantile(scores, (rank - 0.5) / n, method="inverted_cdf")
    assert (scores <= conformal_quantile(scores, level)).sum() >= level * (n + 1) - 1


def heteroscedastic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted ages 20–90 whose errors grow from sd 2 to sd 16 years."""
    rng = np.random.default_rng(seed)
    predicted = rng.uniform(20, 90, n)
    return predicted, predicted - rng.normal(0, 2 + 0.2 * (predicted - 20))


def test_intervals_widen_where_calibration_residuals_are_larger():
    predicted, ages = heteroscedastic(3000, 0)
    intervals = Calibration.of(predicted, ages).fit(0.9)
    assert len(intervals.half_width) > 1 and np.all(np.diff(intervals.half_width) > 0)
    chosen = {c["bands"]: c["deviation"] for c in intervals.selection}
    assert chosen[len(intervals.half_width)] < chosen[1]  # measured per decade: bands beat one global quantile
    new_predicted, new_ages = heteroscedastic(20000, 1)
    lower, upper = intervals(new_predicted)
    report = interval_coverage(lower, upper, new_ages)
    assert abs(report["coverage"] - 0.9) < 0.02
    widths = [b["mean_width"] for b in report["per_bin"]]
    assert widths[-1] > 2 * widths[0]
    # with errors of one size everywhere, one band is enough
    flat = np.random.default_rng(2).uniform(20, 90, 3000)
    same = Calibration.of(flat, flat - np.random.default_rng(3).normal(0, 8, 3000)).fit(0.9)
    assert abs(conformal_quantile(np.abs(same.half_width), 0.5) - 8 * 1.645) < 1.5


def test_too_few_records_for_the_level_and_a_bad_level():
    calibration = Calibration.of(np.full(10, 50.0), np.linspace(40, 60, 10))
    with pytest.raises(ValueError, match="at least 19"):
        calibration.fit(0.95)
    with pytest.raises(ValueError, match="between 0 and 1"):
        calibration.fit(1.0)
    with pytest.raises(SystemExit):
        options.test_parser().parse_args(["--interval", "90"])


@pytest.mark.parametrize("field,value", [("predicted", ["a"] * 3), ("residual", [1.0, math.nan, 2.0]),
                                         ("residual", [1.0]), ("predicted", list(range(20001))),
                                         ("n", 1), ("source", "made-up"), ("predicted", [400.0, 400.0, 400.0])])
def test_a_stored_calibration_is_checked(tmp_path, field, value):
    bundle = build_bundle(options.train_settings(options.parse_train(["--recipe", "modern", "--width", "0.25"])))
    bundle.calibration = Calibration.of([50.0, 60.0, 70.0], [52.0, 57.0, 75.0])
    path = save_checkpoint(tmp_path / "m.pt", bundle)
    assert load_bundle(path).calibration.n == 3
    state = torch.load(path, weights_only=True)
    state["calibration"][field] = value
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="calibration"):
        load_bundle(path)


def member_calibrations(run) -> Calibration:
    return Calibration.pooled([load_bundle(run / f"fold_{k}").calibration for k in range(2)])


def test_the_members_calibrations_are_the_out_of_fold_predictions(modern_cv_run):
    _, run = modern_cv_run
    pooled = member_calibrations(run)
    oof = pd.read_csv(run / "oof.csv")
    assert pooled.n == len(oof) and pooled.source == "pooled"
    np.testing.assert_allclose(np.sort(pooled.predicted), np.sort(oof["predicted_age"]), atol=1e-3)
    np.testing.assert_allclose(np.sort(pooled.ages), np.sort(oof["age"]), atol=1e-3)


def test_coverage_by_an_inner_split(modern_cv_run):
    """Half of the out-of-fold records calibrate, the other half check: a 0.9 interval covers 0.9 ± 0.08 of them
    (the binomial SD at n ≈ 175 is 0.023)."""
    _, run = modern_cv_run
    pooled = member_calibrations(run)
    coverages = []
    for seed in range(4):
        half = np.random.default_rng(seed).permutation(len(pooled.predicted)) < len(pooled.predicted) // 2
        fitted = Calibration.of(pooled.predicted[half], pooled.ages[half]).fit(0.9)
        lower, upper = fitted(pooled.predicted[~half])
        coverages.append(interval_coverage(lower, upper, pooled.ages[~half])["coverage"])
    assert all(abs(c - 0.9) <= 0.08 for c in coverages), coverages


def test_interval_columns_notes_and_report_on_cinc(modern_cv_run, cinc, tmp_path):
    """The CV run's 0.9 intervals on the external CinC records (other hospitals, ages 5–89): coverage within
    0.9 ± 0.15 on their 48 records."""
    tmp, run = modern_cv_run
    out = tmp_path / "pred.csv"
    assert test_interface.entry(["--input", str(cinc), "--weights", str(run), "--interval", "0.9", "--on_bad", "skip",
                                 "--output", str(out), "--cache_dir", str(tmp / "cache"), "--quiet"]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["ids", "predicted_age", "lower", "upper"] and len(frame) == 48
    assert (frame["lower"] <= frame["predicted_age"]).all() and (frame["predicted_age"] <= frame["upper"]).all()
    notes = json.loads(prediction_notes(out).read_text())
    assert notes["interval"]["level"] == 0.9 and notes["models"] and len(notes["interval"]["bands"]) >= 1
    report_dir = tmp_path / "report"
    assert report_interface.entry(["--predictions", str(out), "--labels", str(cinc), "--out", str(report_dir),
                                   "--n_boot", "200"]) == 0
    interval = json.loads((report_dir / "report.json").read_text())["interval"]
    assert set(interval) >= {"level", "coverage", "mean_width", "per_bin", "significant_gap"}
    assert interval["level"] == 0.9 and abs(interval["coverage"] - 0.9) <= 0.15
    truth = pd.read_csv(out).assign(age=[_cinc_age(cinc, i) for i in frame["ids"]])
    inside = (truth["age"] >= truth["lower"]) & (truth["age"] <= truth["upper"])
    assert interval["coverage"] == pytest.approx(inside.mean())
    assert interval["mean_width"] == pytest.approx((truth["upper"] - truth["lower"]).mean())
    assert sum(b["n"] for b in interval["per_bin"]) == 48
    assert all(set(b) == {"lo", "hi", "n", "coverage", "mean_width"} for b in interval["per_bin"])
    assert interval["significant_gap"]["older"] + interval["significant_gap"]["younger"] == (~inside).sum()
    assert (report_dir / "interval_by_bin.png").stat().st_size > 0
    # the level comes from the notes; a different one given by hand is refused
    assert report_interface.entry(["--predictions", str(out), "--labels", str(cinc), "--out", str(tmp_path / "r2"),
                                   "--interval", "0.8"]) == 2


def _cinc_age(folder, record_id: str) -> float:
    header = (folder / f"{record_id}.hea").read_text()
    return float(next(line.split(":")[1] for line in header.splitlines() if line.startswith("# Age")))


def test_a_model_without_calibration_exits_2_and_writes_nothing(cinc, tmp_path):
    bundle = build_bundle(options.train_settings(options.parse_train(["--recipe", "modern", "--width", "0.25"])))
    path = save_checkpoint(tmp_path / "old.pt", bundle)
    out = tmp_path / "pred.csv"
    argv = ["--input", str(cinc), "--weights", str(path), "--on_bad", "skip", "--output", str(out), "--cache_dir",
            str(tmp_path / "cache"), "--quiet"]
    assert test_interface.entry([*argv, "--interval", "0.9"]) == 2
    assert not out.exists() and not prediction_notes(out).exists()


def test_survival_grouped_by_a_significant_gap(code15, tmp_path):
    labels = pd.read_csv(code15 / "exams.csv")
    predicted = labels["nn_predicted_age"].to_numpy()
    half = np.where(np.arange(len(labels)) % 2 == 0, 3.0, 12.0)  # some intervals narrow, some wide
    pred = tmp_path / "pred.csv"
    pd.DataFrame({"ids": labels["exam_id"], "predicted_age": predicted, "lower": predicted - half,
                  "upper": predicted + half}).to_csv(pred, index=False)
    out = tmp_path / "report"
    assert report_interface.entry(["--predictions", str(pred), "--labels", str(code15 / "exams.csv"), "--out",
                                   str(out), "--interval", "0.9", "--survival", "--gap_groups", "interval",
                                   "--n_boot", "200", "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    groups = significant_gaps(predicted - half, predicted + half, labels["age"])
    assert report["survival"]["groups_by"] == "interval"
    assert report["survival"]["groups"] == {"younger": int((groups == "younger").sum()),
                                            "reference": int((groups == "within").sum()),
                                            "older": int((groups == "older").sum())}
    # without lower,upper the grouping cannot be made
    bare = tmp_path / "bare.csv"
    pd.DataFrame({"ids": labels["exam_id"], "predicted_age": predicted}).to_csv(bare, index=False)
    assert report_interface.entry(["--predictions", str(bare), "--labels", str(code15 / "exams.csv"), "--out",
                                   str(tmp_path / "r2"), "--survival", "--gap_groups", "interval"]) == 2

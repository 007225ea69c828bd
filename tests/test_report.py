"""report_interface: exact metrics, per-bin edges, bias correction, Cox on a simulated cohort, plots, bad inputs;
and the evaluation options of test_interface (test-time augmentation, stored bias correction)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SPEC, cli, need

import report_interface
import test_interface
from dataloader.records import LEADS
from utils import metrics
from utils.metrics import MIN_BOOTSTRAPPED


def test_metrics_by_hand():
    pred, true = np.array([30.0, 50.0, 40.0, 80.0]), np.array([20.0, 50.0, 45.0, 70.0])
    # errors 10, 0, -5, 10: MAE 25/4, RMSE sqrt(225/4), bias 15/4; SS_tot of true = 1268.75
    out = metrics.summary(pred, true)
    assert out["n"] == 4 and out["mae"] == 6.25 and out["bias"] == 3.75
    assert out["rmse"] == pytest.approx(np.sqrt(56.25))
    assert out["r2"] == pytest.approx(1 - 225 / 1268.75)
    assert out["pearson_r"] == pytest.approx(np.corrcoef(pred, true)[0, 1])
    assert np.isnan(metrics.summary(pred[:2], true[:2])["pearson_r"])  # through two points r is always ±1
    assert metrics.summary(pred[:3], true[:3])["pearson_r"] == pytest.approx(np.corrcoef(pred[:3], true[:3])[0, 1])


def test_per_bin_edges_decades_and_months():
    true = np.array([19.9, 20.0, 29.99, 30.0, 45.0])
    pred = true + np.array([1.0, -1.0, 2.0, 4.0, -3.0])
    bins = metrics.per_bin(pred, true)
    assert [(b["lo"], b["hi"], b["n"]) for b in bins] == [(10, 20, 1), (20, 30, 2), (30, 40, 1), (40, 50, 1)]
    assert bins[1]["mae"] == 1.5 and bins[1]["bias"] == 0.5
    children = np.array([0.5, 0.99, 1.0, 8.5])  # 6, 11.9, 12 and 102 months
    bins = metrics.per_bin(children + 0.1, children, unit="months")
    assert [(b["lo"], b["hi"], b["n"]) for b in bins] == [(0, 12, 2), (12, 24, 1), (96, 108, 1)]


def fit_bias_correction(pred, true) -> dict:
    """The gap-on-age line as training fits it: from the summable sums of its validation predictions."""
    return metrics.bias_correction_from_sums(metrics.gap_line_sums(pred, true))


def test_bias_correction_fitted_on_validation_only():
    rng = np.random.default_rng(0)
    valid_age = rng.uniform(20, 80, 400)
    valid_pred = 50 + 0.6 * (valid_age - 50) + rng.normal(0, 3, 400)  # regression to the mean
    correction = fit_bias_correction(valid_pred, valid_age)
    assert correction["slope"] == pytest.approx(-0.4, abs=0.03) and correction["n"] == 400
    assert metrics.gap_age_slope(metrics.apply_bias_correction(valid_pred, correction), valid_age) == \
        pytest.approx(0.0, abs=1e-9)
    test_age = rng.uniform(20, 80, 100)
    test_pred = 50 + 0.6 * (test_age - 50) + rng.normal(0, 3, 100)
    before = test_pred.copy()
    corrected = metrics.apply_bias_correction(test_pred, correction)
    assert np.array_equal(test_pred, before)  # the test predictions themselves are untouched
    assert abs(metrics.gap_age_slope(corrected, test_age)) < 0.1 < abs(metrics.gap_age_slope(test_pred, test_age))
    # the fit depends only on the validation data: other test data leave it unchanged
    assert fit_bias_correction(valid_pred, valid_age) == correction
    # predictions that barely follow age (slope of the gap near −1) get no correction
    with pytest.raises(ValueError, match="barely follow age"):
        fit_bias_correction(50 + 0.05 * (valid_age - 50) + rng.normal(0, 3, 400), valid_age)


def simulated_cohort(folder, n=20000, seed=0, hr_older=1.79, hr_younger=0.78):
    rng = np.random.default_rng(seed)
    age = rng.uniform(30, 85, n)
    male = rng.random(n) < 0.45
    gap = rng.normal(0, 9, n)
    hazard = 0.02 * np.exp(0.07 * (age - 60) + 0.3 * male + np.log(hr_older) * (gap > 8)
                           + np.log(hr_younger) * (gap < -8))
    event, censor = rng.exponential(1 / hazard), rng.uniform(2, 10, n)
    ids = np.arange(n) + 10_000
    pd.DataFrame({"exam_id": ids, "age": age, "is_male": male, "death": event < censor,
                  "timey": np.minimum(event, censor)}).to_csv(folder / "exams.csv", index=False)
    pd.DataFrame({"ids": ids, "predicted_age": age + gap}).to_csv(folder / "predicted_age.csv", index=False)
    return folder


def test_survival_recovers_known_hazard_ratios(tmp_path):
    simulated_cohort(tmp_path)
    out = tmp_path / "report"
    assert report_interface.entry(["--predictions", str(tmp_path / "predicted_age.csv"), "--labels",
                                   str(tmp_path / "exams.csv"), "--out", str(out), "--survival", "--n_boot",
                                   "200"]) == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("n", "mae", "rmse", "bias", "r2", "pearson_r", "per_bin", "mae_ci95"):
        assert key in report
    survival = report["survival"]
    for group, truth in (("older", 1.79), ("younger", 0.78)):
        assert set(survival[group]) == {"hr", "ci_low", "ci_high", "p"}
        assert survival[group]["ci_low"] <= truth <= survival[group]["ci_high"], (group, survival[group])
        assert survival[group]["p"] < 1e-3
    assert survival["per_year_gap"]["hr"] > 1 and survival["adjusted_for"] == ["age", "male"]
    for png in report["plots"]:
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert "kaplan_meier.png" in report["plots"]
    page = (out / "report.html").read_text()  # the page shows the hazard ratios as report.json has them
    assert "Survival by ECG-age gap" in page and "adjusted for age and sex" in page
    assert f"<td class=\"num\">{survival['older']['hr']:.2f}</td>" in page


def test_report_on_real_records_with_run_and_maic_formats(maic_adult, tmp_path):
    """A submission (FILENAME,AGE) against a MAIC label CSV; exact numbers recomputed here."""
    answers = pd.read_csv(maic_adult / "answer_adult.csv")
    submission = answers.assign(AGE=answers["AGE"] + np.array([3.0, -2.0, 5.0, 0.5, -1.0, 8.0]))
    submission.to_csv(tmp_path / "submission.csv", index=False)
    out = tmp_path / "r"
    assert report_interface.entry(["--predictions", str(tmp_path / "submission.csv"), "--labels",
                                   str(maic_adult / "answer_adult.csv"), "--out", str(out), "--n_boot", "200"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 6 and report["mae"] == pytest.approx(19.5 / 6) and report["bias"] == pytest.approx(2.25)
    assert report["mae_ci95"] is None  # six ECGs: too few for a bootstrap interval (utils.metrics.MIN_BOOTSTRAPPED)


@pytest.mark.parametrize("case,message", [
    ("none_match", "none of the"), ("implausible_age", "outside the plausible 0–125 years"),
    ("no_events", "no deaths"), ("no_columns", "needs columns death and timey"),
    ("foreign_shares", "1 id(s) not among the predictions (77)"), ("repeated_shares", "1 repeated id(s) (2)")])
def test_bad_report_inputs(tmp_path, capsys, case, message):
    pred = pd.DataFrame({"ids": [1, 2, 3, 4], "predicted_age": [50.0, 60, 70, 80]})
    labels = pd.DataFrame({"exam_id": [1, 2, 3, 4], "age": [51.0, 59, 72, 79], "is_male": [True, False] * 2,
                           "death": [True, False, False, True], "timey": [1.0, 2, 3, 4]})
    if case == "unmatched":
        pred.loc[3, "ids"] = 99
    elif case == "none_match":
        pred["ids"] = [91, 92, 93, 94]
    elif case == "implausible_age":
        labels.loc[2, "age"] = 150.0
    elif case == "no_events":
        labels["death"] = False
    elif case == "no_columns":
        labels = labels.drop(columns=["death", "timey"])
    shares = pd.DataFrame({"id": ["1", "2", "77" if case == "foreign_shares" else "3",
                                  "2" if case == "repeated_shares" else "4"], **{lead: [1 / 12] * 4 for lead in LEADS}})
    shares.to_csv(tmp_path / "lead_importance.csv", index=False)  # lead shares of the predicted records
    pred.to_csv(tmp_path / "p.csv", index=False)
    labels.to_csv(tmp_path / "l.csv", index=False)
    code = report_interface.entry(["--predictions", str(tmp_path / "p.csv"), "--labels", str(tmp_path / "l.csv"),
                                   "--out", str(tmp_path / "out"), "--survival", "--lead_importance",
                                   str(tmp_path / "lead_importance.csv")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out" / "report.json").exists()


def test_records_without_an_age_are_predicted_but_not_evaluated(tmp_path):
    """Issue 36: a prediction whose record has no label row, or a missing or non-numeric age, is shown with its age
    and no gap; the metrics are those of the records with an age, and the page says how many have none."""
    pred = pd.DataFrame({"ids": [1, 2, 3, 4, 5], "predicted_age": [50.0, 60, 70, 80, 40]})
    labels = pd.DataFrame({"exam_id": [1, 2, 3, 5], "age": ["51", "59", "unknown", "45"]})
    pred.to_csv(tmp_path / "p.csv", index=False)
    labels.to_csv(tmp_path / "l.csv", index=False)
    assert report_interface.entry(["--predictions", str(tmp_path / "p.csv"), "--labels", str(tmp_path / "l.csv"),
                                   "--out", str(tmp_path / "out"), "--n_boot", "200"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["n"], report["n_predictions"], report["without_age"]) == (3, 5, ["3", "4"])
    assert report["mae"] == pytest.approx((1 + 1 + 5) / 3)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "2 of the 5 ECGs have no age on record" in page and page.count("<tr data-flag") == 5
    assert report_interface.entry(["--predictions", str(tmp_path / "p.csv"), "--out", str(tmp_path / "none")]) == 0
    report = json.loads((tmp_path / "none" / "report.json").read_text())
    assert report["n"] == 0 and "mae" not in report and report["plots"] == []
    assert "predicted ages (no ages on record)" in (tmp_path / "none" / "report.html").read_text()


@pytest.fixture(scope="module")
def resnet_with_correction(tmp_path_factory):
    """This project's checkpoint of the fixture ResNet1d with a stored bias correction."""
    from models.checkpoint import load_bundle, save_checkpoint

    fixture = torch.load(need(SPEC / "ResNet1d_small.pt"), weights_only=False)
    folder = tmp_path_factory.mktemp("corr")
    from models.registry import ResNet1d

    model = ResNet1d(**fixture["config"])
    model.load_state_dict(fixture["state_dict"])
    with torch.no_grad():  # into the adult range: the untrained fixture predicts about 0
        model.lin.bias += 50.0
    torch.save({"model": model.state_dict()}, folder / "seed.pt")
    bundle = load_bundle(folder / "seed.pt")
    bundle.bias_correction = {"intercept": 2.0, "slope": -0.5, "n": 10, "fitted_on": "validation"}
    save_checkpoint(folder / "best.pt", bundle, epoch=1)
    return folder / "best.pt"


def test_stored_bias_correction_and_tta_on_short_records(resnet_with_correction, ptbxl, tmp_path):
    manifest = tmp_path / "m.csv"
    table = pd.read_csv(ptbxl / "ptbxl_database.csv").head(3)
    pd.DataFrame({"path": [str(ptbxl / f) for f in table["filename_hr"]]}).to_csv(manifest, index=False)
    runs = {}
    for name, extra in (("plain", []), ("tta", ["--tta", "3"]), ("corr", ["--bias_correction"])):
        out = tmp_path / f"{name}.csv"
        assert cli(test_interface, ["--input", str(manifest), "--weights", str(resnet_with_correction),
                                    "--output", str(out), *extra], tmp_path) == 0
        runs[name] = pd.read_csv(out)["predicted_age"].to_numpy()
    np.testing.assert_allclose(runs["corr"], (runs["plain"] - 2.0) / 0.5, atol=1e-5)
    # 10 s at 400 Hz is 4000 samples, shorter than the 4096 window: every window is the whole record
    np.testing.assert_allclose(runs["tta"], runs["plain"], atol=1e-6)


def test_tta_averages_windows_covering_the_record(maic_adult, tmp_path):
    """The seed uses the first 4096 of 5000 samples; --tta 3 averages windows at 0, 452 and 904."""
    from dataloader.records import NpyFolderReader
    from models.checkpoint import load_bundle
    from models.preprocessing import preprocess, tta_specs
    from models.registry import get_model

    fixture = torch.load(need(SPEC / "ResUDenseNet_small.pt"), weights_only=False)
    model = get_model("ResUDenseNet", **fixture["config"])
    model.load_state_dict(fixture["state_dict"])
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "child.pt")
    folder = maic_adult / "ECG_adult_numpy_valid"
    runs = {}
    for name, extra in (("plain", []), ("tta", ["--tta", "3"])):
        out = tmp_path / f"{name}.csv"
        assert cli(test_interface, ["--input", str(folder), "--weights", str(tmp_path / "child.pt"), "--mode",
                                    "child", "--output", str(out), *extra], tmp_path) == 0
        runs[name] = pd.read_csv(out)["predicted_age"].to_numpy()
    bundle = load_bundle(tmp_path / "child.pt", mode="child")
    reader = NpyFolderReader(folder)
    expected = []
    for i in range(len(reader)):
        record = reader.load(i)
        x = torch.stack([torch.from_numpy(preprocess(record.signal, 500, s)) for s in tta_specs(bundle.preprocessing,
                                                                                                 3)])
        with torch.no_grad():
            expected.append(bundle.head(bundle.model(x)).mean().item())
    np.testing.assert_allclose(runs["tta"], expected, atol=1e-5)
    assert np.abs(runs["tta"] - runs["plain"]).max() > 1e-4


@pytest.mark.parametrize("tta", ["100000000", "65", "0"])
def test_tta_beyond_its_maximum_is_refused_before_any_work(maic_adult, tmp_path, capsys, tta):
    """Issue 26: --tta 100000000 ran for minutes and grew; each window is one more forward pass."""
    from utils.bounds import MAX_TTA

    code = test_interface.entry(["--input", str(maic_adult / "ECG_adult_numpy_valid"), "--weights",
                                 str(tmp_path / "never_read.pt"), "--tta", tta, "--output", str(tmp_path / "p.csv")])
    assert code == 2 and f"--tta must be ≥ 1 and ≤ {MAX_TTA}" in capsys.readouterr().err


def test_two_aged_records_give_no_correlation_and_the_summary_says_none(tmp_path, capsys):
    """Through two points a line always fits: the report leaves Pearson's r undefined (null) instead of ±1."""
    pd.DataFrame({"ids": ["a", "b", "c"], "predicted_age": [50.0, 61.0, 70.5]}).to_csv(tmp_path / "p.csv",
                                                                                      index=False)
    pd.DataFrame({"id": ["a", "b", "c"], "age": [48, 66, None]}).to_csv(tmp_path / "l.csv", index=False)
    assert report_interface.entry(["--predictions", str(tmp_path / "p.csv"), "--labels", str(tmp_path / "l.csv"),
                                   "--id_col", "id", "--age_col", "age", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["n"] == 2 and report["mae"] == pytest.approx(3.5) and report["pearson_r"] is None
    assert report["gap_age_slope"] is None  # nor a slope of the gap on age: two points fit any line exactly
    said = capsys.readouterr()
    assert "MAE 3.50" in said.out + said.err and " r " not in said.out + said.err
    # nor a bootstrap interval: resampling two errors gives their range (here 2.00–5.00), not a 95 % interval
    assert report["mae_ci95"] is None and "95% CI" not in said.out + said.err
    page = (tmp_path / "out" / "report.html").read_text()
    assert "3.50 y</td>" in page and "too few for the error&#39;s 95 % interval (it needs 10)" in page


@pytest.mark.parametrize("aged", [MIN_BOOTSTRAPPED - 1, MIN_BOOTSTRAPPED])
def test_the_maes_interval_needs_ten_aged_records(tmp_path, capsys, aged):
    """A bootstrap interval over fewer than utils.metrics.MIN_BOOTSTRAPPED errors is left out (null, and none on the
    page or the summary line); from there on it is given and holds the MAE."""
    rng = np.random.default_rng(aged)
    ages = rng.uniform(30, 80, aged).round(1)
    ids = [f"r{i}" for i in range(aged)]
    pd.DataFrame({"ids": ids, "predicted_age": ages + rng.normal(0, 6, aged)}).to_csv(tmp_path / "p.csv", index=False)
    pd.DataFrame({"id": ids, "age": ages}).to_csv(tmp_path / "l.csv", index=False)
    assert report_interface.entry(["--predictions", str(tmp_path / "p.csv"), "--labels", str(tmp_path / "l.csv"),
                                   "--id_col", "id", "--age_col", "age", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    said = capsys.readouterr()
    page = (tmp_path / "out" / "report.html").read_text()
    if aged < MIN_BOOTSTRAPPED:
        assert report["mae_ci95"] is None and "95% CI" not in said.out + said.err and "it needs 10" in page
    else:
        low, high = report["mae_ci95"]
        assert low < report["mae"] < high and f"95% CI {low:.2f}–{high:.2f}" in said.out + said.err
        assert f"{report['mae']:.2f} y ({low:.2f}–{high:.2f})" in page and "it needs 10" not in page


def test_a_patients_ecgs_are_resampled_together():
    """50 patients with 4 ECGs each whose errors are the patient's (as a person's ECGs are alike): resampled ECG by
    ECG the interval is about half as wide as it is (the 200 ECGs hold 50 independent errors), patient by patient
    it is right. Every ECG its own patient gives exactly the ECG-level interval; fewer than 10 patients, none."""
    rng = np.random.default_rng(3)
    true = rng.uniform(20, 90, 200)
    pred = true + np.repeat(rng.normal(0, 8, 50), 4)
    patients = np.repeat([f"p{k}" for k in range(50)], 4).tolist()
    by_ecg = metrics.bootstrap_ci(pred, true, seed=1)
    by_patient = metrics.bootstrap_ci(pred, true, seed=1, clusters=patients)
    assert (by_patient[1] - by_patient[0]) > 1.6 * (by_ecg[1] - by_ecg[0])
    mae = np.mean(np.abs(pred - true))
    assert by_patient[0] < mae < by_patient[1]
    assert metrics.bootstrap_ci(pred, true, seed=1, clusters=[None] * 200) == by_ecg
    assert metrics.bootstrap_ci(pred, true, seed=1, clusters=np.repeat(np.arange(9), 23)[:200].tolist()) is None
    assert metrics.cluster_labels(["a", None, "a", float("nan"), " ", 7]).tolist() == [1, 2, 1, 3, 4, 0]
    with pytest.raises(ValueError, match="199 cluster labels for 200 records"):
        metrics.bootstrap_ci(pred, true, clusters=patients[:199])


def test_a_report_on_ptbxl_resamples_its_patients(ptbxl, tmp_path):
    """Labels read from the PTB-XL database name each ECG's patient: report.json's interval resamples patients
    (and says so); a label CSV without patients resamples ECGs."""
    database = pd.read_csv(ptbxl / "ptbxl_database.csv")
    aged = database[database["age"] < 300]
    rng = np.random.default_rng(5)
    ids = aged["ecg_id"].astype(str).tolist()
    predicted = aged["age"].to_numpy(float) + rng.normal(0, 9, len(aged))
    pd.DataFrame({"ids": ids, "predicted_age": predicted}).to_csv(tmp_path / "p.csv", index=False)
    assert report_interface.entry(["--predictions", str(tmp_path / "p.csv"), "--labels", str(ptbxl), "--out",
                                   str(tmp_path / "r"), "--quiet"]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    patients = aged["patient_id"].tolist()
    assert report["ci_resampled"] == "patients" and report["n_patients"] == len(set(patients)) < len(aged)
    assert report["mae_ci95"] == pytest.approx(metrics.bootstrap_ci(predicted, aged["age"].to_numpy(float),
                                                                    clusters=patients), abs=1e-9)
    pd.DataFrame({"id": ids, "age": aged["age"]}).to_csv(tmp_path / "l.csv", index=False)
    assert report_interface.entry(["--predictions", str(tmp_path / "p.csv"), "--labels", str(tmp_path / "l.csv"),
                                   "--id_col", "id", "--age_col", "age", "--out", str(tmp_path / "s"),
                                   "--quiet"]) == 0
    plain = json.loads((tmp_path / "s" / "report.json").read_text())
    assert plain["ci_resampled"] == "ECGs" and "n_patients" not in plain
    assert plain["mae"] == pytest.approx(report["mae"], abs=1e-12)
    assert plain["mae_ci95"] == pytest.approx(metrics.bootstrap_ci(predicted, aged["age"].to_numpy(float)), abs=1e-9)
    assert plain["mae_ci95"] != pytest.approx(report["mae_ci95"], abs=1e-6)
    # the same CSV with a patient_id column: whole patients, as from the database
    pd.DataFrame({"id": ids, "age": aged["age"], "patient_id": patients}).to_csv(tmp_path / "lp.csv", index=False)
    assert report_interface.entry(["--predictions", str(tmp_path / "p.csv"), "--labels", str(tmp_path / "lp.csv"),
                                   "--id_col", "id", "--age_col", "age", "--out", str(tmp_path / "t"),
                                   "--quiet"]) == 0
    named = json.loads((tmp_path / "t" / "report.json").read_text())
    assert named["ci_resampled"] == "patients" and named["n_patients"] == report["n_patients"]
    assert named["mae_ci95"] == pytest.approx(report["mae_ci95"], abs=1e-9)


def test_the_bootstrap_draws_in_bounded_blocks_and_gives_the_same_interval(monkeypatch):
    """2,000 resamples of a million ECGs drawn at once were 16 GB of indices; drawn in blocks of BOOTSTRAP_DRAWS
    indices they are the same stream, so the interval is the one the whole draw gives (here in blocks of 3
    resamples)."""
    rng = np.random.default_rng(1)
    true = rng.uniform(20, 90, 1000)
    pred = true + rng.normal(0, 8, 1000)
    draws = np.random.default_rng(7).integers(0, 1000, size=(500, 1000))  # all at once, as before
    values = np.abs((pred - true)[draws]).mean(axis=1)
    expected = [np.percentile(values, 2.5), np.percentile(values, 97.5)]
    monkeypatch.setattr(metrics, "BOOTSTRAP_DRAWS", 3000)
    assert metrics.bootstrap_ci(pred, true, n_boot=500, seed=7) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="n_boot must be from 200 to 100000"):
        metrics.bootstrap_ci(pred, true, n_boot=1)

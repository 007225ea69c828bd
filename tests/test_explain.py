"""Explanations (issue 18): lead shares, the deletion test, the 12-lead figure, where a model input's samples lie in
the record, the explanation folder, and the cohort's lead importance in the report."""
from __future__ import annotations

import json
import shutil

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import torch

import report_interface
import test_interface
from dataloader.formats import open_reader
from dataloader.records import LEADS
from engine.predict.explain import deletion_test, explain_record
from engine.predict.explanations import DEFAULT_METHOD, LEAD_IMPORTANCE, METHODS, figure_name
from models.checkpoint import load_bundle
from models.preprocessing import LIMA, MAIC, MODERN, input_times, preprocess
from utils.plots import ECG_DPI, ECG_LAYOUT, ecg_figure

CINC_SUBSET = ("E07500", "E07503", "E07507", "HR06000", "HR06004", "JS20000", "JS20005", "JS20010")
CINC_FOUR = ("E07500", "HR06000", "JS20000", "JS20005")


def copy_records(cinc, folder, names):
    for name in names:
        for suffix in (".hea", ".mat"):
            shutil.copy(cinc / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder


@pytest.fixture(scope="module")
def cinc_few(cinc, tmp_path_factory):
    """Eight CinC records (three sources) in a folder of their own."""
    return copy_records(cinc, tmp_path_factory.mktemp("cinc_few"), CINC_SUBSET)


@pytest.fixture(scope="module")
def cinc_four(cinc, tmp_path_factory):
    return copy_records(cinc, tmp_path_factory.mktemp("cinc_four"), CINC_FOUR)


@pytest.mark.parametrize("spec", [LIMA, MAIC, MODERN])
@pytest.mark.parametrize("samples,fs", [(5000, 500.0), (3000, 500.0), (12000, 1000.0), (9000, 250.0)])
def test_input_times_say_where_each_input_sample_lies(spec, samples, fs):
    """A record whose every sample holds its own time: preprocessing without filters or scaling returns, at each
    input sample, the time input_times names (padding: zeros where it says NaN)."""
    plain = type(spec)(fs=spec.fs, length=spec.length, crop=spec.crop, pad=spec.pad, zscore=False, bandpass=None,
                       nan_to_zero=False)
    ramp = np.tile(np.arange(samples) / fs, (12, 1))
    x = preprocess(ramp, fs, plain)[0]
    times = input_times(samples, fs, plain)
    inside = np.isfinite(times)
    edge = int(0.05 * plain.fs)  # the resampling filter's edge effects at the record's ends
    core = inside & (times > edge / plain.fs) & (times < samples / fs - edge / plain.fs)
    np.testing.assert_allclose(x[core], times[core], rtol=1e-3, atol=2e-3)  # the resampling filter: DC gain 1 ± 4e-4
    assert np.all(x[~inside] == 0)


@pytest.fixture(scope="module")
def members(modern_cv_run):
    _, run = modern_cv_run
    return [load_bundle(run / "fold_0"), load_bundle(run / "fold_1")]


@pytest.mark.parametrize("method", METHODS)
def test_shares_are_finite_non_negative_and_sum_to_one(members, cinc_few, method):
    reader = open_reader(cinc_few)
    record = reader.load(0)
    found = explain_record(members, record, 0.5, method, torch.device("cpu"))
    assert found.shares.shape == (12,) and np.isfinite(found.shares).all() and (found.shares >= 0).all()
    assert found.shares.sum() == pytest.approx(1.0)
    assert found.attribution.shape == record.signal.shape and (found.attribution >= 0).all()
    assert found.attribution.max() > 0


def test_deletion_test_the_most_important_lead_matters_more(members, cinc_few):
    """Replacing each record's most important lead (by the default method) by faint noise changes the ensemble's
    age more, on average, than replacing its least important one."""
    reader = open_reader(cinc_few)
    records = [reader.load(i) for i in range(len(reader))]
    result = deletion_test(members, records, [0.5] * len(records), DEFAULT_METHOD, torch.device("cpu"))
    assert len(result["most"]) == len(CINC_SUBSET)
    assert result["most"].mean() > result["least"].mean(), result


def test_explain_writes_lead_importance_and_clinical_figures(modern_cv_run, cinc_four, tmp_path):
    tmp, run = modern_cv_run
    out, folder = tmp_path / "pred.csv", tmp_path / "expl"
    argv = ["--input", str(cinc_four), "--weights", str(run), "--interval", "0.9", "--explain", str(folder),
            "--output", str(out), "--cache_dir", str(tmp / "cache"), "--quiet"]
    assert test_interface.entry(argv) == 0
    shares = pd.read_csv(folder / LEAD_IMPORTANCE, dtype={"id": str})
    assert list(shares.columns) == ["id", *LEADS] and sorted(shares["id"]) == sorted(CINC_FOUR)
    values = shares[list(LEADS)].to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all()
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-6)
    pngs = sorted(p.stem for p in folder.glob("*.png"))
    assert pngs == sorted(CINC_FOUR)
    image = mpimg.imread(folder / "E07500.png")
    # 10 s at 25 mm/s (250 mm) + margins wide, four 40-mm rows + title tall, at ECG_DPI
    assert image.shape[1] == pytest.approx((250 + 12) / 25.4 * ECG_DPI, abs=2)
    assert image.shape[0] == pytest.approx((4 * 40 + 12 + 12) / 25.4 * ECG_DPI, abs=2)
    # the cohort's lead importance in the report
    report = tmp_path / "report"
    assert report_interface.entry(["--predictions", str(out), "--labels", str(cinc_four), "--out", str(report),
                                   "--lead_importance", str(folder / LEAD_IMPORTANCE), "--n_boot", "200"]) == 0
    summary = json.loads((report / "report.json").read_text())["lead_importance"]
    assert summary["n"] == len(CINC_FOUR)
    assert summary["mean"] == pytest.approx(dict(zip(LEADS, values.mean(axis=0))))
    assert (report / "lead_importance.png").exists()
    # again into the same folder, one figure only: the folder is replaced whole (no figure of the earlier run
    # survives); a folder holding anything else is refused before any work
    assert test_interface.entry([*argv, "--explain_figures", "1"]) == 0
    assert len(list(folder.glob("*.png"))) == 1 and len(pd.read_csv(folder / LEAD_IMPORTANCE)) == len(CINC_FOUR)
    (folder / "notes.txt").write_text("mine")
    out.unlink()
    assert test_interface.entry(argv) == 2 and not out.exists()


def test_the_figure_is_the_twelve_lead_layout(cinc_few):
    record = open_reader(cinc_few).load(0)
    attribution = np.zeros_like(record.signal)
    attribution[LEADS.index("V2"), 1000:1500] = 1.0
    fig = ecg_figure(record.signal, record.fs, LEADS, attribution, "title", shares=np.full(12, 1 / 12))
    assert len(fig.axes) == 13  # 3 × 4 panels and the rhythm strip
    labels = [ax.texts[0].get_text().split()[0] for ax in fig.axes]
    assert labels == [lead for row in ECG_LAYOUT for lead in row] + ["II"]
    widths = sorted({round(ax.get_position().width, 5) for ax in fig.axes})
    assert len(widths) == 2 and widths[1] == pytest.approx(4 * widths[0], rel=1e-4)  # 2.5-s panels, one 10-s strip
    # a record longer than 10 s shows the 10 s holding the attribution
    long = np.tile(record.signal, (1, 3))
    marked = np.zeros_like(long)
    marked[:, 12000:13000] = 1.0
    strip = ecg_figure(long, record.fs, LEADS, marked, "long").axes[-1]
    assert strip.lines[0].get_xdata()[0] == 0.0 and len(strip.lines[0].get_xdata()) == 5000


def test_figure_names_are_safe_and_distinct():
    taken: set[str] = set()
    names = [figure_name(i, taken) for i in ("a/b", "a_b", "../x", "ok-1.2")]
    assert names[0] == "a_b.png" and names[1].startswith("a_b_") and names[2] == "_x.png" and names[3] == "ok-1.2.png"
    assert len(set(names)) == 4


def test_explanations_delete_only_what_they_recorded_and_resume(modern_cv_run, cinc_four, tmp_path, monkeypatch,
                                                                 capsys):
    """Issue 26: a user's sub-folder named like a figure was deleted; an interrupted --explain wrote nothing (not
    even the finished predictions) and started again from scratch."""
    import engine.predict.explain as explain_module

    tmp, run = modern_cv_run
    out, folder = tmp_path / "pred.csv", tmp_path / "expl"
    argv = ["--input", str(cinc_four), "--weights", str(run), "--explain", str(folder), "--output", str(out),
            "--cache_dir", str(tmp / "cache"), "--quiet"]
    real, calls = explain_module.explain_record, []

    def interrupted(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the run after two explanations
        calls.append(args[1].id)
        return real(*args, **kwargs)

    monkeypatch.setattr(explain_module, "explain_record", interrupted)
    monkeypatch.setattr(explain_module, "INDEX_EVERY_SECONDS", 0.0)
    with pytest.raises(KeyboardInterrupt):
        test_interface.entry(argv)
    assert len(pd.read_csv(out)) == len(CINC_FOUR)  # the predictions were written first
    assert len(list(folder.glob("*.png"))) == 2 and not (folder / LEAD_IMPORTANCE).exists()
    done = list(calls)
    monkeypatch.setattr(explain_module, "explain_record", real)
    counted = []
    monkeypatch.setattr(explain_module, "explain_record", lambda *a, **k: counted.append(a[1].id) or real(*a, **k))
    assert test_interface.entry(argv) == 0
    assert sorted(counted) == sorted(set(CINC_FOUR) - set(done))  # resumed: only the two left were explained
    assert sorted(pd.read_csv(folder / LEAD_IMPORTANCE, dtype={"id": str})["id"]) == sorted(CINC_FOUR)
    # a user's sub-folder named like a figure, and a user's file: refused, listed, kept
    (folder / "mine.png").mkdir()
    (folder / "mine.png" / "notes.txt").write_text("mine")
    code = test_interface.entry([*argv, "--explain_figures", "1"])
    assert code == 2 and "mine.png" in capsys.readouterr().err
    assert (folder / "mine.png" / "notes.txt").exists() and len(list(folder.glob("E*.png"))) >= 1
    shutil.rmtree(folder / "mine.png")
    assert test_interface.entry([*argv, "--explain_figures", "1"]) == 0  # another job: the recorded files replaced
    assert len([p for p in folder.iterdir() if p.suffix == ".png"]) == 1

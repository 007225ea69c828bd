"""A report of predictions against the ages on record: report.json with exact metrics, PNG plots, the age-gap bias
correction both ways, the Lima et al. mortality analysis, and report.html (engine/report/page.py).

``ReportSettings`` are report_interface's options (engine/report/settings.py); ``write_report`` is the whole job.
PyTorch is imported only for what needs a training run (``--run``, ``--weights``): a page needs no torch.
Predictions: ``ids,predicted_age`` (test_interface --input) or ``FILENAME,AGE`` (a submission). Labels: CODE-15%
exams.csv (exam_id, age, is_male, death, timey), a MAIC label CSV (FILENAME, GENDER, AGE), PTB-XL's
ptbxl_database.csv, or any CSV with ``--id_col`` / ``--age_col``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd

from dataloader.labels import patients
from engine.predict.notes import PredictionNotes
from engine.runs import CURVES, HISTORY, TENSORBOARD
from utils import metrics
from utils.calibration import interval_coverage, significant_gaps
from utils.cli import RESULT
from utils.errors import CheckpointError
from utils.io import beside, check_output_path, read_csv, write_json
from utils.plots import (
    plot_bland_altman,
    plot_error_by_bin,
    plot_interval_by_bin,
    plot_kaplan_meier,
    plot_learning_curves,
    plot_scatter,
)
from utils.survival import cox_by_gap, kaplan_meier
from utils.tables import LOWER, UPPER

from .explained import matched_explanations
from .inputs import ReportError, join, lead_importance, predictions_level, read_labels, read_predictions
from .page import PAGE, write_page
from .settings import ReportSettings

logger = logging.getLogger("report")
PLOTS = ("predicted_vs_true.png", "bland_altman.png", "error_by_bin.png", CURVES, "kaplan_meier.png",
         "interval_by_bin.png", "lead_importance.png")  # every plot a report may write
MAX_LISTED = 10_000  # ids listed in report.json (records without an age)


def interval_report(settings: ReportSettings, data: pd.DataFrame, out: Path,
                    notes: PredictionNotes | None) -> tuple[dict, Path]:
    """report.json["interval"]: level, coverage, mean width, per decade, and how many gaps are significant."""
    level = predictions_level(settings, Path(settings.predictions), notes)
    lower, upper, true = data[LOWER].to_numpy(), data[UPPER].to_numpy(), data["age"].to_numpy(float)
    groups = significant_gaps(lower, upper, true)
    result = {"level": level, **interval_coverage(lower, upper, true),
              "significant_gap": {"older": int((groups == "older").sum()),
                                  "younger": int((groups == "younger").sum()),
                                  "fraction": float((groups != "within").mean())}}
    result.pop("n")
    return result, plot_interval_by_bin(result["per_bin"], level, out / "interval_by_bin.png")


def error_report(pred, true, unit: str, n_boot: int, seed: int, patients: list | None = None) -> dict:
    """The metrics of ``pred`` against ``true``; the MAE's interval resamples whole ``patients`` where given."""
    report = {**metrics.summary(pred, true), **metrics.mae_interval(pred, true, n_boot, seed, patients)}
    report["bin_unit"] = unit
    report["per_bin"] = metrics.per_bin(pred, true, unit)
    report["gap_age_slope"] = metrics.gap_age_slope(pred, true)
    return report


def checkpoint_correction(settings: ReportSettings, trust: bool) -> tuple[dict | None, str | None]:
    source = settings.weights or (Path(settings.run) if settings.run else None)
    if source is None:
        return None, None
    from models.checkpoint import load_bundle  # a checkpoint is PyTorch's: only when --weights or --run is given

    try:
        bundle = load_bundle(source, trust=trust)
    except CheckpointError as exc:  # a run without a loadable checkpoint simply has no correction to report
        logger.warning(f"note: no bias correction read from {source} ({exc})")
        return None, None
    if bundle.bias_correction:
        try:
            metrics.check_bias_correction(bundle.bias_correction)
        except ValueError as exc:
            logger.warning(f"note: the bias correction stored in {bundle.source} is not used: {exc}")
            return None, None
    return bundle.bias_correction, bundle.source


def tensorboard_figures(run: Path, pngs: list[Path]) -> None:
    from torch.utils.tensorboard import SummaryWriter  # a training run's log (--run): the report needs no torch else

    writer = SummaryWriter(str(run / TENSORBOARD))
    for png in pngs:
        image = mpimg.imread(png)[..., :3]
        writer.add_image(f"report/{png.stem}", image, dataformats="HWC")
    writer.close()


def survival(settings: ReportSettings, data, survival_data, report: dict, out: Path, corrected: bool) -> Path:
    """Lima et al.'s analysis by age-gap group into ``report`` (and on bias-corrected ages when a correction is
    used); returns the Kaplan–Meier plot."""
    missing = [c for c in ("death", "timey") if c not in data.columns]
    if missing:
        raise ReportError(f"--survival needs columns death and timey in {settings.labels} (missing: "
                          f"{', '.join(missing)})")
    incomplete = data.loc[data[["death", "timey"]].isna().any(axis=1), "id"].tolist()
    if incomplete:
        raise ReportError(f"{len(incomplete)} record(s) lack death/timey in {settings.labels}: "
                          f"{', '.join(incomplete[:20])}")
    if settings.gap_groups == "interval":
        if LOWER not in data.columns:
            raise ReportError(f"--gap_groups interval needs predictions with lower,upper ({settings.predictions} has "
                              f"none: predict with test_interface --interval LEVEL)")
        groups = significant_gaps(data[LOWER], data[UPPER], data["age"])
        report["survival"] = cox_by_gap(data, settings.gap_threshold, groups)
        return plot_kaplan_meier(kaplan_meier(data, settings.gap_threshold, groups), out / "kaplan_meier.png",
                                 settings.gap_threshold, "a significant gap (age outside the interval)")
    report["survival"] = cox_by_gap(data, settings.gap_threshold)
    if corrected:
        report["survival_bias_corrected"] = cox_by_gap(survival_data, settings.gap_threshold)
    return plot_kaplan_meier(kaplan_meier(survival_data, settings.gap_threshold), out / "kaplan_meier.png",
                             settings.gap_threshold)


OWN = ("report.json", PAGE)  # with the plots report.json lists: the files a report writes in --out


def check_outputs(settings: ReportSettings, out: Path) -> None:
    """--out is a folder (or not there yet), and no file the report writes may replace one it reads (the labels
    saved as report.json in --out, say)."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file; give a folder for the report (it is made if it is not there)")
    inputs = [settings.predictions, settings.labels, settings.history, settings.weights, settings.lead_importance,
              *([Path(settings.run) / HISTORY] if settings.run else [])]
    for name in (*OWN, *PLOTS):
        check_output_path(out / name, [p for p in inputs if p], flag="--out")


def write_report(settings: ReportSettings, trust: bool = False, labels: pd.DataFrame | None = None) -> Path:
    """The report of ``settings.predictions`` (against the ages on record: ``settings.labels``, or ``labels``, the
    table of records that carry their ages) in ``settings.out``: everything is read and checked first, then
    written in a staging folder and moved into place — all of it, or nothing. Returns the page."""
    out = Path(settings.out)
    check_outputs(settings, out)
    predictions = read_predictions(Path(settings.predictions))
    notes = PredictionNotes.read(Path(settings.predictions))
    if labels is None and settings.labels:
        labels = read_labels(Path(settings.labels), settings.id_col, settings.age_col, settings.group_col)
    data, without_age = join(predictions, labels, settings.predictions, settings.labels)
    explained = matched_explanations(Path(settings.explanations), data, notes) if settings.explanations else {}
    made = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with beside(out / "report.json", "stage", folder=True) as stage:
            report = build_report(settings, trust, data, without_age, notes, explained, stage)
            publish(stage, out, [*report["plots"], "report.json", PAGE])
    except BaseException:
        if not made:
            shutil.rmtree(out, ignore_errors=True)  # a folder this report made: nothing of a failed report stays
        raise
    if settings.run:
        tensorboard_figures(Path(settings.run), [out / name for name in report["plots"]])
    summary = f"{report['n']} of the {len(data)} ECG(s) predicted have an age and were not trained on"
    if report["in_training"]["n_aged"]:
        summary += f" ({report['in_training']['n_aged']} more with an age left out: the model was trained on them)"
    if report["n"] >= MIN_EVALUATED:
        summary += (f"  MAE {report['mae']:.2f}{metrics.interval_text(report['mae_ci95'], '95% CI ')}  RMSE "
                    f"{report['rmse']:.2f}  bias {report['bias']:+.2f}")
        if math.isfinite(report["pearson_r"]):
            summary += f"  r {report['pearson_r']:.3f}"
    logger.log(RESULT, f"{summary}  → {out / 'report.json'}, {out / PAGE}")
    return out / PAGE


def build_report(settings: ReportSettings, trust: bool, data: pd.DataFrame, without_age: list, notes, explained,
                 stage: Path) -> dict:
    """report.json, the plots and the page written in ``stage``; returns report.json's content."""
    aged = data[data["age"].notna()].reset_index(drop=True)
    named = set(notes.in_training) if notes is not None and notes.in_training else set()
    seen = aged["id"].astype(str).isin(named).to_numpy()
    aged = aged[~seen].reset_index(drop=True)  # no test on what it learnt
    report = {**cohort_report(settings, aged, len(data), without_age),
              "in_training": training_overlap(data, named, int(seen.sum()), notes)}
    plots, correction = [], None
    if report["n"] >= MIN_EVALUATED:
        correction, plots = evaluated(settings, trust, aged, report, notes, stage)
    elif LOWER in data.columns:
        report["interval"] = {"level": predictions_level(settings, Path(settings.predictions), notes)}
    elif settings.interval is not None:
        raise ReportError(f"--interval {settings.interval:g}: {settings.predictions} has no lower,upper columns")
    history = Path(settings.history) if settings.history else (Path(settings.run) / HISTORY if settings.run else None)
    if history is not None and history.exists():
        plots.append(plot_learning_curves(read_csv(history, "a history.csv"), stage / CURVES))
    if settings.lead_importance:
        report["lead_importance"], figure = lead_importance(Path(settings.lead_importance), stage, data["id"])
        plots.append(figure)
    if settings.survival:
        plots.append(survival(settings, aged, aged.assign(predicted=correction) if correction is not None else aged,
                              report, stage, corrected=correction is not None))
    report["plots"] = [p.name for p in plots]
    write_json(stage / "report.json", report)
    write_page(stage, report, data, notes, explained, page_title(settings, report))
    return report


MIN_EVALUATED = 2  # ECGs with a recorded age below which there are no accuracy figures


def training_overlap(data: pd.DataFrame, named: set[str], aged: int, notes: PredictionNotes | None) -> dict:
    """report.json's account of the predicted records the model was trained on (``named``: the notes'
    ``in_training``, found by fingerprint; ``aged`` of them have an age and are left out of the accuracy figures):
    {checked, n, n_aged, ids (the first MAX_LISTED)}."""
    ids = [rid for rid in data["id"].astype(str) if rid in named]
    return {"checked": notes is not None and notes.in_training is not None, "n": len(ids), "n_aged": aged,
            "ids": ids[:MAX_LISTED]}


def cohort_report(settings: ReportSettings, aged: pd.DataFrame, total: int, without_age: list) -> dict:
    """report.json's head: how many predictions, how many have an age (the metrics are theirs), and the metrics."""
    report = {"n": len(aged), "n_predictions": total, "n_without_age": len(without_age),
              "without_age": without_age[:MAX_LISTED],
              "bootstrap": {"n_boot": settings.n_boot, "seed": settings.seed, "level": 0.95},
              "inputs": {"predictions": str(settings.predictions), "labels": settings.labels}}
    if len(aged) >= MIN_EVALUATED:
        pred, true = aged["predicted"].to_numpy(float), aged["age"].to_numpy(float)
        unit = settings.bins if settings.bins != "auto" else ("months" if true.max() < 10 else "years")
        report = {**error_report(pred, true, unit, settings.n_boot, settings.seed, patients(aged)), **report}
        if "group" in aged.columns:
            report["groups"] = {str(g): error_report(rows["predicted"].to_numpy(float), rows["age"].to_numpy(float),
                                                     unit, settings.n_boot, settings.seed, patients(rows))
                                for g, rows in aged.groupby("group", sort=True) if len(rows) >= MIN_EVALUATED}
    return report


def evaluated(settings: ReportSettings, trust: bool, aged: pd.DataFrame, report: dict, notes,
              stage: Path) -> tuple[np.ndarray | None, list[Path]]:
    """The figures and metrics that need recorded ages: the bias correction, the accuracy plots, the intervals'
    coverage; returns (the bias-corrected ages or None, the plots)."""
    pred, true, unit = aged["predicted"].to_numpy(float), aged["age"].to_numpy(float), report["bin_unit"]
    corrected = None
    correction, source = checkpoint_correction(settings, trust)
    if correction:
        corrected = metrics.apply_bias_correction(pred, correction)
        report["bias_correction"] = {**correction, "source": source,
                                     "corrected": error_report(corrected, true, unit, settings.n_boot, settings.seed,
                                                               patients(aged))}
    plots = [plot_scatter(pred, true, stage / "predicted_vs_true.png"),
             plot_bland_altman(pred, true, stage / "bland_altman.png"),
             plot_error_by_bin(report["per_bin"], stage / "error_by_bin.png", unit)]
    if LOWER in aged.columns:
        report["interval"], figure = interval_report(settings, aged, stage, notes)
        plots.append(figure)
    elif settings.interval is not None:
        raise ReportError(f"--interval {settings.interval:g}: {settings.predictions} has no lower,upper columns")
    return corrected, plots


def page_title(settings: ReportSettings, report: dict) -> str:
    """No file names (they may name a person): what the ECGs are, and what the page compares."""
    what = settings.cohort or "the ECGs given"
    if report["n"] == 0:
        return f"{what}: predicted ages (no ages on record)"
    return f"{what}: predicted ages against the ages on record"


def publish(stage: Path, out: Path, names: list[str]) -> None:
    """The staged files moved into ``out`` (each an atomic rename, the page last) and the files of an earlier report
    there that this one does not write — those its report.json listed as its own — removed."""
    earlier = earlier_plots(out)
    for name in names:
        os.replace(stage / name, out / name)
    for name in set(earlier) - set(names):
        (out / name).unlink(missing_ok=True)


def earlier_plots(out: Path) -> list[str]:
    """The plots an earlier report in ``out`` recorded writing (plain names of this project's plots only)."""
    try:
        listed = json.loads((out / "report.json").read_text()).get("plots", []) if (out / "report.json").is_file() \
            else []
    except (OSError, ValueError, AttributeError):
        return []
    return [name for name in listed if isinstance(name, str) and name in PLOTS]

"""A report of predictions against the ages on record: report.json with exact metrics, PNG plots, the age-gap bias
correction both ways, the Lima et al. mortality analysis, and report.html (engine/report/page.py).

``ReportSettings`` are report_interface's options (engine/report/settings.py); ``write_report`` is the whole job.
PyTorch is imported only for what needs a training run (``--run``, ``--weights``): a page needs no torch.
Predictions: ``ids,predicted_age`` (test_interface --input) or ``FILENAME,AGE`` (a submission). Labels: CODE-15%
exams.csv (exam_id, age, is_male, death, timey), a MAIC label CSV (FILENAME, GENDER, AGE), PTB-XL's
ptbxl_database.csv, or any CSV with ``--id_col`` / ``--age_col``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd

from engine.predict.explanations import read_explanations
from engine.predict.notes import PredictionNotes
from engine.runs import CURVES, HISTORY, TENSORBOARD
from utils import metrics
from utils.calibration import interval_coverage, significant_gaps
from utils.cli import RESULT
from utils.errors import CheckpointError
from utils.io import check_output_path, read_csv, write_json
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

from .inputs import ReportError, join, lead_importance, predictions_level, read_labels, read_predictions
from .page import write_page
from .settings import ReportSettings

logger = logging.getLogger("report")


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


def error_report(pred, true, unit: str, n_boot: int, seed: int) -> dict:
    report = metrics.summary(pred, true)
    report["mae_ci95"] = metrics.bootstrap_ci(pred, true, n_boot=n_boot, seed=seed)
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


REPORT_FILES = ("report.json", "report.html", "predicted_vs_true.png", "bland_altman.png", "error_by_bin.png", CURVES,
                "kaplan_meier.png", "interval_by_bin.png", "lead_importance.png")


def check_outputs(settings: ReportSettings, out: Path) -> None:
    """No file the report writes may replace one it reads (the labels saved as report.json in --out, say)."""
    inputs = [settings.predictions, settings.labels, settings.history, settings.weights, settings.lead_importance,
              *([Path(settings.run) / HISTORY] if settings.run else [])]
    for name in REPORT_FILES:
        check_output_path(out / name, [p for p in inputs if p], flag="--out")


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


def write_report(settings: ReportSettings, trust: bool = False) -> None:
    """The report of ``settings.predictions`` against ``settings.labels`` in ``settings.out``."""
    out = Path(settings.out)
    check_outputs(settings, out)
    labels = read_labels(Path(settings.labels), settings.id_col, settings.age_col)
    data = join(read_predictions(Path(settings.predictions)), labels, settings.predictions, settings.labels)
    notes = PredictionNotes.read(Path(settings.predictions))
    pred, true = data["predicted"].to_numpy(float), data["age"].to_numpy(float)
    unit = settings.bins if settings.bins != "auto" else ("months" if true.max() < 10 else "years")
    report = {**error_report(pred, true, unit, settings.n_boot, settings.seed),
              "bootstrap": {"n_boot": settings.n_boot, "seed": settings.seed, "level": 0.95},
              "inputs": {"predictions": str(settings.predictions), "labels": str(settings.labels)}}

    survival_data = data
    correction, source = checkpoint_correction(settings, trust)
    if correction:
        corrected = metrics.apply_bias_correction(pred, correction)
        report["bias_correction"] = {**correction, "source": source,
                                     "corrected": error_report(corrected, true, unit, settings.n_boot, settings.seed)}
        survival_data = data.assign(predicted=corrected)

    plots = [plot_scatter(pred, true, out / "predicted_vs_true.png"),
             plot_bland_altman(pred, true, out / "bland_altman.png"),
             plot_error_by_bin(report["per_bin"], out / "error_by_bin.png", unit)]
    history = Path(settings.history) if settings.history else (Path(settings.run) / HISTORY if settings.run else None)
    if history is not None and history.exists():
        plots.append(plot_learning_curves(read_csv(history, "a history.csv"), out / CURVES))

    if LOWER in data.columns:
        report["interval"], figure = interval_report(settings, data, out, notes)
        plots.append(figure)
    elif settings.interval is not None:
        raise ReportError(f"--interval {settings.interval:g}: {settings.predictions} has no lower,upper columns")
    if settings.lead_importance:
        report["lead_importance"], figure = lead_importance(Path(settings.lead_importance), out, data["id"])
        plots.append(figure)
    if settings.survival:
        plots.append(survival(settings, data, survival_data, report, out, corrected=bool(correction)))

    report["plots"] = [p.name for p in plots]
    write_json(out / "report.json", report)
    explained = read_explanations(Path(settings.explanations)) if settings.explanations else {}
    page = write_page(out, report, data, notes, explained,
                      "predicted ages against the ages on record")  # no file names: they may name a person
    if settings.run:
        tensorboard_figures(Path(settings.run), plots)
    low, high = report["mae_ci95"]
    logger.log(RESULT, f"n {report['n']}  MAE {report['mae']:.2f} (95% CI {low:.2f}–{high:.2f})  "
                       f"RMSE {report['rmse']:.2f}  bias {report['bias']:+.2f}  r {report['pearson_r']:.3f}  → "
                       f"{out}/report.json, {page}")



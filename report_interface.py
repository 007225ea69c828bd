"""Evaluate predictions: report.json with exact metrics, PNG plots, the age-gap bias correction both ways and the
Lima et al. mortality analysis.

    python report_interface.py --predictions predicted_age.csv --labels exams.csv --out report/ [--survival]
    python report_interface.py --predictions score/submission.csv --labels answer.csv --out report/ \
        --run log/ResDenseNet_adult          # + learning curves, the run's bias correction, TensorBoard figures
    python report_interface.py --predictions predicted_age.csv --labels DIR --out report/ \
        --lead_importance expl/lead_importance.csv   # + interval coverage (lower,upper), cohort lead importance

Predictions: ``ids,predicted_age`` (test_interface --input) or ``FILENAME,AGE`` (a submission). Labels: CODE-15%
exams.csv (exam_id, age, is_male, death, timey), a MAIC label CSV (FILENAME, GENDER, AGE), PTB-XL's
ptbxl_database.csv, or any CSV with ``--id_col`` / ``--age_col``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
from torch.utils.tensorboard import SummaryWriter

import options as opts
from dataloader.formats import open_reader
from dataloader.labels import clean_id, male, read_any_labels, unique_labels
from dataloader.records import LEADS
from engine.predict.explain import read_explanations
from engine.report.page import write_page
from engine.runs import CURVES, HISTORY, TENSORBOARD
from models.checkpoint import load_bundle
from utils import metrics
from utils.bounds import AGE_RANGE, age_problem
from utils.calibration import interval_coverage, significant_gaps
from utils.cli import RESULT, configure_logging, run_main
from utils.errors import CheckpointError, RecordError, UserError
from utils.io import check_output_path, read_csv, regular_file, write_json
from utils.paths import prediction_notes
from utils.plots import (
    plot_bland_altman,
    plot_error_by_bin,
    plot_interval_by_bin,
    plot_kaplan_meier,
    plot_lead_importance,
    plot_learning_curves,
    plot_scatter,
)
from utils.settings import Settings, runtime
from utils.survival import cox_by_gap, kaplan_meier
from utils.tables import INTERVAL_COLUMNS, LOWER, PREDICTION_COLUMNS, UPPER

logger = logging.getLogger("report")
PREDICTION_FORMATS = (PREDICTION_COLUMNS, ("FILENAME", "AGE"), ("exam_id", "nn_predicted_age"))


class ReportError(UserError):
    pass


@dataclasses.dataclass(frozen=True)
class ReportSettings(Settings):
    """report_interface's options, typed (their help: options.add_report)."""

    predictions: str
    labels: str
    out: str
    id_col: str | None = None
    age_col: str | None = None
    survival: bool = False
    gap_threshold: float = 8.0
    gap_groups: str = "threshold"
    interval: float | None = None
    lead_importance: str | None = None
    explanations: str | None = None
    bins: str = "auto"
    run: str | None = None
    history: str | None = None
    weights: str | None = None
    n_boot: int = 2000
    seed: int = 0
    quiet: bool = runtime(False)
    trust_checkpoint: bool = runtime(False)


def read_predictions(path: Path) -> pd.DataFrame:
    """test_interface output, a MAIC submission, or CODE-15%'s exams.csv with the published model's predictions."""
    frame = read_csv(path, "a predictions CSV", dtype=str)
    for id_col, age_col in PREDICTION_FORMATS:
        if {id_col, age_col} <= set(frame.columns):
            out = pd.DataFrame({"id": frame[id_col].map(clean_id),
                                "predicted": pd.to_numeric(frame[age_col], errors="coerce")})
            bad = out["id"][[age_problem(a) is not None for a in out["predicted"]]].tolist()
            if bad:
                raise ReportError(f"{path}: {len(bad)} prediction(s) are missing, not numbers or implausible ages "
                                  f"(outside {AGE_RANGE[0]:g}–{AGE_RANGE[1]:g}): {', '.join(bad[:20])}")
            dup = out["id"][out["id"].duplicated()].unique().tolist()
            if dup:
                raise ReportError(f"{path}: id(s) listed more than once: {', '.join(dup[:20])}")
            return with_interval(out, frame, path)
    raise ReportError(f"{path}: expected columns ids,predicted_age, FILENAME,AGE or exam_id,nn_predicted_age "
                      f"(has {', '.join(frame.columns)})")


def with_interval(out: pd.DataFrame, frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The predictions' lower,upper columns (both or neither), each lower ≤ predicted ≤ upper."""
    present = [c for c in INTERVAL_COLUMNS if c in frame.columns]
    if not present:
        return out
    if len(present) == 1:
        raise ReportError(f"{path}: has {present[0]} but not {({'lower', 'upper'} - set(present)).pop()}; an "
                          f"interval needs both columns")
    lower, upper = (pd.to_numeric(frame[c], errors="coerce").to_numpy(float) for c in INTERVAL_COLUMNS)
    wrong = ~(np.isfinite(lower) & np.isfinite(upper) & (lower <= out["predicted"].to_numpy() + 1e-9) &
              (out["predicted"].to_numpy() <= upper + 1e-9))
    if wrong.any():
        raise ReportError(f"{path}: {int(wrong.sum())} interval(s) are missing, not numbers or do not hold their "
                          f"predicted age (lower ≤ predicted_age ≤ upper): {', '.join(out['id'][wrong].head(20))}")
    return out.assign(lower=lower, upper=upper)


def read_notes(path: Path) -> dict:
    """The notes test_interface wrote beside the predictions ({} where there are none or they cannot be read)."""
    notes = prediction_notes(path)
    try:
        found = json.loads(regular_file(notes, str(notes), max_bytes=16 << 20).read_text()) if notes.exists() else {}
    except (OSError, ValueError, RecursionError, RecordError):
        logger.warning(f"note: {notes} cannot be read; the report says nothing about the model")
        return {}
    return found if isinstance(found, dict) else {}


def predictions_level(settings: ReportSettings, path: Path) -> float:
    """The level of the predictions' intervals: --interval, or the notes test_interface wrote beside them."""
    notes, stored = prediction_notes(path), None
    if notes.exists():
        try:
            stored = json.loads(regular_file(notes, str(notes), max_bytes=16 << 20).read_text())["interval"]["level"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReportError(f"{notes}: cannot read the intervals' level from it ({exc}); pass --interval LEVEL") \
                from exc
    if settings.interval is not None and stored is not None and abs(settings.interval - stored) > 1e-12:
        raise ReportError(f"--interval {settings.interval:g}, but {notes} says the intervals are at level {stored:g}")
    level = settings.interval if settings.interval is not None else stored
    if level is None:
        raise ReportError(f"{path} has lower,upper but no {notes.name} beside it says their level; pass "
                          f"--interval LEVEL")
    return float(level)


def interval_report(settings: ReportSettings, data: pd.DataFrame, out: Path) -> tuple[dict, Path]:
    """report.json["interval"]: level, coverage, mean width, per decade, and how many gaps are significant."""
    level = predictions_level(settings, Path(settings.predictions))
    lower, upper, true = data[LOWER].to_numpy(), data[UPPER].to_numpy(), data["age"].to_numpy(float)
    groups = significant_gaps(lower, upper, true)
    result = {"level": level, **interval_coverage(lower, upper, true),
              "significant_gap": {"older": int((groups == "older").sum()),
                                  "younger": int((groups == "younger").sum()),
                                  "fraction": float((groups != "within").mean())}}
    result.pop("n")
    return result, plot_interval_by_bin(result["per_bin"], level, out / "interval_by_bin.png")


def lead_importance(path: Path, out: Path, ids: pd.Series) -> tuple[dict, Path]:
    """Mean (and SD) share of each lead over a cohort's lead_importance.csv, whose records must be among the
    predictions reported (``ids``): shares of other records would describe another cohort."""
    frame = read_csv(path, "a lead_importance.csv", dtype={"id": str})
    missing = [c for c in ("id", *LEADS) if c not in frame.columns]
    if missing:
        raise ReportError(f"{path}: lacks column(s) {', '.join(missing)} (test_interface --explain writes id and "
                          f"one column per lead)")
    foreign = frame.loc[~frame["id"].isin(set(ids)), "id"].tolist()
    repeated = frame.loc[frame["id"].duplicated(), "id"].tolist()
    if foreign or repeated:
        what = f"{len(foreign)} id(s) not among the predictions" if foreign else f"{len(repeated)} repeated id(s)"
        raise ReportError(f"{path}: {what} ({', '.join((foreign or repeated)[:10])}); give the lead_importance.csv "
                          f"that test_interface --explain wrote with these predictions")
    shares = frame[list(LEADS)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    wrong = ~(np.isfinite(shares).all(axis=1) & (shares >= 0).all(axis=1) & (np.abs(shares.sum(axis=1) - 1) < 1e-4))
    if wrong.any() or not len(frame):
        raise ReportError(f"{path}: {int(wrong.sum()) if len(frame) else 'no'} row(s) of lead shares that are not "
                          f"non-negative numbers summing to 1: {', '.join(frame['id'][wrong].head(20))}")
    mean = dict(zip(LEADS, shares.mean(axis=0).tolist()))
    result = {"source": str(path), "n": len(frame), "mean": mean, "sd": dict(zip(LEADS, shares.std(axis=0).tolist()))}
    return result, plot_lead_importance(mean, len(frame), out / "lead_importance.png")


def read_labels(path: Path, id_col: str | None, age_col: str | None) -> pd.DataFrame:
    """id, age, male, death, timey from a label CSV, or from records that carry their labels (WFDB headers,
    PTB-XL database, HDF5 + exams.csv)."""
    records = path.is_dir() or path.suffix.lower() in (".hdf5", ".h5")
    table = open_reader(path).table if records else read_any_labels(path, id_col, age_col)
    if "age" not in table.columns:
        raise ReportError(f"{path}: its records carry no ages")
    out = pd.DataFrame({"id": table["id"].astype(str), "age": pd.to_numeric(table["age"], errors="coerce")})
    if "sex" in table.columns:
        out["male"] = male(table["sex"])
    for col in ("death", "timey"):
        if col in table.columns:
            out[col] = pd.to_numeric(table[col], errors="coerce")
    return unique_labels(out, path)


def join(pred: pd.DataFrame, labels: pd.DataFrame, pred_path, label_path) -> pd.DataFrame:
    merged = pred.merge(labels, on="id", how="left", indicator=True)
    unmatched = merged.loc[merged["_merge"] == "left_only", "id"].tolist()
    if len(unmatched) == len(merged):
        raise ReportError(f"none of the {len(pred)} prediction ids of {pred_path} is in {label_path} "
                          f"(first ids: {', '.join(pred['id'].head(3))} vs {', '.join(labels['id'].head(3))}); "
                          f"check --id_col")
    if unmatched:
        raise ReportError(f"{len(unmatched)} prediction id(s) have no label in {label_path}: "
                          f"{', '.join(unmatched[:20])}")
    bad_age = merged.loc[[age_problem(a) is not None for a in merged["age"]], "id"].tolist()
    if bad_age:
        raise ReportError(f"{len(bad_age)} record(s) have a missing or non-numeric age, or one outside the plausible "
                          f"{AGE_RANGE[0]:g}–{AGE_RANGE[1]:g} years, in {label_path}: {', '.join(bad_age[:20])}")
    return merged.drop(columns="_merge")


def error_report(pred, true, unit: str, n_boot: int, seed: int) -> dict:
    report = metrics.summary(pred, true)
    report["mae_ci95"] = metrics.bootstrap_ci(pred, true, n_boot=n_boot, seed=seed)
    report["bin_unit"] = unit
    report["per_bin"] = metrics.per_bin(pred, true, unit)
    report["gap_age_slope"] = metrics.gap_age_slope(pred, true)
    return report


def checkpoint_correction(settings: ReportSettings) -> tuple[dict | None, str | None]:
    source = settings.weights or (Path(settings.run) if settings.run else None)
    if source is None:
        return None, None
    try:
        bundle = load_bundle(source, trust=settings.trust_checkpoint)
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


def main(argv=None) -> int:
    settings = ReportSettings.from_options(vars(opts.report_parser().parse_args(argv)))
    configure_logging(sys.stdout, settings.quiet)
    write_report(settings)
    return 0


def write_report(settings: ReportSettings) -> None:
    """The report of ``settings.predictions`` against ``settings.labels`` in ``settings.out``."""
    out = Path(settings.out)
    check_outputs(settings, out)
    labels = read_labels(Path(settings.labels), settings.id_col, settings.age_col)
    data = join(read_predictions(Path(settings.predictions)), labels, settings.predictions, settings.labels)
    pred, true = data["predicted"].to_numpy(float), data["age"].to_numpy(float)
    unit = settings.bins if settings.bins != "auto" else ("months" if true.max() < 10 else "years")
    report = {**error_report(pred, true, unit, settings.n_boot, settings.seed),
              "bootstrap": {"n_boot": settings.n_boot, "seed": settings.seed, "level": 0.95},
              "inputs": {"predictions": str(settings.predictions), "labels": str(settings.labels)}}

    survival_data = data
    correction, source = checkpoint_correction(settings)
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
        report["interval"], figure = interval_report(settings, data, out)
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
    page = write_page(out, report, data, read_notes(Path(settings.predictions)), explained,
                      "predicted ages against the ages on record")  # no file names: they may name a person
    if settings.run:
        tensorboard_figures(Path(settings.run), plots)
    low, high = report["mae_ci95"]
    logger.log(RESULT, f"n {report['n']}  MAE {report['mae']:.2f} (95% CI {low:.2f}–{high:.2f})  "
                       f"RMSE {report['rmse']:.2f}  bias {report['bias']:+.2f}  r {report['pearson_r']:.3f}  → "
                       f"{out}/report.json, {page}")


def entry(argv=None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(entry())

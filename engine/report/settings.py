"""report_interface's options, declared and typed (torch-free: a page is written without the training stack)."""
from __future__ import annotations

import dataclasses

from utils.bounds import GAP_THRESHOLD_RANGE, MAX_BOOT, MAX_SEED, MIN_BOOT
from utils.calibration import level_option
from utils.settings import Settings, number_between, option, whole_number


@dataclasses.dataclass(frozen=True)
class ReportSettings(Settings):
    """report_interface's options, declared and typed."""

    predictions: str = option(help="ids,predicted_age or FILENAME,AGE", required=True)
    out: str = option(help="folder for report.html (the page to open), report.json and the PNG plots", required=True)
    labels: str | None = option(None, "the ages on record: exams.csv, MAIC labels, PTB-XL database, any CSV, or "
                                      "records that carry their ages (CinC WFDB, DICOM, …); without it, or for records "
                                      "without an age, the page shows the predicted ages and intervals and no gap")
    id_col: str | None = option(None, "id column of --labels (auto for known formats)")
    age_col: str | None = option(None, "age column of --labels (auto for known formats)")
    survival: bool = option(False, "Cox and Kaplan–Meier by age-gap group (needs death, timey)")
    gap_threshold: float = option(8.0, "|gap| in years defining older/younger (--survival; Lima et al.: 8)",
                                  type=number_between(*GAP_THRESHOLD_RANGE, "years of ECG-age gap"))
    gap_groups: str = option("threshold", "--survival groups: the paper's ±--gap_threshold years, or a significant "
                                          "gap (the age outside the prediction's interval: needs predictions with "
                                          "lower,upper)", choices=("threshold", "interval"))
    interval: float | None = option(None, "level of the predictions' lower,upper (default: read from the "
                                          "predictions' .json beside them, written by test_interface)",
                                    type=level_option, metavar="LEVEL")
    explanations: str | None = option(None, "the folder test_interface --explain wrote: report.html gets one card "
                                            "per explained ECG (its age, interval, gap, lead shares and 12-lead "
                                            "figure)", metavar="DIR")
    lead_importance: str | None = option(None, "lead_importance.csv of test_interface --explain: mean share per lead "
                                               "over the cohort", metavar="CSV")
    bins: str = option("auto", "per-bin edges: decades (years) or 12-month bins in months; auto = months if all ages "
                               "< 10", choices=("auto", "years", "months"))
    run: str | None = option(None, "training run folder: learning curves, its bias correction, and the figures in "
                                   "its TensorBoard log")
    history: str | None = option(None, "history.csv for learning curves (default: the run's)")
    weights: str | None = option(None, "checkpoint whose stored bias correction to report")
    cohort: str | None = option(None, "what the ECGs are, in words, for the page's title (e.g. 'SYNTHETIC demo "
                                      "ECGs')", metavar="TEXT")
    group_col: str | None = option(None, "a column of --labels to report the metrics by as well (e.g. the MAIC "
                                         "mode: adults and children apart)", metavar="COLUMN")
    n_boot: int = option(2000, "bootstrap resamples for the MAE interval",
                         type=whole_number(MIN_BOOT, MAX_BOOT, "fewer leave the interval's tails to a few draws"))
    seed: int = option(0, "random seed of the bootstrap", type=whole_number(0, MAX_SEED, "a random seed"))

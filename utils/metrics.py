"""Error metrics of predicted vs chronological age, per-bin errors, bootstrap intervals and the age-gap bias
correction (regression to the mean).

All functions take plain arrays and return plain Python numbers/dicts, so report.json is exactly what they compute.
"""
from __future__ import annotations

import math

import numpy as np

from .bounds import AGE_RANGE, MAX_BIAS_GAP, MAX_BOOT, MIN_BOOT, finite_number
from .errors import CheckpointError


def _check(pred, true) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 1:
        raise ValueError(f"predictions {pred.shape} and ages {true.shape} must be 1-D of the same length")
    if len(pred) == 0:
        raise ValueError("no predictions to evaluate")
    if not (np.isfinite(pred).all() and np.isfinite(true).all()):
        raise ValueError("predictions and ages must be finite")
    return pred, true


MIN_CORRELATED = 3  # records below which Pearson's r is undefined here: through two points it is always ±1
# records below which no bootstrap interval is given: resampling a handful of errors draws an interval far narrower
# than its level claims (two records: their two errors' range; one record: a point)
MIN_BOOTSTRAPPED = 10
BOOTSTRAP_DRAWS = 1 << 22  # record indices drawn at once (32 MB): 2,000 resamples of a million ECGs were 16 GB


def summary(pred, true) -> dict:
    """n, mae, rmse, bias (mean of predicted − true), r2 (1 − SS_res/SS_tot), pearson_r (NaN for fewer than
    MIN_CORRELATED records or a constant side)."""
    pred, true = _check(pred, true)
    error = pred - true
    ss_res = float(np.sum(error ** 2))
    ss_tot = float(np.sum((true - true.mean()) ** 2))
    defined = len(pred) >= MIN_CORRELATED and pred.std() > 0 and true.std() > 0
    pearson = float(np.corrcoef(pred, true)[0, 1]) if defined else math.nan
    return {"n": int(len(pred)), "mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error ** 2))),
            "bias": float(np.mean(error)), "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan,
            "pearson_r": pearson}


def bin_edges(true, unit: str) -> np.ndarray:
    """Decades for adults (…, 20, 30, …); 12-month bins, in months, for children."""
    true = np.asarray(true, dtype=np.float64)
    if unit == "months":
        months = true * 12
        return np.arange(12 * math.floor(months.min() / 12), 12 * (math.floor(months.max() / 12) + 1) + 1, 12)
    return np.arange(10 * math.floor(true.min() / 10), 10 * (math.floor(true.max() / 10) + 1) + 1, 10)


def per_bin(pred, true, unit: str = "years") -> list[dict]:
    """[{lo, hi, n, mae, bias}] for every non-empty bin, lo ≤ age < hi (edges in ``unit``; errors in years)."""
    pred, true = _check(pred, true)
    scaled = true * 12 if unit == "months" else true
    edges = bin_edges(true, unit)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (scaled >= lo) & (scaled < hi)
        if inside.any():
            error = pred[inside] - true[inside]
            rows.append({"lo": float(lo), "hi": float(hi), "n": int(inside.sum()),
                         "mae": float(np.mean(np.abs(error))), "bias": float(np.mean(error))})
    return rows


def bootstrap_ci(pred, true, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                 clusters=None) -> list[float] | None:
    """Percentile bootstrap interval of the MAE (:func:`mean_interval` of the absolute errors); None for fewer than
    MIN_BOOTSTRAPPED clusters. ``clusters``: one label per record, e.g. its patient — resampled whole."""
    pred, true = _check(pred, true)
    return mean_interval(np.abs(pred - true), n_boot=n_boot, seed=seed, level=level, clusters=clusters)


def mean_interval(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                  clusters=None) -> list[float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (one per record: an absolute error, or the paired
    difference of two models' errors on it); None for fewer than MIN_BOOTSTRAPPED clusters. ``clusters`` (one label
    per record, e.g. its patient; a missing one is a cluster of its own; None: every record its own) are resampled
    whole — a patient's ECGs are not independent draws, and resampling them one by one makes the interval too
    narrow. Each draw's mean is its clusters' summed values over their summed counts; drawn in blocks of
    BOOTSTRAP_DRAWS indices, the same stream as all at once."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or not len(values) or not np.isfinite(values).all():
        raise ValueError(f"a bootstrap needs finite values, one per record (got shape {values.shape})")
    codes = np.arange(len(values)) if clusters is None else cluster_labels(clusters)
    if len(codes) != len(values):
        raise ValueError(f"{len(codes)} cluster labels for {len(values)} records")
    if codes.max(initial=-1) + 1 < MIN_BOOTSTRAPPED:
        return None
    if not MIN_BOOT <= n_boot <= MAX_BOOT:
        raise ValueError(f"n_boot must be from {MIN_BOOT} to {MAX_BOOT}, got {n_boot}")
    sums, counts = np.bincount(codes, weights=values), np.bincount(codes).astype(float)
    rng = np.random.default_rng(seed)
    rows = max(1, BOOTSTRAP_DRAWS // len(sums))  # resamples drawn at once
    means = []
    for first in range(0, n_boot, rows):
        draws = rng.integers(0, len(sums), size=(min(rows, n_boot - first), len(sums)))
        means.append(sums[draws].sum(axis=1) / counts[draws].sum(axis=1))
    tail = (1 - level) / 2 * 100
    means = np.concatenate(means)
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def cluster_labels(clusters) -> np.ndarray:
    """Each record's cluster as an integer (a missing label — None, NaN, '' — a cluster of its own)."""
    values = list(clusters)
    missing = np.array([v is None or (isinstance(v, float) and math.isnan(v)) or not str(v).strip() for v in values],
                       bool)
    codes = np.full(len(values), -1, np.int64)
    if (~missing).any():
        codes[~missing] = np.unique([str(v) for v, m in zip(values, missing) if not m], return_inverse=True)[1]
    codes[missing] = codes.max(initial=-1) + 1 + np.arange(int(missing.sum()))
    return codes


def mae_interval(pred, true, n_boot: int, seed: int, patients=None) -> dict:
    """cv.json's and report.json's interval fields: ``mae_ci95`` (:func:`bootstrap_ci`, whole ``patients``
    resampled where given), ``ci_resampled`` ("patients" or "ECGs") and, with patients, ``n_patients``."""
    fields = {"mae_ci95": bootstrap_ci(pred, true, n_boot=n_boot, seed=seed, clusters=patients),
              "ci_resampled": "ECGs" if patients is None else "patients"}
    if patients is not None:
        fields["n_patients"] = int(cluster_labels(patients).max(initial=-1) + 1)
    return fields


def interval_text(ci: list[float] | None, label: str = "") -> str:
    """A :func:`bootstrap_ci` interval as the project prints it after a figure — ' (95% CI 9.97–15.89)' with
    ``label`` '95% CI ' — or nothing where there is none (too few records)."""
    return f" ({label}{ci[0]:.2f}–{ci[1]:.2f})" if ci else ""


def gap_line_sums(pred, true) -> list[float]:
    """[n, Σage, Σgap, Σage², Σage·gap]: what the gap-on-age line needs, summable across processes."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    gap = pred - true
    return [float(len(true)), float(true.sum()), float(gap.sum()), float((true * true).sum()),
            float((true * gap).sum())]


def bias_correction_from_sums(sums) -> dict:
    """Least-squares line of the age gap on chronological age, gap = intercept + slope·age, from
    :func:`gap_line_sums` (the regression to the mean: young people are predicted older, old people younger)."""
    n, s_age, s_gap, s_age2, s_age_gap = (float(v) for v in sums)
    spread = n * s_age2 - s_age * s_age
    if n < 3 or not spread > 1e-9 * max(1.0, n * s_age2):
        raise ValueError("the bias correction needs at least 3 validation records with different ages")
    slope = (n * s_age_gap - s_age * s_gap) / spread
    correction = {"intercept": (s_gap - slope * s_age) / n, "slope": slope, "n": int(n), "fitted_on": "validation"}
    check_bias_correction(correction)
    return correction


MIN_RESPONSE = 0.2  # predictions must rise at least 0.2 years per year of age for the line to be inverted


def ensemble_mean(member_ages, axis: int = 0) -> np.ndarray:
    """An ensemble's age: the equal-weight mean of its members' ages (each bias-corrected first where asked) —
    one rule for PyTorch, onnxruntime, the out-of-fold ages and every interval calibrated on them."""
    return np.mean(np.asarray(member_ages, dtype=np.float64), axis=axis)


def check_bias_correction(correction: dict) -> None:
    """Refuse a correction that is not a line of two finite numbers, a line whose inversion would mostly amplify
    noise (with predictions nearly flat in age, 1 + slope < MIN_RESPONSE, the correction multiplies every error by
    more than 1/MIN_RESPONSE), and a line whose gap (predicted − true age) exceeds MAX_BIAS_GAP years anywhere in
    AGE_RANGE. Corrected ages outside AGE_RANGE are bad output like any other implausible age."""
    if not isinstance(correction, dict) or not all(finite_number(correction.get(k)) is not None
                                                   for k in ("intercept", "slope")):
        raise ValueError(f"a bias correction is {{'intercept': number, 'slope': number}}, got {correction!r:.200}")
    response = 1.0 + correction["slope"]
    if not response >= MIN_RESPONSE:
        effect = (f"inverting the line would amplify errors {1 / response:.0f}-fold" if response > 0 else
                  "the line cannot be inverted")
        raise ValueError(f"the predictions barely follow age (they rise {response:.2f} years per year; gap slope "
                         f"{correction['slope']:.3f}): {effect}, so no bias correction is used")
    gap = max(abs(correction["intercept"] + correction["slope"] * age) for age in AGE_RANGE)
    if gap > MAX_BIAS_GAP:
        raise ValueError(f"the correction (intercept {correction['intercept']:.4g}, slope {correction['slope']:.4g}) "
                         f"claims the model errs by up to {gap:.4g} years at some age in {AGE_RANGE[0]:g}–"
                         f"{AGE_RANGE[1]:g}, more than the {MAX_BIAS_GAP:g} allowed; it is not used")


def stored_correction(correction: dict | None, source: str) -> dict:
    """A model's stored bias correction, or the CheckpointError (exit 2) that says it has none."""
    if not correction:
        raise CheckpointError(f"{source}: has no stored bias correction (it is fitted on the validation split during "
                              f"training); run without --bias_correction")
    return correction


def apply_bias_correction(pred, correction: dict) -> np.ndarray:
    """Invert the fitted line: E[pred | age] = intercept + (1 + slope)·age, so the corrected age is
    (pred − intercept) / (1 + slope). Needs no chronological age, so it also serves submissions."""
    check_bias_correction(correction)
    return (np.asarray(pred, dtype=np.float64) - correction["intercept"]) / (1.0 + correction["slope"])


def gap_age_slope(pred, true) -> float:
    """Slope of the gap on age (0 when the gap carries no regression to the mean); NaN for fewer than
    MIN_CORRELATED records (a line through two points fits them exactly, whatever the model) or a single age."""
    pred, true = _check(pred, true)
    defined = len(pred) >= MIN_CORRELATED and true.std() > 0
    return float(np.polyfit(true, pred - true, 1)[0]) if defined else math.nan

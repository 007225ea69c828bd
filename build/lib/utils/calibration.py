"""Per-ECG intervals: split-conformal quantiles of the absolute residual, by band of predicted age.

A model keeps its **calibration** — the predicted ages and residuals (predicted − chronological) of records it never
trained on: its own validation split, or, for a cross-validated run, each fold model's held-out fold (pooled over
the members, that is the run's out-of-fold predictions). At prediction time an interval at level q is

    [predicted − r, predicted + r],  r = the ⌈(n + 1)·q⌉-th smallest |residual| of the n calibration records

(split conformal prediction with its finite-sample correction: for a record exchangeable with the calibration
records, P(age ∈ interval) ≥ q). Errors grow at the ends of the age range (regression to the mean), so r may be
taken per band of predicted age (Mondrian conformal: the guarantee then holds within each band). The number of bands
(1, 2, 3, 4 or 6, edges at quantiles of the predicted ages, each band at least ``min_band`` records) is chosen by
measured coverage: 5-fold cross-fitting inside the calibration records, and the count whose coverage per decade of
chronological age deviates least from q (weighted by the decade's records) is used; ties go to fewer bands.

Intervals are clipped to the plausible ages (utils/bounds.py). Numbers only: no torch here.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import numbers

import numpy as np

from .bounds import AGE_RANGE, MAX_CALIBRATION_RECORDS, is_real
from .errors import CheckpointError, UserError
from .metrics import apply_bias_correction, bin_edges

BAND_COUNTS = (1, 2, 3, 4, 6)
MIN_BAND_RECORDS = 30
CROSS_FIT_FOLDS = 5
SOURCES = ("validation", "pooled")


def conformal_quantile(scores, level: float) -> float:
    """The ⌈(n + 1)·level⌉-th smallest of ``scores`` (∞ when that exceeds n: too few records for the level)."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    k = math.ceil((len(scores) + 1) * level - 1e-12)
    return float(scores[k - 1]) if 1 <= k <= len(scores) else math.inf


def records_needed(level: float) -> int:
    """The fewest calibration records whose conformal quantile at ``level`` is finite."""
    return math.ceil(level / (1.0 - level) - 1e-12)


def check_level(level: float) -> float:
    if not is_real(level) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"an interval level is a probability strictly between 0 and 1 (e.g. 0.9), got {level!r}")
    return float(level)


def level_option(text: str) -> float:
    """An interval level given on the command line (the parse function of --interval)."""
    try:
        return check_level(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"an interval level is a probability strictly between 0 and 1 (e.g. 0.9), "
                                         f"got {text!r}") from None


@dataclasses.dataclass(frozen=True)
class Intervals:
    """Fitted intervals at one level: band edges on the predicted age and each band's half-width."""

    level: float
    edges: np.ndarray  # the inner edges, ascending (bands − 1 of them)
    half_width: np.ndarray  # per band
    counts: np.ndarray  # calibration records per band
    selection: list  # [{bands, deviation, coverage}] of every candidate band count, measured by cross-fitting

    def __call__(self, predicted) -> tuple[np.ndarray, np.ndarray]:
        predicted = np.asarray(predicted, dtype=np.float64)
        r = self.half_width[np.searchsorted(self.edges, predicted, side="right")]
        return np.clip(predicted - r, *AGE_RANGE), np.clip(predicted + r, *AGE_RANGE)

    def describe(self) -> dict:
        bounds = [None, *self.edges.tolist(), None]  # open ends: JSON has no infinity
        return {"level": self.level, "method": "split-conformal |residual| quantile by predicted-age band",
                "bands": [{"predicted_lo": lo, "predicted_hi": hi, "n": int(n), "half_width": float(r)}
                          for lo, hi, n, r in zip(bounds[:-1], bounds[1:], self.counts, self.half_width)],
                "selection": self.selection}


def _band_edges(predicted: np.ndarray, bands: int) -> np.ndarray:
    return np.unique(np.quantile(predicted, np.arange(1, bands) / bands)) if bands > 1 else np.zeros(0)


def _fit_bands(predicted: np.ndarray, scores: np.ndarray, bands: int, level: float, min_band: int):
    """(edges, half-widths, counts) with ``bands`` bands, or None where a band would hold fewer than ``min_band``."""
    edges = _band_edges(predicted, bands)
    which = np.searchsorted(edges, predicted, side="right")
    counts = np.bincount(which, minlength=len(edges) + 1)
    if len(edges) != bands - 1 or counts.min() < min_band:
        return None
    return edges, np.array([conformal_quantile(scores[which == b], level) for b in range(bands)]), counts


def _decade_deviation(covered: np.ndarray, ages: np.ndarray, level: float) -> float:
    """Σ_d n_d·|coverage_d − level| / n over decades of chronological age."""
    edges = bin_edges(ages, "years")
    which = np.digitize(ages, edges[1:-1])
    return float(sum(abs(covered[which == d].mean() - level) * (which == d).sum() for d in np.unique(which))
                 / len(ages))


def _cross_fit(predicted, scores, ages, bands: int, level: float, min_band: int, seed: int) -> dict | None:
    folds = np.random.default_rng(seed).permutation(len(predicted)) % CROSS_FIT_FOLDS
    covered = np.zeros(len(predicted), bool)
    for k in range(CROSS_FIT_FOLDS):
        fitted = _fit_bands(predicted[folds != k], scores[folds != k], bands, level, min_band)
        if fitted is None:
            return None
        edges, half_width, _ = fitted
        held = folds == k
        covered[held] = scores[held] <= half_width[np.searchsorted(edges, predicted[held], side="right")]
    return {"bands": bands, "deviation": _decade_deviation(covered, ages, level), "coverage": float(covered.mean())}


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Held-out predicted ages and residuals (predicted − age) of a model, at most MAX_CALIBRATION_RECORDS of them
    (an even random subsample of ``n``)."""

    predicted: np.ndarray
    residual: np.ndarray
    source: str = "validation"
    n: int = 0

    @classmethod
    def of(cls, predicted, ages, source: str = "validation", seed: int = 0) -> "Calibration":
        predicted, ages = np.asarray(predicted, np.float64), np.asarray(ages, np.float64)
        keep = np.isfinite(predicted) & np.isfinite(ages)
        predicted, residual = predicted[keep], predicted[keep] - ages[keep]
        n = len(predicted)
        if n > MAX_CALIBRATION_RECORDS:
            chosen = np.sort(np.random.default_rng(seed).choice(n, MAX_CALIBRATION_RECORDS, replace=False))
            predicted, residual = predicted[chosen], residual[chosen]
        return cls(predicted, residual, source, n)

    @classmethod
    def pooled(cls, calibrations: list["Calibration"]) -> "Calibration":
        if len(calibrations) == 1:
            return calibrations[0]
        joined = cls(np.concatenate([c.predicted for c in calibrations]),
                     np.concatenate([c.residual for c in calibrations]), "pooled",
                     sum(c.n for c in calibrations))
        if len(joined.predicted) <= MAX_CALIBRATION_RECORDS:
            return joined
        return dataclasses.replace(cls.of(joined.predicted, joined.ages, "pooled"), n=joined.n)  # subsampled

    @property
    def ages(self) -> np.ndarray:
        return self.predicted - self.residual

    def corrected(self, correct) -> "Calibration":
        """The calibration of ages passed through ``correct`` (the model's bias correction)."""
        return Calibration.of(correct(self.predicted), self.ages, self.source)

    def fit(self, level: float, seed: int = 0) -> Intervals:
        """Intervals at ``level``: the band count chosen by cross-fitted coverage per age decade (module text)."""
        level = check_level(level)
        needed = records_needed(level)
        min_band = max(MIN_BAND_RECORDS, 2 * needed)
        if len(self.predicted) < needed:
            raise ValueError(f"a {level:g} interval needs at least {needed} calibration records; the model has "
                             f"{len(self.predicted)} (its validation records): lower the level or calibrate on more "
                             f"records")
        scores = np.abs(self.residual)
        selection = [c for b in BAND_COUNTS if b == 1 or len(self.predicted) >= b * min_band * 5 / 4
                     for c in [_cross_fit(self.predicted, scores, self.ages, b, level, min_band, seed)] if c]
        best = min(selection, key=lambda c: (round(c["deviation"], 9), c["bands"]))["bands"] if selection else 1
        edges, half_width, counts = _fit_bands(self.predicted, scores, best, level, 1)
        return Intervals(level, edges, half_width, counts, selection)

    def to_dict(self) -> dict:
        return {"source": self.source, "n": int(self.n), "predicted": self.predicted.tolist(),
                "residual": self.residual.tolist()}

    @classmethod
    def from_dict(cls, data) -> "Calibration":
        """A stored calibration, every field checked (it comes from an untrusted checkpoint)."""
        if not isinstance(data, dict) or not {"predicted", "residual"} <= set(data):
            raise ValueError(f"a calibration is {{'predicted': [...], 'residual': [...]}}, got {str(data)[:100]}")
        arrays = []
        for key in ("predicted", "residual"):
            values = data[key]
            if not isinstance(values, (list, tuple)) or len(values) > MAX_CALIBRATION_RECORDS or not all(
                    is_real(v) for v in values):
                raise ValueError(f"calibration {key}: expected at most {MAX_CALIBRATION_RECORDS:,} numbers")
            arrays.append(np.asarray(values, dtype=np.float64))
        predicted, residual = arrays
        if len(predicted) != len(residual) or not len(predicted):
            raise ValueError("calibration predicted and residual must be non-empty and of equal length")
        ages = predicted - residual
        if not (np.isfinite(predicted).all() and np.isfinite(residual).all() and np.all(
                (ages >= AGE_RANGE[0] - 1e-6) & (ages <= AGE_RANGE[1] + 1e-6))):
            raise ValueError(f"calibration ages and residuals must be finite and the ages they imply plausible "
                             f"({AGE_RANGE[0]:g}–{AGE_RANGE[1]:g} years)")
        n = data.get("n", len(predicted))
        source = data.get("source", "validation")
        if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < len(predicted) or \
                source not in SOURCES:
            raise ValueError(f"calibration n must be a count ≥ its records and source one of {SOURCES}")
        return cls(predicted, residual, source, int(n))


def ensemble_intervals(members: list[tuple[str, "Calibration | None", dict | None]], level: float,
                       bias_correction: bool = False) -> Intervals:
    """Intervals at ``level`` for the mean age of an ensemble, given each member's (source, calibration, bias
    correction): fitted on the pool of their calibrations (each model's held-out residuals — for the members of a
    cross-validated run, their out-of-fold predictions; each passed through its own bias correction when
    ``bias_correction``). The residuals are single models', so an ensemble's intervals are, if anything,
    conservative."""
    missing = [source for source, calibration, _ in members if calibration is None]
    if missing:
        raise CheckpointError(f"{missing[0]}: carries no interval calibration ({len(missing)} of {len(members)} "
                              f"model(s) lack one; checkpoints trained before intervals existed, the seed's and the "
                              f"published ones have none). Train the model with this version (it keeps its "
                              f"validation residuals), or run without --interval")
    calibrations = [c.corrected(lambda p, k=k: apply_bias_correction(p, k)) if bias_correction else c
                    for _, c, k in members]
    try:
        return Calibration.pooled(calibrations).fit(level)
    except ValueError as exc:
        raise UserError(f"--interval {level:g}: {exc}") from exc


def interval_coverage(lower, upper, true) -> dict:
    """Coverage and mean width of intervals over records with known ages, overall and per decade of age."""
    lower, upper, true = (np.asarray(a, dtype=np.float64) for a in (lower, upper, true))
    covered = (true >= lower) & (true <= upper)
    width = upper - lower
    edges = bin_edges(true, "years")
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (true >= lo) & (true < hi)
        if mask.any():
            rows.append({"lo": float(lo), "hi": float(hi), "n": int(mask.sum()),
                         "coverage": float(covered[mask].mean()), "mean_width": float(width[mask].mean())})
    return {"n": int(len(true)), "coverage": float(covered.mean()), "mean_width": float(width.mean()),
            "per_bin": rows}


def significant_gaps(lower, upper, true) -> np.ndarray:
    """'older' where the chronological age lies below the interval (the ECG looks older than the person),
    'younger' above it, 'within' inside."""
    lower, upper, true = (np.asarray(a, dtype=np.float64) for a in (lower, upper, true))
    return np.where(true < lower, "older", np.where(true > upper, "younger", "within"))

"""The ECG-age mortality analysis of Lima et al. (2021): Cox proportional hazards by age-gap group.

Groups as in the paper: gap (ECG-age − age) > 8 years "older", < −8 "younger", otherwise the reference group.
The Cox model is adjusted for chronological age and sex; a second model gives the hazard ratio per year of gap.
Adjusting for age matters: the gap regresses to the mean (young people are predicted older, old people younger),
so unadjusted comparisons — and Kaplan–Meier curves of the raw groups — mix the gap's effect with age's.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter

from .errors import UserError


class SurvivalError(UserError):
    """Data that a survival analysis cannot use (no events, no reference group, non-positive follow-up)."""


def gap_groups(gap, threshold: float = 8.0) -> np.ndarray:
    gap = np.asarray(gap, dtype=np.float64)
    return np.where(gap > threshold, "older", np.where(gap < -threshold, "younger", "reference"))


def _hr(fitter, name: str) -> dict:
    row = fitter.summary.loc[name]
    return {"hr": float(row["exp(coef)"]), "ci_low": float(row["exp(coef) lower 95%"]),
            "ci_high": float(row["exp(coef) upper 95%"]), "p": float(row["p"])}


def cox_by_gap(frame: pd.DataFrame, threshold: float = 8.0, groups=None) -> dict:
    """``frame`` has predicted, age, death (0/1), timey (years) and optionally male (0/1); ``groups`` (older /
    younger / anything else = reference, per record) replaces the ±``threshold`` groups when given (a significant
    gap: the age outside the prediction's interval).
    Returns {'older': {hr, ci_low, ci_high, p}, 'younger': {...}, 'per_year_gap': {...}, 'groups': {...}, ...}."""
    data = pd.DataFrame({"timey": frame["timey"].astype(float), "death": frame["death"].astype(float),
                         "age": frame["age"].astype(float)})
    if "male" in frame.columns and frame["male"].notna().all():
        data["male"] = frame["male"].astype(float)
    if data["death"].sum() == 0:
        raise SurvivalError("no deaths among the records: a survival analysis needs events (death = 1)")
    if (data["timey"] <= 0).any():
        raise SurvivalError("follow-up times (timey) must be positive")
    gap = frame["predicted"].astype(float) - data["age"]
    grouping = {"threshold": threshold} if groups is None else {"threshold": None, "groups_by": "interval"}
    groups = gap_groups(gap, threshold) if groups is None else \
        np.where(np.isin(groups, ("older", "younger")), groups, "reference")
    counts = {g: int((groups == g).sum()) for g in ("younger", "reference", "older")}
    events = {g: int(data["death"][groups == g].sum()) for g in counts}
    missing = [g for g in ("older", "younger") if counts[g] == 0 or events[g] == 0]
    covariates = [c for c in ("age", "male") if c in data.columns]
    result = {**grouping, "adjusted_for": covariates, "groups": counts, "events": events}
    grouped = data.assign(older=(groups == "older").astype(float), younger=(groups == "younger").astype(float))
    grouped = grouped.drop(columns=[g for g in missing])
    if counts["reference"] == 0:
        raise SurvivalError("no record has a gap within ±threshold (or its interval): there is no reference group")
    fitter = CoxPHFitter().fit(grouped, duration_col="timey", event_col="death")
    for g in ("older", "younger"):
        result[g] = _hr(fitter, g) if g not in missing else None
    per_year = CoxPHFitter().fit(data.assign(gap=gap), duration_col="timey", event_col="death")
    result["per_year_gap"] = _hr(per_year, "gap")
    result["concordance"] = float(fitter.concordance_index_)
    return result


def kaplan_meier(frame: pd.DataFrame, threshold: float = 8.0, groups=None) -> dict[str, pd.DataFrame]:
    """Kaplan–Meier survival curves per gap group (±``threshold``, or ``groups`` as in :func:`cox_by_gap`):
    {group: DataFrame(timeline, survival)}."""
    groups = gap_groups(frame["predicted"].astype(float) - frame["age"].astype(float), threshold) \
        if groups is None else np.where(np.isin(groups, ("older", "younger")), groups, "reference")
    curves = {}
    for g in ("younger", "reference", "older"):
        mask = groups == g
        if mask.any():
            km = KaplanMeierFitter().fit(frame["timey"][mask].astype(float), frame["death"][mask].astype(float))
            curves[g] = pd.DataFrame({"timeline": km.survival_function_.index,
                                      "survival": km.survival_function_.iloc[:, 0].to_numpy()})
    return curves

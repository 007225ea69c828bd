"""``OUT/report.html``: the evaluation as one page a clinician opens — self-contained (figures as data URIs, styles
and a small sorting/filtering script inline, a Content-Security-Policy that lets nothing be fetched), readable on a
screen and printed (A4, one page per ECG card).

Jinja2 renders engine/templates/report.html with autoescaping on: every text — record ids, paths, notes — is
escaped, so an id like ``<script>`` is shown, never run. The page names records by their id only. No torch here.
"""
from __future__ import annotations

import base64
import datetime
import io
import math
import unicodedata
import warnings
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
from PIL import Image

from dataloader.records import LEADS
from engine.predict.notes import PredictionNotes
from utils.bounds import MAX_FIGURE_PIXELS, MAX_PAGE_CARDS, MAX_PAGE_ROWS
from utils.calibration import significant_gaps
from utils.io import write_text
from utils.machine import project_version
from utils.metrics import MIN_BOOTSTRAPPED, interval_text
from utils.tables import LOWER, UPPER

TEMPLATES = Path(__file__).parent / "templates"
PAGE = "report.html"
PALETTE = 256  # colours of an embedded 12-lead figure
SMALL_COHORT = 100  # fewer ECGs than this: the page says the MAE's interval is wide
CAPTIONS = {
    "predicted_vs_true": "Predicted against recorded age; the diagonal is a perfect prediction.",
    "bland_altman": "Bland–Altman: the gap (predicted − recorded) against the mean of the two, with the mean gap and "
                    "its 95 % limits of agreement.",
    "error_by_bin": "Mean absolute error per age group: where the model is more and less accurate.",
    "interval_by_bin": "How often the interval holds the recorded age, per age group, against the level promised.",
    "learning_curves": "Training and validation error per epoch of the run.",
    "kaplan_meier": "Survival by ECG-age gap group (Kaplan–Meier).",
    "lead_importance": "Each lead's mean share of the explanations over the cohort.",
}
FLAG_TEXT = {"older": "The recorded age lies below the interval: the ECG looks older than the person, beyond what "
                      "the model's error explains.",
             "younger": "The recorded age lies above the interval: the ECG looks younger than the person, beyond "
                        "what the model's error explains.",
             "within": ""}


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def ecg_uri(path: Path) -> str:
    """A 12-lead figure as embedded: its colours reduced to a 256-colour palette (line art and a shading scale
    lose nothing visible; the page is 4× smaller: bench/figures.py). Its size was checked from its header
    (engine/report/explained.py); PIL's own bound is set to the same, as an error."""
    Image.MAX_IMAGE_PIXELS = MAX_FIGURE_PIXELS
    with warnings.catch_warnings(), Image.open(path) as image:
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        buffer = io.BytesIO()
        image.convert("RGB").quantize(colors=PALETTE, method=Image.Quantize.MEDIANCUT).save(buffer, "PNG",
                                                                                              optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _number(value, digits: int = 1) -> str:
    return "" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}f}"


SET_ASIDE = "too few left, once the model's training records are set aside,"


def counted_rows(report: dict) -> list[dict]:
    """How many ECGs were predicted, had an age, and were left out as the model's own training records."""
    trained = (report.get("in_training") or {}).get("n_aged", 0)
    theirs = "the accuracy figures below are theirs" if not trained else \
        f"the accuracy figures below are those of the {report['n']} the model was not trained on"
    counted = [{"name": "ECGs predicted", "value": str(report.get("n_predictions", report["n"])),
                "meaning": "every ECG in the predictions"},
               {"name": "ECGs with an age on record", "value": str(report["n"] + trained),
                "meaning": theirs if "mae" in report else f"{SET_ASIDE if trained else 'too few'} for accuracy "
                                                          f"figures: the page shows the predicted ages (and "
                                                          f"intervals) only"}]
    if trained:
        counted.append({"name": "Of them, the model's training records", "value": str(trained),
                        "meaning": "left out of the accuracy figures: accuracy on the ECGs a model learnt from is "
                                   "no test of it"})
    return counted


def metric_rows(report: dict) -> list[dict]:
    """The cohort's numbers, each with what it means in plain words (none but the counts without ages)."""
    counted = counted_rows(report)
    if "mae" not in report:
        return counted
    rows = [*counted,
            {"name": "Mean absolute error", "value": f"{report['mae']:.2f} y{interval_text(report['mae_ci95'])}",
             "meaning": "on average the predicted age is this many years from the recorded age " + (
                 "(95 % interval in brackets: the range this average would likely take on another cohort like this "
                 "one)" if report["mae_ci95"] else f"(no 95 % interval: it needs {MIN_BOOTSTRAPPED} ECGs or more)")},
            {"name": "Root mean square error", "value": f"{report['rmse']:.2f} y",
             "meaning": "like the mean error, but large misses count more"},
            {"name": "Mean gap (bias)", "value": f"{report['bias']:+.2f} y",
             "meaning": "positive: the model predicts older than recorded on average; negative: younger"},
            {"name": "Correlation (Pearson r)", "value": _number(report.get("pearson_r"), 3),
             "meaning": "1 means predicted and recorded ages rise together perfectly; 0 means not at all"}]
    slope = report.get("gap_age_slope")
    if isinstance(slope, (int, float)) and math.isfinite(slope):
        rows.append({"name": "Gap change per year of age", "value": f"{slope:+.3f}",
                     "meaning": "negative: the young are predicted older and the old younger (regression to the "
                                "mean), so a person's gap partly reflects their age"})
    corrected = report.get("bias_correction", {}).get("corrected")
    if corrected:
        rows.append({"name": "MAE after bias correction", "value": f"{corrected['mae']:.2f} y",
                     "meaning": "the same, with the model's stored age-gap correction applied"})
    for group, found in (report.get("groups") or {}).items():
        rows.append({"name": f"Mean absolute error, {group}", "value": f"{found['mae']:.2f} y"
                     f"{interval_text(found['mae_ci95'])}",
                     "meaning": f"the {found['n']} ECGs of group {group} alone "
                                f"(r {_number(found.get('pearson_r'), 3)})"})
    interval = report.get("interval")
    if interval and "coverage" in interval:
        rows += [{"name": f"Interval coverage (level {interval['level']:g})", "value": f"{interval['coverage']:.0%}",
                  "meaning": f"share of ECGs whose recorded age lies inside its interval; promised: "
                             f"{interval['level']:.0%}"},
                 {"name": "Mean interval width", "value": f"{interval['mean_width']:.1f} y",
                  "meaning": "how wide the intervals are on average: narrower is more informative"},
                 {"name": "Significant gaps", "value": f"{interval['significant_gap']['fraction']:.0%}",
                  "meaning": f"{interval['significant_gap']['older']} ECG(s) look older and "
                             f"{interval['significant_gap']['younger']} younger than the person beyond the "
                             f"model's error (the recorded age outside the interval)"}]
    return rows


def caveats(report: dict, notes: PredictionNotes | None) -> list[str]:
    out = []
    notes = notes or PredictionNotes()
    if "mae" in report and not report.get("mae_ci95"):
        out.append(f"Only {report['n']} ECGs: too few for the error's 95 % interval (it needs {MIN_BOOTSTRAPPED}); "
                   f"the error may be far from the model's on another cohort.")
    elif "mae" in report and report["n"] < SMALL_COHORT:
        out.append(f"Only {report['n']} ECGs: the error's 95 % interval is wide; a difference between models on "
                   f"this cohort may be chance.")
    if report.get("n_without_age"):
        out.append(f"{report['n_without_age']} of the {report['n_predictions']} ECGs have no age on record: they "
                   f"have a predicted age (and interval) but no gap, and are not in the accuracy figures.")
    out.append(training_caveat(report.get("in_training") or {}, report.get("n_predictions", report["n"])))
    trained = [n for n in notes.training_records or () if n is not None]
    if trained:
        span = f"{min(trained)}" if min(trained) == max(trained) else f"{min(trained)}–{max(trained)}"
        out.append(f"Each model was trained on {span} ECGs" + (": a small training set, so expect larger errors "
                                                                "than published models" if max(trained) < 10000
                                                                else "") + ".")
    interval = notes.interval
    if interval is not None:
        held_out = sum(band["n"] for band in interval["bands"])
        out.append(f"Intervals at level {interval['level']:g}, calibrated on {held_out} held-out residuals "
                   f"(split conformal, by band of predicted age): they hold the recorded age about that often on "
                   f"records like the calibration records, not for every person.")
    if notes.filled:
        out.append(f"{len(notes.filled)} record(s) could not be read or gave an implausible age; they carry the "
                   f"training median age, which is no prediction.")
    if notes.bias_correction:
        out.append("The ages are bias-corrected (the model's stored age-gap correction).")
    if report["n"]:
        out.append("The gap is the predicted minus the recorded age; the recorded age is that of the labels file.")
    return out


def training_caveat(trained: dict, predicted: int) -> str:
    """What the page says about the model's own training records among the ECGs."""
    if not trained.get("checked"):
        return ("Whether the model was trained on any of these ECGs is not known: it does not name its training "
                "records (an exported file made by export_interface.py from a run folder does).")
    if not trained["n"]:
        return "None of these ECGs was among the model's training records (checked by each recording's fingerprint)."
    return (f"{trained['n']} of the {predicted} ECGs were among the model's training records (the same recordings "
            f"or copies of them, found by fingerprint): their ages are no test of the model, and the accuracy "
            f"figures leave out the {trained['n_aged']} of them with an age.")


def model_rows(notes: PredictionNotes | None) -> list[dict]:
    """What made the predictions, from the notes test_interface wrote beside them (unknown fields say so): the
    models, what they were trained on and how accurate they were on records they never saw (their card, where they
    carry one), the engine, the preprocessing, the version and the date — never a path (it may name a person)."""
    if notes is None:
        return [{"name": "Model",
                 "value": "not recorded (no notes file beside the predictions, or an unreadable one)"}]
    card, archs = notes.card or {}, notes.architectures or ()
    count = "unknown" if notes.models is None else str(len(notes.models))
    rows = [{"name": "Model", "value": card["name"]}] if card.get("name") else []
    rows.append({"name": "Networks", "value": f"{count} ({', '.join(sorted(set(archs)))})" if archs else count})
    trained = [n for n in notes.training_records or () if n is not None]
    rows.append({"name": "Trained on", "value": card.get("trained_on") or
                 (f"{max(trained):,} ECGs per network (not described further)" if trained else "unknown")})
    if card.get("oof_mae") is not None:
        ci = card.get("oof_mae_ci95")
        rows.append({"name": "Error on ECGs it never saw", "value": f"{card['oof_mae']:.2f} y out of fold"
                     + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "")
                     + (f"; {card['external_mae']:.2f} y on {card.get('external', 'external records')}"
                        if card.get("external_mae") is not None else "")})
    if card.get("intended_use"):
        rows.append({"name": "Intended use", "value": card["intended_use"]})
    rows.append({"name": "Engine", "value": f"{notes.engine or 'unknown'}, {notes.tta or 'unknown'} window(s) per ECG"})
    spec = notes.preprocessing
    if spec is not None:
        band = spec.get("bandpass")
        rows.append({"name": "Preprocessing", "value": f"{spec.get('fs')} Hz, {spec.get('length')} samples"
                                                       + (f", band-pass {band[0]}–{band[1]} Hz" if band else "")
                                                       + (", each lead z-scored" if spec.get("zscore") else "")})
    rows.append({"name": "Made", "value": f"ecg-age {notes.version or '(version unknown)'}"
                                          + (f" on {notes.date}" if notes.date else "")
                                          + (f"; model of {card['date']}" if card.get("date") else "")})
    return rows


def left_out_rows(notes: PredictionNotes | None) -> list[dict]:
    """Every record the predictions left out (--on_bad skip) with the reason, the first MAX_PAGE_ROWS of them."""
    left = (notes.left_out or {}) if notes is not None else {}
    return [{"id": shown_id(rid), "reason": shown_id(reason)} for rid, reason in list(left.items())[:MAX_PAGE_ROWS]]


def hazard_rows(report: dict) -> list[dict]:
    survival = report.get("survival")
    if not isinstance(survival, dict):
        return []
    rows = []
    for key, label in (("older", "ECG older than the person"), ("younger", "ECG younger than the person"),
                       ("per_year_gap", "per year of gap")):
        h = survival.get(key)
        if isinstance(h, dict) and h.get("hr") is not None:
            rows.append({"group": label, "hr": _number(h.get("hr"), 2),
                         "ci": f"{_number(h.get('ci_low'), 2)}–{_number(h.get('ci_high'), 2)}",
                         "p": _number(h.get("p"), 3), "n": (survival.get("groups") or {}).get(key, "")})
    return rows


def lead_bars(shares: np.ndarray) -> list[dict]:
    top = float(shares.max()) or 1.0
    return [{"lead": lead, "x": 10 + 59 * k, "height": round(45 * float(s) / top, 1), "percent": f"{s:.0%}"}
            for k, (lead, s) in enumerate(zip(LEADS, shares))]


def shown_id(record_id) -> str:
    """An id as the page shows it: control and invisible formatting characters (NUL, right-to-left overrides, …)
    written as visible escapes, so no id can hide or reorder what is around it."""
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") else c
                   for c in str(record_id))


def record_rows(data: pd.DataFrame, level: float | None, explained: dict) -> tuple[list[dict], list[dict],
                                                                                 list[dict], bool]:
    """(table columns, table rows, cards, whether a gap flag exists): the first ``MAX_PAGE_ROWS`` predictions in the
    table (gap empty where there is no age); a card for each of the first ``MAX_PAGE_CARDS`` explained records."""
    has_interval = LOWER in data.columns
    flags = significant_gaps(data[LOWER], data[UPPER], data["age"]) if has_interval else \
        np.full(len(data), "none")
    columns = [{"name": "Record", "num": False}, {"name": "Predicted age", "num": True}]
    if has_interval:
        columns += [{"name": "Interval from", "num": True}, {"name": "to", "num": True}]
    columns += [{"name": "Age on record", "num": True}, {"name": "Gap", "num": True}]
    if has_interval:
        columns.append({"name": "Significant gap", "num": False})
    rows, cards = [], []
    carded = set(list(explained)[:MAX_PAGE_CARDS])
    for k, line in enumerate(data.itertuples(index=False)):
        rid, predicted, age = str(line.id), float(line.predicted), float(line.age)
        aged = math.isfinite(age)
        gap, kind = predicted - age, str(flags[k]) if has_interval and aged else "none"
        anchor = f"ecg-{len(cards) + 1}" if rid in carded else None
        if k < MAX_PAGE_ROWS:
            rows.append(table_row(line, shown_id(rid), predicted, age, gap, kind, has_interval, anchor))
        if anchor:
            shares, figure = explained[rid]
            cards.append({"anchor": anchor, "id": shown_id(rid), "predicted": f"{predicted:.1f} y",
                          "true_age": f"{age:g} y" if aged else "", "gap": f"{gap:+.1f} y" if aged else "",
                          "level": f"{level:.0%}" if level else "",
                          "interval": f"{line.lower:.1f}–{line.upper:.1f} y" if has_interval else "",
                          "flag": {"older": "looks older", "younger": "looks younger",
                                   "within": "within the interval"}.get(kind, ""),
                          "flag_kind": "none" if kind in ("within", "none") else kind,
                          "flag_text": FLAG_TEXT.get(kind, ""), "shares": lead_bars(shares),
                          "figure": ecg_uri(figure) if figure is not None else None})
    return columns, rows, cards, has_interval


def table_row(line, shown: str, predicted: float, age: float, gap: float, kind: str, has_interval: bool,
              anchor: str | None) -> dict:
    aged = math.isfinite(age)
    cells = [(shown, shown), (f"{predicted:.1f}", predicted)]
    if has_interval:
        cells += [(f"{line.lower:.1f}", line.lower), (f"{line.upper:.1f}", line.upper)]
    cells += [(f"{age:g}" if aged else "—", age if aged else ""), (f"{gap:+.1f}" if aged else "", gap if aged else "")]
    if has_interval:
        cells.append(({"older": "older", "younger": "younger"}.get(kind, "—"), kind))
    return {"cells": [{"text": t, "sort": v} for t, v in cells], "card": anchor,
            "flag_kind": "none" if kind == "within" else kind}


def write_page(out: Path, report: dict, data: pd.DataFrame, notes: PredictionNotes | None, explained: dict,
               title: str) -> Path:
    """Render OUT/report.html from the report, the joined predictions and labels, the predictions' notes and the
    explanations (id → (shares, figure)); returns its path. The page stays bounded whatever the cohort's size: a
    table of at most ``MAX_PAGE_ROWS`` rows and ``MAX_PAGE_CARDS`` cards, each cap said on the page."""
    level = (report.get("interval") or {}).get("level")
    columns, rows, cards, has_flag = record_rows(data, level, explained)
    capped = [f"The table shows the first {len(rows):,} of the {len(data):,} ECGs; every prediction is in the "
              f"predictions file." for _ in range(len(data) > len(rows))]
    capped += [f"Cards are shown for the first {len(cards):,} of the {len(explained):,} explained ECGs."
               for _ in range(len(explained) > len(cards))]
    figures = [{"uri": data_uri(out / name), "caption": CAPTIONS.get(Path(name).stem, Path(name).stem)}
               for name in report.get("plots", [])]
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined)
    survival = report.get("survival") if isinstance(report.get("survival"), dict) else {}
    page = environment.get_template(PAGE).render(
        title=title, n=report.get("n_predictions", report["n"]), version=project_version(),
        written=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), metrics=metric_rows(report),
        caveats=caveats(report, notes) + capped, figures=figures, hazards=hazard_rows(report),
        adjusted=bool(survival.get("adjusted_for")), model=model_rows(notes), columns=columns, rows=rows, cards=cards,
        left_out=left_out_rows(notes), left_out_count=len((notes.left_out or {}) if notes is not None else {}),
        has_flag=has_flag)
    return write_text(out / PAGE, page)

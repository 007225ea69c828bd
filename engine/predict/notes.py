"""The notes a prediction writes beside its table (``<output>.json``): one typed schema, written by the prediction
job and read by the report.

Every field is checked when read: the file sits beside the predictions and may have been edited, damaged or forged,
so a field of the wrong kind is read as unknown (None) with a note naming it, never as a traceback, and never
silently as something else.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
from pathlib import Path
from typing import Any, Callable

from models.preprocessing import PreprocessSpec
from models.schema import ModelCard
from utils.bounds import MAX_TTA
from utils.calibration import check_level
from utils.errors import RecordError
from utils.io import regular_file, write_json
from utils.paths import prediction_notes

logger = logging.getLogger("report")
MAX_NOTES_BYTES = 16 << 20
MAX_LISTED = 1_000_000  # entries of one list field (ids of filled records, member names)


def _texts(value) -> tuple:
    if not isinstance(value, list) or len(value) > MAX_LISTED or not all(isinstance(v, str) for v in value):
        raise ValueError("a list of texts")
    return tuple(value)


def _counts(value) -> tuple:
    ok = isinstance(value, list) and len(value) <= MAX_LISTED and all(
        v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0) for v in value)
    if not ok:
        raise ValueError("a list of whole numbers ≥ 0 (or null)")
    return tuple(value)


def _text(value) -> str:
    if not isinstance(value, str) or len(value) > 200:
        raise ValueError("a short text")
    return value


def _flag(value) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _windows(value) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_TTA):
        raise ValueError(f"a whole number from 1 to {MAX_TTA}")
    return value


def _preprocessing(value) -> dict:
    if not isinstance(value, dict):
        raise ValueError("an object")
    PreprocessSpec.from_dict(value)  # the same checks as a checkpoint's
    return value


def _number(value, low: float = -math.inf) -> float | None:
    if value is None:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value < low:
        raise ValueError("numbers")
    return float(value)


def _reasons(value) -> dict:
    if not isinstance(value, dict) or len(value) > MAX_LISTED or \
            not all(isinstance(v, str) and len(v) <= 2000 for v in value.values()):
        raise ValueError("an object of texts")
    return value


def _card(value) -> dict:
    return ModelCard.from_dict(value).to_dict()


def _interval(value) -> dict:
    """level in (0, 1) and bands of (predicted_lo, predicted_hi, n ≥ 0, half_width ≥ 0)."""
    if not isinstance(value, dict) or not isinstance(value.get("bands"), list):
        raise ValueError("an object with a level and a list of bands")
    level = check_level(value.get("level"))
    bands = []
    for band in value["bands"][:1000]:
        if not isinstance(band, dict) or not isinstance(band.get("n"), int) or isinstance(band.get("n"), bool) \
                or band["n"] < 0:
            raise ValueError("bands of numbers")
        bands.append({"predicted_lo": _number(band.get("predicted_lo")),
                      "predicted_hi": _number(band.get("predicted_hi")), "n": band["n"],
                      "half_width": _number(band.get("half_width"), 0.0)})
    return {**{k: v for k, v in value.items() if k in ("method", "selection") and isinstance(v, (str, dict))},
            "level": level, "bands": bands}


@dataclasses.dataclass(frozen=True)
class PredictionNotes:
    """How a prediction table was made (every field None where unknown)."""

    weights: tuple | None = None  # the --weights given (for the user's records; the page never shows paths)
    models: tuple | None = None  # each member's source
    architectures: tuple | None = None
    training_records: tuple | None = None  # each member's training-set size
    preprocessing: dict | None = None
    version: str | None = None
    engine: str | None = None
    tta: int | None = None
    bias_correction: bool | None = None
    filled: tuple | None = None  # ids given the training median (--on_bad fill)
    left_out: dict | None = None  # id → why it is not in the table (--on_bad skip)
    # ids of predicted records that were among the model's training records (dataloader.fingerprint); None: the
    # model names no training records, so this was not checked; () checked, none
    in_training: tuple | None = None
    interval: dict | None = None  # level, method, bands (utils.calibration.Intervals.describe)
    card: dict | None = None  # the model's card (models.schema.ModelCard), where the model carries one
    date: str | None = None  # when the predictions were made (ISO date)

    def to_dict(self) -> dict:
        """The JSON object written beside the predictions (unknown fields left out)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if v is not None}

    def write(self, output: Path) -> Path:
        path = prediction_notes(output)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def from_dict(cls, found: dict) -> tuple["PredictionNotes", list[str]]:
        """(the notes, the fields that were unreadable and are read as unknown)."""
        values, wrong = {}, []
        for name, check in CHECKS.items():
            if name in found and found[name] is not None:
                try:
                    values[name] = check(found[name])
                except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
                    wrong.append(name)
        return cls(**values), wrong

    @classmethod
    def read(cls, predictions: Path) -> "PredictionNotes | None":
        """The notes beside ``predictions`` (None where there are none or the file cannot be read at all); a wrong
        field is unknown, with a warning naming it."""
        path = prediction_notes(predictions)
        if not path.exists():
            return None
        try:
            found = json.loads(regular_file(path, str(path), max_bytes=MAX_NOTES_BYTES).read_text())
        except (OSError, ValueError, RecursionError, RecordError):
            logger.warning(f"note: {path} cannot be read; the report says nothing about the model")
            return None
        if not isinstance(found, dict):
            logger.warning(f"note: {path} is not a JSON object; the report says nothing about the model")
            return None
        notes, wrong = cls.from_dict(found)
        if wrong:
            logger.warning(f"note: {path}: {', '.join(wrong)} cannot be read (damaged or edited?); the report treats "
                           f"them as unknown")
        return notes


CHECKS: dict[str, Callable[[Any], Any]] = {
    "weights": _texts, "models": _texts, "architectures": _texts, "training_records": _counts,
    "preprocessing": _preprocessing, "version": _text, "engine": _text, "tta": _windows, "bias_correction": _flag,
    "filled": _texts, "left_out": _reasons, "in_training": _texts, "interval": _interval, "card": _card, "date": _text}

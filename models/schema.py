"""What a model says about itself, without PyTorch: the facts both a checkpoint and an exported ONNX file carry,
checked by one set of rules, and the MAIC modes and the unknown-sex code every layer shares.

This module, ``models.preprocessing`` and ``models.files`` are the models layer's torch-free side: the ONNX path
(engine/predict/onnx_engine.py) reads them and nothing else of ``models`` (an import-linter contract in pyproject.toml
keeps it so). ``models.checkpoint`` (PyTorch) reads the same description from a checkpoint.
"""
from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from utils.bounds import AGE_RANGE, finite_number
from utils.calibration import Calibration
from utils.metrics import check_bias_correction
from utils.settings import option

UNKNOWN_SEX = 0.5  # the sex input of a person whose sex is unknown (1 male, 0 female): the one representation


@dataclasses.dataclass(frozen=True)
class MaicMode:
    """A MAIC challenge mode: its architecture in the challenge entry and the age bounds of its sigmoid head (the
    plausible ages of its cohort; a submission's ages are clipped to them)."""

    name: str
    arch: str
    low: float
    high: float

    def clip(self, ages):
        return np.clip(ages, self.low, self.high)


MAIC_MODES = {"adult": MaicMode("adult", "ResDenseNet", 19.0, 122.0),
              "child": MaicMode("child", "ResUDenseNet", 0.0, 9.0)}
MODES = tuple(MAIC_MODES)


def mode_option():
    """``--mode``, the one declaration every program that reads it shares (a settings field)."""
    return option("adult", "MAIC mode: its data, default architecture and age bounds (seed checkpoints' head)",
                  choices=MODES)


def maic_mode(name: str) -> MaicMode:
    if name not in MAIC_MODES:
        raise ValueError(f"unknown MAIC mode {name!r}; choose one of {', '.join(MODES)}")
    return MAIC_MODES[name]


def _plausible_age(value) -> float | None:
    number = finite_number(value)
    return number if number is not None and AGE_RANGE[0] <= number <= AGE_RANGE[1] else None


@dataclasses.dataclass(frozen=True)
class TrainingFacts:
    """What a model's training data were, kept with the model for later use (filling bad records with the median
    training age; the age range it has seen): statistics of the training ages, never read from the command line."""

    n: int | None = None
    median_age: float | None = None
    mean_age: float | None = None
    sd_age: float | None = None
    min_age: float | None = None
    max_age: float | None = None

    @classmethod
    def of(cls, ages) -> "TrainingFacts":
        ages = np.asarray(ages, dtype=np.float64)
        if not len(ages):
            return cls(n=0)
        return cls(n=len(ages), median_age=float(np.median(ages)), mean_age=float(ages.mean()),
                   sd_age=float(ages.std()), min_age=float(ages.min()), max_age=float(ages.max()))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data) -> "TrainingFacts":
        """Facts from a file: a value that is not a plausible number is dropped (unknown), never used."""
        if not isinstance(data, dict):
            return cls()
        ages = {k: _plausible_age(data.get(k)) for k in ("median_age", "mean_age", "min_age", "max_age")}
        n, sd = data.get("n"), finite_number(data.get("sd_age"))
        return cls(n=int(n) if isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0 else None,
                   sd_age=sd if sd is not None and sd >= 0 else None, **ages)


@dataclasses.dataclass(frozen=True)
class Description:
    """The fields of a model's description that both engines read: which architecture it is, its age-gap bias
    correction, its interval calibration and its training facts. A checkpoint holds them at its top level (format
    2; format 1 kept the median training age in its command-line options), an ONNX file once per member in its
    metadata; ``from_dict`` is the one place they are checked."""

    arch: str
    bias_correction: dict | None = None
    calibration: Calibration | None = None
    facts: TrainingFacts = TrainingFacts()

    @classmethod
    def from_dict(cls, data: dict) -> "Description":
        """Raises ValueError (or KeyError, TypeError) naming what is wrong."""
        if not isinstance(data, dict) or not isinstance(data.get("arch"), str):
            raise ValueError("a model's description is an object naming its arch")
        correction = data.get("bias_correction")
        if correction is not None:
            check_bias_correction(correction)
        calibration = Calibration.from_dict(data["calibration"]) if data.get("calibration") is not None else None
        if "training" in data:
            facts = TrainingFacts.from_dict(data["training"])
        else:  # format 1: the median training age in the command-line options
            legacy = data.get("options")
            facts = TrainingFacts.from_dict({"median_age": legacy.get("train_median_age")}
                                            if isinstance(legacy, dict) else None)
        return cls(data["arch"], correction, calibration, facts)

    def to_dict(self) -> dict:
        return {"arch": self.arch, "bias_correction": self.bias_correction,
                "calibration": self.calibration.to_dict() if self.calibration is not None else None,
                "training": self.facts.to_dict()}


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """What a model tells the people who use it (a shipped model carries it in its ONNX metadata, ``card``): its
    name, what it was trained on, how accurate it was on records it never saw (out of fold; external), how well its
    intervals held, what it is for, when it was made and the command that rebuilds it. Every field optional and
    checked when read (the file may be foreign): texts are short, numbers finite."""

    name: str | None = None
    trained_on: str | None = None
    records: int | None = None
    oof_mae: float | None = None
    oof_mae_ci95: tuple | None = None
    oof_ci_resampled: str | None = None  # what the interval resampled: "patients" or "ECGs"
    external: str | None = None
    external_mae: float | None = None
    interval_level: float | None = None
    interval_coverage: float | None = None
    intended_use: str | None = None
    date: str | None = None
    command: str | None = None

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if v is not None}

    @classmethod
    def from_dict(cls, data) -> "ModelCard":
        """Raises ValueError naming the first field that is not what a card holds."""
        if not isinstance(data, dict):
            raise ValueError("a model card is an object")
        values = {}
        for field in dataclasses.fields(cls):
            value = data.get(field.name)
            if value is None:
                continue
            values[field.name] = _card_value(field.name, value)
        return cls(**values)


_CARD_TEXT = 2000  # characters of one text field of a card


def _card_value(name: str, value):
    if name == "records":
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            raise ValueError(f"card field {name} must be a whole number ≥ 0")
        return int(value)
    if name == "oof_mae_ci95":
        bounds = [finite_number(v) for v in value] if isinstance(value, (list, tuple)) and len(value) == 2 else None
        if bounds is None or None in bounds:
            raise ValueError(f"card field {name} must be two numbers")
        return tuple(bounds)
    if name == "oof_ci_resampled":
        if value not in ("patients", "ECGs"):
            raise ValueError(f"card field {name} must be 'patients' or 'ECGs'")
        return value
    if name in ("oof_mae", "external_mae", "interval_level", "interval_coverage"):
        number = finite_number(value)
        if number is None or number < 0:
            raise ValueError(f"card field {name} must be a number ≥ 0")
        return number
    if not isinstance(value, str) or len(value) > _CARD_TEXT:
        raise ValueError(f"card field {name} must be a text of at most {_CARD_TEXT} characters")
    return value

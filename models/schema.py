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

"""Python API: load a model, predict ages (with intervals) and explain them from arrays — no files, no CLI.

    import ecg_age
    model = ecg_age.load("log/ECGEfficientNet_ptbxl_cv5")     # a checkpoint, run folder, published Lima folder, .onnx
    age = model.predict(signal, fs=500)                        # one (12, N) array in mV → one age (float)
    ages = model.predict(batch, fs=500)                        # (B, 12, N) → (B,) ages
    ages, lower, upper = model.predict(batch, fs=500, interval=0.9)
    shares = model.explain(signal, fs=500, png="ecg.png")      # {lead: share}; PyTorch models only
    signal, fs = ecg_age.read("export/ecg_0001.dcm")           # one record of any format read here, in mV

Leads are expected in the standard order I, II, III, aVR, aVL, aVF, V1–V6; give ``leads=[...]`` (names) when the
order differs (the missing limb leads III, aVR, aVL, aVF are derived from I and II, as for files). A signal that
is not a usable ECG (NaN, a flat lead, the wrong unit, too short) raises ``utils.errors.RecordError`` naming it;
an age outside 0–125 years is an error too, never a number. Every wrong argument raises ``UserError`` naming the
argument. test_interface.py runs the same models through the same ``engine.predict.predictor.Predictor``.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from dataloader.checks import check_record, load_safely, prepare
from dataloader.formats import open_reader
from dataloader.records import LEADS, Record, standard_leads
from engine.predict.load import load_predictor
from engine.predict.predictor import ENGINES, Predictor
from models.schema import MODES, UNKNOWN_SEX
from utils.bounds import MAX_FS, MIN_FS, age_problem, finite_number
from utils.calibration import check_level
from utils.errors import RecordError, UserError

__all__ = ["LEADS", "Model", "load", "read"]
SCALE_REMEDY = "multiply the signal by {scale} before passing it (the API takes mV)"  # the API's unit fix


def _path(path, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise UserError(f"{name} must be a file or folder path (str or os.PathLike), got {type(path).__name__}")
    return Path(path)


def _rate(fs) -> float:
    if finite_number(fs) is None or not MIN_FS <= fs <= MAX_FS:
        raise UserError(f"fs must be the sampling rate in Hz, a number in {MIN_FS:g}–{MAX_FS:g}, got {fs!r}")
    return float(fs)


def _level(interval) -> float | None:
    try:
        return None if interval is None else check_level(interval)
    except ValueError as exc:
        raise UserError(f"interval: {exc}") from None


def _flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{name} must be True or False, got {value!r}")
    return value


class Model:
    """Models loaded by :func:`load` (one, an ensemble, or an ONNX export)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    @property
    def engine(self) -> str:
        return self.predictor.engine

    def __repr__(self) -> str:
        return f"ecg_age.Model({self.predictor.describe()})"

    def _inputs(self, signals, fs: float, leads, sex) -> tuple[np.ndarray, np.ndarray, bool]:
        fs = _rate(fs)
        kind = np.asarray(signals).dtype if isinstance(signals, np.ndarray) else None
        if kind is not None and kind.kind not in "iuf":  # bool, complex, text, objects: not amplitudes
            raise UserError(f"signals must hold real numbers (amplitudes in mV), got an array of {kind}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # numpy's ComplexWarning: a complex value is never an amplitude
                array = np.asarray(signals, dtype=np.float32)
        except (TypeError, ValueError, Warning):
            raise UserError("signals must be a numeric array: one (leads, samples) ECG or a batch (B, leads, "
                            "samples)") from None
        single = array.ndim == 2
        if array.ndim not in (2, 3) or 0 in array.shape:
            raise UserError(f"signals must be one (leads, samples) array or a batch (B, leads, samples) holding at "
                            f"least one ECG, got shape {array.shape}")
        batch = array[None] if single else array
        if leads is not None and (isinstance(leads, str) or not all(isinstance(n, str) for n in leads)):
            raise UserError(f"leads must be a list of lead names (one per row of the signal), got {leads!r}")
        codes = _sex_codes(sex, len(batch))
        records = []
        for i, signal in enumerate(batch):
            where = f"signal {i}"
            if leads is not None:
                signal = standard_leads(signal, list(leads), where)
            elif signal.shape[0] != len(LEADS):
                raise RecordError(where, f"has {signal.shape[0]} leads; give the 12 standard leads in order "
                                         f"{', '.join(LEADS)}, or name them with leads=[...]")
            record = Record(where, np.ascontiguousarray(signal, dtype=np.float32), fs, {})
            reason = check_record(record, SCALE_REMEDY)
            if reason:
                raise RecordError(where, reason)
            records.append(prepare(record, self.predictor.input_spec))
        return np.stack(records), codes, single

    def predict(self, signals, fs: float, leads=None, sex=None, interval: float | None = None,
                bias_correction: bool = False):
        """Ages of one (12, N) ECG (a float) or a batch (B, 12, N) (an array), in mV at ``fs`` Hz; with
        ``interval`` (a level, e.g. 0.9) also the calibrated lower and upper bounds. ``sex``: 1 male, 0 female
        (one value or one per ECG), for models that read it."""
        level, bias_correction = _level(interval), _flag(bias_correction, "bias_correction")
        x, codes, single = self._inputs(signals, fs, leads, sex)
        ages = self.predictor.predict_inputs(x, codes, bias_correction)
        wrong = [f"signal {i}: predicted age {problem}" for i, a in enumerate(ages) if (problem := age_problem(a))]
        if wrong:
            raise UserError("implausible output — " + "; ".join(wrong[:10]))
        if interval is None:
            return float(ages[0]) if single else ages
        lower, upper = self.predictor.intervals(level, bias_correction)(ages)
        return (float(ages[0]), float(lower[0]), float(upper[0])) if single else (ages, lower, upper)

    def explain(self, signal, fs: float, leads=None, sex=None, method: str | None = None,
                png: str | Path | None = None, title: str | None = None) -> dict:
        """Each lead's share of the attribution of one (12, N) ECG's age ({lead: share}, summing to 1); with
        ``png`` also the clinical 12-lead figure shaded by attribution. Occlusion runs on any engine (an ONNX file:
        by its own forward passes); integrated gradients needs the PyTorch models."""
        from engine.predict.explain import explainer
        from engine.predict.explanations import DEFAULT_METHOD, METHODS
        from utils.plots import plot_ecg_explanation

        if method is not None and method not in METHODS:
            raise UserError(f"method must be one of {', '.join(METHODS)} (or None: {DEFAULT_METHOD}), got {method!r}")
        explain = explainer(self.predictor, method or DEFAULT_METHOD, "cpu")
        if png is not None:
            png = _path(png, "png")

        x, codes, single = self._inputs(signal, fs, leads, sex)
        if not single:
            raise UserError("explain takes one ECG (12, N) at a time")
        array = np.asarray(signal, dtype=np.float32)
        array = standard_leads(array, list(leads), "signal 0") if leads is not None else array
        found = explain(Record("signal 0", array, float(fs), {}), float(codes[0]))
        if png is not None:
            age = self.predict(array, fs, sex=sex)
            plot_ecg_explanation(found.signal, found.fs, LEADS, found.attribution,
                                 title or f"predicted age {age:.1f} y", png, shares=found.shares)
        return dict(zip(LEADS, found.shares.tolist()))


def load(path, mode: str | None = None, engine: str = "auto", trust: bool = False) -> Model:
    """A checkpoint (.pt), a run folder (a cross-validated one: its members, averaged), a published Lima et al.
    folder (model.pth + config.json) or an exported .onnx file; ``engine`` 'onnxruntime' exports checkpoints in
    memory first (checked on simulated ECGs)."""
    path = _path(path)
    if engine not in ENGINES:
        raise UserError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if mode is not None and mode not in MODES:
        raise UserError(f"mode must be None or one of {', '.join(MODES)}, got {mode!r}")
    trust = _flag(trust, "trust")
    check = ()
    if engine == "onnxruntime" and path.suffix.lower() != ".onnx":
        from dataloader.demo import simulated_records

        check = simulated_records()
    return Model(load_predictor([path], mode=mode, trust=trust, engine=engine, check=check))


def _sex_codes(sex, count: int) -> np.ndarray:
    """One code per ECG (1 male, 0 female, UNKNOWN_SEX when None): one value for all or one value each."""
    if sex is None:
        return np.full(count, UNKNOWN_SEX, np.float32)
    try:
        codes = np.asarray(sex, dtype=np.float32)
    except (TypeError, ValueError):
        raise UserError(f"sex must be 1 (male), 0 (female) or None — one value, or one per ECG; got {sex!r}") \
            from None
    if codes.ndim > 1 or (codes.ndim == 1 and len(codes) != count) or \
            not np.isin(codes, (0.0, 1.0, UNKNOWN_SEX)).all():
        raise UserError(f"sex must be 1 (male), 0 (female) or None — one value, or one per ECG ({count} here); got "
                        f"{np.ravel(codes)[:10].tolist()} ({codes.size} value(s))")
    return np.broadcast_to(codes, (count,)).copy()


def read(path, fs: float | None = None, scale: float = 1.0, fmt: str = "auto") -> tuple[np.ndarray, float]:
    """One ECG file (or a folder holding one record) of any format read here → ``(signal (12, N) in mV, fs)``, for
    :meth:`Model.predict`. ``fs`` and ``scale`` (mV per unit) are for formats that do not state them (.npy, HDF5);
    a record that cannot be read raises ``RecordError`` naming it."""
    path = _path(path)
    if finite_number(scale) is None:
        raise UserError(f"scale must be a number (mV per stored unit), got {scale!r}")
    reader = open_reader(path, fs=None if fs is None else _rate(fs), scale=scale, fmt=fmt)
    if len(reader) != 1:
        raise UserError(f"{path} holds {len(reader)} records; ecg_age.read takes one (give one file, or use "
                        f"test_interface.py --input for many)")
    record = load_safely(reader, 0)
    if isinstance(record, RecordError):
        raise record
    return record.signal, float(record.fs)

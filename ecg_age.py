"""Python API: load a model, predict ages (with intervals) and explain them from arrays — no files, no CLI.

    import ecg_age
    model = ecg_age.load("log/ECGEfficientNet_ptbxl_cv5")     # a checkpoint, run folder, published Lima folder, .onnx
    age = model.predict(signal, fs=500)                        # one (12, N) array in mV → one age (float)
    ages = model.predict(batch, fs=500)                        # (B, 12, N) → (B,) ages
    ages, lower, upper = model.predict(batch, fs=500, interval=0.9)
    shares = model.explain(signal, fs=500, png="ecg.png")      # {lead: share}; PyTorch models only

Leads are expected in the standard order I, II, III, aVR, aVL, aVF, V1–V6; give ``leads=[...]`` (names) when the
order differs (the missing limb leads III, aVR, aVL, aVF are derived from I and II, as for files). A signal that
is not a usable ECG (NaN, a flat lead, the wrong unit, too short) raises ``utils.errors.RecordError`` naming it;
an age outside 0–125 years is an error too, never a number. test_interface.py runs the same models through the
same ``engine.predictor.Predictor``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dataloader.records import LEADS, Record, standard_leads
from dataloader.sources import check_record, prepare
from engine.predictor import Predictor, load_predictor
from models import UNKNOWN_SEX
from utils.bounds import age_problem
from utils.errors import RecordError, UserError

__all__ = ["LEADS", "Model", "load"]


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
        array = np.asarray(signals, dtype=np.float32)
        single = array.ndim == 2
        if array.ndim not in (2, 3):
            raise UserError(f"signals must be one (leads, samples) array or a batch (B, leads, samples), got shape "
                            f"{array.shape}")
        batch = array[None] if single else array
        records = []
        for i, signal in enumerate(batch):
            where = f"signal {i}"
            if leads is not None:
                signal = standard_leads(signal, list(leads), where)
            elif signal.shape[0] != len(LEADS):
                raise RecordError(where, f"has {signal.shape[0]} leads; give the 12 standard leads in order "
                                         f"{', '.join(LEADS)}, or name them with leads=[...]")
            record = Record(where, np.ascontiguousarray(signal, dtype=np.float32), float(fs), {})
            reason = check_record(record)
            if reason:
                raise RecordError(where, reason)
            records.append(prepare(record, self.predictor.preprocessing))
        codes = np.full(len(batch), UNKNOWN_SEX, np.float32) if sex is None else \
            np.broadcast_to(np.asarray(sex, dtype=np.float32), (len(batch),)).copy()
        return np.stack(records), codes, single

    def predict(self, signals, fs: float, leads=None, sex=None, interval: float | None = None,
                bias_correction: bool = False):
        """Ages of one (12, N) ECG (a float) or a batch (B, 12, N) (an array), in mV at ``fs`` Hz; with
        ``interval`` (a level, e.g. 0.9) also the calibrated lower and upper bounds. ``sex``: 1 male, 0 female
        (one value or one per ECG), for models that read it."""
        x, codes, single = self._inputs(signals, fs, leads, sex)
        ages = self.predictor.predict_inputs(x, codes, bias_correction)
        wrong = [f"signal {i}: predicted age {problem}" for i, a in enumerate(ages) if (problem := age_problem(a))]
        if wrong:
            raise UserError("implausible output — " + "; ".join(wrong[:10]))
        if interval is None:
            return float(ages[0]) if single else ages
        lower, upper = self.predictor.intervals(interval, bias_correction)(ages)
        return (float(ages[0]), float(lower[0]), float(upper[0])) if single else (ages, lower, upper)

    def explain(self, signal, fs: float, leads=None, sex=None, method: str | None = None,
                png: str | Path | None = None, title: str | None = None) -> dict:
        """Each lead's share of the attribution of one (12, N) ECG's age ({lead: share}, summing to 1); with
        ``png`` also the clinical 12-lead figure shaded by attribution. Needs the PyTorch models (captum)."""
        if not self.predictor.bundles:
            raise UserError(f"explanations need the PyTorch checkpoints (captum); {self.predictor.source} is an "
                            f"ONNX export")
        import torch

        from engine.explain import DEFAULT_METHOD, explain_record
        from utils.plots import plot_ecg_explanation

        x, codes, single = self._inputs(signal, fs, leads, sex)
        if not single:
            raise UserError("explain takes one ECG (12, N) at a time")
        array = np.asarray(signal, dtype=np.float32)
        array = standard_leads(array, list(leads), "signal 0") if leads is not None else array
        found = explain_record(self.predictor.bundles, Record("signal 0", array, float(fs), {}), float(codes[0]),
                               method or DEFAULT_METHOD, torch.device("cpu"))
        if png is not None:
            age = self.predict(array, fs, sex=sex)
            plot_ecg_explanation(found.signal, found.fs, LEADS, found.attribution,
                                 title or f"predicted age {age:.1f} y", png, shares=found.shares)
        return dict(zip(LEADS, found.shares.tolist()))


def load(path, mode: str | None = None, engine: str = "auto", trust: bool = False) -> Model:
    """A checkpoint (.pt), a run folder (a cross-validated one: its members, averaged), a published Lima et al.
    folder (model.pth + config.json) or an exported .onnx file; ``engine`` 'onnxruntime' exports checkpoints in
    memory first (checked on simulated ECGs)."""
    check = ()
    if engine == "onnxruntime" and Path(path).suffix.lower() != ".onnx":
        from dataloader.demo import simulated_records

        check = simulated_records()
    return Model(load_predictor([path], mode=mode, trust=trust, engine=engine, check=check))

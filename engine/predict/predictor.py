"""What ``--weights`` stands for, on the engine that runs it — one small interface, two implementations:
``OnnxPredictor`` (an exported ONNX file run by onnxruntime; this module and engine/predict/onnx_engine.py import no
torch) and ``engine.predict.torch_predictor.TorchPredictor`` (PyTorch checkpoints: one model or an ensemble).
test_interface.py and the Python API (ecg_age.py) use only this interface.

``--engine auto`` runs an ``.onnx`` file with onnxruntime and checkpoints with PyTorch; ``--engine onnxruntime``
exports checkpoints in memory first (engine/deploy/export.py, checked on the first records to predict) and runs the
export. The factory, ``engine.predict.load.load_predictor``, is the one place the PyTorch side is imported on
demand: a process given only an ONNX file never imports torch (an import-linter contract keeps the torch-free
modules so).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dataloader.records import Reader
from engine.deploy.onnx_model import OnnxModel
from utils.calibration import Intervals, ensemble_intervals

from .onnx_engine import predict_records_onnx

ENGINES = ("auto", "torch", "onnxruntime")
EXPORT_CHECK_RECORDS = 4  # records of the input an in-memory export is checked on


def is_onnx(path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


class Predictor:
    """Models on one engine. ``bundles``: the PyTorch models (what explanations need; none for an ONNX file);
    each implementation gives ``engine``, ``source``, ``preprocessing``, ``input_spec`` (what ``predict_inputs``
    and ``member_ages`` take: ``preprocessing``, or the window alone where a graph runs the rest), ``median_age``,
    ``archs``,
    ``training_records`` (each member's), ``members``, ``predict_records``, ``predict_inputs`` and ``batch`` (inputs
    per forward pass)."""

    engine: str
    bundles: list
    batch: int
    card: dict | None = None  # the model's card (models.schema.ModelCard), where it carries one

    def describe(self) -> str:
        archs = self.archs
        what = f"{archs[0]}" if len(archs) == 1 else f"an ensemble of {len(archs)} models " \
            f"({', '.join(sorted(set(archs)))})"
        return f"{what} from {self.source} on {self.engine}"

    def intervals(self, level: float, bias_correction: bool = False) -> Intervals:
        return ensemble_intervals(self.members(), level, bias_correction)

    def members(self) -> list[tuple]:
        """(source, calibration, bias correction) of every member."""
        raise NotImplementedError

    training_prints: np.ndarray | None = None  # the fingerprints of the records it was trained on, where it names them

    def predict_records(self, reader: Reader, cfg, sex: np.ndarray) -> tuple[np.ndarray, dict, np.ndarray]:
        """(ages, {id: reason} of bad records, fingerprints) of every record of ``reader``; ``cfg``: the engine's
        config (``OnnxConfig`` on onnxruntime, ``InferenceConfig`` on PyTorch)."""
        raise NotImplementedError

    def predict_inputs(self, x: np.ndarray, sex: np.ndarray, bias_correction: bool = False,
                       batch_size: int | None = None) -> np.ndarray:
        """The ensemble's ages (B,) for ``x`` (B, 12, L), records made by ``input_spec``, ``batch_size`` (default:
        ``batch``) at a time."""
        raise NotImplementedError

    def member_ages(self, x: np.ndarray, sex: np.ndarray) -> np.ndarray:
        """Every member's age (B, M) for ``x`` (B, 12, L), records made by ``input_spec``."""
        raise NotImplementedError

    def with_threads(self, threads: int) -> "Predictor":
        """The same models on ``threads`` threads where the engine sets them per model (onnxruntime; PyTorch's
        threads are the process's)."""
        return self


class OnnxPredictor(Predictor):
    """An ONNX file on onnxruntime; ``bundles``: the checkpoints it was exported from in memory (--engine
    onnxruntime; kept for explanations), else none."""

    engine = "onnxruntime"

    def __init__(self, model: OnnxModel, bundles: list | None = None):
        self.model, self.bundles = model, bundles or []

    source = property(lambda self: self.model.source)
    preprocessing = property(lambda self: self.model.preprocessing)
    input_spec = property(lambda self: self.model.input_spec)
    median_age = property(lambda self: self.model.median_age)
    archs = property(lambda self: self.model.archs)
    training_records = property(lambda self: [m.facts.n for m in self.model.members])
    card = property(lambda self: self.model.card)
    batch = property(lambda self: self.model.batch)
    training_prints = property(lambda self: self.model.training_prints)

    def members(self) -> list[tuple]:
        return [(f"{self.source} member {k}", m.calibration, m.bias_correction)
                for k, m in enumerate(self.model.members)]

    def predict_records(self, reader: Reader, cfg, sex: np.ndarray) -> tuple[np.ndarray, dict, np.ndarray]:
        return predict_records_onnx(self.model, reader, cfg, sex)

    def predict_inputs(self, x: np.ndarray, sex: np.ndarray, bias_correction: bool = False,
                       batch_size: int | None = None) -> np.ndarray:
        batch = batch_size or self.batch
        return np.concatenate([self.model.ages(x[i:i + batch], sex[i:i + batch], bias_correction)
                               for i in range(0, len(x), batch)])

    def member_ages(self, x: np.ndarray, sex: np.ndarray) -> np.ndarray:
        return self.model.member_ages(x, sex)

    def with_threads(self, threads: int) -> "OnnxPredictor":
        model = self.model.with_threads(threads, spinning=True)  # alone on the cores: no worker to yield to
        return self if model is self.model else OnnxPredictor(model, self.bundles)

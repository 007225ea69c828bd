"""PyTorch checkpoints behind the predictor interface (engine/predict/predictor.py): one model or an ensemble, averaged,
and their in-memory ONNX export for ``--engine onnxruntime``."""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from dataloader.checks import model_inputs
from dataloader.fingerprint import distinct
from dataloader.records import Reader, Record
from engine.deploy.export import export_onnx, graph_input
from engine.deploy.onnx_model import OnnxModel
from engine.runs import member_training_prints
from models.checkpoint import load_ensemble
from models.schema import UNKNOWN_SEX
from utils.errors import CheckpointError, UserError

from .inference import INPUT_BATCH, predict_ensemble, predict_inputs
from .predictor import EXPORT_CHECK_RECORDS, OnnxPredictor, Predictor


class TorchPredictor(Predictor):
    """Checkpoints run by PyTorch (an ensemble's ages averaged)."""

    engine = "torch"

    def __init__(self, bundles: list):
        self.bundles = bundles

    @classmethod
    def load(cls, paths: list, mode: str | None = None, trust: bool = False) -> "TorchPredictor":
        return cls(load_ensemble(paths, mode=mode, trust=trust))

    source = property(lambda self: self.bundles[0].source)
    preprocessing = property(lambda self: self.bundles[0].preprocessing)
    input_spec = preprocessing  # predict_inputs runs the bare networks
    batch = INPUT_BATCH
    median_age = property(lambda self: self.bundles[0].facts.median_age)
    archs = property(lambda self: [b.arch for b in self.bundles])
    training_records = property(lambda self: [b.facts.n for b in self.bundles])

    @functools.cached_property
    def training_prints(self) -> np.ndarray | None:
        """The fingerprints of the records the members were trained on (their run folders' fingerprints.csv), or
        None where one does not say."""
        found = [member_training_prints(b.source) for b in self.bundles]
        return None if any(p is None for p in found) else distinct(np.concatenate(found))

    def members(self) -> list[tuple]:
        return [(b.source, b.calibration, b.bias_correction) for b in self.bundles]

    def predict_records(self, reader: Reader, cfg, sex: np.ndarray) -> tuple[np.ndarray, dict, np.ndarray]:
        return predict_ensemble(self.bundles, reader, cfg)

    def predict_inputs(self, x: np.ndarray, sex: np.ndarray, bias_correction: bool = False,
                       batch_size: int | None = None) -> np.ndarray:
        return predict_inputs(self.bundles, x, sex, bias_correction, batch_size or self.batch)

    def member_ages(self, x: np.ndarray, sex: np.ndarray) -> np.ndarray:
        return np.stack([predict_inputs([b], x, sex, batch_size=self.batch) for b in self.bundles], axis=1)

    @property
    def exported_spec(self):
        """What :meth:`exported`'s graph takes (the window alone where it runs the rest of the preprocessing)."""
        return graph_input(self.bundles)

    def exported(self, records: Iterable[Record], threads: int = 0, spinning: bool = True,
                 calls: int = 1) -> OnnxPredictor:
        """These models exported to a temporary ONNX file (checked on the first usable of ``records``) and loaded
        into onnxruntime; the bundles stay with it (explanations)."""
        x = model_inputs(records, self.exported_spec, EXPORT_CHECK_RECORDS)
        if not len(x):
            raise UserError("--engine onnxruntime: no usable record to check the export on")
        with tempfile.TemporaryDirectory(prefix="ecg-age-onnx-") as folder:
            path = Path(folder) / "model.onnx"
            export_onnx(self.bundles, path, x, np.full(len(x), UNKNOWN_SEX, np.float32))
            try:
                return OnnxPredictor(OnnxModel.load(path, threads, spinning, calls), self.bundles)
            except CheckpointError as exc:
                raise UserError(f"--engine onnxruntime: the in-memory export cannot be run ({exc})") from exc

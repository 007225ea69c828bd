"""What ``--weights`` stands for, on the engine that runs it: PyTorch checkpoints (one model or an ensemble) or an
exported ONNX file run by onnxruntime. One interface for test_interface and the Python API (ecg_age.py).

``--engine auto`` runs an ``.onnx`` file with onnxruntime and checkpoints with PyTorch; ``--engine onnxruntime``
exports checkpoints in memory first (engine/export.py, checked on the first records to predict) and runs the
export. The ONNX path imports no torch: the PyTorch modules are imported only where PyTorch models are used.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from dataloader.records import Reader, Record
from dataloader.sources import check_record, load_safely, prepare
from models.preprocessing import PreprocessSpec
from utils.calibration import Intervals, ensemble_intervals
from utils.errors import CheckpointError, UserError

from .onnx_engine import OnnxModel, predict_records_onnx
from .runs import run_members

ENGINES = ("auto", "torch", "onnxruntime")
EXPORT_CHECK_RECORDS = 4  # records of the input an in-memory export is checked on


def is_onnx(path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


@dataclasses.dataclass
class Predictor:
    """Models on one engine: ``bundles`` (PyTorch; kept with --engine onnxruntime too, for explanations) and/or
    ``onnx`` (the session that predicts when set)."""

    bundles: list
    onnx: OnnxModel | None = None

    @property
    def engine(self) -> str:
        return "onnxruntime" if self.onnx is not None else "torch"

    @property
    def source(self) -> str:
        return self.onnx.source if self.onnx is not None else self.bundles[0].source

    @property
    def preprocessing(self) -> PreprocessSpec:
        return self.onnx.preprocessing if self.onnx is not None else self.bundles[0].preprocessing

    @property
    def median_age(self) -> float | None:
        return self.onnx.median_age if self.onnx is not None else self.bundles[0].facts.median_age

    def describe(self) -> str:
        archs = self.onnx.archs if self.onnx is not None else [b.arch for b in self.bundles]
        what = f"{archs[0]}" if len(archs) == 1 else f"an ensemble of {len(archs)} models " \
            f"({', '.join(sorted(set(archs)))})"
        return f"{what} from {self.source} on {self.engine}"

    def members(self) -> list[tuple]:
        """(source, calibration, bias correction) of every member."""
        if self.onnx is not None:
            return [(f"{self.source} member {k}", c, b) for k, (c, b) in
                    enumerate(zip(self.onnx.calibrations, self.onnx.corrections))]
        return [(b.source, b.calibration, b.bias_correction) for b in self.bundles]

    def intervals(self, level: float, bias_correction: bool = False) -> Intervals:
        return ensemble_intervals(self.members(), level, bias_correction)

    def predict_records(self, reader: Reader, cfg, sex: np.ndarray) -> tuple[np.ndarray, dict]:
        """(ages, {id: reason} of bad records) of every record of ``reader``; ``cfg``: an OnnxConfig on
        onnxruntime, an InferenceConfig on PyTorch."""
        if self.onnx is not None:
            return predict_records_onnx(self.onnx, reader, cfg, sex)
        from .inference import predict_ensemble

        return predict_ensemble(self.bundles, reader, cfg)

    def predict_inputs(self, x: np.ndarray, sex: np.ndarray, bias_correction: bool = False,
                       batch_size: int = 64) -> np.ndarray:
        """The ensemble's ages (B,) for model inputs ``x`` (B, 12, L) (already preprocessed)."""
        if self.onnx is not None:
            return np.concatenate([self.onnx.ages(x[i:i + batch_size], sex[i:i + batch_size], bias_correction)
                                   for i in range(0, len(x), batch_size)])
        from .inference import predict_inputs

        return predict_inputs(self.bundles, x, sex, bias_correction, batch_size)


def records_of(reader: Reader) -> Iterable[Record]:
    """The records of ``reader`` that can be read, in order (to check an in-memory export on)."""
    for i in range(len(reader)):
        item = load_safely(reader, i)
        if isinstance(item, Record):
            yield item


def load_predictor(weights: list, mode: str | None = None, trust: bool = False, engine: str = "auto",
                   check: Iterable[Record] = (), threads: int = 0) -> Predictor:
    """The models ``weights`` stands for on ``engine`` (a run folder: exactly the members its manifest names);
    ``check``: records an in-memory export (--engine onnxruntime) is checked on."""
    onnx_files = [w for w in weights if is_onnx(w)]
    if onnx_files:
        if len(weights) > 1:
            raise UserError(f"an ONNX file is one model already (an ensemble is exported as one graph): give "
                            f"{onnx_files[0]} alone, or export the ensemble again with all its members")
        if engine == "torch":
            raise UserError(f"--engine torch cannot run {onnx_files[0]}: an ONNX file runs on onnxruntime")
        return Predictor([], OnnxModel.load(onnx_files[0], threads))
    from models.checkpoint import load_ensemble

    bundles = load_ensemble([m for w in weights for m in run_members(w)], mode=mode, trust=trust)
    if engine != "onnxruntime":
        return Predictor(bundles)
    return Predictor(bundles, export_in_memory(bundles, check, threads))


def check_inputs(records: Iterable[Record], spec: PreprocessSpec, limit: int) -> np.ndarray:
    """The model inputs (N, 12, L) of the first ``limit`` usable ``records`` (N may be 0): what an export is
    checked on."""
    inputs = []
    for record in records:
        if len(inputs) == limit:
            break
        if check_record(record) is None:
            inputs.append(prepare(record, spec))
    return np.stack(inputs) if inputs else np.zeros((0, 12, spec.length), np.float32)


def export_in_memory(bundles: list, records: Iterable[Record], threads: int = 0) -> OnnxModel:
    """``bundles`` exported to a temporary ONNX file (checked on the first usable of ``records``) and loaded into
    onnxruntime."""
    from models import UNKNOWN_SEX

    from .export import export_onnx

    x = check_inputs(records, bundles[0].preprocessing, EXPORT_CHECK_RECORDS)
    if not len(x):
        raise UserError("--engine onnxruntime: no usable record to check the export on")
    with tempfile.TemporaryDirectory(prefix="ecg-age-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(bundles, path, x, np.full(len(x), UNKNOWN_SEX, np.float32))
        try:
            return OnnxModel.load(path, threads)
        except CheckpointError as exc:
            raise UserError(f"--engine onnxruntime: the in-memory export cannot be run ({exc})") from exc

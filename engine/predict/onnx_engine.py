"""Running an exported ONNX file with onnxruntime: numpy, scipy, onnxruntime and the readers — no torch.

``predict_records_onnx`` runs an exported model (engine.deploy.onnx_model.OnnxModel) over records, as
engine.predict.inference.predict_records' counterpart: the same source (cache or on the fly), the same
windows (``--tta``), each member's bias correction before averaging, the same bad records.
"""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dataloader.records import Reader
from dataloader.sources import CacheConfig
from engine.deploy.onnx_model import OnnxModel
from models.preprocessing import tta_specs

from .windows import Pending, record_ages, record_means, window_rows


@dataclasses.dataclass(frozen=True)
class OnnxConfig:
    """How to run an ONNX model over records (test_interface's options for this engine)."""

    batch_size: int | None = None  # None: the model's own (OnnxModel.batch, by its threads)
    tta: int = 1
    bias_correction: bool = False
    cache: CacheConfig = CacheConfig()
    threads: int = 0  # 0: onnxruntime's choice
    calls: int = 1  # onnxruntime calls in flight together, each on ``threads`` threads
    spinning: bool = True  # onnxruntime's idle threads spin (off where they share the cores with workers)
    workers: int = 0  # processes reading and preprocessing beside the model when nothing is cached


def predict_records_onnx(model: OnnxModel, reader: Reader, cfg: OnnxConfig,
                         sex: np.ndarray) -> tuple[np.ndarray, dict, np.ndarray]:
    """Ages for every record of ``reader`` (NaN for bad ones), {id: reason} of the bad records and every record's
    fingerprint; with ``cfg.tta``
    N the age is the mean over N windows (identical windows predicted once)."""
    batch = cfg.batch_size or model.batch

    def ages(source, rows: np.ndarray, owners: np.ndarray) -> np.ndarray:
        return model.ages(source.read(rows), sex[owners], cfg.bias_correction)

    def predict(source, good: np.ndarray) -> Pending:
        """The batches of ``good``'s distinct windows started on the calls, and the call that waits for their
        ages: the calls take the next chunk's batches while this chunk's last ones finish (no core waits at a
        chunk's end)."""
        rows, owners, inverse = window_rows(source, good)
        started = [calls.submit(ages, source, rows[i:i + batch], owners[i:i + batch])
                   for i in range(0, len(rows), batch)]
        return lambda: record_means(np.concatenate([future.result() for future in started]), inverse)

    # the model's calls in flight together (OnnxModel.calls): onnxruntime releases the GIL while it runs
    with ThreadPoolExecutor(model.calls) as calls:
        return record_ages(reader, tta_specs(model.input_spec, cfg.tta), cfg.cache, predict, cfg.workers)

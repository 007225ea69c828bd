"""int8 for the CPU: an exported fp32 ONNX file → a statically quantized one (QDQ), checked like an export.

onnxruntime's static quantization (``quantize_static``, QDQ format: unsigned 8-bit activations, signed 8-bit
weights per output channel — the form VNNI and AMX run fast) with activation ranges calibrated on real model
inputs. The result carries the fp32 file's metadata, marked ``"quantized": "int8"``, so it is used exactly as an
fp32 export is (test_interface --weights model.int8.onnx, ecg_age.load). Before it is put in place its ages on the
check records are compared with the fp32 file's: mean |Δ| ≤ ``INT8_MEAN_YEARS`` and max |Δ| ≤ ``INT8_MAX_YEARS``,
or nothing is written. No torch here.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from utils.errors import UserError
from utils.io import staged

from .onnx_engine import METADATA_KEY, OnnxModel

logger = logging.getLogger(__name__)

INT8_MEAN_YEARS, INT8_MAX_YEARS = 0.1, 0.5  # how far int8 ages may be from the fp32 export's (mean, worst record)
CALIBRATION_BATCH = 8


class _Batches:
    """onnxruntime's calibration reader: the calibration inputs, a batch at a time."""

    def __init__(self, x: np.ndarray, sex: np.ndarray | None):
        self.feeds = iter([{"x": x[i:i + CALIBRATION_BATCH]} | ({} if sex is None else
                                                                 {"sex": sex[i:i + CALIBRATION_BATCH]})
                           for i in range(0, len(x), CALIBRATION_BATCH)])

    def get_next(self):
        return next(self.feeds, None)


def quantize_int8(fp32: str | os.PathLike, path: str | os.PathLike, calibration: tuple[np.ndarray, np.ndarray],
                  check: tuple[np.ndarray, np.ndarray],
                  limits: tuple[float, float] | None = None) -> dict:
    """Quantize the export ``fp32`` to ``path`` with activation ranges from ``calibration`` (inputs, sex codes)
    and check it on ``check`` (mean and max |Δ age| within ``limits``, by default the stated tolerance); returns
    {'records', 'mean_difference_years', 'max_difference_years', 'bytes'}."""
    limits = limits or (INT8_MEAN_YEARS, INT8_MAX_YEARS)
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    reference = OnnxModel.load(fp32)
    if not len(calibration[0]):
        raise UserError("--quantize int8 needs calibration records: none of them could be used")
    path = Path(path)
    with staged(path) as staging:
        quantize_static(str(fp32), str(staging), _Batches(*_feed(reference, *calibration)),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax)
        model = onnx.load(str(staging))
        meta = json.loads(next(p.value for p in model.metadata_props if p.key == METADATA_KEY))
        del model.metadata_props[:]
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps({**meta, "quantized": "int8",
                                                            "calibration_records": int(len(calibration[0]))})
        onnx.save(model, str(staging))
        quantized = OnnxModel.load(staging)
        x, sex = check
        differences = np.abs(quantized.ages(x, sex) - reference.ages(x, sex))
        mean, worst = float(differences.mean()), float(differences.max())
        if not (mean <= limits[0] and worst <= limits[1]):
            raise UserError(f"the int8 model is too far from the fp32 export on {len(x)} check record(s): mean "
                            f"|Δ age| {mean:.3g} y (allowed {limits[0]:g}), max {worst:.3g} y (allowed "
                            f"{limits[1]:g}); nothing was written to {path}. Calibrate on more or other records "
                            f"(--calibration_input), or keep the fp32 export")
    return {"records": int(len(check[0])), "mean_difference_years": mean, "max_difference_years": worst,
            "bytes": path.stat().st_size}


def _feed(model: OnnxModel, x: np.ndarray, sex: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    return np.ascontiguousarray(x, np.float32), (np.ascontiguousarray(sex, np.float32) if model.takes_sex else None)

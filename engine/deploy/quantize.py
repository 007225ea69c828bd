"""int8 for the CPU: an exported fp32 ONNX file → a statically quantized one (QDQ), checked like an export.

onnxruntime's static quantization (``quantize_static``, QDQ format: unsigned 8-bit activations, signed 8-bit
weights per output channel — the form VNNI and AMX run fast) with activation ranges calibrated on real model
inputs. The result carries the fp32 file's metadata, marked ``"quantized": "int8"``, so it is used exactly as an
fp32 export is (test_interface --weights model.int8.onnx, ecg_age.load). Before it is put in place its ages on the
check records are compared with the fp32 file's: mean |Δ| ≤ ``INT8_MEAN_YEARS`` and max |Δ| ≤ ``INT8_MAX_YEARS``,
or nothing is written.

How much of the graph is int8 is tried in ``SCOPES`` order, the fastest first, and the first one within the
tolerance is kept: the whole network; then the convolutions over time only (the work), with the activations, the
squeeze-excitation gates' convolutions on pooled features, the stem and the head left in fp32 — SiLU and sigmoid
gates are where 8-bit ranges lose a trained network's ages; then the same with percentile ranges (outliers
clipped). No torch here.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.errors import UserError
from utils.io import beside, staged

from .onnx_model import METADATA_KEY, OnnxModel

logger = logging.getLogger(__name__)

INT8_MEAN_YEARS, INT8_MAX_YEARS = 0.1, 0.5  # how far int8 ages may be from the fp32 export's (mean, worst record)
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class Scope:
    """One way to quantize: which operators (None: every one onnxruntime can), whether the stem and the
    convolutions on pooled (length-1) features stay fp32, and how activation ranges are calibrated."""

    name: str
    op_types: tuple[str, ...] | None = None
    keep_fp32_edges: bool = False
    ranges: str = "minmax"  # or "percentile" (99.99th: outliers clipped)


SCOPES = (Scope("whole network"),
          Scope("convolutions", op_types=("Conv",), keep_fp32_edges=True),
          Scope("convolutions, percentile ranges", op_types=("Conv",), keep_fp32_edges=True, ranges="percentile"))


class _Batches:
    """onnxruntime's calibration reader: the calibration inputs, a batch at a time."""

    def __init__(self, x: np.ndarray, sex: np.ndarray | None):
        self.feeds = iter([{"x": x[i:i + CALIBRATION_BATCH]} | ({} if sex is None else
                                                                 {"sex": sex[i:i + CALIBRATION_BATCH]})
                           for i in range(0, len(x), CALIBRATION_BATCH)])

    def get_next(self):
        return next(self.feeds, None)


def quantize_int8(fp32: str | os.PathLike, path: str | os.PathLike, calibration: tuple[np.ndarray, np.ndarray],
                  check: tuple[np.ndarray, np.ndarray], limits: tuple[float, float] | None = None,
                  scopes: tuple[Scope, ...] = SCOPES) -> dict:
    """Quantize the export ``fp32`` to ``path`` with activation ranges from ``calibration`` (inputs, sex codes):
    each of ``scopes`` in turn until one's ages on ``check`` are within ``limits`` of the fp32 file's (mean and max
    |Δ age|, by default the stated tolerance); returns {'scope', 'records', 'mean_difference_years',
    'max_difference_years', 'bytes', 'tried': [(scope, mean, max), ...]}. Nothing is written when none holds."""
    limits = limits or (INT8_MEAN_YEARS, INT8_MAX_YEARS)
    reference = OnnxModel.load(fp32)
    if not len(calibration[0]):
        raise UserError("--quantize int8 needs calibration records: none of them could be used")
    path, tried = Path(path), []
    x, sex = check
    expected = reference.ages(x, sex)
    feeds = _feed(reference, *calibration)
    stage, kept = _kept_fp32(fp32)
    with staged(path) as staging, beside(path, "quant", folder=True) as scratch, _temporary_files_in(scratch):
        for scope in scopes:
            _quantize(fp32, staging, feeds, scope, stage + (kept if scope.keep_fp32_edges else []),
                      len(calibration[0]))
            differences = np.abs(OnnxModel.load(staging).ages(x, sex) - expected)
            tried.append((scope.name, float(differences.mean()), float(differences.max())))
            if tried[-1][1] <= limits[0] and tried[-1][2] <= limits[1]:
                break
            logger.info(f"int8 ({scope.name}): mean |Δ age| {tried[-1][1]:.3g} y, max {tried[-1][2]:.3g} y on "
                        f"{len(x)} check record(s) — outside the tolerance")
        else:
            shown = "; ".join(f"{name}: mean {mean:.3g} y, max {worst:.3g} y" for name, mean, worst in tried)
            raise UserError(f"the int8 model is too far from the fp32 export on {len(x)} check record(s) whichever "
                            f"part is quantized ({shown}; allowed mean {limits[0]:g}, max {limits[1]:g}); nothing "
                            f"was written to {path}. Calibrate on more or other records (--calibration_input), or "
                            f"keep the fp32 export")
    name, mean, worst = tried[-1]
    return {"scope": name, "records": int(len(x)), "mean_difference_years": mean, "max_difference_years": worst,
            "bytes": path.stat().st_size, "tried": tried}


def _kept_fp32(fp32) -> tuple[list[str], list[str]]:
    """(the input stage's nodes, the edge convolutions): what stays fp32 always, and in the careful scopes."""
    import onnx

    model = onnx.load(str(fp32))
    return before_convolutions(model), fp32_edges(model)


def before_convolutions(model) -> list[str]:
    """The nodes no convolution's output reaches: the graph's input stage (the band-pass as matrix products,
    models/input_stage.py, whose precision int8 would ruin) and the handling of the sex code."""
    reached, nodes = set(), []
    for node in model.graph.node:  # ONNX nodes are in topological order
        if node.op_type == "Conv" or any(name in reached for name in node.input):
            reached.update(node.output)
        else:
            nodes.append(node.name)
    return nodes


def _quantize(fp32, staging: Path, feeds: tuple, scope: Scope, excluded: list[str] | None, records: int) -> None:
    """One static QDQ quantization of ``fp32`` under ``scope`` (the nodes ``excluded`` left in fp32) into
    ``staging``, its metadata marked."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[scope.ranges]
    with _library_warnings_off():
        quantize_static(str(fp32), str(staging), _Batches(*feeds), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(scope.op_types) if scope.op_types else None,
                        nodes_to_exclude=excluded,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=method, extra_options={"CalibPercentile": 99.99})
    model = onnx.load(str(staging))
    meta = json.loads(next(p.value for p in model.metadata_props if p.key == METADATA_KEY))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps({**meta, "quantized": "int8", "int8_scope": scope.name,
                                                        "calibration_records": int(records)})
    onnx.save(model, str(staging))


@contextmanager
def _temporary_files_in(folder: Path):
    """The quantizer's own temporary folders (ort.quant.*) made in ``folder``, ours, so that an export killed
    midway leaves them where the next export of the same file removes them (never in the system's temp dir)."""
    before = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = before


@contextmanager
def _library_warnings_off():
    """onnxruntime's quantizer writes its own advice through the root logger (logging.warning) and its progress with
    print(): none of a library's free text reaches our console. The project's loggers are not the root logger and
    are unaffected."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def fp32_edges(model) -> list[str]:
    """The convolutions a careful int8 leaves in fp32: the stem (reading the graph's input, or its input stage's
    output) and those on pooled
    features (length 1: squeeze-excitation gates, cheap and range-sensitive), by onnx's shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    lengths = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[-1].HasField("dim_value"):
            lengths[value.name] = dims[-1].dim_value
    inputs = {i.name for i in model.graph.input}
    staged = set(before_convolutions(model))
    inputs |= {out for node in model.graph.node if node.name in staged for out in node.output}
    return [node.name for node in model.graph.node if node.op_type == "Conv" and
            (node.input[0] in inputs or lengths.get(node.input[0]) == 1)]


def _feed(model: OnnxModel, x: np.ndarray, sex: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    return np.ascontiguousarray(x, np.float32), (np.ascontiguousarray(sex, np.float32) if model.takes_sex else None)

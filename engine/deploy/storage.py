"""How an exported file stores its convolutions' weights: fp16 or int8 instead of fp32 — a smaller file, the same
fp32 computation.

fp16: every convolution's weight becomes an fp16 initializer and a ``Cast`` to fp32, which onnxruntime folds when it
opens the file (a constant's cast is a constant): it runs the fp32 graph with each weight rounded to 11 significant
bits, at the fp32 file's speed. int8: an int8 initializer with one scale per output channel (symmetric, the
channel's largest |weight| ↦ 127) and a ``DequantizeLinear`` to fp32, which onnxruntime keeps (its rules for
quantized graphs leave them in place) and runs at each call — the weights rounded to 1/127 of their channel's
largest, and the convolutions fp32 (the price of the dequantization: bench/weight_storage.py). The ages differ from
the fp32 file's only by that rounding. The input stage (the band-pass as matrix products, whose precision the ages
need) and every other tensor stay fp32. Before the file is put in place its ages on the check records are compared
with the fp32 file's, within ``TOLERANCE`` or nothing is written. No torch here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from utils.errors import UserError
from utils.io import staged

from .onnx_model import METADATA_KEY, OnnxModel
from .quantize import INT8_MAX_YEARS, INT8_MEAN_YEARS

STORAGES = ("fp32", "fp16", "int8")
# how far the stored file's ages may be from the fp32 export's (mean, worst check record); int8 weights: int8's
TOLERANCE = {"fp16": (0.01, 0.05), "int8": (INT8_MEAN_YEARS, INT8_MAX_YEARS)}


def _fp16(name: str, weight: np.ndarray) -> tuple[list, object]:
    from onnx import TensorProto, helper, numpy_helper

    stored = numpy_helper.from_array(weight.astype(np.float16), f"{name}__fp16")
    return [stored], helper.make_node("Cast", [stored.name], [name], to=TensorProto.FLOAT, name=stored.name)


def _int8(name: str, weight: np.ndarray) -> tuple[list, object]:
    from onnx import helper, numpy_helper

    largest = np.abs(weight).reshape(len(weight), -1).max(axis=1)
    scale = np.where(largest > 0, largest / 127.0, 1.0).astype(np.float32)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    values = np.clip(np.round(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
    stored = [numpy_helper.from_array(values, f"{name}__int8"), numpy_helper.from_array(scale, f"{name}__scale"),
              numpy_helper.from_array(np.zeros(len(weight), np.int8), f"{name}__zero")]
    return stored, helper.make_node("DequantizeLinear", [t.name for t in stored], [name], axis=0,
                                    name=f"{name}__int8")


STORE = {"fp16": _fp16, "int8": _int8}


def store_weights(model, storage: str) -> int:
    """Store ``model``'s (an onnx ModelProto, changed in place) convolution weights as ``storage`` (fp16 or int8),
    each turned back into fp32 where the graph begins; returns how many."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    tensors = {t.name: t for t in graph.initializer}
    weights = sorted({n.input[1] for n in graph.node if n.op_type == "Conv" and len(n.input) > 1
                      and n.input[1] in tensors and tensors[n.input[1]].data_type == TensorProto.FLOAT})
    nodes = []
    for name in weights:
        stored, node = STORE[storage](name, numpy_helper.to_array(tensors[name]))
        graph.initializer.remove(tensors[name])
        graph.initializer.extend(stored)
        nodes.append(node)
    nodes += graph.node  # before every node: ONNX nodes are in topological order
    del graph.node[:]
    graph.node.extend(nodes)
    return len(weights)


def stored_file(fp32: str | os.PathLike, path: str | os.PathLike, check: tuple[np.ndarray, np.ndarray],
                storage: str) -> dict:
    """The export ``fp32`` with its convolutions' weights stored as ``storage``, at ``path`` once its ages on
    ``check`` (inputs, sex codes) are within ``TOLERANCE[storage]`` of the fp32 file's; returns {'weights',
    'records', 'mean_difference_years', 'max_difference_years', 'bytes'}."""
    import onnx

    path = Path(path)
    model = onnx.load(str(fp32))
    converted = store_weights(model, storage)
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    entry.value = json.dumps({**json.loads(entry.value), "weight_storage": storage})
    x, sex = check
    mean_limit, max_limit = TOLERANCE[storage]
    with staged(path) as staging:
        onnx.save(model, str(staging))
        difference = np.abs(OnnxModel.load(staging).ages(x, sex) - OnnxModel.load(fp32).ages(x, sex))
        if not (difference.mean() <= mean_limit and difference.max() <= max_limit):
            raise UserError(f"the {storage}-stored model's ages differ from the fp32 export's by "
                            f"{difference.mean():.3g} years on average and up to {difference.max():.3g} on {len(x)} "
                            f"check record(s) (allowed mean {mean_limit:g}, max {max_limit:g}); nothing was written "
                            f"to {path}. Keep the fp32 weights (--weight_storage fp32)")
    return {"weights": converted, "records": int(len(x)), "mean_difference_years": float(difference.mean()),
            "max_difference_years": float(difference.max()), "bytes": path.stat().st_size}

"""fp16 storage for an exported file's weights: half the file, the same fp32 computation.

Every convolution's weight becomes an fp16 initializer and a ``Cast`` to fp32 before its convolution. onnxruntime
folds those casts when it opens the file (a constant's cast is a constant), so the graph it runs is the fp32 graph
with each weight rounded to fp16's 11 significant bits — the speed of the fp32 file, and ages that differ from it
only by that rounding. The input stage (the band-pass as matrix products, whose precision the ages need) and every
other tensor stay fp32. Before the file is put in place its ages on the check records are compared with the fp32
file's: max |Δ age| ≤ ``FP16_MAX_YEARS`` or nothing is written. No torch here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from utils.errors import UserError
from utils.io import staged

from .onnx_model import METADATA_KEY, OnnxModel

FP16_MAX_YEARS = 0.05  # how far the fp16-stored file's ages may be from the fp32 export's (worst check record)
SUFFIX = "__fp16"  # the stored weight's name: the fp32 name the cast gives its convolution, and this


def half_weights(model) -> int:
    """Store ``model``'s (an onnx ModelProto, changed in place) convolution weights as fp16, each cast back to fp32
    where the graph begins; returns how many."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    stored = {t.name: t for t in graph.initializer}
    weights = sorted({n.input[1] for n in graph.node if n.op_type == "Conv" and len(n.input) > 1
                      and n.input[1] in stored and stored[n.input[1]].data_type == TensorProto.FLOAT})
    casts = []
    for name in weights:
        tensor = stored[name]
        graph.initializer.remove(tensor)
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16),
                                                         name + SUFFIX))
        casts.append(helper.make_node("Cast", [name + SUFFIX], [name], to=TensorProto.FLOAT, name=name + SUFFIX))
    nodes = [*casts, *graph.node]  # the casts before every node: ONNX nodes are in topological order
    del graph.node[:]
    graph.node.extend(nodes)
    return len(casts)


def fp16_file(fp32: str | os.PathLike, path: str | os.PathLike, check: tuple[np.ndarray, np.ndarray]) -> dict:
    """The export ``fp32`` with its weights stored as fp16, at ``path`` once its ages on ``check`` (inputs, sex
    codes) are within ``FP16_MAX_YEARS`` of the fp32 file's; returns {'weights', 'records',
    'max_difference_years', 'bytes'}."""
    import onnx

    path = Path(path)
    model = onnx.load(str(fp32))
    converted = half_weights(model)
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    entry.value = json.dumps({**json.loads(entry.value), "weight_storage": "fp16"})
    x, sex = check
    with staged(path) as staging:
        onnx.save(model, str(staging))
        difference = float(np.max(np.abs(OnnxModel.load(staging).ages(x, sex) - OnnxModel.load(fp32).ages(x, sex))))
        if not difference <= FP16_MAX_YEARS:
            raise UserError(f"the fp16-stored model's ages differ from the fp32 export's by up to {difference:.3g} "
                            f"years on {len(x)} check record(s) (allowed {FP16_MAX_YEARS:g}); nothing was written "
                            f"to {path}. Keep the fp32 weights (--weight_storage fp32)")
    return {"weights": converted, "records": int(len(x)), "max_difference_years": difference,
            "bytes": path.stat().st_size}

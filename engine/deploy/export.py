"""ONNX export: one model or an ensemble → one ONNX graph whose file alone is enough to run it.

The graph takes ``x`` (batch, 12, length) — for the project's own recipes the window the CPU resampled and cut,
whose band-pass, z-score and NaN → 0 the graph runs itself (models/input_stage.py; metadata
``graph_preprocessing``), otherwise the output of the models' whole shared preprocessing — and, for networks that
read it, ``sex`` (batch,), and gives ``ages`` (batch, members): each member's age after its head (averaging, bias
correction and intervals happen after, as for PyTorch models, so both engines give the same numbers). The batch is
dynamic, and so is the length where every member is made for whole records (the registry's ``whole_record``) and
the graph has no input stage (whose matrices are made for the window's length).
The metadata (key ``METADATA_KEY``, JSON) carries the preprocessing spec, each member's architecture, arguments,
head, bias correction, interval calibration and training facts, and the project version.

Exported with ``torch.onnx.export(dynamo=True)``; every export is checked before it is put in place: onnxruntime's
ages on the given records must equal PyTorch's within ``TOLERANCE_YEARS``, or the export fails with the difference.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.checkpoint import ModelBundle
from models.input_stage import InputStage
from models.preprocessing import PreprocessSpec, cpu_part, in_graph
from models.registry import architecture
from models.schema import ModelCard
from utils.bounds import MAX_INFER_BATCH
from utils.errors import UserError
from utils.io import staged
from utils.machine import project_version

from .onnx_model import METADATA_KEY, ONNX_FORMAT

logger = logging.getLogger(__name__)

TOLERANCE_YEARS = 1e-3
OPSET = 18


@contextlib.contextmanager
def quiet_exporter():
    """The exporter's and its optimizer's chatter (printed notes, warnings, info logs) kept off the console."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [log.level for log in loggers]
    try:
        for log in loggers:
            log.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


class Members(nn.Module):
    """The ensemble as one module: x (B, 12, L) [, sex (B,)] → every member's age (B, M); with ``graph``, x is the
    CPU's window and the module runs the rest of the shared preprocessing first (where the recipe allows it)."""

    def __init__(self, bundles: list[ModelBundle], graph: bool = False):
        super().__init__()
        self.nets = nn.ModuleList([b.model for b in bundles])
        self.heads = [b.head for b in bundles]
        self.takes_sex = bundles[0].takes_sex
        spec = bundles[0].preprocessing
        self.stage = InputStage(spec) if graph and in_graph(spec) else None

    def forward(self, x: torch.Tensor, sex: torch.Tensor | None = None) -> torch.Tensor:
        if self.stage is not None:
            x = self.stage(x)
        ages = [head(net(x, sex) if self.takes_sex else net(x)) for net, head in zip(self.nets, self.heads)]
        return torch.stack(ages, dim=1)


def check_exportable(bundles: list[ModelBundle]) -> None:
    """One graph needs one input: every member must share the preprocessing and whether it reads the sex."""
    first = bundles[0]
    odd = [b.source for b in bundles if b.preprocessing != first.preprocessing or b.takes_sex != first.takes_sex]
    if odd:
        raise UserError(f"{odd[0]} is preprocessed differently from {first.source} (or differs in reading the "
                        f"person's sex); one ONNX graph takes one input, so export such models separately")


def export_metadata(bundles: list[ModelBundle], card: ModelCard | None = None, graph: bool = False) -> dict:
    members = []
    for bundle in bundles:
        schema = bundle.metadata()
        members.append({k: schema[k] for k in ("arch", "model_args", "head", "bias_correction", "calibration",
                                               "training")} | {"source": Path(bundle.source).name})
    return {"format": ONNX_FORMAT, "version": project_version(), "preprocessing": bundles[0].preprocessing.to_dict(),
            "graph_preprocessing": graph, "takes_sex": bundles[0].takes_sex,
            "inputs": ["x", "sex"] if bundles[0].takes_sex else ["x"],
            "output": "ages", "members": members, **({"card": card.to_dict()} if card is not None else {})}


def without_build_details(model) -> None:
    """Drop what the exporter writes of the machine that built ``model`` (an onnx ModelProto, changed in place):
    each node's source lines, stack trace and module path — absolute paths of the build machine, and about a
    tenth of the shipped model's file — and doc strings. onnxruntime reads none of them."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""


def graph_input(bundles: list[ModelBundle], graph: bool = True) -> PreprocessSpec:
    """What the CPU makes of each record for the graph :func:`export_onnx` writes of ``bundles`` (``graph``: the
    recipe's band-pass and z-score inside it, where the recipe allows it)."""
    spec = bundles[0].preprocessing
    return cpu_part(spec) if graph else spec


def export_onnx(bundles: list[ModelBundle], path: str | os.PathLike, x: np.ndarray, sex: np.ndarray,
                card: ModelCard | None = None, graph: bool = True) -> dict:
    """Export ``bundles`` (and their ``card``) to ``path`` and check it on ``x`` (N, 12, L), the records made by
    :func:`graph_input` (the same ``graph``), with sex codes ``sex`` (N,); returns {'records',
    'max_difference_years', 'bytes'}. Nothing is left at ``path`` unless the check passes."""
    import onnx
    import onnxruntime

    check_exportable(bundles)
    path = Path(path)
    module = Members(bundles, graph).eval()
    inputs = (torch.from_numpy(x[:2]),) + ((torch.from_numpy(sex[:2]),) if module.takes_sex else ())
    batch = torch.export.Dim("batch", min=1, max=MAX_INFER_BATCH)
    shapes = {"x": {0: batch}}
    if module.stage is None and all(architecture(b.arch).whole_record for b in bundles):
        shapes["x"][2] = torch.export.Dim("length", min=64, max=1 << 20)
    if module.takes_sex:
        shapes["sex"] = {0: batch}
    with staged(path) as staging:
        with quiet_exporter(), torch.no_grad():
            torch.onnx.export(module, inputs, str(staging), dynamo=True, optimize=True, opset_version=OPSET,
                              input_names=["x", "sex"][:len(inputs)], output_names=["ages"], dynamic_shapes=shapes,
                              external_data=False, verbose=False)
        model = onnx.load(str(staging))
        without_build_details(model)
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(export_metadata(bundles, card, module.stage is not None))
        onnx.save(model, str(staging))
        session = onnxruntime.InferenceSession(str(staging), providers=["CPUExecutionProvider"])
        feed = {"x": x} | ({"sex": sex} if module.takes_sex else {})
        exported = session.run(["ages"], feed)[0]
        with torch.no_grad():
            reference = module(*[torch.from_numpy(v) for v in feed.values()]).numpy()
        difference = float(np.max(np.abs(exported.astype(np.float64) - reference)))
        if not difference <= TOLERANCE_YEARS:
            raise UserError(f"the export does not reproduce the models: onnxruntime's ages differ from PyTorch's by "
                            f"up to {difference:.3g} years on {len(x)} record(s) (allowed {TOLERANCE_YEARS:g}); "
                            f"nothing was written to {path}")
    return {"records": int(len(x)), "max_difference_years": difference, "bytes": path.stat().st_size}

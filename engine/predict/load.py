"""The predictor factory: what ``--weights`` stands for, loaded on the engine that runs it.

It sits apart from the interface (engine/predict/predictor.py) so that the interface and the torch-free
``OnnxPredictor`` never import the PyTorch side: this module imports engine/predict/torch_predictor.py only when
checkpoints are given (the one door to PyTorch on the prediction path; an import-linter contract keeps it so).
"""
from __future__ import annotations

from typing import Iterable

from dataloader.records import Record
from engine.deploy.onnx_model import OnnxModel
from engine.runs import run_members
from utils.errors import UserError

from .onnx_engine import OnnxConfig
from .predictor import OnnxPredictor, Predictor, is_onnx


def load_predictor(weights: list, mode: str | None = None, trust: bool = False, engine: str = "auto",
                   check: Iterable[Record] = (), threads: int = 0, graph: OnnxConfig | None = None) -> Predictor:
    """The models ``weights`` stands for on ``engine`` (a run folder: exactly the members its manifest names);
    ``check``: records an in-memory export (--engine onnxruntime) is checked on; onnxruntime's ``threads``, or
    ``graph``'s threads, calls and spinning for a graph that runs the preprocessing itself (its workers have little
    left to do)."""
    graph = graph or OnnxConfig(threads=threads)
    onnx_files = [w for w in weights if is_onnx(w)]
    if onnx_files:
        if len(weights) > 1:
            raise UserError(f"an ONNX file is one model already (an ensemble is exported as one graph): give "
                            f"{onnx_files[0]} alone, or export the ensemble again with all its members")
        if engine == "torch":
            raise UserError(f"--engine torch cannot run {onnx_files[0]}: an ONNX file runs on onnxruntime")
        model = OnnxModel.load(onnx_files[0], graph.threads, graph.spinning, graph.calls)  # the common case: once
        return OnnxPredictor(model if model.graph_preprocessing else model.with_threads(threads, True))
    from .torch_predictor import TorchPredictor  # checkpoints: the PyTorch side, imported only here

    predictor = TorchPredictor.load([m for w in weights for m in run_members(w)], mode=mode, trust=trust)
    if engine != "onnxruntime":
        return predictor
    if predictor.input_spec != predictor.exported_spec:
        return predictor.exported(check, graph.threads, graph.spinning, graph.calls)
    return predictor.exported(check, threads)

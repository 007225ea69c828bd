"""The networks and their registry (models/registry.py), heads, the preprocessing spec and the checkpoints.

Every registry name (``from models import get_model, MODELS, ...``) loads the registry — and PyTorch — on first use;
``models.preprocessing`` alone needs neither, so the ONNX path (engine/onnx_engine.py) runs without torch.
"""
from __future__ import annotations

UNKNOWN_SEX = 0.5  # the sex input of a person whose sex is unknown (1 male, 0 female): the one representation


def __getattr__(name: str):
    if name.startswith("__") or name == "registry":  # import machinery probes; the submodule itself
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    import importlib

    registry = importlib.import_module(".registry", __name__)
    try:
        return getattr(registry, name)
    except AttributeError:
        raise AttributeError(f"module 'models' has no attribute {name!r}") from None

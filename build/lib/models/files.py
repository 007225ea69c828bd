"""The files a model folder is read by — which checkpoint a folder stands for — without importing torch (a run
folder's other file names: engine/runs.py)."""
from __future__ import annotations

from pathlib import Path

from utils.errors import CheckpointError

BEST, PUBLISHED_WEIGHTS, PUBLISHED_CONFIG = "best.pt", "model.pth", "config.json"
SHIPPED = Path(__file__).parent / "shipped"  # the models that ship with the project (ONNX files, each with its card)
SHIPPED_MODEL = SHIPPED / "ecg_age_ptbxl.onnx"  # what `ecg-age predict` uses without --weights (MODEL_CARD.md)


def resolve_weights(path: Path) -> tuple[Path, Path | None]:
    """(weights file, published config.json or None) for a checkpoint file or a run/model folder."""
    if path.is_dir():
        weights = next((path / n for n in (BEST, PUBLISHED_WEIGHTS) if (path / n).exists()), None)
        if weights is None:
            raise CheckpointError(f"{path}: folder holds no best.pt or model.pth")
    else:
        weights = path
    config = weights.parent / PUBLISHED_CONFIG if weights.name == PUBLISHED_WEIGHTS else None
    return weights, config if config is not None and config.exists() else None

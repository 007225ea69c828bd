"""A training run's folder, ``log/<arch>_<env>/``: which checkpoint is the best, which one a resume starts from."""
from __future__ import annotations

import re
from pathlib import Path


def run_dir(log_dir: str | Path, arch: str, env: str) -> Path:
    return Path(log_dir) / f"{arch}_{env}"


def best_checkpoint_name(checkpoints: str) -> str:
    """``model.pth`` for the best-only recipe (the published folder layout), else ``best.pt``."""
    return "model.pth" if checkpoints == "best_only" else "best.pt"


def epoch_checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


def latest_checkpoint(run: Path) -> Path | None:
    """The run's most recent complete epoch: ``last.pt``, else the highest ``epoch_NNN.pt`` (seed runs)."""
    if (run / "last.pt").exists():
        return run / "last.pt"
    epochs = sorted(run.glob("epoch_*.pt"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    return epochs[-1] if epochs else None

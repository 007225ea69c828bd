"""Which process this is in a torch.distributed run — without importing torch.

A process that has not imported PyTorch (the ONNX path) cannot be part of a distributed run: it is the main process
and has nothing to wait for. utils/runtime.py (which needs torch) sets runs up and re-exports these.
"""
from __future__ import annotations

import os
import sys


def _distributed():
    """torch.distributed when this process uses PyTorch and has a process group, else None."""
    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None) if torch is not None else None
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def is_main() -> bool:
    dist = _distributed()
    return dist is None or dist.get_rank() == 0


def is_local_main() -> bool:
    """The first process on this machine (one per node builds node-local files such as the cache)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def barrier() -> None:
    dist = _distributed()
    if dist is not None:
        dist.barrier()

"""A training run's folder, ``log/<arch>_<env>/``: its lock, which checkpoint is the best, which one a resume
starts from."""
from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from pathlib import Path

from utils.errors import UserError


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


class RunLock:
    """Exclusive use of a run folder for the life of this process: ``<run>/.lock`` holds an advisory lock
    (flock) and its owner's host, pid and start time. The kernel releases the lock when the owner exits, however it
    ends, so a lock left by a killed run is taken over (and said so); a live owner makes a second run stop with a
    clear error instead of interleaving checkpoints. The lock file is the one file not written atomically: it
    must stay the same file while locked."""

    def __init__(self, run: Path, log=print):
        run.mkdir(parents=True, exist_ok=True)
        self.path = run / ".lock"
        self.handle = open(self.path, "a+")
        self.handle.seek(0)
        previous = self.handle.read().strip()
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise UserError(f"{run} is in use by another training run ({previous or 'owner unknown'}); wait for it "
                            f"to finish or give this run another --env") from None
        if previous:
            log(f"note: {run} was last locked by {previous}, which is no longer running; taking it over")
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        self.handle.flush()

    def release(self) -> None:
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.close()  # closing drops the flock

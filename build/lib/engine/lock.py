"""A run folder's lock: one training run at a time in a folder, a lock left by a killed run taken over, and nothing
of the lock left once released."""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from pathlib import Path

from utils.errors import OutputError, UserError

from .runs import LOCK

logger = logging.getLogger(__name__)


class RunLock:
    """Exclusive use of a run folder for the life of this process: ``<run>/.lock`` holds an advisory lock
    (flock) and its owner's host, pid and start time. The kernel releases the lock when the owner exits, however it
    ends, so a lock left by a killed run is taken over (and said so); a live owner makes a second run stop with a
    clear error instead of interleaving checkpoints. The lock file is the one file not written atomically: it
    must stay the same file while locked."""

    def __init__(self, run: Path):
        self.path, self.created = run / LOCK, not run.exists()
        for _ in range(10):  # a lock file released and unlinked between our open and our lock: open it again
            previous = self._acquire(run)
            if self._still_ours():
                break
            self.handle.close()
        if previous:
            logger.warning(f"note: {run} was last locked by {previous}, which is no longer running; taking it over")
        try:
            self.handle.seek(0)
            self.handle.truncate()
            self.handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                              f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
            self.handle.flush()
        except OSError as exc:
            self.handle.close()
            reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise OutputError(f"cannot write the run lock {self.path}: {reason}; free space or choose another "
                              f"--log_dir") from exc

    def _acquire(self, run: Path) -> str:
        """Open and lock the lock file; returns what its previous owner wrote."""
        try:
            run.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a+")
        except OSError as exc:
            raise OutputError(f"cannot create the run folder {run} ({exc.strerror or exc}); choose another "
                              f"--log_dir") from exc
        self.handle.seek(0)
        previous = self.handle.read().strip()
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise UserError(f"{run} is in use by another training run ({previous or 'owner unknown'}); wait for it "
                            f"to finish or give this run another --env") from None
        return previous

    def _still_ours(self) -> bool:
        """The locked file is still the one at ``path`` (not unlinked by an owner releasing it meanwhile)."""
        try:
            return os.fstat(self.handle.fileno()).st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    def release(self) -> None:
        """The lock file removed while still held (nothing of the lock is left), then the lock dropped; a run folder
        this lock created and nothing else filled is removed too."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        self.handle.close()  # closing drops the flock
        if self.created:
            try:
                self.path.parent.rmdir()  # only when empty
            except OSError:
                pass

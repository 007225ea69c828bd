"""The one way this project writes files: to a temporary file beside the target, fsync, then rename.

A crash, a kill or a full disk therefore never leaves a truncated or half-written output behind, and an existing
file is only replaced by a complete new one.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator


class OutputError(OSError):
    """A file could not be written (unwritable folder, full disk, ...); nothing was left behind."""


def _explain(path: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ENOSPC:
        reason = "the disk is full"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "the folder is not writable"
    else:
        reason = exc.strerror or str(exc)
    return OutputError(exc.errno or 0, f"cannot write {path}: {reason}; nothing was written there "
                                       f"(free space or choose another output folder)")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it is fsynced and renamed onto ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _explain(path, exc) from exc
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _explain(path, exc) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, writer: Callable[[IO], None], binary: bool = False) -> Path:
    """Call ``writer(handle)`` on a temporary file and atomically move it to ``path``."""
    with atomic_open(path, "wb" if binary else "w", **({} if binary else {"newline": ""})) as handle:
        writer(handle)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text))


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: str | os.PathLike, frame, index: bool = False, **kwargs) -> Path:
    """Write a pandas DataFrame as CSV atomically."""
    return atomic_write(path, lambda handle: frame.to_csv(handle, index=index, lineterminator="\n", **kwargs))


def save_torch(path: str | os.PathLike, obj) -> Path:
    import torch

    return atomic_write(path, lambda handle: torch.save(obj, handle), binary=True)


def save_figure(path: str | os.PathLike, figure) -> Path:
    return atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=120, bbox_inches="tight"),
                        binary=True)

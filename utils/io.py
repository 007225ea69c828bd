"""Files in and out. Every file is written one way: to a temporary file beside the target, fsync, then rename —
a crash, a kill or a full disk never leaves a truncated or half-written output behind, and an existing file is only
replaced by a complete new one. CSVs are read through one checked reader whose failures name the file.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

import pandas as pd
import torch

from .errors import OutputError, RecordError


def _explain(path: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ENOSPC:
        reason = "the disk is full"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "the folder is not writable"
    else:
        reason = exc.strerror or str(exc)
    return OutputError(f"cannot write {path}: {reason}; nothing was written there "
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
    return atomic_write(path, lambda handle: torch.save(obj, handle), binary=True)


def save_figure(path: str | os.PathLike, figure) -> Path:
    return atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=120, bbox_inches="tight"),
                        binary=True)


def read_csv(path: str | os.PathLike, what: str = "a CSV", **kwargs) -> pd.DataFrame:
    """pandas.read_csv whose every failure (missing, empty, binary, malformed) is a RecordError naming the file."""
    try:
        return pd.read_csv(path, **kwargs)
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # ParserError and EmptyDataError are ValueErrors
        raise RecordError(str(path), f"cannot be read as {what} ({type(exc).__name__}: {exc})") from exc

"""Files in and out. Every file is written one way: to a temporary file beside the target, fsync, then rename —
a crash, a kill or a full disk never leaves a truncated or half-written output behind, and an existing file is only
replaced by a complete new one. New files get the usual permissions (0666 minus the umask; a replaced file keeps
its mode), and a symbolic link is written through (the link stays, its target gets the new content).

CSV cells that a spreadsheet would run as a formula (text beginning with =, +, -, @, a tab or a carriage return,
other than plain numbers) are refused rather than altered, so ids always round-trip unchanged. CSVs are read
through one checked reader whose failures name the file.
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

from .errors import OutputError, RecordError, UserError

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def new_file_mode() -> int:
    """0666 minus the process's current umask (read from /proc without changing it where Linux offers it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


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
    """Open a temporary file next to ``path`` (next to its target, for a symbolic link); on success it is fsynced,
    given the permissions a new file would get (or the replaced file's), and renamed onto the target."""
    path = Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        file_mode = path.stat().st_mode & 0o7777 if path.exists() else new_file_mode()
    except OSError as exc:
        raise _explain(path, exc) from exc
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), file_mode)
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


def formula_like(values) -> list[str]:
    """The values a spreadsheet would run as a formula: text beginning with =, +, -, @, a tab or a carriage return
    (plain numbers such as -3.5 excepted)."""
    bad = []
    for value in values:
        if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
            try:
                float(value)
            except ValueError:
                bad.append(value)
    return bad


def check_spreadsheet_safe(values, what: str) -> None:
    """Refuse ids that would become spreadsheet formulas in an output CSV (they are never altered)."""
    bad = formula_like(values)
    if bad:
        shown = ", ".join(repr(v) for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise UserError(f"{len(bad)} {what} begin with =, +, -, @, a tab or a carriage return ({shown}); a "
                        f"spreadsheet would run them as formulas, so they are not written to a CSV. Rename them.")


def write_csv(path: str | os.PathLike, frame, index: bool = False, **kwargs) -> Path:
    """Write a pandas DataFrame as CSV atomically (text cells that look like spreadsheet formulas are refused)."""
    for column in frame.columns:
        if frame[column].dtype == object:
            check_spreadsheet_safe(frame[column], f"value(s) of column {column!r} for {path}")
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


def check_not_an_input(output: str | os.PathLike, inputs, flag: str = "--output") -> None:
    """Refuse an output path that is one of the inputs (it would be replaced by the output)."""
    output = Path(output)
    for item in inputs:
        if item is None:
            continue
        item = Path(item)
        same = output.exists() and item.exists() and os.path.samefile(output, item)
        if same or output.resolve() == item.resolve():
            raise UserError(f"{flag} {output} is an input of this run ({item}); writing it would replace that "
                            f"file. Choose another output path.")

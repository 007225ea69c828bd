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
import glob
import json
import math
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

import numpy as np
import pandas as pd

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


def explain_write_error(path: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ENOSPC:
        reason = "the disk is full"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "the folder is not writable"
    else:
        reason = exc.strerror or str(exc)
    return OutputError(f"cannot write {path}: {reason}; nothing was written there "
                       f"(free space or choose another output folder)")


_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]{6,}\.tmp")  # what atomic_open's mkstemp names


def temporary_target(name: str) -> str | None:
    """The file name whose temporary ``name`` is (``.<name>.<random>.tmp``, as atomic_open makes them), or None."""
    match = _TEMPORARY.fullmatch(name)
    return match.group("name") if match else None


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
        raise explain_write_error(path, exc) from exc
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
        raise explain_write_error(path, exc) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, writer: Callable[[IO], None], binary: bool = False) -> Path:
    """Call ``writer(handle)`` on a temporary file and atomically move it to ``path``."""
    with atomic_open(path, "wb" if binary else "w", **({} if binary else {"newline": ""})) as handle:
        writer(handle)
    return Path(path)


_BESIDE = r"\.{name}(?:\.(?P<part>[a-z0-9]+))?\.(?P<pid>\d+)\.tmp"  # what beside() names: .<name>[.<part>].<pid>.tmp


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(path: Path) -> list[Path]:
    """What a killed process left beside ``path`` while writing it (``beside``'s temporaries, files or folders, of
    a process that no longer runs) — the project's own names only; returns what was removed."""
    pattern, removed = re.compile(_BESIDE.format(name=re.escape(path.name))), []
    for item in path.parent.glob(f".{glob.escape(path.name)}.*.tmp") if path.parent.is_dir() else ():
        match = pattern.fullmatch(item.name)
        if match and not process_alive(int(match.group("pid"))) and not item.is_symlink():
            shutil.rmtree(item) if item.is_dir() else item.unlink()
            removed.append(item)
    return removed


@contextlib.contextmanager
def beside(path: Path, part: str = "", folder: bool = False) -> Iterator[Path]:
    """A temporary file (or, with ``folder``, an empty folder) named after ``path`` beside it, removed when the block
    ends however it ends; what a killed process leaves is removed by the next ``remove_stale(path)``."""
    name = f".{path.name}{'.' + part if part else ''}.{os.getpid()}.tmp"
    temporary = path.with_name(name)
    try:
        if folder:
            temporary.mkdir()
        yield temporary
    finally:
        if folder and temporary.is_dir() and not temporary.is_symlink():
            shutil.rmtree(temporary, ignore_errors=True)
        elif not folder:
            temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def staged(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to build a file under (by a library that writes by name); it replaces
    ``path`` only when the block succeeds, and nothing of it is left otherwise."""
    with beside(path) as staging:
        try:
            yield staging
            staging.replace(path)
        except OSError as exc:
            raise OutputError(f"{path}: cannot be written ({exc.strerror or exc})") from exc


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text))


def json_ready(obj):
    """``obj`` as it reads back from JSON, by one rule for every file the project writes: tuples become lists,
    keys strings, an undefined number (NaN) null, an infinite one the string "inf" / "-inf" (a setting such as an
    uncapped weight keeps its meaning), numpy scalars plain numbers."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else str(obj)
    return obj


def write_json(path: str | os.PathLike, obj) -> Path:
    """Atomically, as :func:`json_ready` makes it (always valid JSON); other objects (paths) as text."""
    return write_text(path, json.dumps(json_ready(obj), indent=2, sort_keys=False, default=str, allow_nan=False)
                      + "\n")


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
    """Refuse ids that would become spreadsheet formulas in an output CSV, or hold a NUL character (which ends the
    text in most readers): they are never altered."""
    nul = [v for v in values if isinstance(v, str) and "\x00" in v]
    if nul:
        raise UserError(f"{len(nul)} {what} hold a NUL character ({', '.join(repr(v) for v in nul[:10])}); most "
                        f"programs would cut them short there, so they are not written to a CSV. Rename them.")
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


def save_figure(path: str | os.PathLike, figure, dpi: int = 120, tight: bool = True) -> Path:
    """A PNG of ``figure``; ``tight=False`` keeps the figure's own size (a drawing to scale)."""
    return atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=dpi,
                                                            bbox_inches="tight" if tight else None), binary=True)


def access_error(where: str, exc: BaseException, what: str) -> RecordError:
    """A RecordError for an exception raised while reading; access failures are marked transient."""
    error = RecordError(where, f"{what} ({type(exc).__name__}: {str(exc)[:300]})")
    error.transient = isinstance(exc, (PermissionError, FileNotFoundError, TimeoutError)) or \
        getattr(exc, "errno", None) in (errno.EIO, errno.EAGAIN, errno.EACCES, errno.ENOENT)
    return error


def regular_file(path: str | os.PathLike, where: str | None = None, max_bytes: int | None = None) -> Path:
    """``path`` if it is a regular file (not a FIFO, device, socket or folder, which are never opened: reading a
    FIFO would block forever) of at most ``max_bytes``."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise access_error(where or str(path), exc, "cannot be opened") from exc
    if not stat.S_ISREG(info.st_mode):
        raise RecordError(where or str(path), "is not a regular file (a FIFO, device, socket or folder is never read)")
    if max_bytes is not None and info.st_size > max_bytes:
        raise RecordError(where or str(path), f"is {info.st_size:,} bytes, more than the {max_bytes:,} allowed")
    return path


MAX_CSV_BYTES = 4 << 30  # a label or prediction table of 4 GiB holds tens of millions of rows


def read_csv(path: str | os.PathLike, what: str = "a CSV", **kwargs) -> pd.DataFrame:
    """pandas.read_csv of a regular file whose every failure (missing, empty, binary, malformed, a FIFO) is a
    RecordError naming the file."""
    if os.path.exists(path):  # a missing file is pandas' FileNotFoundError below
        try:
            regular_file(path, str(path), max_bytes=MAX_CSV_BYTES)
        except RecordError as exc:
            raise RecordError(str(path), f"cannot be read as {what}: it {exc.reason}") from exc
        if _holds_nul(path):  # pandas would cut a field short at it, silently
            raise RecordError(str(path), f"cannot be read as {what}: it holds NUL bytes (a binary or damaged file)")
    try:
        return pd.read_csv(path, **kwargs)
    except FileNotFoundError as exc:
        raise RecordError(str(path), f"cannot be read as {what} (FileNotFoundError: it does not exist)") from exc
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # ParserError and EmptyDataError are ValueErrors
        # pandas' own text may quote the file's fields: only its kind is named
        raise RecordError(str(path), f"cannot be read as {what} ({type(exc).__name__}: malformed, empty or not "
                                     f"text)") from exc


def _holds_nul(path) -> bool:
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            if b"\x00" in block:
                return True
    return False


def check_output_path(output: str | os.PathLike, read_files=(), input_folders=(), flag: str = "--output") -> None:
    """Refuse an output path that would replace something this run reads or that is not a regular file: a device
    node, FIFO, socket or folder; a path inside an input folder (a record's own file, say); or a path that is — or
    resolves to, through links — one of ``read_files`` (records, labels, weights, HDF5 link targets)."""
    output = Path(output)
    try:
        info = os.stat(output)
    except OSError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise UserError(f"{flag} {output} is not a regular file (a device, FIFO, socket or folder); outputs are only "
                        f"ever written as new or replaced regular files. Choose another output path.")
    resolved = Path(os.path.realpath(output))
    for folder in input_folders:
        folder = Path(os.path.realpath(folder))
        if folder.is_dir() and resolved.is_relative_to(folder):
            raise UserError(f"{flag} {output} lies inside the input folder {folder}; an output there could replace "
                            f"a record's file. Choose an output path outside it.")
    if info is None:  # a new file replaces nothing
        return
    for item in read_files:
        if item is not None and _identity(item) == (info.st_dev, info.st_ino):
            raise UserError(f"{flag} {output} is an input of this run ({item}); writing it would replace that "
                            f"file. Choose another output path.")


def _identity(path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def write_block(path: Path, name: str, text: str, by: str) -> None:
    """Replace the block ``name`` of a document (between ``<!-- name: written by BY -->`` and ``<!-- /name: written
    by BY -->``) with ``text``: figures a script measures are written by that script, never copied by hand."""
    start = f"<!-- {name}: written by {by} -->"
    end = start.replace("<!-- ", "<!-- /")
    content = Path(path).read_text()
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(content):
        raise UserError(f"{path} has no block {start} … {end}")
    write_text(path, pattern.sub(lambda _: f"{start}\n{text}\n{end}", content))


def write_block_at(target: str, text: str, by: str) -> None:
    """:func:`write_block` for a ``FILE:BLOCK`` target, the form of the benchmarks' ``--write`` option."""
    path, block = target.rsplit(":", 1)
    write_block(Path(path), block, text, by)


def write_option(parser, block: str) -> None:
    """A benchmark's ``--write FILE:BLOCK`` (the target :func:`publish` writes its table into)."""
    parser.add_argument("--write", default=None, metavar="FILE:BLOCK",
                        help=f"write the table into the marked block of FILE (e.g. bench/README.md:{block})")


def publish(result: dict, kept: Path, target: str | None, table: Callable[[dict, list[str]], str], by: str,
            argv: list[str]) -> None:
    """A benchmark's ``result``: kept as JSON at ``kept`` (under its --work), its ``table(result, command)`` written
    into ``target`` (--write FILE:BLOCK, where given) with the command that measured it (``python BY ARGV``), and
    printed as one JSON object on the last line."""
    write_text(kept, json.dumps(result, indent=1))
    if target:
        write_block_at(target, table(result, ["python", by, *argv]), by)
    print(json.dumps(result))

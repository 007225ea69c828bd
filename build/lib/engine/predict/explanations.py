"""An explanation folder (``test_interface --explain DIR``): DIR/lead_importance.csv (each lead's share of the
attribution), DIR/<id>.png (the 12-lead ECG shaded by attribution) and DIR/explanations.json, the folder's own
record of what it wrote (so an interrupted job resumes and a new one removes only what the index names). Also the
names of the attribution methods (engine/predict/explain.py computes them). No torch.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from dataloader.records import LEADS
from utils.errors import RecordError, UserError
from utils.io import check_output_path, regular_file, temporary_target, write_json

METHODS = ("integrated_gradients", "occlusion")
DEFAULT_METHOD = "occlusion"
INDEX_EVERY_SECONDS = 10.0  # the index is rewritten at most this often (an interrupted run loses at most this)
LEAD_IMPORTANCE = "lead_importance.csv"  # columns: id and one per lead (LEADS order)
INDEX, INDEX_FORMAT = "explanations.json", "ecg-age-explanations/1"  # what an explanation folder wrote, and done
MAX_INDEX_BYTES = 1 << 30
_REMEDY = {"--explain": "give a new or empty folder",
           "--explanations": "give the folder test_interface --explain wrote with these predictions"}


def figure_name(record_id: str, taken: set[str]) -> str:
    """``<id>.png`` with every character but letters, digits, '.', '_' and '-' made '_' (an id may be a path);
    an id that would collide with another's name gets its hash appended."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", record_id).lstrip(".") or "_"
    if name in taken:
        name = f"{name}_{hashlib.sha256(record_id.encode()).hexdigest()[:8]}"
    taken.add(name)
    return f"{name}.png"


def read_index(folder: Path, flag: str = "--explain") -> dict | None:
    """The explanation folder's own record of what it wrote (None: there is none); a damaged or foreign index is
    an error (naming ``flag``, the option that gave the folder), never a licence to delete."""
    path = folder / INDEX
    if not path.exists():
        return None
    try:
        index = json.loads(regular_file(path, str(path), max_bytes=MAX_INDEX_BYTES).read_text())
    except (OSError, ValueError, RecordError) as exc:
        raise UserError(f"{flag} {folder}: its {INDEX} cannot be read ({type(exc).__name__}); "
                        f"{_REMEDY[flag]}") from None
    index = index if isinstance(index, dict) else {}
    files, done = index.get("files"), index.get("done")
    plain = isinstance(files, list) and all(isinstance(f, str) and f == Path(f).name and not f.startswith(".")
                                            and f not in ("", "..") for f in files)
    if index.get("format") != INDEX_FORMAT or not plain or not isinstance(done, dict) or \
            not all(_shares_ok(v) for v in done.values()):
        raise UserError(f"{flag} {folder}: {INDEX} is not an index this project wrote ({INDEX_FORMAT}); "
                        f"{_REMEDY[flag]}")
    return index


def read_explanations(folder: Path) -> dict[str, tuple[np.ndarray, Path | None]]:
    """What an explanation folder holds, by record id: (each lead's share, its 12-lead figure or None), in the
    order the records were explained; the figures are matched by the naming rule that wrote them."""
    index = read_index(Path(folder), "--explanations")
    if index is None:
        raise UserError(f"--explanations {folder}: no {INDEX} there (the folder test_interface --explain writes)")
    taken: set[str] = set()
    files, out = set(index["files"]), {}
    for k, (record_id, shares) in enumerate(index["done"].items()):
        name = figure_name(record_id, taken) if k < len(index["files"]) else None
        figure = Path(folder) / name if name in files and (Path(folder) / name).is_file() else None
        out[record_id] = (np.asarray(shares, dtype=float), figure)
    return out


def _shares_ok(shares) -> bool:
    try:
        values = np.asarray(shares, dtype=float)
    except (TypeError, ValueError):
        return False
    return values.shape == (len(LEADS),) and bool(np.isfinite(values).all() and (values >= 0).all()) and \
        abs(values.sum() - 1) < 1e-4


def _own(index: dict | None) -> set[str]:
    return {INDEX, LEAD_IMPORTANCE, *(index["files"] if index else ())}


def check_explain_folder(folder: Path, read_files, input_folders) -> None:
    """Before any work: the folder may not hold or lie in inputs, and, if it exists, it holds nothing but what an
    earlier explanation recorded in its index (replaced, or resumed when it is the same job): anything else — a
    user's file or sub-folder, whatever its name — makes the command refuse, naming it."""
    check_output_path(folder / LEAD_IMPORTANCE, read_files, input_folders, flag="--explain")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--explain {folder} is a file; give a folder")
    if not folder.is_dir():
        return
    own = _own(read_index(folder))
    others = [p.name for p in folder.iterdir() if not _written_here(p, own)]
    if others:
        shown = ", ".join(sorted(others)[:5]) + (" ..." if len(others) > 5 else "")
        raise UserError(f"--explain {folder} holds files this project did not record writing there ({shown}); they "
                        f"are never deleted: give a new or empty folder, or one holding only an earlier explanation")


def _written_here(path: Path, own: set[str]) -> bool:
    """A regular file (never a folder or a link) whose name the index records, or a temporary of one."""
    return (temporary_target(path.name) or path.name) in own and path.is_file() and not path.is_symlink()


def _start(folder: Path, job: str, files: list[str], made_by: dict | None = None) -> dict:
    """This job's index: the earlier one when it is the same job (resumed), else a new one — written before any
    figure, after the earlier job's recorded files (and their temporaries) are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    index = read_index(folder)
    if index is not None and index.get("job") == job:
        return index
    own = _own(index)
    for path in folder.iterdir():
        if _written_here(path, own):
            path.unlink()
    index = {"format": INDEX_FORMAT, "job": job, "files": files, "done": {}, "complete": False,
             **({"made_by": made_by} if made_by else {})}
    write_json(folder / INDEX, index)
    return index


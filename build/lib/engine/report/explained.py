"""The explanations a report attaches to its cards (``--explanations DIR``), matched to the predictions they explain
and checked before anything is written: every explained id among the predictions, the same models and the same
predicted ages as the prediction notes say (recorded by test_interface --explain), and every figure a PNG inside
the folder whose size is read from its header before anything is decoded."""
from __future__ import annotations

import logging
import math
import struct
from pathlib import Path

import pandas as pd

from engine.predict.explanations import INDEX, read_explanations, read_index
from engine.predict.notes import PredictionNotes
from utils.bounds import MAX_FIGURE_BYTES, MAX_FIGURE_PIXELS
from utils.errors import UserError

logger = logging.getLogger("report")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
AGE_TOLERANCE = 1e-3  # years: the same prediction, read back from its CSV


def matched_explanations(folder: Path, data: pd.DataFrame, notes: PredictionNotes | None) -> dict:
    """id → (lead shares, figure or None) of the explanations in ``folder`` of exactly the predictions in ``data``
    (ids, predicted ages) made by the models ``notes`` name; anything else is a UserError naming it."""
    folder = Path(folder)
    explained = read_explanations(folder)
    predicted = dict(zip(data["id"], data["predicted"].astype(float)))
    foreign = [rid for rid in explained if rid not in predicted]
    if foreign:
        raise UserError(f"--explanations {folder}: {len(foreign)} explained id(s) are not among the predictions "
                        f"({', '.join(map(repr, foreign[:10]))}); give the folder test_interface --explain wrote with "
                        f"these predictions")
    made_by = _made_by(read_index(folder, "--explanations"))
    if made_by is None:
        logger.warning(f"warning: --explanations {folder}: its {INDEX} does not record which models and ages it "
                       f"explains (written by an earlier version); they are shown unchecked")
    else:
        check_same_predictions(folder, made_by, predicted, notes)
    for _, figure in explained.values():
        if figure is not None:
            check_figure(figure, folder)
    return explained


def _made_by(index: dict) -> dict | None:
    """The index's record of the models and ages explained (None: not recorded; a damaged one is an error)."""
    made_by = index.get("made_by")
    if made_by is None:
        return None
    models, ages = (made_by.get(k) if isinstance(made_by, dict) else None for k in ("models", "ages"))
    ok = isinstance(models, list) and all(isinstance(m, str) for m in models) and isinstance(ages, dict) and \
        all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in ages.values())
    if not ok:
        raise UserError(f"--explanations: {INDEX} records the models and ages it explains in a form this project "
                        f"does not write (damaged or edited); give the folder test_interface --explain wrote")
    return made_by


def check_same_predictions(folder: Path, made_by: dict, predicted: dict, notes: PredictionNotes | None) -> None:
    """The explanations were made by the models the notes name, for the ages in the predictions."""
    if notes is not None and notes.models is not None and list(notes.models) != made_by["models"]:
        raise UserError(f"--explanations {folder}: explains the predictions of other models ({len(made_by['models'])} "
                        f"model(s), not the {len(notes.models)} these predictions' notes name); give the folder "
                        f"test_interface --explain wrote with these predictions")
    differ = [rid for rid, age in made_by["ages"].items()
              if rid in predicted and abs(age - predicted[rid]) > AGE_TOLERANCE]
    if differ:
        shown = ", ".join(f"{rid!r} ({made_by['ages'][rid]:.1f} y there, {predicted[rid]:.1f} y here)"
                          for rid in differ[:5])
        raise UserError(f"--explanations {folder}: explains other predictions of {len(differ)} record(s): {shown}; "
                        f"give the folder test_interface --explain wrote with these predictions")


def check_figure(path: Path, folder: Path) -> None:
    """A figure is a regular PNG file inside the folder (not a link) of at most ``MAX_FIGURE_PIXELS`` pixels and
    ``MAX_FIGURE_BYTES`` bytes — its size read from its header, before any pixel is decoded."""
    where = f"--explanations {folder}: {path.name}"
    if path.is_symlink() or not path.is_file() or path.resolve().parent != folder.resolve():
        raise UserError(f"{where} is a link or not a regular file in the folder; figures are embedded only from the "
                        f"folder test_interface --explain wrote")
    if path.stat().st_size > MAX_FIGURE_BYTES:
        raise UserError(f"{where} is {path.stat().st_size / 1e6:.0f} MB, more than a figure this project writes "
                        f"({MAX_FIGURE_BYTES / 1e6:.0f} MB at most)")
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise UserError(f"{where} is not a PNG image")
    width, height = struct.unpack(">II", head[16:24])
    if not 0 < width * height <= MAX_FIGURE_PIXELS:
        raise UserError(f"{where} declares {width} × {height} pixels, more than a figure this project writes "
                        f"({MAX_FIGURE_PIXELS / 1e6:.0f} million at most)")

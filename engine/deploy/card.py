"""A model's card from its measurements (``python -m engine.deploy.card``, a step of ``make model``): the run's
out-of-fold MAE with its interval (cv.json), the external MAE and interval coverage of the exported file on records
it never saw (its predictions against their recorded ages), what it was trained on, what it is for and the command
that rebuilds it — written as JSON for ``export_interface.py --card``."""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from dataloader.formats import open_reader
from engine.runs import CV_SUMMARY
from models.schema import ModelCard
from utils.cli import run_main
from utils.errors import UserError
from utils.io import write_json

INTENDED_USE = ("ECG-age of adults (18 years and older) from a resting 10-second 12-lead ECG, for research: a "
                "person's ECG-age gap and its interval. Not for children, not for exercise, Holter or single-lead "
                "recordings, and not a diagnostic device.")


def external_figures(predictions: Path, records: Path) -> dict:
    """MAE of ``predictions`` (ids, predicted_age[, lower, upper]) against the ages ``records`` carry, and the
    intervals' coverage there."""
    table = pd.read_csv(predictions, dtype={"ids": str}).set_index("ids")
    known = open_reader(records).table.set_index("id")["age"]
    ages = pd.to_numeric(known.reindex(table.index), errors="coerce")
    aged = ages.notna()
    if not aged.any():
        raise UserError(f"{records}: none of the {len(table)} predicted records carries an age")
    error = np.abs(table.loc[aged, "predicted_age"] - ages[aged])
    out = {"external_mae": float(error.mean()), "external_records": int(aged.sum())}
    if {"lower", "upper"} <= set(table.columns):
        inside = (table.loc[aged, "lower"] <= ages[aged]) & (ages[aged] <= table.loc[aged, "upper"])
        out["interval_coverage"] = float(inside.mean())
    return out


def card_of(run: Path, predictions: Path, records: Path, level: float, name: str, trained_on: str,
            external: str, command: str) -> ModelCard:
    try:
        pooled = json.loads((run / CV_SUMMARY).read_text())["pooled"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{run}: no readable {CV_SUMMARY} (a cross-validated run's out-of-fold results)") from exc
    figures = external_figures(predictions, records)
    return ModelCard(name=name, trained_on=trained_on, records=int(pooled["n"]), oof_mae=float(pooled["mae"]),
                     oof_mae_ci95=tuple(float(v) for v in pooled["mae_ci95"]),
                     external=f"{external} ({figures['external_records']} records)",
                     external_mae=figures["external_mae"], interval_level=level,
                     interval_coverage=figures.get("interval_coverage"), intended_use=INTENDED_USE,
                     date=datetime.date.today().isoformat(), command=command)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.deploy.card", description=__doc__)
    p.add_argument("--run", required=True, help="the cross-validated run folder the model is exported from")
    p.add_argument("--predictions", required=True, help="the exported model's predictions of --records (with "
                                                        "lower,upper)")
    p.add_argument("--records", required=True, help="the external records, which carry their ages")
    p.add_argument("--level", type=float, default=0.9, help="the intervals' level")
    p.add_argument("--name", required=True)
    p.add_argument("--trained_on", required=True)
    p.add_argument("--external", required=True, help="what the external records are, in words")
    p.add_argument("--command", required=True, help="the command that rebuilds the model")
    p.add_argument("--out", required=True, help="the card (JSON)")
    args = p.parse_args(argv)
    card = card_of(Path(args.run), Path(args.predictions), Path(args.records), args.level, args.name,
                   args.trained_on, args.external, args.command)
    write_json(Path(args.out), card.to_dict())
    print(json.dumps(card.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))

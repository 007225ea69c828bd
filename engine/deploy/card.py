"""A model's card from its measurements (``python -m engine.deploy.card``, a step of ``make model``): the runs'
out-of-fold MAE with its interval (their oof.csv: each record predicted by the models that never saw it; whole
patients resampled where ``--patients`` names them), the
external MAE and interval coverage of the exported file on records
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
from dataloader.labels import patients_by_id
from engine.runs import OOF
from models.schema import ModelCard
from utils import metrics
from utils.cli import run_main
from utils.errors import RecordError, UserError
from utils.io import read_csv, write_block, write_json
from utils.tables import AGE, RUN_ID

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


def training_patients(path: Path) -> pd.Series:
    """Record id → patient of the training input at ``path`` (e.g. the PTB-XL root), whose table names them."""
    named = patients_by_id(open_reader(path).table)
    if named is None:
        raise UserError(f"--patients {path}: its records name no patients (patient_id)")
    return named


def out_of_fold(runs: list[Path], patients_by_id: pd.Series | None = None) -> dict:
    """The out-of-fold MAE (with its 95 % bootstrap interval) of the ensemble of ``runs`` — K-fold runs on the same
    folds (different seeds): each record's age is the mean of the models that never saw it. ``patients_by_id``
    (record id → patient): whole patients resampled, as the folds dealt them; a record it does not name is a patient
    of its own."""
    tables = []
    for run in runs:
        try:
            tables.append(read_csv(run / OOF, f"{run}'s out-of-fold ages", dtype={RUN_ID: str}).set_index(RUN_ID))
        except RecordError as exc:
            raise UserError(f"{run}: no readable {OOF} (a cross-validated run's out-of-fold ages)") from exc
    ids = tables[0].index
    if any(not t.index.equals(ids) or not (t["fold"] == tables[0]["fold"]).all() for t in tables[1:]):
        raise UserError(f"the runs {', '.join(map(str, runs))} are not on the same folds (give --split_seed)")
    predicted = np.mean([t[AGE].to_numpy(float) for t in tables], axis=0)
    ages = tables[0]["age"].to_numpy(float)
    clusters = None if patients_by_id is None else patients_by_id.reindex(ids.astype(str)).tolist()
    interval = metrics.mae_interval(predicted, ages, n_boot=2000, seed=0, patients=clusters)
    ci = interval["mae_ci95"]
    return {"oof_mae": float(np.mean(np.abs(predicted - ages))), "oof_mae_ci95": tuple(ci) if ci else None,
            "oof_ci_resampled": interval["ci_resampled"], "records": int(len(ids))}


def card_of(runs: list[Path], predictions: Path, records: Path, level: float, name: str, trained_on: str,
            external: str, command: str, patients_by_id: pd.Series | None = None) -> ModelCard:
    oof, figures = out_of_fold(runs, patients_by_id), external_figures(predictions, records)
    return ModelCard(name=name, trained_on=trained_on, records=oof["records"], oof_mae=oof["oof_mae"],
                     oof_mae_ci95=oof["oof_mae_ci95"], oof_ci_resampled=oof["oof_ci_resampled"],
                     external=f"{external} ({figures['external_records']} records)",
                     external_mae=figures["external_mae"], interval_level=level,
                     interval_coverage=figures.get("interval_coverage"), intended_use=INTENDED_USE,
                     date=datetime.date.today().isoformat(), command=command)


def accuracy_table(card: ModelCard) -> str:
    ci = card.oof_mae_ci95
    over = f" over {card.oof_ci_resampled}" if card.oof_ci_resampled else ""
    return "\n".join([
        "| measure | figure |", "|---|---|",
        f"| out-of-fold MAE ({card.records} PTB-XL ECGs, each predicted by the models that never saw it"
        + (f"; 95 % bootstrap interval{over}) | " + f"{card.oof_mae:.2f} y ({ci[0]:.2f}–{ci[1]:.2f}) |" if ci else
           f") | {card.oof_mae:.2f} y |"),
        f"| external MAE ({card.external}) | {card.external_mae:.2f} y |",
        f"| interval coverage there (level {card.interval_level:g}) | {card.interval_coverage:.0%} |",
        f"| built | {card.date} by `{card.command}` |"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.deploy.card", description=__doc__)
    p.add_argument("--runs", nargs="+", required=True, help="the cross-validated run folder(s) the model is exported "
                                                             "from (several: seeds on the same folds, averaged)")
    p.add_argument("--predictions", required=True, help="the exported model's predictions of --records (with "
                                                        "lower,upper)")
    p.add_argument("--records", required=True, help="the external records, which carry their ages")
    p.add_argument("--patients", default=None, help="the training input (e.g. the PTB-XL root), whose records name "
                                                    "their patients: the out-of-fold interval resamples whole patients")
    p.add_argument("--level", type=float, default=0.9, help="the intervals' level")
    p.add_argument("--name", required=True)
    p.add_argument("--trained_on", required=True)
    p.add_argument("--external", required=True, help="what the external records are, in words")
    p.add_argument("--command", required=True, help="the command that rebuilds the model")
    p.add_argument("--out", required=True, help="the card (JSON)")
    p.add_argument("--markdown", default=None, help="a document whose block 'accuracy' gets the card's figures")
    args = p.parse_args(argv)
    card = card_of([Path(r) for r in args.runs], Path(args.predictions), Path(args.records), args.level, args.name,
                   args.trained_on, args.external, args.command,
                   None if args.patients is None else training_patients(Path(args.patients)))
    write_json(Path(args.out), card.to_dict())
    if args.markdown:
        write_block(Path(args.markdown), "accuracy", accuracy_table(card), "python -m engine.deploy.card")
    print(json.dumps(card.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))

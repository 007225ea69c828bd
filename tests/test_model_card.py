"""The model card's figures (``python -m engine.deploy.card``, a step of ``make model``): the runs' out-of-fold MAE
with its interval over the training records' patients, the exported file's external MAE and interval coverage, the
card as JSON and as the document's table, and a card that is not what a card holds refused."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from dataloader.formats import open_reader
from engine.deploy import card
from models.schema import ModelCard
from utils import metrics
from utils.errors import UserError


@pytest.fixture()
def external_predictions(cinc, tmp_path):
    """Predictions of the CinC records 3 years too old, every other record's interval missing its age; one record
    with no age that the card must not count."""
    table = open_reader(cinc).table
    aged = table[table["age"].notna()].reset_index(drop=True)
    predicted = aged["age"].to_numpy(float) + 3
    upper = np.where(np.arange(len(aged)) % 2 == 0, predicted + 1, predicted - 4)  # odd rows: the age lies above
    frame = pd.DataFrame({"ids": aged["id"], "predicted_age": predicted, "lower": predicted - 5, "upper": upper})
    extra = pd.DataFrame({"ids": ["not_a_record"], "predicted_age": [50.0], "lower": [40.0], "upper": [60.0]})
    path = tmp_path / "external.csv"
    pd.concat([frame, extra]).to_csv(path, index=False)
    return path, len(aged), float(np.mean(np.arange(len(aged)) % 2 == 0))


def test_the_card_measures_out_of_fold_over_patients_and_the_external_records(modern_cv_run, cinc, ptbxl, tmp_path,
                                                                              external_predictions):
    _, run = modern_cv_run
    predictions, aged, covered = external_predictions
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    database = pd.read_csv(ptbxl / "ptbxl_database.csv", dtype={"ecg_id": str}).set_index("ecg_id")
    patients = database["patient_id"].reindex(oof["id"]).tolist()
    doc = tmp_path / "CARD.md"
    doc.write_text("# card\n<!-- accuracy: written by python -m engine.deploy.card -->\nold\n"
                   "<!-- /accuracy: written by python -m engine.deploy.card -->\n")
    out = tmp_path / "card.json"
    assert card.main(["--runs", str(run), "--predictions", str(predictions), "--records", str(cinc), "--name", "m",
                      "--trained_on", "PTB-XL", "--external", "CinC", "--command", "make model", "--patients",
                      str(ptbxl), "--out", str(out), "--markdown", str(doc)]) == 0
    written = json.loads(out.read_text())
    assert written["records"] == len(oof) and len(set(patients)) < len(oof)  # PTB-XL: some patients, two ECGs
    assert written["oof_mae"] == pytest.approx(np.mean(np.abs(oof["predicted_age"] - oof["age"])), abs=1e-12)
    assert written["oof_ci_resampled"] == "patients"
    assert written["oof_mae_ci95"] == pytest.approx(metrics.bootstrap_ci(oof["predicted_age"], oof["age"], seed=0,
                                                                         clusters=patients), abs=1e-12)
    assert written["external_mae"] == pytest.approx(3.0) and written["external"] == f"CinC ({aged} records)"
    assert written["interval_coverage"] == pytest.approx(covered)
    assert ModelCard.from_dict(written).to_dict() == written  # what export_interface --card reads back
    text = doc.read_text()
    assert "\nold\n" not in text and "95 % bootstrap interval over patients) | " in text
    assert f"{written['oof_mae']:.2f} y ({written['oof_mae_ci95'][0]:.2f}–{written['oof_mae_ci95'][1]:.2f})" in text
    # without --patients every ECG is resampled alone, and the card says so
    plain = card.out_of_fold([run])
    assert plain["oof_ci_resampled"] == "ECGs" and plain["oof_mae"] == written["oof_mae"]
    assert list(plain["oof_mae_ci95"]) == metrics.bootstrap_ci(oof["predicted_age"], oof["age"], seed=0)


def test_the_card_refuses_runs_on_other_folds_and_inputs_without_patients(modern_cv_run, cinc, tmp_path):
    _, run = modern_cv_run
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(run / "oof.csv", other / "oof.csv")
    table = pd.read_csv(other / "oof.csv")
    table.assign(fold=1 - table["fold"]).to_csv(other / "oof.csv", index=False)
    with pytest.raises(UserError, match="not on the same folds"):
        card.out_of_fold([run, other])
    with pytest.raises(UserError, match="name no patients"):
        card.training_patients(cinc)
    with pytest.raises(ValueError, match="oof_ci_resampled must be 'patients' or 'ECGs'"):
        ModelCard.from_dict({"oof_ci_resampled": "everyone"})

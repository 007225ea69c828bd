"""From ECGs to ages and a page in one call (``ecg-age predict``): the prediction job (ages, intervals, notes,
explanations) into one folder, then the report of it — against the ages the records carry, where they carry some
(the PTB-XL database, WFDB ``# Age:``, DICOM PatientAge, a manifest's ``age`` column)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from dataloader.formats import ages_elsewhere
from engine.predict.job import PredictJob
from engine.predict.run import engine_configuration, run_records
from models.files import SHIPPED_MODEL
from utils.bounds import age_problem
from utils.errors import UserError

from .inputs import label_table
from .report import write_report
from .settings import ReportSettings

logger = logging.getLogger("report")


def predict_with_page(job: PredictJob, out: str | Path, cohort: str | None = None) -> Path:
    """The predictions of ``job`` (whose outputs lie in ``out``) and ``out``/report.html; returns the page."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder (it is made if it is not there)")
    if job.prediction.weights == [str(SHIPPED_MODEL)]:
        logger.info(f"note: no --weights given: using the model that ships with the project, {SHIPPED_MODEL.name} "
                    f"(adults' resting 12-lead ECGs; its card: MODEL_CARD.md)")
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        table, reader = run_records(job, engine_configuration(job))
        ages = recorded_ages(reader.table, job.data.input) if "age" in reader.table.columns else None
        if reader.labelled_root is not None and (ages is None or ages["age"].isna().all()):
            logger.info(f"note: {ages_elsewhere(reader.labelled_root)}: give {reader.labelled_root} as the input for "
                        f"the page to compare with them")
        explained = Path(job.prediction.explain) if job.prediction.explain else None
        settings = ReportSettings(predictions=str(table), out=str(out), cohort=cohort,
                                  interval=job.prediction.interval,
                                  explanations=str(explained) if explained is not None and explained.is_dir() else None)
        return write_report(settings, labels=ages)
    except BaseException:
        if made:  # a folder this command made holds only what it wrote: nothing of a failed run stays
            shutil.rmtree(out, ignore_errors=True)
        raise


def recorded_ages(table: pd.DataFrame, where) -> pd.DataFrame:
    """The ages the records carry, for the page: an implausible one (outside the plausible ages) is not an age on
    record — it is left out of the comparison with a warning naming the records, never compared with."""
    labels = label_table(table, where)
    wrong = labels["age"].notna().to_numpy() & np.array([age_problem(a) is not None for a in labels["age"]], bool)
    if wrong.any():
        shown = ", ".join(labels.loc[wrong, "id"].head(10))
        logger.warning(f"warning: {int(wrong.sum())} record(s) carry an implausible age ({shown}); the page shows "
                       f"their predictions without a gap")
        labels.loc[wrong, "age"] = float("nan")
    return labels

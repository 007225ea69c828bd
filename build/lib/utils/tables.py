"""The tables the project writes, their columns named once.

Predictions (test_interface, the Python API, read by report_interface): ``ids``, ``predicted_age`` and, with
intervals, ``lower``, ``upper`` — the published Lima et al. column names. A run's own tables (``split.csv``,
``folds.csv``, ``oof.csv``) name the record ``id``, as the label tables do; ``oof.csv`` adds the age on record and the
out-of-fold ``predicted_age``. The MAIC submission keeps its template's columns (FILENAME, GENDER, AGE).
"""
from __future__ import annotations

ID, AGE, LOWER, UPPER = "ids", "predicted_age", "lower", "upper"  # a prediction table
PREDICTION_COLUMNS = (ID, AGE)
INTERVAL_COLUMNS = (LOWER, UPPER)
RUN_ID = "id"  # a run's tables: split.csv, folds.csv, oof.csv
OOF_COLUMNS = [RUN_ID, "age", AGE, "fold"]

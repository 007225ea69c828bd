"""Where things live by default: one definition of every default path.

The MAIC data root defaults to ``data/maic2023`` in the repository (the seed's layout), or to the folder named by
the ``ECG_AGE_DATA_ROOT`` environment variable; ``--data_root`` overrides both.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# where the project writes by default: its checkout, or — installed as a package (site-packages is no place for
# caches and runs) — the user's cache folder
HOME = ROOT if (ROOT / "pyproject.toml").is_file() else \
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ecg-age"
DATA_ROOT_ENV = "ECG_AGE_DATA_ROOT"
DEMO_ROOT = HOME / "dataset" / "SYNTHETIC_demo_maic"
DATASET_DIR = HOME / "dataset"
LOG_DIR = HOME / "log"
CACHE_DIR = HOME / "cache"
SUBMISSION = HOME / "score" / "submission.csv"
PREDICTIONS = Path("predicted_age.csv")  # relative to the working directory, as the published evaluate.py


def default_data_root() -> Path:
    return Path(os.environ.get(DATA_ROOT_ENV) or ROOT / "data" / "maic2023")


if __name__ == "__main__":  # `python -m utils.paths demo` prints a path for the Makefile
    print({"demo": DEMO_ROOT, "data": default_data_root()}[sys.argv[1] if len(sys.argv) > 1 else "data"])


def prediction_notes(predictions: Path) -> Path:
    """The JSON beside a predictions CSV that says how it was made: the models, and the level and calibration of
    its intervals (read back by report_interface)."""
    predictions = Path(predictions)
    return predictions.with_name(predictions.name + ".json")

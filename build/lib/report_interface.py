"""Evaluate predictions: report.json with exact metrics, PNG plots, the age-gap bias correction both ways and the
Lima et al. mortality analysis.

    python report_interface.py --predictions predicted_age.csv --labels exams.csv --out report/ [--survival]
    python report_interface.py --predictions score/submission.csv --labels answer.csv --out report/ \
        --run log/ResDenseNet_adult          # + learning curves, the run's bias correction, TensorBoard figures
    python report_interface.py --predictions predicted_age.csv --labels DIR --out report/ \
        --lead_importance expl/lead_importance.csv   # + interval coverage (lower,upper), cohort lead importance

Predictions: ``ids,predicted_age`` (test_interface --input) or ``FILENAME,AGE`` (a submission). Labels: CODE-15%
exams.csv (exam_id, age, is_male, death, timey), a MAIC label CSV (FILENAME, GENDER, AGE), PTB-XL's
ptbxl_database.csv, or any CSV with ``--id_col`` / ``--age_col``.
"""
from __future__ import annotations

import sys

import options as opts
from engine.report.report import ReportSettings, write_report
from utils.cli import configure_logging, run_main
from utils.settings import RuntimeSettings


def main(argv=None) -> int:
    options = vars(opts.report_parser().parse_args(argv))
    settings, runtime = ReportSettings.from_options(options), RuntimeSettings.from_options(options)
    configure_logging(sys.stdout, runtime.quiet)
    write_report(settings, trust=runtime.trust_checkpoint)
    return 0


def entry(argv=None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(entry())

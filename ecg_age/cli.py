"""The ``ecg-age`` command: one entry point for the four programs, and the front door from a folder of ECGs to ages
and a page.

    ecg-age predict INPUT --out DIR [any test_interface.py option]   # ages, intervals, explanations, DIR/report.html
    ecg-age train   [train_interface.py options]
    ecg-age report  [report_interface.py options]
    ecg-age export  [export_interface.py options]

``predict`` uses the model that ships with the project (models/shipped/, an ONNX file: no PyTorch needed) unless
``--weights`` names another, and says so in one line. It writes DIR/predicted_age.csv (+ its notes), an explanation
of the first ``--explain_records`` ECGs (8 by default) and DIR/report.html; where INPUT carries ages (the PTB-XL
database, WFDB ``# Age:``, DICOM PatientAge, a manifest's ``age`` column, …) the page compares with them. A record
that cannot be used is left out and named on the page with the reason (``--on_bad error`` stops instead), and
nothing is cached (one pass; ``--cache on`` for repeated runs).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import options as opts
from engine.predict.job import PredictJob
from engine.report.pipeline import predict_with_page
from models.files import SHIPPED_MODEL
from utils.cli import configure_logging, run_main
from utils.errors import UserError

# each command's program, imported when it is run (training and export need PyTorch; prediction and the page do not)
PROGRAMS = {"train": "train_interface", "report": "report_interface", "export": "export_interface"}
EXPLAINED = 8  # ECGs explained on the page unless --explain_records says otherwise (each costs forward passes)


def predict_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ecg-age predict", description="Ages (with intervals), explanations and a page "
                                                                    "for a folder (or file) of ECGs",
                                epilog="Any other option is test_interface.py's (--weights, --format, --fs, "
                                       "--on_bad, --tta, --threads, ...): see test_interface.py --help")
    p.add_argument("input", help="the ECGs: a folder or a file of any format read here")
    p.add_argument("--out", required=True, help="folder for predicted_age.csv, report.html and the figures")
    p.add_argument("--cohort", default=None, metavar="TEXT", help="what the ECGs are, for the page's title")
    p.add_argument("--explain_records", type=int, default=EXPLAINED, metavar="N",
                   help="explain the first N ECGs on the page (default %(default)s; each costs forward passes; 0: "
                        "none, and no explanations folder)")
    return p


def prediction_argv(given: argparse.Namespace, rest: list[str]) -> list[str]:
    """test_interface's command line of ``ecg-age predict``: the shipped model and intervals at 0.9 unless given,
    the first EXPLAINED ECGs explained, everything in --out."""
    out = Path(given.out)
    argv = ["--input", given.input, "--output", str(out / "predicted_age.csv")]
    if given.explain_records != 0:  # a negative count is refused by the prediction's own check
        argv += ["--explain", str(out / "explanations"), "--explain_records", str(given.explain_records)]
    if "--interval" not in rest:
        argv += ["--interval", "0.9"]
    if "--cache" not in rest:  # one pass over the records: nothing to gain from a cache (--cache on for repeats)
        argv += ["--cache", "off"]
    if "--on_bad" not in rest:  # a folder's odd file is left out and named on the page (--on_bad error stops)
        argv += ["--on_bad", "skip"]
    if "--weights" not in rest:
        if not SHIPPED_MODEL.is_file():
            raise UserError(f"the shipped model {SHIPPED_MODEL} is not there (`make model` rebuilds it); give "
                            f"--weights")
        argv += ["--weights", str(SHIPPED_MODEL)]
    return [*argv, *rest]


def predict(argv: list[str]) -> int:
    given, rest = predict_parser().parse_known_args(argv)
    if "--output" in rest or "--explain" in rest:
        raise UserError("ecg-age predict: --out names every output (use test_interface.py for --output/--explain)")
    options = vars(opts.parse_test(prediction_argv(given, rest)))
    job = PredictJob.from_options(options)
    configure_logging(sys.stderr, job.runtime.quiet)
    predict_with_page(job, given.out, given.cohort)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ("predict", *PROGRAMS)
    if not argv or argv[0] not in commands:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(f"usage: ecg-age {{{','.join(commands)}}} ...  (ecg-age COMMAND --help for each)\n\n{__doc__}",
              file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    command, rest = argv[0], argv[1:]
    if command == "predict":
        return run_main(predict, rest)
    return importlib.import_module(PROGRAMS[command]).entry(rest)

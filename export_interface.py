"""Export a model — a checkpoint, a run folder, a cross-validated run (its members) or several (an ensemble) — to
one ONNX file that runs without the training stack.

    python export_interface.py --weights log/ECGEfficientNet_ptbxl_cv5 --output model.onnx \
        --check_input ../shared/data/cinc2021

The file holds the graph (every member's age) and, as metadata, everything needed to use it: the preprocessing,
heads, bias corrections, interval calibrations, architectures and the project version. The export is checked
before it is written: onnxruntime's ages on the check records equal PyTorch's within 1e-3 years, or nothing is
written (exit 2).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

import options as opts
from dataloader.demo import simulated_records
from dataloader.formats import open_reader
from engine.export import export_onnx
from engine.predictor import check_inputs, records_of
from engine.runs import run_members
from models.checkpoint import load_ensemble
from models.schema import UNKNOWN_SEX
from utils.cli import RESULT, configure_logging, run_main
from utils.errors import UserError
from utils.io import check_output_path

logger = logging.getLogger("export")
SIMULATED = 4  # check records when no --check_input is given: the demo generator's ECGs (ages 30, 50, 70, 90)


def check_set(check_input: str | None, input_format: str, check_records: int,
              spec) -> tuple[np.ndarray, np.ndarray, str]:
    """(model inputs, sex codes, what they are) to check the export on: ``check_records`` usable records of
    ``check_input``, or simulated ECGs."""
    if check_input is None:
        x = check_inputs(simulated_records(SIMULATED), spec, SIMULATED)
        what = f"{len(x)} simulated ECGs (give --check_input for real ones)"
    else:
        x = check_inputs(records_of(open_reader(check_input, fmt=input_format)), spec, check_records)
        if not len(x):
            raise UserError(f"--check_input {check_input}: no usable record to check the export on")
        what = f"{len(x)} record(s) of {check_input}"
    return x, np.full(len(x), UNKNOWN_SEX, np.float32), what


def main(argv=None) -> int:
    args = opts.export_parser().parse_args(argv)
    configure_logging(sys.stderr, args.quiet)
    output = Path(args.output)
    members = [m for w in args.weights for m in run_members(w)]
    check_output_path(output, [*args.weights, *members], [args.check_input] if args.check_input else [])
    bundles = load_ensemble(members, mode=args.mode, trust=args.trust_checkpoint)
    x, sex, what = check_set(args.check_input, args.input_format, args.check_records, bundles[0].preprocessing)
    logger.info(f"exporting {len(bundles)} model(s) ({', '.join(sorted({b.arch for b in bundles}))}); checking on "
                f"{what}")
    result = export_onnx(bundles, output, x, sex)
    logger.log(RESULT, f"wrote {output} ({result['bytes'] / 1e6:.1f} MB, {len(bundles)} model(s)); onnxruntime "
                       f"equals PyTorch within {result['max_difference_years']:.2g} years on {what}")
    return 0


def entry(argv=None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(entry())

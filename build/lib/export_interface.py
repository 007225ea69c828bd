"""Export a model — a checkpoint, a run folder, a cross-validated run (its members) or several (an ensemble) — to
one ONNX file that runs without the training stack.

    python export_interface.py --weights log/ECGEfficientNet_ptbxl_cv5 --output model.onnx \
        --check_input ../shared/data/cinc2021

The file holds the graph (every member's age) and, as metadata, everything needed to use it: the preprocessing,
heads, bias corrections, interval calibrations, architectures and the project version. The export is checked
before it is written: onnxruntime's ages on the check records equal PyTorch's within 1e-3 years, or nothing is
written (exit 2).

    python export_interface.py --weights RUN --output model.int8.onnx --quantize int8 --check_input DIR

``--quantize int8`` writes a statically quantized graph instead (engine/deploy/quantize.py: ranges calibrated on
``--calibration_input`` or the training records), checked against the fp32 export on the check records.
"""
from __future__ import annotations

import sys

import options as opts
from engine.deploy.job import export
from engine.deploy.settings import ExportSettings
from utils.cli import configure_logging, run_main
from utils.settings import RuntimeSettings


def main(argv=None) -> int:
    options = vars(opts.export_parser().parse_args(argv))
    runtime = RuntimeSettings.from_options(options)
    configure_logging(sys.stderr, runtime.quiet)
    export(ExportSettings.from_options(options), trust=runtime.trust_checkpoint)
    return 0


def entry(argv=None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(entry())

"""The prediction program (named test_interface.py as the challenge layout asks): a MAIC submission, or
``ids,predicted_age`` for any supported format.

    # MAIC: fill every row of the template (adult rows with the adult model, child rows with the child model)
    python test_interface.py            # data/maic2023 and the default runs' best checkpoints → score/submission.csv
    python test_interface.py --test_for_adult DIR --test_for_child DIR --submission_template CSV \
        --weights_adult CKPT --weights_child CKPT --output score/submission.csv --device cpu --precision fp32

    # any format (HDF5, WFDB folder, PTB-XL root/CSV, .npy folder, manifest CSV, clinical exports); output columns
    # ids,predicted_age (+ lower,upper with --interval), and <output>.json saying how they were made
    python test_interface.py --input exams_part0.hdf5 --weights model_dir/ --output predicted_age.csv
    python test_interface.py --input DIR --weights RUN --interval 0.9 --explain expl/   # intervals, explanations

A checkpoint is this project's .pt, the seed's .pt or a published model folder (model.pth + config.json); its own
preprocessing is applied. Nothing is written unless every requested row gets a finite age. The program: options →
typed settings (engine.predict.job.PredictJob) → the engine's configuration → one job → exit code.
"""
from __future__ import annotations

import sys

import options as opts
from engine.predict.job import PredictJob
from engine.predict.run import run
from utils.cli import configure_logging, run_main


def main(argv=None) -> int:
    job = PredictJob.from_options(vars(opts.parse_test(argv)))
    configure_logging(sys.stderr, job.runtime.quiet)
    run(job)
    return 0


def entry(argv=None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(entry())

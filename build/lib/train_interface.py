"""Train an age model: dataset CSVs / splits → cache → shared trainer → log/<arch>_<env>/.

    python train_interface.py --mode=adult --arch=ResDenseNet          # MAIC adult (seed recipe), data/maic2023
    python train_interface.py --mode=child --arch=ResUDenseNet         # MAIC child
    python train_interface.py --arch ResNet1d --input exams_part0.hdf5 --labels exams.csv   # Lima et al.
    torchrun --nproc_per_node=4 train_interface.py ...                 # data-parallel

Outputs in log/<arch>_<env>/: options.json, epoch_NNN.pt (MAIC) / model.pth + config.json + args.json (Lima),
best.pt, last.pt (resume point), history.csv, learning_curves.png, logs/ (TensorBoard), split.csv; with --folds K
the members fold_<k>/, folds.csv, oof.csv and cv.json; run.json (the manifest) always.

The program: options → typed settings (engine.train.settings.TrainSettings) → where it runs → one
``Experiment(...).run()`` → exit code. The run itself, top to bottom, is engine/train/experiment.py.
"""
from __future__ import annotations

import logging
import sys

import options as opts
from engine.train.experiment import Experiment
from engine.train.members import Place
from engine.train.settings import TrainSettings
from utils.cli import configure_logging, run_main
from utils.errors import UserError
from utils.runtime import (
    cleanup_distributed,
    configure_backends,
    init_distributed,
    precision_reason,
    resolve_device,
    resolve_precision,
    seed_everything,
)

logger = logging.getLogger("train")


def place(settings: TrainSettings) -> Place:
    """The device, precision and process of this run (torchrun: one per GPU), set up and seeded."""
    runtime = settings.runtime
    rank, world, device = init_distributed(resolve_device(runtime.device))
    configure_logging(sys.stdout, runtime.quiet, main_process=rank == 0)
    precision = resolve_precision(runtime.precision, device)
    logger.info(precision_reason(runtime.precision, device, precision))
    configure_backends(device, precision, runtime.deterministic, runtime.threads)
    seed_everything(settings.run.seed)
    if settings.recipe.batch_size % world:
        raise UserError(f"--batch_size {settings.recipe.batch_size} (global) must divide among {world} processes")
    return Place(device, precision, rank, world)


def main(argv=None) -> int:
    settings = opts.train_settings(opts.parse_train(argv))
    Experiment(settings, place(settings)).run()
    cleanup_distributed()
    return 0


def entry(argv=None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(entry())

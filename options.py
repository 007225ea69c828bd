"""Command-line options: one parser per program, assembled from the settings groups that program reads.

Every option is declared once, as a field of its settings group (its flag, help, type, choices and default:
utils/settings.py's ``option``), next to the code that reads it; this module only says which groups each program
reads (``PROGRAMS``), so an option a program does not use is an argparse error rather than silently ignored. The
option names are the challenge entry's seed names plus this project's. The recipe options come from the recipe
table (engine/train/recipes.py: default = the chosen recipe's value) and the model options from the architectures'
registry entries. Resolving and checking what was parsed is the engine's (``engine.train.settings.resolve``,
``engine.predict.job.PredictJob.resolve``), as is everything the options mean.

The training groups import PyTorch; the prediction, report and export groups do not (an ONNX model is run without
it), so the training groups are imported where the training parser is built, and only there.
"""
from __future__ import annotations

import argparse
import re
from typing import Callable

from dataloader.formats import InputSettings
from dataloader.maic import MaicSubmission
from dataloader.sources import CacheOptions
from engine.deploy.settings import ExportSettings
from engine.predict.job import PredictionSettings, PredictJob
from engine.report.settings import ReportSettings
from utils.settings import RuntimeSettings


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with each option's default, except where its help says the default in words already ("(default:
    every one)", "default 500" — argparse would add "(default: None)" after it)."""

    def _get_help_string(self, action):
        said = re.search(r"\bdefault\b", action.help or "")
        return action.help if said else super()._get_help_string(action)


FOR_OUTPUT = ("quiet", "trust_checkpoint")  # the runtime options of the report and the export
# (group, keywords of Settings.add_options) per program, in --help's order
PREDICT_GROUPS = ((MaicSubmission, {}), (InputSettings, {"skip": ("labels",)}), (PredictionSettings, {}),
                  (RuntimeSettings, {"skip": ("compile", "sync_bn"),
                                     "aliases": {"infer_batch_size": ("--batch_size",)}}),  # the seed's name
                  (CacheOptions, {}))
REPORT_GROUPS = ((ReportSettings, {"title": ""}), (RuntimeSettings, {"title": "", "only": FOR_OUTPUT}))
EXPORT_GROUPS = ((ExportSettings, {"title": ""}), (RuntimeSettings, {"title": "", "only": FOR_OUTPUT}))


def build_parser(prog: str, description: str, groups) -> argparse.ArgumentParser:
    """A program's parser: every option of ``groups`` ((settings group, Settings.add_options keywords))."""
    parser = argparse.ArgumentParser(prog=prog, formatter_class=Formatter, description=description)
    for group, keywords in groups:
        group.add_options(parser, **keywords)
    return parser


def training():
    """engine.train.settings: the training groups and rules import PyTorch, so only the trainer's parser does."""
    import engine.train.settings as training_settings

    return training_settings


def train_parser() -> argparse.ArgumentParser:
    return build_parser("train_interface.py", "Train an age-from-ECG model (MAIC 2023, Lima et al. or modern recipe)",
                        tuple((group, {}) for group in training().GROUPS))


def test_parser() -> argparse.ArgumentParser:
    return build_parser("test_interface.py", "Predict ages: a MAIC submission, or ids,predicted_age for any format",
                        PREDICT_GROUPS)


def report_parser() -> argparse.ArgumentParser:
    return build_parser("report_interface.py", "Evaluate predictions: report.html (the page to open), report.json, "
                                               "plots, bias correction, survival", REPORT_GROUPS)


def export_parser() -> argparse.ArgumentParser:
    return build_parser("export_interface.py", "Export a model or an ensemble to one ONNX file (checked on export)",
                        EXPORT_GROUPS)


PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "train": train_parser, "test": test_parser, "report": report_parser, "export": export_parser}


def parse_train(argv=None) -> argparse.Namespace:
    """The resolved training options (what a run saves as options.json), checked."""
    resolved = training().resolve(vars(train_parser().parse_args(argv)))
    training().checked(resolved)
    return argparse.Namespace(**resolved)


def train_settings(args: argparse.Namespace):
    """The checked, typed settings of a training run (engine.train.settings.TrainSettings) from resolved options."""
    return training().checked(vars(args))


def parse_test(argv=None) -> argparse.Namespace:
    """test_interface's options, resolved (the MAIC paths and default weights) and checked."""
    return argparse.Namespace(**PredictJob.resolve(vars(test_parser().parse_args(argv))))

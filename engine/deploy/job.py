"""An export job: models → one ONNX file (fp32; or int8 calibrated, or its weights stored smaller, checked against
it), checked before it is written (``export``). Its settings are engine/deploy/settings.py's."""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import numpy as np

from dataloader.checks import model_inputs, readable_records
from dataloader.demo import simulated_records
from dataloader.formats import InputSettings, open_reader
from engine.runs import run_members, training_input
from models.checkpoint import load_ensemble
from models.schema import UNKNOWN_SEX, ModelCard
from utils.cli import RESULT
from utils.errors import RecordError, UserError
from utils.io import beside, check_output_path, regular_file, remove_stale
from utils.machine import cpu_flags, cpu_name, fast_int8

from .export import export_onnx, graph_input
from .quantize import quantize_int8
from .settings import ExportSettings
from .storage import stored_file
from .trained import training_prints, with_training_prints

logger = logging.getLogger("export")
SIMULATED = 4  # check records when no --check_input is given: the demo generator's ECGs (ages 30, 50, 70, 90)


def check_set(check_input: str | None, input_format: str, check_records: int,
              spec) -> tuple[np.ndarray, np.ndarray, str]:
    """(model inputs, sex codes, what they are) to check the export on: ``check_records`` usable records of
    ``check_input``, or simulated ECGs."""
    if check_input is None:
        x = model_inputs(simulated_records(SIMULATED), spec, SIMULATED)
        what = f"{len(x)} simulated ECGs (give --check_input for real ones)"
    else:
        x = model_inputs(readable_records(open_reader(check_input, fmt=input_format)), spec, check_records)
        if not len(x):
            raise UserError(f"--check_input {check_input}: no usable record to check the export on")
        what = f"{len(x)} record(s) of {check_input}"
    return x, np.full(len(x), UNKNOWN_SEX, np.float32), what


def calibration_set(calibration_input: str | None, input_format: str, records: int, members: list,
                    spec) -> tuple[np.ndarray, np.ndarray, str]:
    """(model inputs, sex codes, what they are) whose activations set the int8 ranges: ``calibration_input``, or
    the records the first member was trained on (its options.json)."""
    if calibration_input is not None:
        reader = open_reader(calibration_input, fmt=input_format)
    else:
        trained_on = training_input(members[0])
        if trained_on is None:
            raise UserError(f"--quantize int8: {members[0]} does not say which records it was trained on (no "
                            f"options.json with --input); give --calibration_input")
        reader = InputSettings.from_options(trained_on).open()
    x = model_inputs(readable_records(reader), spec, records)
    return x, np.full(len(x), UNKNOWN_SEX, np.float32), f"{len(x)} record(s) of {reader.location}"


def quantized(fp32: Path, output: Path, calibration: tuple, check: tuple, what: str) -> None:
    """int8 from the checked fp32 export, checked against it."""
    *inputs, calibrated_on = calibration
    logger.info(f"quantizing to int8 (QDQ), ranges calibrated on {calibrated_on}; CPU {cpu_name()} "
                f"({', '.join(cpu_flags()) or 'flags unknown'})")
    result = quantize_int8(fp32, output, tuple(inputs), check)
    logger.log(RESULT, f"wrote {output} (int8: {result['scope']}, {result['bytes'] / 1e6:.1f} MB): ages differ from "
                       f"the fp32 export by "
                       f"{result['mean_difference_years']:.3g} y on average, at most "
                       f"{result['max_difference_years']:.3g} y, on {what}" +
               ("" if fast_int8() else "; this CPU has no VNNI or AMX: int8 may run no faster than fp32 here"))


def read_card(path: Path) -> ModelCard:
    """--card: a model card (JSON), checked field by field."""
    try:
        return ModelCard.from_dict(json.loads(regular_file(path, str(path), max_bytes=1 << 20).read_text()))
    except (OSError, ValueError, RecordError) as exc:
        reason = exc.reason if isinstance(exc, RecordError) else (str(exc) if isinstance(exc, ValueError) and
                                                                   "card field" in str(exc) else type(exc).__name__)
        raise UserError(f"--card {path}: not a model card ({reason})") from None


def export(settings: ExportSettings, trust: bool = False) -> None:
    """The models of ``settings.weights`` as one checked ONNX file at ``settings.output`` (int8 with --quantize,
    smaller weights with --weight_storage)."""
    s = settings
    if s.quantize == "int8" and s.weight_storage != "fp32":
        raise UserError(f"--quantize int8 and --weight_storage {s.weight_storage} cannot be combined: an int8 file "
                        f"stores its weights in 8 bits already")
    output = Path(s.output)
    members = [m for w in s.weights for m in run_members(w)]
    check_output_path(output, [*s.weights, *members], [f for f in (s.check_input, s.calibration_input) if f])
    card = read_card(Path(s.card)) if s.card else None
    bundles = load_ensemble(members, mode=s.mode, trust=trust)
    graph = not s.cpu_preprocessing
    spec = graph_input(bundles, graph)
    x, sex, what = check_set(s.check_input, s.input_format, s.check_records, spec)
    calibration = calibration_set(s.calibration_input, s.input_format, s.calibration_records, members, spec) \
        if s.quantize == "int8" else None
    prints, named = training_prints(members)
    if prints is None:
        logger.info(f"note: the file will not name its training records: {named}; a prediction cannot then tell "
                    f"which of its records the model has seen")
    logger.info(f"exporting {len(bundles)} model(s) ({', '.join(sorted({b.arch for b in bundles}))}); checking on "
                f"{what}")
    for path in remove_stale(output):  # what an export killed midway left beside this output
        logger.info(f"note: removed {path.name}, left by an interrupted export")
    with contextlib.ExitStack() as stack:
        derived = s.quantize == "int8" or s.weight_storage != "fp32"  # a file made from the checked fp32 export
        fp32 = stack.enter_context(beside(output, "fp32")) if derived else output
        result = export_onnx(bundles, fp32, x, sex, card, graph)
        if prints is not None:
            with_training_prints(fp32, prints)
            logger.info(f"the file names its {named} by fingerprint")
        logger.log(RESULT, f"{'wrote ' + str(output) if fp32 == output else 'exported'} "
                           f"({result['bytes'] / 1e6:.1f} MB, {len(bundles)} model(s)); onnxruntime equals PyTorch "
                           f"within {result['max_difference_years']:.2g} years on {what}")
        if calibration is not None:
            quantized(fp32, output, calibration, (x, sex), what)
        elif s.weight_storage != "fp32":
            stored = stored_file(fp32, output, (x, sex), s.weight_storage)
            logger.log(RESULT, f"wrote {output} (the weights of {stored['weights']} convolutions stored as "
                               f"{s.weight_storage}, {stored['bytes'] / 1e6:.1f} MB): ages differ from the fp32 "
                               f"export by {stored['mean_difference_years']:.2g} y on average, at most "
                               f"{stored['max_difference_years']:.2g} y, on {what}")

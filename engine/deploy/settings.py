"""export_interface's options, declared and typed (torch-free, as every program's options are parsed without it)."""
from __future__ import annotations

import dataclasses

from dataloader.formats import INPUT_FORMATS
from models.schema import mode_option
from utils.bounds import MAX_CHECK_RECORDS
from utils.settings import Settings, option, whole_number

from .quantize import INT8_MAX_YEARS, INT8_MEAN_YEARS
from .storage import STORAGES, TOLERANCE


@dataclasses.dataclass(frozen=True)
class ExportSettings(Settings):
    """What to export, where to, what to check it on and whether to quantize it."""

    weights: list = option(help="checkpoint(s) or run/model folder(s); a cross-validated run folder stands for its "
                                "fold models, and several become one graph (an ensemble)", nargs="+", required=True)
    output: str = option(help="the .onnx file to write", required=True)
    check_input: str | None = option(None, "records (any readable format) the export is checked on (default: "
                                           "simulated ECGs)")
    check_records: int = option(16, "how many usable records of --check_input",
                                type=whole_number(1, MAX_CHECK_RECORDS, "records, each held in memory"))
    input_format: str = option("auto", "format of --check_input and --calibration_input (auto: found from their "
                                       "content)", flag="--format", choices=INPUT_FORMATS)
    quantize: str = option("none", "int8: write a statically quantized (QDQ) graph for CPUs with VNNI or AMX, "
                                   f"checked against the fp32 export on the check records (mean |Δ age| ≤ "
                                   f"{INT8_MEAN_YEARS:g} y, max ≤ {INT8_MAX_YEARS:g} y)", choices=("none", "int8"))
    weight_storage: str = option("fp32", "how the convolutions' weights are stored: fp16 halves the file, int8 "
                                         "(one scale per output channel) quarters it; onnxruntime turns them back "
                                         "into fp32 (fp16's once, when it opens the file; int8's at each call), so "
                                         "the convolutions stay fp32. Checked against the fp32 export on the "
                                         "check records (mean, max |Δ age|: "
                                         + ", ".join(f"{k} {m:g}, {x:g} y" for k, (m, x) in TOLERANCE.items())
                                         + "), or nothing is written",
                                 choices=STORAGES)
    calibration_input: str | None = option(None, "records whose activations set the int8 ranges (default: the "
                                                 "records the first model was trained on, from its options.json)")
    calibration_records: int = option(64, "how many usable calibration records (each held in memory)",
                                      type=whole_number(1, MAX_CHECK_RECORDS, "records, each held in memory"))
    card: str | None = option(None, "a model card (JSON: name, trained_on, records, oof_mae, oof_mae_ci95, external, "
                                    "external_mae, interval_level, interval_coverage, intended_use, date, command) "
                                    "carried in the file's metadata and shown on every page made with it",
                              metavar="JSON")
    cpu_preprocessing: bool = option(False, "keep the whole preprocessing on the CPU, as files before the graph "
                                            "ran it (by default the graph runs the project's recipes' band-pass, "
                                            "z-score and NaN → 0 with the network; the seed recipes stay on the "
                                            "CPU either way)")
    mode: str = mode_option()

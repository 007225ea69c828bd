"""A prediction job: records + models → the table of ages the user gets, all or nothing.

``PredictionSettings`` are test_interface's inference options, declared and typed; ``PredictJob`` is everything the
program reads, resolved (``PredictJob.resolve``: the MAIC paths and default weights) and checked. The rules of
what is written are engine/predict/policy.py's; the engine is the predictor's: this module imports no torch.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from dataloader.formats import InputSettings
from dataloader.maic import MaicSubmission, template_csv, test_folder
from dataloader.sources import CacheOptions
from dataloader.stream import default_stream_workers
from engine.runs import default_weights
from models.schema import MODES, mode_option
from utils.bounds import MAX_TTA
from utils.calibration import level_option
from utils.errors import UserError
from utils.machine import model_threads, onnx_layout
from utils.paths import LOG_DIR, default_data_root
from utils.settings import RuntimeSettings, Settings, option, runtime

from .explanations import DEFAULT_METHOD, METHODS
from .onnx_engine import OnnxConfig
from .predictor import ENGINES

GRAPH_CHOICES = {"auto": None, "on": True, "off": False}  # --graph_preprocessing → InferenceConfig's


@dataclasses.dataclass(frozen=True)
class PredictionSettings(Settings):
    """How to predict: the models (``--weights``, ``--mode``, ``--engine``), test-time options, the bad-record
    policy, intervals and explanations, and where the output goes."""

    TITLE = "prediction, intervals, explanations and bad input"

    mode: str = mode_option()
    weights: list | None = runtime(None, "checkpoint(s) or run/model folder(s) for --input; a cross-validated run "
                                         "folder stands for its fold models, and all given models are averaged (an "
                                         "ensemble)", nargs="+")
    output: str | None = runtime(None, "output CSV (default score/submission.csv, or predicted_age.csv for --input)")
    engine: str = option("auto", "auto: onnxruntime for an .onnx file, PyTorch for checkpoints; onnxruntime: export "
                                 "the checkpoints in memory (checked on the first records) and run the export",
                         choices=ENGINES)
    tta: int = option(1, f"average over this many windows covering the record (at most {MAX_TTA})")
    bias_correction: bool = option(False, "apply the checkpoint's age-gap correction")
    on_bad: str = option("error", "bad records: stop and list them (exit 2), skip them, or fill in the training "
                                  "median age", choices=("error", "skip", "fill"))
    interval: float | None = option(None, "add columns lower,upper: a calibrated interval holding the age with "
                                          "probability LEVEL (e.g. 0.9), from the model's held-out residuals (split "
                                          "conformal)", type=level_option, metavar="LEVEL")
    explain: str | None = runtime(None, "write DIR/lead_importance.csv (each lead's share of the attribution) and "
                                        "DIR/<id>.png (the 12-lead ECG shaded by attribution)", metavar="DIR")
    explain_method: str = option(DEFAULT_METHOD, "attribution method (captum); the default is the one the deletion "
                                                 "test measured more faithful (bench/README.md)", choices=METHODS)
    explain_figures: int | None = option(None, "draw the figure of the first N explained records only (default: "
                                               "every one)", metavar="N")
    explain_records: int | None = option(None, "explain the first N written records only (default: every one; "
                                               "each costs forward or backward passes)", metavar="N")
    log_dir: str = runtime(str(LOG_DIR), "where the default runs' checkpoints are (MAIC submission)")
    graph_preprocessing: str = runtime("auto", "checkpoints of the project's recipes: where their band-pass and "
                                               "z-score run; on: with the network (PyTorch), off: on the CPU before "
                                               "it (scipy); auto: on with a GPU and with --cache off beside worker "
                                               "processes (an exported file runs what its export chose)",
                                       choices=GRAPH_CHOICES)

    def __post_init__(self):
        if not 1 <= self.tta <= MAX_TTA:
            raise UserError(f"--tta must be ≥ 1 and ≤ {MAX_TTA} (the number of windows to average, each one more "
                            f"forward pass), got {self.tta}")
        if self.explain_figures is not None and self.explain_figures < 0:
            raise UserError("--explain_figures must be ≥ 0")
        if self.explain_records is not None and self.explain_records < 0:
            raise UserError("--explain_records must be ≥ 0")


@dataclasses.dataclass(frozen=True)
class PredictJob:
    """Everything test_interface reads, typed: the records (``--input`` or the MAIC submission), the prediction
    options, the runtime and the cache."""

    data: InputSettings
    maic: MaicSubmission
    prediction: PredictionSettings
    runtime: RuntimeSettings
    cache: CacheOptions

    @classmethod
    def from_options(cls, options: dict) -> "PredictJob":
        return cls(InputSettings.from_options(options), MaicSubmission.from_options(options),
                   PredictionSettings.from_options(options), RuntimeSettings.from_options(options),
                   CacheOptions.from_options(options))

    @staticmethod
    def resolve(given: dict) -> dict:
        """The parsed options checked, with the MAIC paths from the data root (those that exist) and the default
        weights from the default runs' best checkpoints (a MAIC submission)."""
        options = dict(given)
        PredictionSettings.from_options(options)  # its own checks first
        if options["input"] is None and (options["interval"] is not None or options["explain"] is not None):
            raise UserError("--interval and --explain need --input: the MAIC submission keeps its template columns "
                            "(predict the same folder with --input DIR --weights ... for intervals and explanations)")
        if options["input"] is None:
            root = Path(options["data_root"] or default_data_root())
            found = {**{f"test_for_{m}": test_folder(root, m) for m in MODES},
                     "submission_template": template_csv(root)}
            options.update({k: str(v) for k, v in found.items() if options[k] is None and v.exists()})
            options["data_root"] = str(root)
            for mode in MODES:
                weights = default_weights(options["log_dir"], mode)
                if options[f"weights_{mode}"] is None and weights.exists():
                    options[f"weights_{mode}"] = [str(weights)]
        return options

    def weights(self) -> list:
        """Every model the job reads (--weights and each mode's)."""
        p, m = self.prediction, self.maic
        return [*(p.weights or []), *(m.weights_adult or []), *(m.weights_child or [])]

    def onnx_config(self, graph: bool = False) -> OnnxConfig:
        """How onnxruntime runs the models: its own batch, the windows, the bias correction, the cache. Its threads
        are the cores the preprocessing workers leave — all of them for a ``graph`` that runs the band-pass and
        z-score itself, whose workers only read, check and resample: then one single-thread call per core, in
        flight together (utils.machine.onnx_layout)."""
        streamed = self.cache.cache != "on"
        workers = self.runtime.workers(default_stream_workers() if streamed else 0)
        threads, calls, spinning = onnx_layout(self.runtime.threads, workers, graph)
        return OnnxConfig(batch_size=self.runtime.infer_batch_size, tta=self.prediction.tta,
                          bias_correction=self.prediction.bias_correction,
                          cache=self.cache.config("fp32", progress=not self.runtime.quiet), workers=workers,
                          threads=threads, calls=calls, spinning=spinning)

    def explain_threads(self) -> int:
        """onnxruntime's threads for the explanations: they run after the predictions, when no preprocessing worker
        is left to share the cores with (--threads when given)."""
        return model_threads(self.runtime.threads, 0)



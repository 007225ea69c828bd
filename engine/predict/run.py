"""A prediction run, top to bottom: ``run(job)`` — a MAIC submission (every template row, each mode's model) or
``ids,predicted_age`` (+ intervals, notes and explanations) for records of any format.

    options → PredictJob (engine/predict/job.py) → the engine's configuration (onnxruntime for an ONNX file alone:
    PyTorch is never imported; PyTorch for checkpoints) → outputs checked → models loaded (load.py) → one pass over
    the records (windows.py) → the --on_bad policy (policy.py) → the table written with its notes (notes.py) →
    explanations (explain.py).
"""
from __future__ import annotations

import datetime
import logging
from pathlib import Path

import numpy as np

from dataloader.checks import readable_records
from dataloader.labels import normalise_sex, table_sex
from dataloader.maic import assign_rows, read_template, template_ids
from dataloader.records import NpyFolderReader, Reader
from engine.runs import default_weights
from models.files import SHIPPED_MODEL
from models.schema import MODES, maic_mode
from utils.cli import RESULT
from utils.errors import RecordError, UserError
from utils.io import write_csv
from utils.machine import project_version
from utils.paths import DATA_ROOT_ENV, PREDICTIONS, SUBMISSION, prediction_notes

from .explain import explainer, write_explanations
from .explanations import check_explain_folder
from .job import GRAPH_CHOICES, PredictJob
from .load import load_predictor
from .notes import PredictionNotes
from .policy import check_outputs, explanation_titles, predict, prediction_table
from .predictor import Predictor, is_onnx

logger = logging.getLogger("test")


def load_models(job: PredictJob, weights: list[str], mode: str, reader: Reader) -> Predictor:
    """Every model ``weights`` stands for (a run folder: exactly the members its manifest names) on --engine."""
    return load_predictor(weights, mode=mode, trust=job.runtime.trust_checkpoint, engine=job.prediction.engine,
                          check=readable_records(reader), threads=job.onnx_config().threads,
                          graph=job.onnx_config(graph=True))


def engine_config(job: PredictJob, models: Predictor, cfg):
    return job.onnx_config() if models.engine == "onnxruntime" else cfg  # onnxruntime has its own batch


# ---- any format → ids,predicted_age ------------------------------------------------------------------------------
def run_records(job: PredictJob, cfg) -> tuple[Path, Reader]:
    """The predictions of ``--input`` (with their notes, and explanations with --explain); returns (the table, the
    reader of the records)."""
    p = job.prediction
    weights = p.weights or job.maic.weights(p.mode)
    if weights is None:
        raise UserError(f"--input needs --weights: a checkpoint, a run folder, a published model folder or an ONNX "
                        f"file — e.g. the model that ships with the project, --weights {SHIPPED_MODEL} (what "
                        f"`ecg-age predict` uses by default; its card: MODEL_CARD.md)")
    reader = job.data.open()
    if len(reader) == 0:
        raise UserError(f"{job.data.input} holds no records")
    output = Path(p.output or PREDICTIONS)
    check_outputs([output, prediction_notes(output)], reader.ids, [job.data.input, *reader.files()],
                  [job.data.input], weights)
    if p.explain:
        check_explain_folder(Path(p.explain), [job.data.input, *reader.files(), output], [job.data.input])
    models = load_models(job, weights, p.mode, reader)
    explain = explainer(models, p.explain_method, getattr(cfg, "device", None), job.explain_threads()) \
        if p.explain else None
    intervals = models.intervals(p.interval, p.bias_correction) if p.interval else None
    result = predict(models, reader, engine_config(job, models, cfg), p.on_bad, "the predictions")
    frame = prediction_table(reader, result, intervals)
    notes = notes_of(job, weights, models, reader, result, intervals)
    if intervals is not None:
        logger.log(RESULT, f"{intervals.level:g} intervals: {len(intervals.half_width)} band(s) of predicted age, "
                           f"half-widths {', '.join(f'{r:.1f}' for r in intervals.half_width)} years")
    write_csv(output, frame)  # the predictions first: explanations may take hours, and resume
    notes.write(output)
    if explain is not None:
        positions, titles = explanation_titles(reader, frame, result, intervals, p.explain_records)
        made_by = {"models": list(notes.models), "ages": {reader.ids[i]: float(result.ages[i]) for i in positions}}
        write_explanations(explain, reader, positions, table_sex(reader.table)[positions], titles, p.explain_method,
                           Path(p.explain), p.explain_figures, progress=not job.runtime.quiet, made_by=made_by)
    return output, reader


def notes_of(job: PredictJob, weights: list, models: Predictor, reader: Reader, result, intervals) -> PredictionNotes:
    """How the table was made: the models (and their card), the preprocessing, the options, the records filled in
    or left out (with the reason)."""
    p = job.prediction
    written = set(result.keep.tolist())
    return PredictionNotes(weights=tuple(map(str, weights)), models=tuple(m[0] for m in models.members()),
                           architectures=tuple(models.archs), training_records=tuple(models.training_records),
                           preprocessing=models.preprocessing.to_dict(), version=project_version(),
                           engine=models.engine, tta=p.tta, bias_correction=p.bias_correction,
                           filled=tuple(reader.ids[i] for i in result.filled),
                           left_out={reader.ids[i]: result.reasons.get(reader.ids[i], "bad record")
                                     for i in range(len(reader)) if i not in written},
                           in_training=None if result.in_training is None else
                           tuple(reader.ids[i] for i in result.in_training),
                           interval=None if intervals is None else intervals.describe(),
                           card=models.card, date=datetime.date.today().isoformat())


# ---- MAIC submission -------------------------------------------------------------------------------------------
def test_folders(job: PredictJob) -> dict[str, Path | None]:
    folders = {m: job.maic.folder(m) for m in MODES}
    for mode, folder in folders.items():
        if folder is not None and not folder.is_dir():
            raise RecordError(str(folder), f"--test_for_{mode} is not a folder")
    if job.maic.submission_template is None or not any(folders.values()):
        raise UserError(f"no MAIC test data: looked for {job.maic.data_root}/submission.csv and "
                        f"{job.maic.data_root}/ECG_<mode>_numpy_valid/ (the default data root is data/maic2023, or "
                        f"the folder in ${DATA_ROOT_ENV}). Pass --data_root DIR (or --test_for_adult/--test_for_child "
                        f"and --submission_template), or --input for other formats; `make demo` builds a "
                        f"synthetic set")
    return folders


def run_submission(job: PredictJob, cfg) -> Path:
    folders = test_folders(job)
    template_path = Path(job.maic.submission_template)
    template = read_template(template_path)
    output = Path(job.prediction.output or SUBMISSION)
    check_outputs([output], template["FILENAME"], [template_path], [f for f in folders.values() if f is not None],
                  [w for m in MODES for w in (job.maic.weights(m) or [])])
    modes = assign_rows(template, folders, template_path)
    names = template_ids(template)
    needed = {m: np.flatnonzero(modes == m) for m in MODES}
    missing = [f"--weights_{m} (the template has {len(rows)} {m} row(s); no checkpoint at the default "
               f"{default_weights(job.prediction.log_dir, m)})" for m, rows in needed.items()
               if len(rows) and job.maic.weights(m) is None]
    if missing:
        raise UserError(f"give {' and '.join(missing)}")
    ages = np.full(len(template), np.nan)
    for mode, rows in ((m, r) for m, r in needed.items() if len(r)):
        reader = NpyFolderReader(folders[mode], fs=job.data.fs or 500.0, scale=job.data.input_scale)
        position = {rid: i for i, rid in enumerate(reader.ids)}
        reader = reader.subset([position[n] for n in names.iloc[rows]])
        if "GENDER" in template.columns:  # the template carries each person's sex (for models that read it)
            reader.table["sex"] = template["GENDER"].iloc[rows].map(normalise_sex).to_numpy()
        models = load_models(job, job.maic.weights(mode), mode, reader)
        result = predict(models, reader, engine_config(job, models, cfg), job.prediction.on_bad, f"the {mode} rows")
        # a plausible age outside the mode's bounds (a linear-head model) is clipped to them, as the seed's sigmoid
        ages[rows[result.keep]] = maic_mode(mode).clip(result.ages[result.keep])
    write_csv(output, template.assign(AGE=ages)[np.isfinite(ages)])
    return output


def engine_configuration(job: PredictJob):
    """onnxruntime's configuration for ONNX files alone (PyTorch is then never imported), else PyTorch's."""
    onnx_only = job.prediction.engine != "torch" and job.weights() and all(is_onnx(w) for w in job.weights())
    if onnx_only and job.prediction.graph_preprocessing != "auto":
        raise UserError(f"--graph_preprocessing {job.prediction.graph_preprocessing} is for checkpoints: an exported "
                        f"file runs the preprocessing its export chose (export_interface.py --cpu_preprocessing "
                        f"keeps it on the CPU)")
    return job.onnx_config() if onnx_only else torch_config(job)


def torch_config(job: PredictJob):
    """PyTorch's configuration: inference defaults to fp32 numerics (the reference code's outputs); --precision
    bf16 is opt-in, and --precision fp32 additionally keeps the reference memory layout."""
    from dataloader.dataset import default_workers
    from engine.predict.inference import InferenceConfig
    from utils.runtime import configure_backends, default_infer_batch, resolve_device, resolve_precision

    runtime = job.runtime
    device = resolve_device(runtime.device)
    precision = "fp32" if runtime.precision == "auto" else resolve_precision(runtime.precision, device)
    configure_backends(device, precision, runtime.deterministic, runtime.threads)  # process-wide: only when asked
    return InferenceConfig(device=device, precision=precision,
                           workers=runtime.workers(default_workers(device, job.cache.cache == "on")),
                           tta=job.prediction.tta,
                           batch_size=runtime.infer_batch_size or default_infer_batch(device, 32),
                           bias_correction=job.prediction.bias_correction, fast_layout=runtime.fast_layout,
                           graph_preprocessing=GRAPH_CHOICES[job.prediction.graph_preprocessing],
                           cache=job.cache.config(precision, progress=not runtime.quiet), progress=not runtime.quiet)


def run(job: PredictJob) -> Path:
    """The job's predictions written; returns the table's path."""
    cfg = engine_configuration(job)
    output = run_records(job, cfg)[0] if job.data.input else run_submission(job, cfg)
    logger.log(RESULT, f"wrote {output}")
    return output

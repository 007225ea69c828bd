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
typed settings (engine.prediction.PredictJob) → the engine's configuration → one job → exit code.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

import options as opts
from dataloader.labels import normalise_sex, table_sex
from dataloader.maic import assign_rows, read_template, template_ids
from dataloader.records import NpyFolderReader, Reader
from engine.predict.explain import check_explain_folder, write_explanations
from engine.predict.job import PredictJob, check_outputs, explanation_titles, predict, prediction_table
from engine.predict.load import load_predictor
from engine.predict.predictor import Predictor, is_onnx, records_of
from engine.runs import run_folders
from models.schema import MODES, maic_mode
from utils.cli import RESULT, configure_logging, run_main
from utils.errors import RecordError, UserError
from utils.io import write_csv, write_json
from utils.machine import project_version
from utils.paths import DATA_ROOT_ENV, PREDICTIONS, SUBMISSION, prediction_notes

logger = logging.getLogger("test")


def load_models(job: PredictJob, weights: list[str], mode: str, reader: Reader) -> Predictor:
    """Every model ``weights`` stands for (a run folder: exactly the members its manifest names) on --engine."""
    return load_predictor(weights, mode=mode, trust=job.runtime.trust_checkpoint, engine=job.prediction.engine,
                          check=records_of(reader), threads=job.onnx_config().threads)


def engine_config(job: PredictJob, models: Predictor, cfg):
    return job.onnx_config() if models.engine == "onnxruntime" else cfg  # onnxruntime has its own batch


# ---- any format → ids,predicted_age ------------------------------------------------------------------------------
def run_records(job: PredictJob, cfg) -> Path:
    p = job.prediction
    weights = p.weights or job.maic.weights(p.mode)
    if weights is None:
        found = run_folders(p.log_dir)
        raise UserError("--input needs --weights: a checkpoint, a run folder or a published model folder" + (
            f"; the run folders in {p.log_dir} are: {', '.join(map(str, found))}" if found else
            f" (there are no run folders in {p.log_dir})"))
    reader = job.data.open()
    if len(reader) == 0:
        raise UserError(f"{job.data.input} holds no records")
    output = Path(p.output or PREDICTIONS)
    check_outputs([output, prediction_notes(output)], reader.ids, [job.data.input, *reader.files()],
                  [job.data.input], weights)
    if p.explain:
        check_explain_folder(Path(p.explain), [job.data.input, *reader.files(), output], [job.data.input])
    models = load_models(job, weights, p.mode, reader)
    if p.explain and not models.bundles:
        raise UserError(f"--explain needs the PyTorch checkpoints (the attributions are captum's); {models.source} "
                        f"is an ONNX export")
    intervals = models.intervals(p.interval, p.bias_correction) if p.interval else None
    result = predict(models, reader, engine_config(job, models, cfg), p.on_bad, "the predictions")
    frame = prediction_table(reader, result, intervals)
    notes = {"weights": [str(w) for w in weights], "models": [m[0] for m in models.members()],
             "architectures": models.archs, "training_records": models.training_records,
             "preprocessing": models.preprocessing.to_dict(), "version": project_version(),
             "engine": models.engine, "tta": p.tta, "bias_correction": p.bias_correction,
             "filled": [reader.ids[i] for i in result.filled]}
    if intervals is not None:
        notes["interval"] = intervals.describe()
        logger.log(RESULT, f"{intervals.level:g} intervals: {len(intervals.half_width)} band(s) of predicted age, "
                           f"half-widths {', '.join(f'{r:.1f}' for r in intervals.half_width)} years")
    write_csv(output, frame)  # the predictions first: explanations may take hours, and resume
    write_json(prediction_notes(output), notes)
    if p.explain:
        positions, titles = explanation_titles(reader, frame, result, intervals)
        write_explanations(models.bundles, reader, positions, table_sex(reader.table)[positions], titles,
                           p.explain_method, cfg.device, Path(p.explain), p.explain_figures, progress=cfg.progress)
    return output


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
               f"{opts.default_weights(job.prediction.log_dir, m)})" for m, rows in needed.items()
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
                           cache=job.cache.config(precision, progress=not runtime.quiet), progress=not runtime.quiet)


def main(argv=None) -> int:
    job = PredictJob.from_options(vars(opts.parse_test(argv)))
    configure_logging(sys.stderr, job.runtime.quiet)
    onnx_only = job.prediction.engine != "torch" and job.weights() and all(is_onnx(w) for w in job.weights())
    cfg = job.onnx_config() if onnx_only else torch_config(job)  # an ONNX file alone: PyTorch is never imported
    output = run_records(job, cfg) if job.data.input else run_submission(job, cfg)
    logger.log(RESULT, f"wrote {output}")
    return 0


def entry(argv=None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(entry())

"""Explanations: on which leads, and when, a predicted age rests — attributions by captum, and the deletion test
that measures whether they are faithful.

For each model of an ensemble, captum attributes the predicted age to every sample of the model's input
(``integrated_gradients``: the path integral of the gradient from a flat input, ``IG_STEPS`` steps;
``occlusion``: the change of the age when ``OCCLUSION_SECONDS`` of one lead at a time is replaced by a flat
line). The absolute attributions are mapped back to the record's own samples (models/preprocessing.input_times:
resampling, crop and padding undone; parts of the record a model never saw get none) and averaged over the models.
A lead's **share** is its part of the total absolute attribution (non-negative, summing to 1).

The **deletion test** replaces a record's most important lead, and separately its least important one, by faint
noise (``DELETION_NOISE_MV``; an all-zero lead is bad input) and predicts again: a faithful attribution makes the
first change the age more than the second, on average. bench/explain.py runs it for both methods on held-out
records, and ``DEFAULT_METHOD`` is the one it measured more faithful (bench/README.md).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd
from tqdm import tqdm

from dataloader.checks import prepare
from dataloader.records import LEADS, Reader, Record
from models.preprocessing import PreprocessSpec, input_times
from utils.errors import OutputError, RecordError, UserError
from utils.io import write_csv, write_json

from .explanations import INDEX, INDEX_EVERY_SECONDS, LEAD_IMPORTANCE, METHODS, _start, figure_name

if TYPE_CHECKING:  # torch and captum are imported where explanations are made: the option names need neither
    import torch

    from models.checkpoint import ModelBundle

logger = logging.getLogger(__name__)

IG_STEPS = 32
OCCLUSION_SECONDS = 0.5
DELETION_NOISE_MV = 0.01


@dataclasses.dataclass(frozen=True)
class Explanation:
    """One record's explanation: its signal (12, N) in mV at ``fs``, the mean absolute attribution on the same
    samples (12, N), and each lead's share (12,) in LEADS order."""

    id: str
    signal: np.ndarray
    fs: float
    attribution: np.ndarray
    shares: np.ndarray


def age_of(bundle: ModelBundle):
    """A bundle's network (in eval mode) and head as one function input [, sex] → age (B,): what captum
    attributes."""
    net, head, takes_sex = bundle.model.eval(), bundle.head, bundle.takes_sex
    return lambda x, sex=None: head(net(x, sex) if takes_sex else net(x))


def attribute(bundle: ModelBundle, x: np.ndarray, sex: float, method: str, device: torch.device) -> np.ndarray:
    """|attribution| of the age to each sample of one model input ``x`` (12, L): float64 (12, L)."""
    import torch
    from captum.attr import IntegratedGradients, Occlusion  # imported on use: only explanations need captum

    bundle.model.to(device)
    model = age_of(bundle)
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None].to(device)
    extra = (torch.tensor([sex], dtype=torch.float32, device=device),) if bundle.takes_sex else None
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore", UserWarning)  # captum's notes on requires_grad of the input
        if method == "integrated_gradients":
            result = IntegratedGradients(model).attribute(inputs, baselines=torch.zeros_like(inputs),
                                                          n_steps=IG_STEPS, internal_batch_size=IG_STEPS,
                                                          additional_forward_args=extra)
        elif method == "occlusion":
            width = max(1, int(round(OCCLUSION_SECONDS * bundle.preprocessing.fs)))
            result = Occlusion(model).attribute(inputs, sliding_window_shapes=(1, width), strides=(1, width),
                                                baselines=0.0, perturbations_per_eval=16,
                                                additional_forward_args=extra)
        else:
            raise ValueError(f"explanation method {method!r}: choose one of {', '.join(METHODS)}")
    return np.abs(result[0].detach().cpu().double().numpy())


def on_record(attribution: np.ndarray, n: int, fs: float, spec: PreprocessSpec) -> np.ndarray:
    """Attribution on the model input's samples → on the record's ``n`` samples (none where the model saw none)."""
    times = input_times(n, fs, spec)
    seen = np.isfinite(times)
    record_times = np.arange(n) / fs
    return np.stack([np.interp(record_times, times[seen], lead[seen], left=0.0, right=0.0)
                     for lead in attribution])


def combined(record: Record, attributions: list[tuple[np.ndarray, PreprocessSpec, str]], method: str) -> Explanation:
    """The ensemble's explanation of one record from each model's |attribution| on its input ((12, L), its
    preprocessing, its name): the mean over the models of their attributions mapped onto the record, and of their
    lead shares."""
    n = record.signal.shape[-1]
    mapped, shares = np.zeros((len(LEADS), n)), np.zeros(len(LEADS))
    for values, spec, name in attributions:
        total = values.sum()
        if not np.isfinite(total) or total <= 0:
            raise RecordError(f"record {record.id}", f"{name}: its age does not depend on this record's samples "
                                                     f"({method} attributions all zero), so there is nothing to "
                                                     f"explain")
        shares += values.sum(axis=1) / total / len(attributions)
        mapped += on_record(values, n, record.fs, spec) / len(attributions)
    return Explanation(record.id, record.signal, record.fs, mapped, shares / shares.sum())


def explain_record(bundles: list[ModelBundle], record: Record, sex: float, method: str,
                   device: torch.device) -> Explanation:
    """The ensemble's explanation of one record by captum (PyTorch checkpoints; either method)."""
    return combined(record, [(attribute(b, prepare(record, b.preprocessing), sex, method, device), b.preprocessing,
                              f"{b.arch} from {b.source}") for b in bundles], method)


def occlusion(member_ages, x: np.ndarray, width: int, batch: int) -> np.ndarray:
    """Occlusion by forward passes only: for each model (``member_ages``: inputs (B, 12, L) → ages (B, M)), each
    window of ``width`` samples of one lead at a time set to zero, the age's change (the unchanged input's age minus
    the occluded one's) given to every sample of the window — captum's Occlusion with sliding window (1, width),
    stride width and baseline 0, which it equals (tests); ``batch`` occluded inputs per forward pass. Returns
    (M, 12, L)."""
    leads, length = x.shape
    base = member_ages(x[None])[0]
    starts = range(0, length - width + 1, width)  # whole windows only, as captum's
    windows = [(lead, start) for lead in range(leads) for start in starts]
    out = np.zeros((len(base), leads, length))
    for i in range(0, len(windows), batch):
        chunk = windows[i:i + batch]
        occluded = np.repeat(x[None], len(chunk), axis=0)
        for k, (lead, start) in enumerate(chunk):
            occluded[k, lead, start:start + width] = 0.0
        change = base[None] - member_ages(occluded)  # (windows, M)
        for k, (lead, start) in enumerate(chunk):
            out[:, lead, start:start + width] = change[k][:, None]
    return out


def explain_by_occlusion(predictor, record: Record, sex: float) -> Explanation:
    """The ensemble's explanation of one record by occlusion through the predictor's forward passes — any engine,
    an ONNX file on onnxruntime included (no PyTorch, no captum)."""
    spec = predictor.input_spec  # the same samples as the model's input (models.preprocessing.cpu_part)
    x = prepare(record, spec)
    codes = lambda batch: np.full(len(batch), sex, np.float32)  # noqa: E731
    attributions = occlusion(lambda batch: predictor.member_ages(batch, codes(batch)), x,
                             max(1, int(round(OCCLUSION_SECONDS * spec.fs))), predictor.batch)
    return combined(record, [(np.abs(a), spec, f"member {m} of {predictor.source}")
                             for m, a in enumerate(attributions)], "occlusion")


def explainer(predictor, method: str, device, threads: int | None = None) -> "Callable[[Record, float], Explanation]":
    """How the records of a job are explained: captum on the PyTorch checkpoints where there are some, else (an
    ONNX file) occlusion by the predictor's own forward passes — on ``threads`` threads where given (a session of
    its own: the explanations run after the predictions, with the cores their workers left)."""
    if predictor.bundles:
        return lambda record, sex: explain_record(predictor.bundles, record, sex, method, device)
    if method != "occlusion":
        raise UserError(f"--explain_method {method} needs the PyTorch checkpoints (gradients); {predictor.source} is "
                        f"an ONNX export: use --explain_method occlusion (forward passes only)")
    occluded = predictor if threads is None else predictor.with_threads(threads)
    return lambda record, sex: explain_by_occlusion(occluded, record, sex)


def ensemble_age(bundles: list[ModelBundle], record: Record, sex: float, device: torch.device) -> float:
    """The ensemble's age of one record (each model on its own preprocessing)."""
    from .inference import predict_inputs

    code = np.array([sex], np.float32)
    return float(np.mean([predict_inputs([b], prepare(record, b.preprocessing)[None], code, device=device)[0]
                          for b in bundles]))


def deletion_test(bundles: list[ModelBundle], records: list[Record], sexes, method: str, device: torch.device,
                  seed: int = 0) -> dict:
    """For each record, |Δ age| when its most and when its least important lead (by ``method``'s shares) is
    replaced by faint noise: {'most': array, 'least': array, 'most_lead': [...], 'least_lead': [...]}."""
    rng = np.random.default_rng(seed)
    out = {"most": [], "least": [], "most_lead": [], "least_lead": []}
    for record, sex in zip(records, sexes):
        shares = explain_record(bundles, record, sex, method, device).shares
        base = ensemble_age(bundles, record, sex, device)
        for key, lead in (("most", int(np.argmax(shares))), ("least", int(np.argmin(shares)))):
            signal = record.signal.copy()
            signal[lead] = rng.normal(0.0, DELETION_NOISE_MV, signal.shape[-1])
            changed = ensemble_age(bundles, record._replace(signal=signal), sex, device)
            out[key].append(abs(changed - base))
            out[f"{key}_lead"].append(LEADS[lead])
    return {k: np.asarray(v) if k in ("most", "least") else v for k, v in out.items()}


def write_explanations(explain, reader: Reader, positions, sexes, titles: list[str], method: str, folder: Path,
                       figures: int | None, progress: bool = False, made_by: dict | None = None) -> Path:
    """Explain (``explain``: (record, sex) → Explanation, see ``explainer``) the records at ``positions`` by
    ``method`` into ``folder``: its index (``INDEX``) names every file of the job
    before the first is written and records each explained record, so an interrupted run resumes where it
    stopped (the same records, titles, method and figures) and a new job removes only what the index names.
    ``made_by``: the models and predicted ages explained ({"models": [...], "ages": {id: age}}), recorded so a
    report attaches the explanations to exactly these predictions."""
    from utils.plots import plot_ecg_explanation  # matplotlib: imported by the jobs that draw, not by every start

    folder, chosen = Path(folder), [int(p) for p in positions]
    ids = [reader.ids[p] for p in chosen]
    taken: set[str] = set()
    names = [figure_name(i, taken) if figures is None or k < figures else None for k, i in enumerate(ids)]
    job = hashlib.sha256(json.dumps([method, figures, ids, titles, made_by]).encode()).hexdigest()
    try:
        index = _start(folder, job, [n for n in names if n], made_by)
        todo = [k for k, i in enumerate(ids) if i not in index["done"]]
        if len(todo) < len(ids):
            logger.info(f"--explain {folder}: resuming, {len(ids) - len(todo)} of {len(ids)} ECG(s) already explained")
        saved, started = time.monotonic(), time.monotonic()
        for n, k in enumerate(tqdm(todo, desc=f"explain ({method})", unit="ECG", disable=not progress)):
            found = explain(reader.load(chosen[k]), float(sexes[k]))
            if names[k]:
                plot_ecg_explanation(found.signal, found.fs, LEADS, found.attribution, titles[k], folder / names[k],
                                     shares=found.shares)
            index["done"][ids[k]] = found.shares.tolist()
            if n == 0 and len(todo) > 1:
                each = time.monotonic() - started
                logger.info(f"explaining {len(todo)} ECG(s) ({method}): about "
                            f"{each * len(todo) / 60:.1f} min at {each:.1f} s per ECG")
            if time.monotonic() - saved > INDEX_EVERY_SECONDS:
                write_json(folder / INDEX, index)
                saved = time.monotonic()
        write_csv(folder / LEAD_IMPORTANCE, pd.DataFrame([[i, *index["done"][i]] for i in ids],
                                                         columns=["id", *LEADS]))
        write_json(folder / INDEX, {**index, "complete": True})
    except OSError as exc:
        raise OutputError(f"--explain {folder}: cannot be written ({exc.strerror or exc})") from exc
    logger.info(f"explanations of {len(ids)} ECG(s) ({method}) → {folder}")
    return folder / LEAD_IMPORTANCE

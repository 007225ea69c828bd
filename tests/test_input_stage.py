"""The graph's part of the preprocessing (models/input_stage.py) against scipy's whole path, on real records:
PTB-XL and CinC 2021 at 500 Hz, records resampled to 400 and 257 Hz, a short record (padded) and a long one
(cropped); the seed recipes keep their reference path; a checkpoint's ages through the stage equal its ages on
scipy's inputs."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import signal as sps

from dataloader.checks import prepare
from dataloader.formats import open_reader
from dataloader.records import Record
from dataloader.sources import CacheConfig
from engine.predict.inference import InferenceConfig, graph_preprocessing, predict_inputs, predict_records
from engine.runs import run_members
from models.checkpoint import load_bundle
from models.input_stage import InputStage
from models.preprocessing import LIMA, MAIC, MODERN, MODERN_100HZ, cpu_part, in_graph, preprocess
from models.zero_phase import padlen, pass_blocks


@pytest.fixture(scope="module")
def records(ptbxl, cinc) -> list[Record]:
    """Real records at several rates and lengths."""
    ptb, georgia = open_reader(ptbxl, ptbxl_rate=500), open_reader(cinc)
    out = [ptb.load(i) for i in range(4)] + [georgia.load(i) for i in range(0, 40, 8)]
    first = out[0]
    for fs in (400, 257):
        out.append(Record(f"{first.id}@{fs}", sps.resample_poly(first.signal, fs, 500, axis=-1).astype(np.float32),
                          float(fs), {}))
    out.append(Record("short", first.signal[:, :2100], 500.0, {}))  # 4.2 s: padded at the end
    out.append(Record("long", np.concatenate([first.signal, out[1].signal], axis=1), 500.0, {}))  # cropped
    return out


@pytest.mark.parametrize("spec, tolerance", [(MODERN, 2e-4), (MODERN_100HZ, 2e-5)])
def test_the_stage_reproduces_scipys_preprocessing(records, spec, tolerance):
    """The window (resampled and cut on the CPU) through the stage equals filtfilt + z-score by scipy. The
    tolerance is the transfer-function filter's own error at 500 Hz: scipy's filtfilt(b, a) and its second-order
    sections differ by ~1e-5 there, and the stage is built from the sections."""
    expected = np.stack([preprocess(r.signal, r.fs, spec) for r in records])
    windows = np.stack([preprocess(r.signal, r.fs, cpu_part(spec)) for r in records])
    with torch.no_grad():
        got = InputStage(spec)(torch.from_numpy(windows)).numpy()
    assert got.shape == expected.shape == (len(records), 12, spec.length) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=tolerance, rtol=0)
    # not a vacuous equality: the band-pass and z-score change the window by far more than the tolerance
    raw = (windows - windows.mean(-1, keepdims=True)) / (windows.std(-1, keepdims=True) + 1e-8)
    assert np.abs(raw - expected).max() > 0.5


def test_a_lead_with_a_nan_becomes_zeros_as_on_scipys_path(records, tmp_path):
    """A NaN sample makes scipy's filtered lead NaN, and NaN → 0 zeroes it; the stage (which runs its backward pass
    on reversed matrices, not a reversed signal) does the same to that lead only, in PyTorch and in its ONNX
    graph."""
    import onnxruntime

    window = preprocess(records[0].signal, records[0].fs, cpu_part(MODERN_100HZ))[None].copy()
    window[0, 4, 300] = np.nan
    expected = preprocess(window[0], MODERN_100HZ.fs, MODERN_100HZ)
    assert not expected[4].any() and expected[5].any()  # scipy's own path: aVL zeroed, the others kept
    stage = InputStage(MODERN_100HZ).eval()
    with torch.no_grad():
        got = stage(torch.from_numpy(window)).numpy()[0]
    path = tmp_path / "stage.onnx"
    torch.onnx.export(stage, (torch.from_numpy(window),), str(path), input_names=["x"], dynamo=False)
    exported = onnxruntime.InferenceSession(str(path)).run(None, {"x": window})[0][0]
    for result in (got, exported):
        assert not result[4].any()
        np.testing.assert_allclose(result, expected, atol=2e-5, rtol=0)


def test_the_stage_runs_under_any_precision_in_fp32():
    """The stage's matrices and its output stay float32 whatever the input's dtype (a bf16 pass would lose the
    filter's precision)."""
    stage = InputStage(MODERN_100HZ)
    x = torch.randn(2, 12, MODERN_100HZ.length)
    with torch.no_grad():
        full = stage(x)
        half = stage(x.to(torch.bfloat16))
    assert full.dtype == half.dtype == torch.float32 and all(b.dtype == torch.float32 for b in stage.buffers())
    assert not list(stage.state_dict())  # constants, never saved in a checkpoint


def test_the_seed_recipes_keep_their_reference_path():
    assert not in_graph(MAIC) and not in_graph(LIMA)
    assert cpu_part(MAIC) is MAIC and cpu_part(LIMA) is LIMA
    assert in_graph(MODERN) and in_graph(MODERN_100HZ)
    window = cpu_part(MODERN)
    assert (window.fs, window.length, window.crop, window.pad) == (MODERN.fs, MODERN.length, MODERN.crop, MODERN.pad)
    assert window.bandpass is None and not window.zscore
    # a window no longer than the filter's odd extension (scipy refuses it) stays on the CPU
    tiny = dataclasses.replace(MODERN_100HZ, length=padlen(MODERN_100HZ.filter_order))
    assert not in_graph(tiny) and cpu_part(tiny) is tiny


def test_the_block_matrices_are_bounded():
    """A balanced realization: no matrix grows with the window (a transfer-function state would reach 1e15); the
    start's states carry lfilter_zi's free response exactly (to the sections' own ~1e-5 of the transfer function's
    at 500 Hz)."""
    from scipy import signal as sps

    blocks = pass_blocks(4, 0.5, 45.0, 500.0, 5054)
    for name in ("inner", "to_state", "carry", "from_state"):
        assert np.abs(getattr(blocks, name)).max() < 2.0, name
    assert blocks.start.shape == (blocks.blocks, 8) and np.abs(blocks.start).max() < 10.0
    b, a = sps.butter(4, [0.5, 45.0], btype="bandpass", fs=500.0)
    response = sps.lfilter(b, a, np.zeros(blocks.blocks * blocks.block), zi=sps.lfilter_zi(b, a))[0]
    carried = (blocks.start @ blocks.from_state.T).ravel()  # each block's entering state read out
    assert np.abs(carried - response).max() < 1e-5 and np.abs(response).max() > 0.5


def test_a_checkpoints_ages_through_the_stage_equal_its_ages_on_scipys_inputs(modern_cv_run, cinc, tmp_path):
    """PyTorch's record prediction with the stage on the CPU's windows (the default on a GPU and in a streamed pass
    with workers) against the network on scipy's whole preprocessing (the default where the cache keeps the
    inputs): within 0.02 y (in practice ~1e-5)."""
    _, run = modern_cv_run
    bundle = load_bundle(run_members(str(run))[0])
    assert in_graph(bundle.preprocessing)
    reader = open_reader(cinc)
    cache = CacheConfig(enabled=False, progress=False)
    assert not graph_preprocessing(InferenceConfig()) and graph_preprocessing(InferenceConfig(
        device=torch.device("cuda")))
    assert graph_preprocessing(InferenceConfig(cache=cache, workers=1))  # streamed beside worker processes
    assert not graph_preprocessing(InferenceConfig(cache=cache))  # streamed in this process: the scipy path
    ages, bad, prints = predict_records(bundle, reader, InferenceConfig(cache=cache, workers=1))
    plain, _, same_prints = predict_records(bundle, reader, InferenceConfig(cache=cache))
    assert np.array_equal(prints, same_prints) and prints["exact"].all()  # read alike in a worker and in this process
    good = [i for i, rid in enumerate(reader.ids) if rid not in bad]
    assert len(good) == 48 and np.isfinite(ages[good]).all() and np.isnan(np.delete(ages, good)).all()
    x = np.stack([prepare(reader.load(i), bundle.preprocessing) for i in good])
    reference = predict_inputs([bundle], x, np.full(len(x), 0.5, np.float32))
    assert np.abs(ages[good] - reference).max() < 0.02 and np.abs(plain[good] - reference).max() < 1e-4


def test_graph_preprocessing_chooses_where_a_checkpoints_band_pass_runs(modern_cv_run, cinc, tmp_path, monkeypatch,
                                                                        capsys):
    """test_interface --graph_preprocessing: 'on' builds the stage, 'off' does not, and the ages agree within
    0.02 y; 'auto' builds it for a streamed pass beside a worker process. An exported file decides for itself:
    asking it of one is an error, not a choice ignored in silence."""
    import pandas as pd

    import engine.predict.inference as inference
    import test_interface
    from models.files import SHIPPED_MODEL
    from utils.tables import AGE, ID

    built = []
    monkeypatch.setattr(inference, "InputStage", lambda spec: built.append(spec) or InputStage(spec))
    member = run_members(str(modern_cv_run[1]))[0]
    ages = {}
    for choice in ("on", "off", "auto"):
        path = tmp_path / f"{choice}.csv"
        before = len(built)
        assert test_interface.entry(["--input", str(cinc), "--weights", str(member), "--cache", "off",
                                     "--num_workers", "1", "--graph_preprocessing", choice, "--on_bad", "skip",
                                     "--output", str(path), "--quiet"]) == 0
        assert (len(built) > before) == (choice != "off"), choice
        ages[choice] = pd.read_csv(path).set_index(ID)[AGE]
    assert len(ages["on"]) == 48 and (ages["on"] - ages["off"]).abs().max() < 0.02
    code = test_interface.entry(["--input", str(cinc), "--weights", str(SHIPPED_MODEL), "--graph_preprocessing",
                                 "off", "--output", str(tmp_path / "x.csv"), "--quiet"])
    assert code != 0 and "--graph_preprocessing off is for checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()

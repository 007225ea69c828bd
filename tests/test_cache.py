"""The preprocessed-signal cache: built once, reused, rebuilt when the data or the preprocessing change; the
loader reads it in batches; bf16 inference agrees with fp32 on real records."""
from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import SPEC, need

from dataloader.dataset import ECGDataset, eval_loader, train_loader
from dataloader.records import NpyFolderReader
from dataloader.sources import build_cache
from models.preprocessing import MAIC, preprocess


@pytest.fixture()
def folder(maic_adult, tmp_path):
    copy = tmp_path / "npy"
    shutil.copytree(maic_adult / "ECG_adult_numpy_valid", copy)
    return copy


def caches(cache_dir):
    return sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith("."))


def test_cache_matches_preprocessing_and_is_reused(folder, tmp_path):
    reader = NpyFolderReader(folder)
    cache = build_cache(reader, MAIC, tmp_path / "c", progress=False, workers=2)
    assert cache.signals.shape == (6, 12, 4096) and cache.signals.dtype == np.float32 and cache.bad == {}
    for i in range(6):
        np.testing.assert_array_equal(cache.signals[i], preprocess(reader.load(i).signal, 500, MAIC))
    stamp = os.stat(cache.folder / "signals.npy").st_mtime_ns
    again = build_cache(NpyFolderReader(folder), MAIC, tmp_path / "c", progress=False)
    assert again.folder == cache.folder and os.stat(again.folder / "signals.npy").st_mtime_ns == stamp


def test_cache_rebuilt_when_data_or_spec_change(folder, tmp_path):
    first = build_cache(NpyFolderReader(folder), MAIC, tmp_path / "c", progress=False)
    victim = sorted(folder.glob("*.npy"))[2]
    signal = np.load(victim).reshape(12, -1) * 2.0 + 1.0  # same size, new content, new mtime
    os.utime(victim, ns=(0, 0))
    np.save(victim, signal)
    second = build_cache(NpyFolderReader(folder), MAIC, tmp_path / "c", progress=False)
    assert second.folder != first.folder and not first.folder.exists()  # the stale cache is removed
    np.testing.assert_array_equal(second.signals[2], preprocess(signal, 500, MAIC))
    other_spec = dataclasses.replace(MAIC, bandpass=(0.5, 40.0))
    third = build_cache(NpyFolderReader(folder), other_spec, tmp_path / "c", progress=False)
    assert third.folder != second.folder and second.folder.exists()  # another spec is another cache
    fp16 = build_cache(NpyFolderReader(folder), MAIC, tmp_path / "c", dtype="float16", progress=False)
    assert fp16.signals.dtype == np.float16 and len(caches(tmp_path / "c")) == 3
    np.testing.assert_allclose(fp16.signals[2], second.signals[2], atol=2e-3, rtol=1e-3)


def test_interrupted_build_leaves_no_cache(folder, tmp_path, monkeypatch):
    import dataloader.sources as cache_module

    def explode(job):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module, "_build_chunk", explode)
    with pytest.raises(KeyboardInterrupt):
        build_cache(NpyFolderReader(folder), MAIC, tmp_path / "c", progress=False, workers=1)
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


def test_batched_loader_reads_rows_in_order_and_shuffles(folder, tmp_path):
    cache = build_cache(NpyFolderReader(folder), MAIC, tmp_path / "c", progress=False)
    positions = np.array([5, 0, 3, 1])
    data = ECGDataset(cache, positions, targets=[50, 60, 70, 80])
    batches = list(eval_loader(data, batch_size=3, workers=0))
    assert [len(b["x"]) for b in batches] == [3, 1]
    np.testing.assert_array_equal(batches[0]["x"][1].numpy(), cache.signals[0])
    assert batches[1]["y"].tolist() == [80.0]
    loader = train_loader(data, batch_size=2, seed=1, workers=0)
    orders = []
    for epoch in (1, 2):
        loader.sampler.set_epoch(epoch)
        orders.append([int(i) for b in loader for i in b["index"]])
    assert sorted(orders[0]) == [0, 1, 2, 3] and orders[0] != orders[1]


@pytest.mark.parametrize("arch,mode", [("ResUDenseNet", "child"), ("ResNet1d", "adult")])
def test_bf16_predictions_agree_with_fp32_on_real_records(arch, mode, ptbxl, ptbxl_table, tmp_path):
    """bf16 autocast ages within 0.1 years MAE of fp32 (reference fixture weights, real PTB-XL records). With the
    adult head (a 103-year sigmoid span) the same weights deviate ~0.4 years: bench/README.md."""
    from conftest import ptbxl_signal

    from models.checkpoint import load_bundle
    from models.registry import get_model

    fixture = torch.load(need(SPEC / f"{arch}_small.pt"), weights_only=False)
    model = get_model(arch, **fixture["config"])
    model.load_state_dict(fixture["state_dict"])
    torch.save({"model": model.state_dict()}, tmp_path / "m.pt")
    bundle = load_bundle(tmp_path / "m.pt", mode=mode)
    x = torch.from_numpy(np.stack([preprocess(ptbxl_signal(ptbxl, f), 500, bundle.preprocessing)
                                   for f in ptbxl_table["filename_hr"].head(8)]))
    with torch.no_grad():
        fp32 = bundle.head(bundle.model(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = bundle.head(bundle.model(x))
    assert 0 < (fp32 - bf16).abs().mean().item() < 0.1

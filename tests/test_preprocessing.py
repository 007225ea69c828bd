"""Preprocessing against independent scipy computations on real PTB-XL records."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import ptbxl_signal
from scipy import signal as sps

from models.preprocessing import LIMA, MAIC, PreprocessSpec, fit_length, preprocess, tta_specs


def test_maic_preprocessing_matches_independent_scipy(ptbxl, ptbxl_table):
    raw = ptbxl_signal(ptbxl, ptbxl_table.loc[0, "filename_hr"])  # (12, 5000) at 500 Hz, mV
    # the seed's steps written out independently: first 4096, z-score (eps 1e-8), Butterworth(3) 1-47 Hz filtfilt
    x = raw[:, :4096].astype(np.float64)
    x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-8)
    nyquist = 500 / 2
    b, a = sps.butter(3, [1 / nyquist, 47 / nyquist], btype="band")
    expected = np.nan_to_num(sps.filtfilt(b, a, x, axis=1), nan=0.0).astype(np.float32)
    out = preprocess(raw, 500, MAIC)
    assert out.shape == (12, 4096) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)
    # the filter really removes baseline: every lead has ~zero mean and strongly attenuated < 1 Hz content
    assert np.abs(out.mean(1)).max() < 0.05


def test_the_100_hz_preset_keeps_the_band_passed_content(ptbxl, ptbxl_table):
    """After the 45-Hz low-pass a 500-Hz record is five times oversampled: the modern preprocessing at 100 Hz is the
    500-Hz one decimated (an independent scipy decimation of the 500-Hz output), up to the edges' filter transients
    and the z-score's normalisation — on real PTB-XL records."""
    from models.preprocessing import MODERN, MODERN_100HZ

    assert dataclasses.replace(MODERN_100HZ, fs=MODERN.fs, length=MODERN.length) == MODERN
    for row in range(3):
        raw = ptbxl_signal(ptbxl, ptbxl_table.loc[row, "filename_hr"])
        fine, coarse = preprocess(raw, 500, MODERN), preprocess(raw, 500, MODERN_100HZ)
        assert fine.shape == (12, 5000) and coarse.shape == (12, 1000)
        decimated = sps.decimate(fine.astype(np.float64), 5, ftype="fir", axis=1, zero_phase=True)
        inner = slice(50, 950)  # half a second from each end
        for lead in range(12):
            r = np.corrcoef(decimated[lead, inner], coarse[lead, inner])[0, 1]
            assert r > 0.995, (row, lead, r)
        # the samples agree, not just the waveforms' shapes (z-scored units)
        assert np.abs(coarse - decimated)[:, inner].mean() < 0.05


def test_nan_becomes_zero_and_short_records_are_padded():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3000)).astype(np.float32)
    out = preprocess(x, 500, dataclasses.replace(MAIC, bandpass=None))
    assert out.shape == (12, 4096) and np.isfinite(out).all()
    lima = preprocess(x, 400, LIMA)
    # centred: 548 zeros before, 548 after, original samples unchanged (no scaling in the Lima recipe)
    assert np.all(lima[:, :548] == 0) and np.all(lima[:, -548:] == 0)
    np.testing.assert_array_equal(lima[:, 548:548 + 3000], x)


def test_lima_identity_on_code15_shaped_input_is_bit_exact():
    x = np.random.default_rng(1).normal(size=(12, 4096)).astype(np.float32)
    np.testing.assert_array_equal(preprocess(x, 400, LIMA), x)


@pytest.mark.parametrize("n,length,crop,pad", [(5000, 4096, "start", "end"), (5000, 4096, "center", "center"),
                                               (4000, 4096, "center", "center"), (100, 99, "center", "end")])
def test_fit_length_against_index_arithmetic(n, length, crop, pad):
    x = np.arange(2 * n, dtype=np.float32).reshape(2, n)
    out = fit_length(x, length, crop, pad)
    assert out.shape == (2, length)
    if n > length:
        start = 0 if crop == "start" else (n - length) // 2
        np.testing.assert_array_equal(out, x[:, start:start + length])
    else:
        before = 0 if pad == "end" else (length - n) // 2
        np.testing.assert_array_equal(out[:, before:before + n], x)


def test_tta_windows_cover_the_record_and_first_window_is_the_single_input(ptbxl, ptbxl_table):
    raw = ptbxl_signal(ptbxl, ptbxl_table.loc[1, "filename_hr"])
    stack = [preprocess(raw, 500, spec) for spec in tta_specs(MAIC, 3)]
    np.testing.assert_array_equal(stack[0], preprocess(raw, 500, MAIC))  # the seed's window is the first
    np.testing.assert_array_equal(stack[1], preprocess(raw[:, 452:452 + 4096], 500, MAIC))
    np.testing.assert_array_equal(stack[-1], preprocess(raw[:, -4096:], 500, MAIC))
    assert tta_specs(MAIC, 1) == [MAIC]


def test_spec_validation():
    with pytest.raises(ValueError, match="band-pass"):
        PreprocessSpec(fs=80, bandpass=(1, 47))
    assert PreprocessSpec.from_dict(MAIC.to_dict()) == MAIC


def test_resampling_equals_scipys_resample_poly(ptbxl, ptbxl_table):
    """resample() is scipy's resample_poly with its default filter — by numpy's matrix product, or by scipy itself for
    ratios whose matrix would be wide — within the float sums' rounding (1e-6 of the record's range in float32,
    1e-12 in float64), for every ratio the readers meet, in float32, float64, integer and float16 samples (read as
    float32), each giving scipy's output type; the filter is firwin's, the same numbers to the last bits."""
    from models import resampling
    from models.preprocessing import resample, resample_ratio

    raw = ptbxl_signal(ptbxl, ptbxl_table.loc[0, "filename_hr"])
    ratios = ((500, 100), (500, 400), (400, 500), (257, 500), (250, 500), (1000, 500), (360, 400), (128, 100))
    for fs_in, fs_out in ratios:
        up, down = resample_ratio(fs_in, fs_out)
        design = sps.firwin(2 * 10 * max(up, down) + 1, 1 / max(up, down), window=("kaiser", 5.0))
        # to the last bits: numpy's Bessel i0 (its SIMD exp on AVX-512 CPUs) against scipy's differs by an ulp
        np.testing.assert_allclose(resampling.lowpass(up, down), design, rtol=0, atol=1e-14 * np.abs(design).max())
        for x, tolerance in ((raw.astype(np.float32), 1e-6), (raw.astype(np.float64), 1e-12),
                             ((raw * 1000).astype(np.int16), 1e-12), (raw.astype(np.float16), 1e-6)):
            # float16 samples are resampled as float32 (scipy would round its filter to float16 first)
            expected = sps.resample_poly(x.astype(np.float32) if x.dtype == np.float16 else x, up, down, axis=-1)
            got = resample(x, fs_in, fs_out)
            assert got.shape == expected.shape and got.dtype == expected.dtype, (fs_in, fs_out, x.dtype)
            scale = np.abs(expected).max()
            np.testing.assert_allclose(got, expected, atol=tolerance * scale, rtol=0, err_msg=f"{fs_in}->{fs_out}")
    assert resampling.band(500, 257, "<f4") is None  # 257 Hz: scipy's own loop
    assert resampling.band(1, 5, "<f4") is resampling.band(1, 5, "<f4")  # designed once per ratio
    assert not resampling.lowpass(1, 5).flags.writeable and not resampling.band(1, 5, "<f4").matrix.flags.writeable


def test_a_window_resampled_from_its_segment_equals_the_whole_records(ptbxl, ptbxl_table):
    """resample_window resamples only the samples under the window (plus the filter's reach); its window equals the
    one cut from the whole record's resampling, within the float sums' rounding, wherever the window lies."""
    from models.preprocessing import fit_length, resample, resample_window

    raw = ptbxl_signal(ptbxl, ptbxl_table.loc[0, "filename_hr"]).astype(np.float32)
    long = np.concatenate([raw, raw[:, ::-1], raw], axis=1)  # 30 s
    for fs in (100.0, 400.0, 250.0, 1000.0):
        for crop in ("start", "center", 0.37, 1.0):
            spec = PreprocessSpec(fs=fs, length=int(4 * fs), crop=crop, bandpass=None, zscore=False,
                                  nan_to_zero=False)
            whole = fit_length(resample(long, 500.0, spec.fs), spec.length, spec.crop, spec.pad)
            window = resample_window(long, 500.0, spec)
            assert window.shape == whole.shape == (12, spec.length)
            np.testing.assert_allclose(window, whole, atol=1e-6 * np.abs(whole).max(), rtol=0)

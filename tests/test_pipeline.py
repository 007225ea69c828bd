"""One pass: every record is read, checked and preprocessed once per prediction run — for every model of an
ensemble together and on both engines — whatever --cache says, with the same ages (counted, not timed)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import test_interface
from dataloader import checks, sources, stream


@pytest.fixture
def counted(monkeypatch):
    """Counts preprocess() calls per record signal and loads per reader position (in this process)."""
    calls = {"preprocess": 0, "load": 0}
    preprocess, load_block = checks.preprocess, checks.load_block_safely

    def counting_preprocess(*args, **kwargs):
        calls["preprocess"] += 1
        return preprocess(*args, **kwargs)

    def counting_load(reader, start, stop):
        calls["load"] += stop - start
        return load_block(reader, start, stop)

    monkeypatch.setattr(checks, "preprocess", counting_preprocess)  # every check and preprocessing goes through it
    for module in (sources, stream):  # the cache's build and the stream read blocks
        monkeypatch.setattr(module, "load_block_safely", counting_load)
    return calls


def predict(cinc, weights, out, *extra):
    assert test_interface.entry(["--input", str(cinc), "--weights", *weights, "--on_bad", "skip", "--output",
                                 str(out), "--num_workers", "0", "--quiet", *extra]) == 0
    return pd.read_csv(out, dtype={"ids": str})


@pytest.mark.parametrize("tta", ["1", "3"])
def test_an_ensemble_reads_and_preprocesses_each_record_once(modern_cv_run, cinc, tmp_path, counted, tta):
    tmp, run = modern_cv_run
    records = 50  # the shared CinC folder: 48 usable records and 2 bad ones
    streamed = predict(cinc, [str(run)], tmp_path / "off.csv", "--cache", "off", "--tta", tta)
    assert counted["load"] == records and counted["preprocess"] == 48 * int(tta)  # two models, one pass
    cached = predict(cinc, [str(run)], tmp_path / "on.csv", "--cache", "on", "--tta", tta, "--cache_dir",
                     str(tmp_path / "cache"))
    assert counted["load"] == 2 * records  # the cache: built once for both models, one more pass
    assert streamed["ids"].tolist() == cached["ids"].tolist() and len(streamed) == 48
    np.testing.assert_allclose(streamed["predicted_age"], cached["predicted_age"], atol=1e-4)


def test_the_onnx_engine_reads_each_record_once(modern_cv_run, onnx_model, onnx_cpu_model, cinc, tmp_path, counted,
                                               monkeypatch):
    from engine.deploy.onnx_model import OnnxModel
    from utils.machine import usable_cores

    _, run = modern_cv_run
    model, graph = onnx_cpu_model, onnx_model  # scipy in the workers; the band-pass in the graph
    threads, load = [], OnnxModel.load
    monkeypatch.setattr(OnnxModel, "load", lambda path, threads_=0, spinning=True, calls=1: threads.append(
        (threads_ if spinning else (threads_, "not spinning")) if calls == 1 else (threads_, calls, "calls"))
        or load(path, threads_, spinning, calls))
    before = dict(counted)
    ages = predict(cinc, [str(model)], tmp_path / "onnx.csv", "--cache", "off")
    assert counted["load"] - before["load"] == 50 and counted["preprocess"] - before["preprocess"] == 48
    torch_ages = predict(cinc, [str(run)], tmp_path / "torch.csv", "--cache", "off")
    np.testing.assert_allclose(ages["predicted_age"], torch_ages["predicted_age"], atol=1e-3)
    # the model's threads: onnxruntime's own choice alone; beside a preprocessing worker, the cores it leaves
    predict(cinc, [str(model)], tmp_path / "worker.csv", "--cache", "off", "--num_workers", "1")
    predict(cinc, [str(model)], tmp_path / "all.csv", "--cache", "off", "--num_workers", "1", "--threads",
            str(usable_cores()))
    # (a file is opened first as the common case, a graph that preprocesses, wants it; an older file again)
    first = (1, usable_cores(), "calls") if usable_cores() > 1 else (1, "not spinning")  # a graph's layout
    assert threads == [0, first, max(1, usable_cores() - 1), (usable_cores(), "not spinning"), usable_cores()]
    # a graph that runs the band-pass gets every core beside its worker: one single-thread call per core, in flight
    # together (one load), the same ages in the same order as one call at a time
    threads.clear()
    in_graph = predict(cinc, [str(graph)], tmp_path / "graph.csv", "--cache", "off", "--num_workers", "1")
    assert threads == [first]
    np.testing.assert_allclose(in_graph["predicted_age"], ages["predicted_age"], atol=1e-3)
    one_call = predict(cinc, [str(graph)], tmp_path / "one.csv", "--cache", "off", "--num_workers", "1", "--threads",
                       "1")
    assert one_call["ids"].tolist() == in_graph["ids"].tolist()
    np.testing.assert_allclose(one_call["predicted_age"], in_graph["predicted_age"], atol=1e-5)


def test_worker_processes_give_the_same_ages_in_the_same_order(modern_cv_run, cinc, tmp_path):
    _, run = modern_cv_run
    alone = predict(cinc, [str(run)], tmp_path / "alone.csv", "--cache", "off")
    assert test_interface.entry(["--input", str(cinc), "--weights", str(run), "--on_bad", "skip", "--output",
                                 str(tmp_path / "workers.csv"), "--num_workers", "2", "--cache", "off",
                                 "--quiet"]) == 0
    workers = pd.read_csv(tmp_path / "workers.csv", dtype={"ids": str})
    assert workers["ids"].tolist() == alone["ids"].tolist()
    np.testing.assert_allclose(workers["predicted_age"], alone["predicted_age"], atol=1e-6)


def test_a_stream_of_chunks_stays_bounded_and_in_order(cinc):
    from dataloader.formats import open_reader
    from models.preprocessing import PRESETS

    reader = open_reader(cinc)
    chunks = list(stream.stream_chunks(reader, [PRESETS["modern"]], workers=2, chunk=8))
    assert [c.start for c in chunks] == list(range(0, len(reader), 8)) and chunks[-1].stop == len(reader)
    bad = {reader.ids[i] for c in chunks for i, _ in c.bad}
    assert len(bad) == 2 and all(len(c.inputs) == c.stop - c.start - len(c.bad) for c in chunks)
    # handed over in shared memory, the inputs are the very ones prepared in this process
    alone = list(stream.stream_chunks(reader, [PRESETS["modern"]], workers=0, chunk=8))
    for handed, own in zip(chunks, alone, strict=True):
        assert handed.bad == own.bad and np.array_equal(handed.windows, own.windows)
        assert all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(handed.inputs, own.inputs, strict=True))


def test_a_chunk_that_does_not_fit_its_slot_travels_whole(cinc):
    """The slot is sized for the specs, so this cannot happen in a pass; were it to, the inputs are sent as they
    are (pickled), never cut."""
    import mmap

    from dataloader.formats import open_reader
    from models.preprocessing import PRESETS

    reader = open_reader(cinc)
    job = next(stream.chunk_jobs(reader, [(0, 4)], [PRESETS["modern"]]))
    stream._attach([mmap.mmap(-1, 1024), mmap.mmap(-1, stream.slot_bytes([PRESETS["modern"]], 4))])
    try:
        small, placed = stream._prepare_into(job, 0)
        fits, where = stream._prepare_into(job, 1)
    finally:
        stream._attach([])
    assert placed is None and len(small.inputs) == 4 - len(small.bad) > 0
    assert fits.inputs == [] and [shape for _, shape in where] == [x.shape for x in small.inputs]


def test_the_amplitude_checks_shortcut_gives_the_percentiles_verdict(cinc):
    """Where cheap bounds prove a record's amplitude plausible the percentiles are skipped; the verdict is theirs:
    on real records (which the bounds do prove) and on the same records scaled across both limits, in the units a
    file may use, every shortcut verdict is the percentiles' own, and every record outside gets its message."""
    from dataloader.formats import open_reader
    from utils.bounds import AMPLITUDE_RANGE_MV, amplitude_mv, amplitude_problem, surely_plausible

    reader = open_reader(cinc)
    signals = [reader.load(i).signal for i in range(len(reader))]
    signals = [s for s in signals if np.isfinite(s).all()]
    assert sum(surely_plausible(s) for s in signals) >= 0.9 * len(signals)  # the shortcut takes real records
    low, high = AMPLITUDE_RANGE_MV
    scaled = []
    for signal in signals[:6]:
        amplitude = amplitude_mv(signal)
        for target in (low * 0.999, low * 1.001, low * 1.5, 1.0, high * 0.7, high * 0.999, high * 1.001, 1000.0):
            scaled += [(signal * (target / amplitude)).astype(dtype) for dtype in (np.float32, np.float64)]
        scaled += [(signal * 1000).astype(np.int16), (signal * 1000).astype(np.int32)]
    proven = 0
    for signal in signals + scaled:
        inside = low <= amplitude_mv(signal) <= high
        if surely_plausible(signal):
            proven += 1
            assert inside
        assert (amplitude_problem(signal) is None) == inside
    assert proven > len(signals)  # scaled copies inside the limits are proven too


def test_the_cheaper_amplitude_check_gives_numpys_percentiles_exactly(cinc):
    """The per-record check's percentiles (one partial sort in the record's own dtype) equal np.percentile's, bit
    for bit, on real records and on edge shapes — so no record's verdict moves."""
    from dataloader.formats import open_reader
    from utils.bounds import lead_percentiles

    reader = open_reader(cinc)
    signals = [reader.load(i).signal for i in range(8)]
    rng = np.random.default_rng(0)
    signals += [rng.standard_normal(shape).astype(dtype) for shape in ((12, 1), (12, 2), (3, 7))
                for dtype in (np.float32, np.float64)]
    for signal in signals:
        for qs in ((1.0, 99.0), (0.0, 100.0), (33.3, 66.7)):
            expected = np.percentile(np.asarray(signal, np.float64), qs, axis=-1)
            np.testing.assert_array_equal(lead_percentiles(signal, qs), expected)


def test_a_chunks_pending_ages_are_collected_once_the_next_chunks_have_started(ptbxl):
    """A predict may return its ages pending (work started, a call that waits for it): the streamed pass starts
    the next chunk's before it waits for this one's, so the model's calls never run dry at a chunk's end; every
    record still gets its own chunk's ages, and the cache path waits for them at once."""
    from dataloader.formats import open_reader
    from dataloader.sources import CacheConfig
    from engine.predict.windows import record_ages
    from models.preprocessing import PRESETS, cpu_part

    reader = open_reader(ptbxl).part(0, 150)  # three chunks
    events = []

    def predict(source, good):
        events.append(("start", int(good[0])))

        def pending():
            events.append(("collect", int(good[0])))
            return good.astype(np.float64) + 0.5

        return pending

    ages, bad, _ = record_ages(reader, [cpu_part(PRESETS["modern"])], CacheConfig(enabled=False, progress=False),
                               predict)
    firsts = sorted({first for _, first in events})
    assert len(firsts) == 3 and events == [("start", firsts[0]), ("start", firsts[1]), ("collect", firsts[0]),
                                           ("start", firsts[2]), ("collect", firsts[1]), ("collect", firsts[2])]
    good = np.flatnonzero(~np.isnan(ages))
    assert len(good) == len(reader) - len(bad) > 100 and np.array_equal(ages[good], good + 0.5)

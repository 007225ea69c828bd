"""Every benchmark runs: --help and --quick (a smoke run on tiny inputs, its JSON checked). The figures themselves
come from full runs (bench/README.md), never from tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

BENCHES = sorted(p.name for p in (ROOT / "bench").glob("*.py"))


# each benchmark run as its own program with --help, one after another in one process (the imports paid once):
# {name: [exit code, what it printed]}
HELP = """
import contextlib, io, json, runpy, sys
sys.path.insert(0, "bench")  # where a script run as a program finds its siblings
found = {}
for name in sys.argv[1:]:
    sys.argv, printed = [f"bench/{name}", "--help"], io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            runpy.run_path(f"bench/{name}", run_name="__main__")
            code = "no exit"
        except SystemExit as exc:
            code = exc.code or 0
    found[name] = [code, printed.getvalue()]
print(json.dumps(found))
"""


def test_every_benchmark_has_help_and_a_quick_mode():
    done = subprocess.run([sys.executable, "-c", HELP, *BENCHES], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(found) == BENCHES and len(BENCHES) >= 16
    for bench, (code, printed) in found.items():
        assert code == 0 and "--quick" in printed and printed.startswith("usage:"), (bench, code, printed[:500])


def run_quick(bench: str, *argv: str) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / bench), "--quick", *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_quick_memory_and_reader_benchmarks_run(tmp_path, ptbxl):
    sizes = run_quick("memory.py", "--json")["sizes"]
    assert [s["n"] for s in sizes] == [500, 1000]
    assert all(s["n"] - 32 < s["rows_read"] <= s["n"] for s in sizes)  # every whole batch of 32 read once
    rows = run_quick("reader_memory.py", "--work", str(tmp_path / "rm"))["rows"]
    assert len(rows) == 6 and all(r["outcome"] == "read" for r in rows)
    readers = run_quick("readers.py", "--ptbxl", str(ptbxl))
    assert readers["records"] == 2 and all(r["max_error_mv"] < 0.05 for r in readers["rows"].values())
    prints = run_quick("fingerprint.py", "--ptbxl", str(ptbxl), "--work", str(tmp_path / "fp"))
    apart = prints["separation"]
    assert prints["records"] == 8 and apart["copies_max_bits"] <= apart["near_bits"] < apart["different_min_bits"]
    assert all(prints["costs"][k] > 0 for k in ("read_ms", "hash_ms", "sketch_ms")) and prints["comparisons_per_s"]


def test_quick_throughput_and_explanation_benchmarks_run(tmp_path, modern_cv_run, cinc):
    """bench/loader.py runs throughput.py with the loader in the process, with one worker and with the augmentation
    on the device, and writes its table."""
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- loader: written by bench/loader.py -->\nold\n<!-- /loader: written by bench/loader.py -->\n")
    (row,) = run_quick("loader.py", "--archs", "BaselineNet", "--work", str(tmp_path / "loader"), "--write",
                       f"{doc}:loader")["rows"]
    for speed, workers, where in ((row["no_worker"], 0, "loader"), (row["one_worker"], 1, "loader"),
                                  (row["on_device"], 0, "device")):
        assert speed["train_samples_per_s"] > 0 and speed["infer_samples_per_s"] > 0
        assert (speed["train_workers"], speed["augment_on"]) == (workers, where)
        assert 0 <= speed["data_wait_fraction"] and 0 <= speed["augment_fraction"]
        assert speed["data_wait_fraction"] + speed["augment_fraction"] < 1
        loader = speed["loader"]  # one worker's delivery from the cache, plain and augmented, against the step's need
        assert min(loader["per_worker_ecg_per_s"].values()) > 0 and loader["workers_needed"] > 0
    assert row["on_device"]["augment_fraction"] > 0  # the device's augmentation, timed apart from the wait
    assert "| BaselineNet |" in doc.read_text() and "old" not in doc.read_text() and "% (+ " in doc.read_text()
    result = run_quick("explain.py", "--weights", str(modern_cv_run[1]), "--input", str(cinc), "--work",
                       str(tmp_path / "explain"))
    (method, summary), = result["methods"].items()
    assert summary["records"] == 2 and 0.0 <= result["intervals"]["coverage"] <= 1.0
    assert summary["difference_ci95"] is None  # two records: too few for an interval (metrics.MIN_BOOTSTRAPPED)


def test_quick_stream_benchmark_runs(tmp_path, ptbxl):
    """The streamed pass without a model, both hand-overs, one worker and one per core; every record delivered."""
    result = run_quick("stream.py", "--work", str(tmp_path), "--ptbxl", str(ptbxl), "--inputs", "wfdb")
    rows = result["rows"]
    assert {(r["transport"], r["workers"]) for r in rows} == {(way, w) for way in ("shared memory", "pickled")
                                                            for w in {1, result["cores"]}}
    assert all(r["n"] == 128 and r["ecg_per_s"] > 0 and r["consumer_cpu_ms_per_ecg"] > 0 for r in rows)
    assert all(r["workers_cpu_ms_per_ecg"] > 0 for r in rows)


def test_quick_pipeline_benchmark_runs(tmp_path, ptbxl):
    """Both exports (the band-pass in the graph, and all on the CPU) end to end against one network alone, timed in
    turn round by round; the table written into the marked block of a document."""
    doc = tmp_path / "doc.md"
    doc.write_text("before\n<!-- pipeline: written by bench/pipeline.py -->\nold\n"
                   "<!-- /pipeline: written by bench/pipeline.py -->\nafter\n")
    result = run_quick("pipeline.py", "--work", str(tmp_path), "--ptbxl", str(ptbxl), "--inputs", "wfdb", "--rounds",
                       "2", "--write", f"{doc}:pipeline")
    graph, cpu = result["sizes"]
    assert (graph["file"], cpu["file"]) == ("model.onnx", "model_cpu.onnx")
    assert cpu["model_ecg_per_s"] == cpu["graph_ecg_per_s"]  # the CPU-preprocessed file is the network alone
    # test_interface's default threads: every core for the graph that preprocesses (not spinning beside its
    # workers), the cores the workers leave for the other
    assert graph["threads"] >= cpu["threads"] and cpu["spinning"] and graph["spinning"] == (result["workers"] == 0)
    for row in (graph, cpu):
        assert row["n"] == row["rows"] == 128 and row["end_to_end_ecg_per_s"] > 0 and row["graph_ecg_per_s"] > 0
        assert 0 < row["ratio"] and row["peak_rss_mb"] > 0 and result["cpu_flags"] is not None
        # the CPU account: no pass can beat its own CPU work spread over every core, so the measured ratio lies
        # under the bound drawn from it; the workers' time is counted where there are workers
        account = row["cpu_ms_per_ecg"]
        assert account["network"] > 0 and account["graph"] > 0 and account["main"] > 0
        assert (account["workers"] > 0) == (result["workers"] > 0)
        if row["threads"] == 1:  # each call on one thread: the graph's calls inside the pipeline, within its process
            assert 0 < account["in_pipeline"] < account["main"]
        assert row["ratio"] <= row["ratio_bound"] * 1.001
        # two rounds, each its own ratio: the row's is their median, inside their range
        assert row["rounds"] == 2 and row["ratio_range"][0] <= row["ratio"] <= row["ratio_range"][1]
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "| 500 Hz WFDB | 128 | band-pass and z-score in the graph |" in text
    assert "| 500 Hz WFDB | 128 | all in the workers (scipy) |" in text


def test_quick_figure_comparison_runs(tmp_path, cinc):
    result = run_quick("figures.py", "--work", str(tmp_path), "--input", str(cinc))
    assert result["records"] == 2
    for library in ("ours", "ecg_plot"):  # both draw the clinical scale: 25 mm/s, 10 mm/mV
        assert abs(result[library]["mm_per_s"] - 25) < 1e-6 and abs(result[library]["mm_per_mv"] - 10) < 1e-6
    assert result["ours"]["embedded_kb"] < result["ours"]["png_kb"]


def test_quick_frontier_benchmark_runs(tmp_path, modern_cv_run, cinc, ptbxl):
    """The frontier's mechanics on a tiny 2-fold run in every role: out-of-fold points paired with the teacher,
    each fold's int8 export predicting its own held-out records, the costs and the one network's speeds."""
    _, run = modern_cv_run
    result = run_quick("frontier.py", "--teacher", str(run), "--distilled", str(run), "--alone", str(run),
                       "--external", str(cinc), "--ptbxl", str(ptbxl), "--work", str(tmp_path))
    points = result["points"]
    assert points["distilled"]["oof_mae"] == points["one_network"]["oof_mae"]  # the same run: the same errors
    assert points["distilled"]["vs_alone"]["diff"] == 0 and points["distilled_onnx_fp32"]["records"] > 300
    assert abs(points["distilled_onnx_fp32"]["oof_mae"] - points["distilled"]["oof_mae"]) < 0.01  # fp32 export
    assert len(points["distilled_int8"]["scopes"]) == 2 and points["one_network"]["model_ecg_per_s"] > 0
    assert points["ensemble_15"]["external_mae"] > 0 and points["fold_three"]["gflop_per_ecg"] > 0


def members_gflop(run) -> float:
    """The run's members' forward GFLOP for one ECG of their length, counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from engine.runs import run_members
    from models.checkpoint import load_bundle

    total = 0.0
    for member in run_members(run):
        bundle = load_bundle(member, mode="adult")
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            bundle.model.eval()(torch.zeros(1, 12, bundle.preprocessing.length))
        total += counter.get_total_flops() / 1e9
    return total


def test_quick_shipped_model_benchmark_runs(tmp_path, modern_cv_run, onnx_model, ptbxl, monkeypatch):
    """The shipped model's price on any ONNX file (here the 2-fold run's export): the cold `ecg-age predict`, both
    one-core rates and the GFLOP."""
    _, run = modern_cv_run
    result = run_quick("shipped.py", "--model", str(onnx_model), "--work", str(tmp_path / "w"), "--ptbxl", str(ptbxl),
                       "--no_write")
    assert result["records"] == 20 and result["cold_predict_seconds"] > 0
    assert abs(result["gflop_per_ecg"] - members_gflop(run)) < 1e-3 * members_gflop(run)  # the graph's = torch's
    from models.zero_phase import padlen, pass_blocks  # the input stage's matrix products, counted from its blocks

    blocks = pass_blocks(4, 0.5, 45.0, 500.0, 5000 + 2 * padlen(4))
    states = blocks.to_state.shape[0]
    per_pass = blocks.blocks * blocks.block * (blocks.block + 2 * states) + (blocks.blocks * states) ** 2
    assert abs(result["input_stage_gflop_per_ecg"] - 2 * 2 * 12 * per_pass / 1e9) < 1e-6
    assert result["end_to_end_one_core"]["rows"] == 20 and result["model_only_one_core"]["ecg_per_s"] > 0
    steady = result["end_to_end_one_core_steady"]  # the slope: the process start left out
    assert steady["rows"] == [20, 60] and [len(passes) for passes in steady["seconds"]] == [1, 1]
    assert (steady["ecg_per_s"] is None) == (steady["start_seconds"] is None)
    assert steady["ecg_per_s"] is None or steady["ecg_per_s"] > 0  # None where 60 ECGs ran no slower than 20
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from shipped import speed_table

    assert "| end to end, one core, each further ECG" in speed_table(result, "this CPU")
    # one core means the process's: --threads 1 bounds the model, so the passes are pinned (where the OS can)
    pinned = hasattr(os, "sched_setaffinity")
    assert result["end_to_end_one_core"]["pinned"] is pinned
    if pinned:  # one core gives at most the wall time's CPU seconds (the parent's clock starts first)
        assert result["end_to_end_one_core"]["cpu_s"] <= result["end_to_end_one_core"]["seconds"]
        assert "the process pinned to one core) |" in speed_table(result, "this CPU")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pinning a process to cores needs Linux")
def test_a_pinned_pass_may_use_only_its_cores(monkeypatch):
    """The child that ``pinned_to(1)`` prepares sees one core, whatever this process may use; None leaves it alone."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from pipeline import pinned_to

    probe = [sys.executable, "-c", "import os; print(len(os.sched_getaffinity(0)))"]
    one = subprocess.run(probe, capture_output=True, text=True, preexec_fn=pinned_to(1))
    assert one.stdout.strip() == "1" and pinned_to(None) is None
    every = subprocess.run(probe, capture_output=True, text=True, preexec_fn=pinned_to(None))
    assert every.stdout.strip() == str(len(os.sched_getaffinity(0)))


def test_quick_onnx_batch_benchmark_runs(tmp_path):
    """bench/onnx_batch.py times each batch size on one thread and on every core and writes its table (the quick
    run: the shipped model alone, batches 1 and 8)."""
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- onnx-batch: written by bench/onnx_batch.py -->\nold\n"
                   "<!-- /onnx-batch: written by bench/onnx_batch.py -->\n")
    result = run_quick("onnx_batch.py", "--work", str(tmp_path / "w"), "--write", f"{doc}:onnx-batch")
    (name, by_threads), = result["models"].items()
    assert name.startswith("shipped") and result["batches"] == [1, 8]
    from utils.machine import usable_cores

    assert set(by_threads) == {"1", str(usable_cores())}
    assert all(rate > 0 for rates in by_threads.values() for rate in rates.values())
    text = doc.read_text()
    assert "old" not in text and "| batch 1 | batch 8 |" in text and text.count("| shipped") == len(by_threads)


def test_quick_resampling_benchmark_runs(tmp_path, ptbxl):
    """bench/resampling.py times scipy's resample_poly and the project's resampling side by side, states how far
    apart their outputs are, and writes its table."""
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- resampling: written by bench/resampling.py -->\nold\n"
                   "<!-- /resampling: written by bench/resampling.py -->\n")
    result = run_quick("resampling.py", "--ptbxl", str(ptbxl), "--work", str(tmp_path / "w"),
                       "--write", f"{doc}:resampling")
    assert [(r["fs_in"], r["fs_out"], r["by"]) for r in result["ratios"]] == [(500, 100, "numpy"), (400, 500, "numpy")]
    assert all(r["scipy_ms"] > 0 and r["ours_ms"] > 0 and 0 < r["max_relative_difference"] < 1e-6
               for r in result["ratios"])
    assert result["scipy_signal_import_s"] > 0
    text = doc.read_text()
    assert "old" not in text and "| 500 → 100 | 1 / 5 | numpy |" in text and "import scipy.signal" in text


def test_quick_weight_storage_benchmark_runs(tmp_path, modern_cv_run, cinc):
    """bench/weight_storage.py on the first fold of a run: fp32's out-of-fold ages are the training's own; fp16 and
    int8 are paired against fp32 on the same records."""
    _, run = modern_cv_run
    doc = tmp_path / "doc.md"
    marker = "w: written by bench/weight_storage.py -->"
    doc.write_text(f"<!-- {marker}\nold\n<!-- /{marker}\n")
    result = run_quick("weight_storage.py", "--runs", str(run), "--external", str(cinc), "--work", str(tmp_path),
                       "--write", f"{doc}:w")
    assert result["fp32_vs_training_oof_max_years"] < 1e-3  # the export reads the records as the training did
    rows = result["storages"]
    assert list(rows) == ["fp32", "fp16", "int8"] and all(r["records"] == r["external_records"] == 8
                                                            for r in rows.values())
    assert rows["int8"]["fold_file_mb"] < rows["fp16"]["fold_file_mb"] < rows["fp32"]["fold_file_mb"]
    for storage in ("fp16", "int8"):
        assert rows[storage]["oof_vs_fp32"]["n"] == 8 and rows[storage]["max_abs_change"] > 0
        assert rows[storage]["oof_mae"] - rows["fp32"]["oof_mae"] == pytest.approx(rows[storage]["oof_vs_fp32"]["diff"])
        # paired over the PTB-XL records' patients; 8 of them are too few for an interval, and the table says so
        assert rows[storage]["oof_vs_fp32"]["resampled"] == "patients" and rows[storage]["oof_vs_fp32"]["ci95"] is None
    table = doc.read_text()
    assert "\nold\n" not in table and "paired over patients out of fold" in table and "[too few]" in table


def test_quick_gpu_check_runs_on_the_cpu(tmp_path, ptbxl):
    """The GPU check's mechanics on the CPU: an architecture's throughput, one recipe's epoch, prediction end to
    end — so it runs when a GPU is lent."""
    result = run_quick("gpu_check.py", "--device", "cpu", "--work", str(tmp_path), "--ptbxl", str(ptbxl),
                       "--no_write")
    (arch,) = result["architectures"].values()
    assert arch["train_samples_per_s"] > 0 and result["training"]["modern"]["train_ecg_per_s"] > 0
    (on_device,) = result["augment_on_device"].values()  # BaselineNet's recipe augments: measured both ways
    assert on_device["augment_on"] == "device" and on_device["train_samples_per_s"] > 0
    assert result["prediction"]["ecgs"] == 128 and result["prediction"]["ecg_per_s"] > 0

"""End-to-end prediction against the model alone: how much of the model's speed the whole pipeline keeps.

    OMP_NUM_THREADS=2 python bench/pipeline.py --sizes 2000 20000 --work bench/results/pipeline \
        --write bench/README.md:pipeline
    python bench/pipeline.py --quick --inputs hdf5 --work /tmp/pipeline     # a smoke run: 128 ECGs

For each size N and input format: an HDF5 file in the CODE-15% layout (real PTB-XL signals, resampled to 400 Hz,
4096 samples, tiled to N tracings), or a manifest of N rows naming the first 64 PTB-XL 500-Hz WFDB records in turn
(every row read from its files), made once under --work. The model is exported from ``--weights`` (default: a new
ECGEfficientNet of the modern recipe — the speed, not the ages, is measured) twice: as export_interface writes it
(the recipe's band-pass and z-score inside the graph, models/input_stage.py) and with ``--cpu_preprocessing`` (the
whole preprocessing by scipy in the workers, as before). End to end is ``test_interface.py --input FILE --weights
model.onnx --cache off`` in a fresh process (reading, checks, preprocessing, the model, the output;
``--num_workers`` processes prepare records beside the model), timed from start to exit, for both files; the
network alone is onnxruntime on already preprocessed inputs (the CPU-preprocessed file), same batch, on the same
threads as the file's pipeline (test_interface's default, utils.machine.onnx_layout: the cores the workers leave,
or, where the graph runs the band-pass, one single-thread call per core in flight together), and so is the graph
with its input stage on the CPU's windows, on up to ``TIMED_RECORDS`` records. The three are paired: ``--rounds``
rounds of end to end, then the network alone, then the graph alone (A B C A B C …), so that the machine's drift
during the run falls on all of them alike; each round's ratio is its own end to end over its own network alone.
Reported per size and input (medians over the rounds, and the range of the rounds' ratios): ECG/s of each, the
ratios to the network alone, the pipeline's peak resident memory, and the CPU account: the CPU time per ECG of the
network alone, of the graph alone, and end to end of the model's process (its start included; and of it the graph's
calls, where each runs on one thread) and its workers — and from it the highest ratio that work allows on these
cores, were none of them ever idle. The CPU and its flags are stated. The last line printed is one JSON object;
results are kept under --work (a rerun reuses the files).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pandas as pd

from utils.io import publish, write_option
from utils.machine import cpu_flags, cpu_name, onnx_layout, usable_cores
from utils.paths import ROOT

SHARED = ROOT.parent / "shared" / "data" / "ptbxl"
ROUNDS = 3  # end to end, the network alone and the graph alone are timed in turn, this many times each (medians)
TIMED_RECORDS = 2000  # inputs they are timed on, at most (prepared in memory: 240 KB each at 500 Hz)
CHECK_RECORDS = 2  # real records an export is checked on (onnxruntime's ages against PyTorch's)
PREPROCESSING = {"graph": "band-pass and z-score in the graph", "cpu": "all in the workers (scipy)",
                 "given": "as the file says"}


def tracings(ptbxl: Path, count: int) -> np.ndarray:
    """(count, 4096, 12) float32 mV at 400 Hz: the first PTB-XL records, resampled, tiled."""
    from scipy.signal import resample_poly
    from wfdb import rdsamp

    table = pd.read_csv(ptbxl / "ptbxl_database.csv").head(64)
    base = []
    for row in table.itertuples():
        signal, _ = rdsamp(str(ptbxl / row.filename_hr))
        x = resample_poly(np.nan_to_num(signal), 4, 5, axis=0)[:4096]
        base.append(np.pad(x, ((0, 4096 - len(x)), (0, 0))).astype(np.float32))
    return np.stack([base[i % len(base)] for i in range(count)])


def hdf5(work: Path, count: int, ptbxl: Path) -> Path:
    path = work / f"code15_{count}.hdf5"
    if not path.exists():
        staging = path.with_suffix(".tmp")
        with h5py.File(staging, "w") as handle:
            handle["tracings"] = tracings(ptbxl, count)
            handle["exam_id"] = np.arange(1, count + 1)
        staging.replace(path)
    return path


def models(work: Path, weights: list[str] | None, ptbxl: Path) -> dict[str, Path]:
    """{'graph': the export as written by default, 'cpu': with --cpu_preprocessing}, each checked on the first
    PTB-XL records, or {'given': the .onnx file given as it is (fp32 or int8)}."""
    if weights and len(weights) == 1 and weights[0].endswith(".onnx"):
        return {"given": Path(weights[0])}
    check = ("--check_input", str(ptbxl), "--check_records", str(CHECK_RECORDS))
    return {"graph": model(work, weights, "model.onnx", *check),
            "cpu": model(work, weights, "model_cpu.onnx", "--cpu_preprocessing", *check)}


def wfdb_manifest(work: Path, count: int, ptbxl: Path) -> Path:
    """A manifest of ``count`` rows naming the first 64 PTB-XL 500-Hz WFDB records in turn."""
    path = work / f"wfdb_{count}.csv"
    if not path.exists():
        names = pd.read_csv(ptbxl / "ptbxl_database.csv").head(64)["filename_hr"]
        files = [str((ptbxl / f"{name}.hea").resolve()) for name in names]
        pd.DataFrame({"path": [files[i % len(files)] for i in range(count)],
                      "id": [f"r{i}" for i in range(count)]}).to_csv(path.with_suffix(".tmp"), index=False)
        path.with_suffix(".tmp").replace(path)
    return path


INPUTS = {"hdf5": ("400 Hz HDF5", hdf5), "wfdb": ("500 Hz WFDB", wfdb_manifest)}


def input_options(p: argparse.ArgumentParser) -> None:
    """--inputs (which of ``INPUTS``) and --ptbxl (the records they are made of), for every bench that reads them."""
    p.add_argument("--inputs", nargs="+", choices=sorted(INPUTS), default=["hdf5", "wfdb"])
    p.add_argument("--ptbxl", default=str(SHARED))


def model(work: Path, weights: list[str] | None, name: str, *flags: str,
          new: tuple[str, ...] = ("--recipe", "modern")) -> Path:
    """``work/name``: ``weights`` exported with ``flags``, or without weights a new network of the training
    options ``new`` (its speed, not its ages, is measured); made once."""
    path = work / name
    if not path.exists():
        argv = ["--weights", *weights] if weights else None
        if argv is None:  # a new network, saved as a checkpoint first
            import options
            from engine.train.members import build_bundle, init_output
            from models.checkpoint import save_checkpoint

            settings = options.train_settings(options.parse_train(list(new)))
            bundle = build_bundle(settings)
            init_output(bundle, settings.recipe, 50.0)  # the recipe's start: every age 50, plausible
            argv = ["--weights", str(save_checkpoint(path.with_suffix(".pt"), bundle))]
        done = subprocess.run([sys.executable, str(ROOT / "export_interface.py"), *argv, "--output", str(path),
                               *flags, "--quiet"], capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            raise SystemExit(done.stderr)
    return path


def pinned_to(cores: int | None) -> Callable[[], None] | None:
    """What a child runs before the program so that it may use only the first ``cores`` of this process's cores (its
    CPU affinity: every thread it starts shares them); None where ``cores`` is None or the OS cannot pin (not Linux)."""
    if cores is None or not hasattr(os, "sched_setaffinity"):
        return None
    chosen = set(sorted(os.sched_getaffinity(0))[:cores])
    return lambda: os.sched_setaffinity(0, chosen)


def end_to_end(path: Path, onnx: Path, work: Path, workers: int, threads: int | None, cores: int | None = None) -> dict:
    """test_interface over ``path`` in a fresh process, measured; with ``cores``, the process may use only that many
    cores (``--threads`` bounds the model's threads, not the reading that overlaps them) — ``pinned`` says whether
    it was."""
    output = work / f"{path.stem}_{onnx.stem}_ages.csv"  # never the input (a manifest is a CSV too)
    pin = pinned_to(cores)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", MEASURE, str(ROOT / "test_interface.py"), "--input", str(path),
                           "--weights", str(onnx), "--cache", "off", "--output", str(output), "--num_workers",
                           str(workers), "--quiet", *(["--threads", str(threads)] if threads else [])],
                          capture_output=True, text=True, cwd=ROOT, preexec_fn=pin)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    rows = sum(1 for _ in open(output)) - 1
    own, worker, own_cpu, workers_cpu, calls_cpu = (float(v) for v in done.stdout.split()[-5:])
    return {"seconds": seconds, "ecg_per_s": rows / seconds, "peak_rss_mb": own, "worker_peak_rss_mb": worker,
            "rows": rows, "cpu_s": own_cpu, "workers_cpu_s": workers_cpu, "calls_cpu_s": calls_cpu,
            "pinned": pin is not None}


# runs a program in this process and prints its peak resident memory and its largest worker's (MB), then the CPU
# seconds (user + system) of the process (its start included) and of its workers together, then the CPU seconds of
# the threads that called onnxruntime, inside its calls (each call's thread's own: the model's whole work where a
# call runs on one thread, as test_interface's default runs the graph that preprocesses). The process's own peak
# is VmHWM, which exec resets (ru_maxrss would carry over the peak of whatever started it, here a process that held
# the generated tracings); the workers are forked from it, so their ru_maxrss is their own, and they are joined
# before the program exits, so their CPU time is counted in RUSAGE_CHILDREN.
MEASURE = """
import resource, runpy, sys, threading, time
from engine.deploy.onnx_model import OnnxModel
sys.argv = sys.argv[1:]
calls, lock, member_ages = [0.0], threading.Lock(), OnnxModel.member_ages
def timed(self, *args):
    started = time.thread_time()
    try:
        return member_ages(self, *args)
    finally:
        with lock:
            calls[0] += time.thread_time() - started
OnnxModel.member_ages = timed
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
own = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
self, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(own / 1024, children.ru_maxrss / 1024, self.ru_utime + self.ru_stime, children.ru_utime + children.ru_stime,
      calls[0])
"""


def graph_inputs(session, path: Path, count: int) -> np.ndarray:
    """``count`` inputs of ``session``'s graph: the first records of ``path`` (at most 512), prepared as the pipeline
    prepares them, repeated in turn."""
    from dataloader.checks import prepare
    from dataloader.formats import open_reader

    reader = open_reader(path)
    x = np.stack([prepare(reader.load(i), session.input_spec) for i in range(min(count, 512, len(reader)))])
    return np.concatenate([x] * (-(-count // len(x))))[:count]


def rate(session, x: np.ndarray, batch: int, calls: int = 1) -> float:
    """ECG/s of ``session`` over ``x`` in calls of ``batch``, ``calls`` of them in flight together (as the
    pipeline runs them), after one warm-up round (onnxruntime plans its buffers for the shape)."""
    return timed(session, x, batch, calls)["ecg_per_s"]


def timed(session, x: np.ndarray, batch: int, calls: int = 1) -> dict:
    """:func:`rate`'s ECG/s and the CPU time the process spent per ECG meanwhile (every thread's, in ms)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(calls) as pool:
        list(pool.map(lambda i: session.ages(x[:batch]), range(calls)))
        started, cpu = time.perf_counter(), time.process_time()
        list(pool.map(lambda i: session.ages(x[i:i + batch]), range(0, len(x), batch)))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"ecg_per_s": len(x) / seconds, "cpu_ms_per_ecg": 1e3 * cpu / len(x)}


def alone_timer(files: list[Path], path: Path, count: int, batch: int, threads: int | None,
                calls: int) -> Callable[[], list[dict]]:
    """One round of :func:`timed` over each of ``files`` alone, in turn: the sessions loaded and their inputs (the
    first ``count`` records of ``path``, prepared as the pipeline prepares them) made once, outside every timing."""
    from engine.deploy.onnx_model import OnnxModel

    sessions = [OnnxModel.load(f, threads or 0) for f in files]
    inputs = [graph_inputs(s, path, count) for s in sessions]
    return lambda: [timed(s, x, batch, calls) for s, x in zip(sessions, inputs)]


def medians(rounds: list[dict]) -> dict:
    """Each number's median over ``rounds`` (dicts of the same keys, nested dicts alike)."""
    return {key: medians([r[key] for r in rounds]) if isinstance(value, dict) else
            float(np.median([r[key] for r in rounds])) for key, value in rounds[0].items()}


def model_only(onnx: Path, path: Path, count: int, batch: int, threads: int | None) -> dict:
    """onnxruntime alone (``threads``, one call at a time) on the graph's inputs (the first ``count`` records,
    prepared outside the timing), once: its ECG/s and CPU ms per ECG."""
    return alone_timer([onnx], path, count, batch, threads, 1)()[0]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--weights", nargs="+", default=None,
                   help="the model: checkpoints or runs (exported here), or one .onnx file (default: a new "
                        "ECGEfficientNet)")
    p.add_argument("--workers", type=int, default=None, help="--num_workers of the pipeline (default: its own)")
    p.add_argument("--threads", type=int, default=None,
                   help="the model's threads, end to end (test_interface --threads) and alone (default: "
                        "test_interface's: the cores the preprocessing workers leave)")
    p.add_argument("--batch", type=int, default=None,
                   help="onnxruntime's batch alone (default: test_interface's on the same threads)")
    input_options(p)
    p.add_argument("--rounds", type=int, default=ROUNDS,
                   help="rounds of end to end, network alone and graph alone, in turn (medians; default %(default)s)")
    p.add_argument("--work", default="bench/results/pipeline")
    p.add_argument("--quick", action="store_true", help="a smoke run: 128 ECGs")
    write_option(p, "pipeline")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    sizes = [128] if args.quick else args.sizes
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = models(work, args.weights, Path(args.ptbxl))
    from dataloader.stream import default_stream_workers

    workers = default_stream_workers() if args.workers is None else args.workers
    rows = []
    for count, kind in [(count, kind) for kind in args.inputs for count in sizes]:
        what, make = INPUTS[kind]
        rows += measure(make(work, count, Path(args.ptbxl)), what, count, files, workers, args)
    result = {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "workers": workers, "sizes": rows}
    publish(result, work / "pipeline.json", args.write, table, "bench/pipeline.py", argv or sys.argv[1:])
    return result


def measure(path: Path, what: str, count: int, files: dict[str, Path], workers: int, args) -> list[dict]:
    """One row per file: end to end on ``path`` (``count`` ECGs of input ``what``), the network alone and the graph
    alone, at test_interface's own default threads for that file (every core where the graph runs the band-pass),
    given explicitly, and its batch (test_interface's on those threads unless --batch says); ``args.rounds`` rounds
    of the three in turn, each round's ratio and bound its own, and the row their medians."""
    from engine.deploy.onnx_model import OnnxModel, batch_for

    network = files.get("cpu", files.get("given"))  # the graph without an input stage: the network alone
    rows, cores = [], usable_cores()
    for variant, onnx in files.items():
        staged = OnnxModel.load(onnx).graph_preprocessing
        threads, calls, spinning = onnx_layout(args.threads, workers, staged)  # test_interface's own
        batch = args.batch or batch_for(threads)
        # the network alone on the same cores, and the graph with its input stage (the same file: once)
        alone = alone_timer(list(dict.fromkeys([network, onnx])), path, min(count, TIMED_RECORDS), batch, threads,
                            calls)
        rounds = [paired_round(end_to_end(path, onnx, path.parent, workers, args.threads), alone(), count, cores,
                               threads == 1) for _ in range(args.rounds)]
        ratios = [r["ratio"] for r in rounds]
        rows.append({"n": count, "input": what, "file": onnx.name, "preprocessing": PREPROCESSING[variant],
                     "threads": threads or cores, "calls": calls, "batch": batch, "spinning": spinning,
                     "cores": cores, "rounds": len(rounds), "ratio_range": [min(ratios), max(ratios)],
                     **medians(rounds), "rows": min(r["rows"] for r in rounds),  # the fewest any round wrote
                     **{key: max(r[key] for r in rounds) for key in ("peak_rss_mb", "worker_peak_rss_mb")}})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def paired_round(whole: dict, rates: list[dict], count: int, cores: int, one_thread: bool) -> dict:
    """One round's figures: ``whole`` (:func:`end_to_end`) and, just after it, ``rates`` (the network alone, then
    the graph alone, or the one file that is both); the ratio and its bound are this round's own. Where each call
    runs on ``one_thread``, the account holds the CPU the graph's calls took inside the pipeline (``in_pipeline``:
    against ``graph``, what running beside the workers and the rest of the process costs the graph itself)."""
    alone, graph = rates[0], rates[-1]
    cpu = {"network": alone["cpu_ms_per_ecg"], "graph": graph["cpu_ms_per_ecg"],
           "main": 1e3 * whole["cpu_s"] / count, "workers": 1e3 * whole["workers_cpu_s"] / count}
    if one_thread:
        cpu["in_pipeline"] = 1e3 * whole["calls_cpu_s"] / count
    return {"end_to_end_ecg_per_s": whole["ecg_per_s"], "model_ecg_per_s": alone["ecg_per_s"],
            "graph_ecg_per_s": graph["ecg_per_s"], "ratio": whole["ecg_per_s"] / alone["ecg_per_s"],
            "cpu_ms_per_ecg": cpu, "ratio_bound": ratio_bound(cpu, cores, alone["ecg_per_s"]),
            "peak_rss_mb": whole["peak_rss_mb"], "worker_peak_rss_mb": whole["worker_peak_rss_mb"],
            "rows": whole["rows"]}


def ratio_bound(cpu: dict, cores: int, alone: float) -> float:
    """The highest end-to-end / network-alone ratio the pipeline's measured CPU work allows: its process and
    workers' CPU per ECG (the start included) spread over every core without a moment idle."""
    return cores * 1e3 / (cpu["main"] + cpu["workers"]) / alone


def table(result: dict, command: list[str]) -> str:
    flags = ", ".join(result["cpu_flags"]) or "AVX2 only"
    lines = [f"Measured by `{' '.join(command)}` ({result['cpu']}: {flags}; {result['workers']} preprocessing "
             f"worker(s) and test_interface's default model threads; onnxruntime, fp32; process start included; "
             f"medians of {result['sizes'][0].get('rounds', 1)} rounds of end to end, network alone and graph alone "
             "in turn, each ratio its round's own, their range in brackets; peak memory the highest):",
             "", "| input | ECGs | preprocessing | model threads, batch | end to end | network alone | graph alone "
             "(with its input stage) | end to end / network alone | CPU ms per ECG: network alone, graph alone, "
             "end to end (model's process [of it, the graph's calls] + workers) | the highest ratio that CPU work "
             "allows | peak RSS (main / worker) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["sizes"]:
        calls = row.get("calls", 1)
        threads = (f"{row['threads']} × {calls} calls" if calls > 1 else
                   f"{row['threads']}{'' if row['spinning'] else ', not spinning'}") + f", {row['batch']}"
        cpu = row.get("cpu_ms_per_ecg")
        calls_cpu = f" [{cpu['in_pipeline']:.2f}]" if cpu and "in_pipeline" in cpu else ""
        account = (f"{cpu['network']:.2f}, {cpu['graph']:.2f}, {cpu['main'] + cpu['workers']:.2f} "
                   f"({cpu['main']:.2f}{calls_cpu} + {cpu['workers']:.2f})" if cpu else "–")
        bound = f"{row['ratio_bound']:.2f}" if cpu else "–"
        lines.append(f"| {row['input']} | {row['n']:,} | {row['preprocessing']} | {threads} | "
                     f"{row['end_to_end_ecg_per_s']:.0f} ECG/s | "
                     f"{row['model_ecg_per_s']:.0f} ECG/s | {row['graph_ecg_per_s']:.0f} ECG/s | "
                     f"**{row['ratio']:.2f}**{spread(row)} | {account} | {bound} | "
                     f"{row['peak_rss_mb']:.0f} / {row['worker_peak_rss_mb']:.0f} MB |")
    return "\n".join(lines)


def spread(row: dict) -> str:
    """`` (low–high)``: the range of the rounds' ratios, where there were several."""
    low, high = row.get("ratio_range", (row["ratio"],) * 2)
    return f" ({low:.2f}–{high:.2f})" if row.get("rounds", 1) > 1 else ""


if __name__ == "__main__":
    main()

"""What the streamed pass (``test_interface.py --cache off``) delivers without a model, and what receiving it costs
the model's process: the ceiling the reading side sets on any model (a GPU's included).

    python bench/stream.py --size 2000 --work bench/results/pipeline37 --write bench/README.md:stream
    python bench/stream.py --quick --work /tmp/stream          # a smoke run: 128 ECGs

On bench/pipeline.py's inputs (a 400-Hz HDF5 file in the CODE-15% layout, a manifest of 500-Hz PTB-XL WFDB
records; made under --work), for one worker process and for one per core, every record is streamed to a consumer
that only receives each chunk, two ways timed in turn (``ROUNDS`` rounds, medians): the chunk's model inputs handed
over in shared memory (``dataloader.stream.stream_chunks``, as prediction runs) and pickled through the process
pool's pipe (the same worker function, its chunk returned as a pool returns any result: the transport before).
Reported: ECG/s delivered, the consumer's CPU ms per ECG (what the model's process spends receiving — its
1000 / ms ECG/s is a ceiling for any number of workers and any model), and the workers' CPU ms per ECG (reading,
checks, resampling, handing over). The CPU is named; the last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from pipeline import INPUTS, input_options

from dataloader.formats import open_reader
from dataloader.stream import _prepare_chunk, chunk_bounds, chunk_jobs, stream_chunks
from models.preprocessing import MODERN, cpu_part
from utils.io import publish, write_option
from utils.machine import cpu_flags, cpu_name, usable_cores

ROUNDS = 3
SPEC = cpu_part(MODERN)  # the CPU's part of the modern recipe, as a model with the band-pass in its graph asks


def pickled(reader, workers: int):
    """The chunks as the pool's pipe returns them (pickled), at most 2 × workers in flight, in order."""
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        pending = collections.deque()
        for job in chunk_jobs(reader, chunk_bounds(len(reader)), [SPEC]):
            pending.append(pool.submit(_prepare_chunk, job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


WAYS = {"shared memory": lambda reader, workers: stream_chunks(reader, [SPEC], workers),
        "pickled": pickled}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def delivered(reader, way: str, workers: int) -> dict:
    """ECG/s of one streamed pass received by a consumer that does nothing else, and its CPU per ECG and the
    workers' (they are joined when the pass ends, so their time is the children's)."""
    started, own, theirs, inputs = time.perf_counter(), time.process_time(), children_cpu(), 0
    for chunk in WAYS[way](reader, workers):
        inputs += len(chunk.inputs)
    seconds = time.perf_counter() - started
    if inputs != len(reader):
        raise SystemExit(f"{reader.location}: {len(reader) - inputs} record(s) gave no input")
    n = len(reader)
    return {"ecg_per_s": n / seconds, "consumer_cpu_ms_per_ecg": 1e3 * (time.process_time() - own) / n,
            "workers_cpu_ms_per_ecg": 1e3 * (children_cpu() - theirs) / n}


def measure(path: Path, what: str, workers: int, rounds: int) -> list[dict]:
    reader = open_reader(path)
    for way in WAYS:
        delivered(reader, way, workers)  # a pass each unmeasured: the files in the page cache, the imports done
    runs = {way: [] for way in WAYS}
    for _ in range(rounds):
        for way in WAYS:
            runs[way].append(delivered(reader, way, workers))
    return [{"input": what, "n": len(reader), "workers": workers, "transport": way,
             **{key: float(np.median([r[key] for r in found])) for key in found[0]}} for way, found in runs.items()]


def table(result: dict, command: list[str]) -> str:
    flags = ", ".join(result["cpu_flags"]) or "AVX2 only"
    lines = [f"Measured by `{' '.join(command)}` ({result['cpu']}: {flags}; {result['cores']} cores; the modern "
             f"recipe's CPU part — read, check, resample, cut — medians of {result['rounds']} rounds in turn):", "",
             "| input | ECGs | workers | hand-over | delivered | the consumer's CPU per ECG (its ceiling) | the "
             "workers' CPU per ECG |", "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        ceiling = 1e3 / row["consumer_cpu_ms_per_ecg"]
        lines.append(f"| {row['input']} | {row['n']:,} | {row['workers']} | {row['transport']} | "
                     f"{row['ecg_per_s']:.0f} ECG/s | {row['consumer_cpu_ms_per_ecg']:.3f} ms ({ceiling:,.0f} ECG/s) "
                     f"| {row['workers_cpu_ms_per_ecg']:.3f} ms |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=2000)
    input_options(p)
    p.add_argument("--work", default="bench/results/stream")
    p.add_argument("--quick", action="store_true", help="a smoke run: 128 ECGs, one round")
    write_option(p, "stream")
    args = p.parse_args(argv)
    size, rounds = (128, 1) if args.quick else (args.size, ROUNDS)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in args.inputs:
        what, make = INPUTS[kind]
        path = make(work, size, Path(args.ptbxl))
        for workers in sorted({1, usable_cores()}):
            rows += measure(path, what, workers, rounds)
            print(rows[-2], rows[-1], file=sys.stderr, flush=True)
    result = {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "cores": usable_cores(), "rounds": rounds, "rows": rows}
    publish(result, work / "stream.json", args.write, table, "bench/stream.py", argv or sys.argv[1:])
    return result


if __name__ == "__main__":
    main()

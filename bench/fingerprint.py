"""A record's print (dataloader/fingerprint.py): what its hash and its sketch cost beside reading the record, how far
apart the sketches of the same recording at two rates and of different recordings lie, and what comparing sketches
costs — on the shared PTB-XL records, each read at 500 Hz and as PTB-XL's own 100-Hz copy (records100/).

    python bench/fingerprint.py --work bench/results/fingerprint --write bench/README.md:fingerprint
    python bench/fingerprint.py --quick --work /tmp/fingerprint     # a smoke run

Per record, one thread, medians of interleaved passes: ms to read it (WFDB, 500 Hz), to hash it and to sketch it.
Then the bits between each record's two copies' sketches (largest: the margin for copies), the fewest bits between
different recordings (pairs of identical recordings under two ids, equal exact hashes at 500 Hz, are left out) and
the median over all pairs, against ``NEAR_BITS``; and the comparisons per second of ``near`` (a million predicted ×
training pairs). The CPU and its flags are stated; the last line printed is one JSON object.
"""
# ruff: noqa: E402  (the thread count is set before numpy is imported)
from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from pipeline import SHARED

from dataloader import fingerprint as fp
from dataloader.formats import open_reader
from utils.io import publish, write_option
from utils.machine import cpu_flags, cpu_name

BY = "bench/fingerprint.py"


def per_record(function, items: list) -> float:
    started = time.perf_counter()
    for item in items:
        function(item)
    return (time.perf_counter() - started) / len(items) * 1e3


def costs(reader, count: int, repeats: int) -> dict:
    """Median ms per record of reading, hashing and sketching (interleaved passes over the same records)."""
    positions = range(min(count, len(reader)))
    items = [reader.load(i) for i in positions]
    timed = {"read_ms": [], "hash_ms": [], "sketch_ms": []}
    fp.sketch(items[0].signal, items[0].fs)  # the projections drawn once, as in a long run
    for _ in range(repeats):
        timed["read_ms"].append(per_record(reader.load, positions))
        timed["hash_ms"].append(per_record(lambda r: fp.fingerprint(r.signal, r.fs), items))
        timed["sketch_ms"].append(per_record(lambda r: fp.sketch(r.signal, r.fs), items))
    return {k: statistics.median(v) for k, v in timed.items()}


def separation(ptbxl: Path, count: int) -> dict:
    """Bits between sketches: each record's 500- and 100-Hz copies, and different recordings."""
    high, low = open_reader(ptbxl), open_reader(ptbxl, ptbxl_rate=100)
    n = min(count, len(high))
    originals = np.array([fp.of_item(high.load(i)) for i in range(n)], fp.PRINTS)
    copies = np.array([fp.of_item(low.load(low.ids.index(high.ids[i]))) for i in range(n)], fp.PRINTS)
    apart = np.bitwise_count(copies["sketch"][:, None, :] ^ originals["sketch"][None, :, :]).sum(axis=2)
    identical = originals["exact"][:, None] == originals["exact"][None, :]
    return {"pairs": n, "copies_max_bits": int(apart.diagonal().max()),
            "copies_median_bits": float(np.median(apart.diagonal())),
            "different_min_bits": int(apart[~identical].min()), "different_median_bits": float(np.median(
                apart[~identical])), "near_bits": fp.NEAR_BITS, "sketch_bits": fp.SKETCH_BITS}


def comparisons(pairs: int) -> float:
    """Sketch comparisons per second of ``fp.near`` (random sketches: none near, every pair compared)."""
    rng = np.random.default_rng(0)
    known = rng.integers(1, 1 << 63, size=(1000, fp.SKETCH_WORDS), dtype=np.uint64)
    asked = rng.integers(1, 1 << 63, size=(max(1, pairs // 1000), fp.SKETCH_WORDS), dtype=np.uint64)
    started = time.perf_counter()
    fp.near(asked, known)
    return len(asked) * len(known) / (time.perf_counter() - started)


def table(result: dict, command: list[str]) -> str:
    c, s = result["costs"], result["separation"]
    return "\n".join([
        f"Measured by `{' '.join(command)}` ({result['cpu']}, flags: {', '.join(result['cpu_flags']) or 'none'}; one "
        f"thread; {result['records']} PTB-XL records of 10 s at 500 Hz; medians of {result['repeats']} interleaved "
        f"passes):", "",
        "| what | figure |", "|---|---|",
        f"| reading a record (WFDB, 500 Hz), ms | {c['read_ms']:.2f} |",
        f"| its exact hash, ms | {c['hash_ms']:.3f} |",
        f"| its sketch ({s['sketch_bits']} bits), ms | {c['sketch_ms']:.3f} |",
        f"| bits between a record's 500-Hz and 100-Hz copies: median, largest ({s['pairs']} records) | "
        f"{s['copies_median_bits']:.0f}, **{s['copies_max_bits']}** |",
        f"| bits between different recordings: fewest, median | **{s['different_min_bits']}**, "
        f"{s['different_median_bits']:.0f} |",
        f"| the same recording at most (`NEAR_BITS`) | {s['near_bits']} |",
        f"| sketch comparisons per second (`near`, one thread) | {result['comparisons_per_s'] / 1e6:.0f} M |"])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=353, help="PTB-XL records (default: every shared one)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ptbxl", default=str(SHARED))
    p.add_argument("--work", default="bench/results/fingerprint")
    p.add_argument("--quick", action="store_true", help="a smoke run: 8 records, 2 passes")
    write_option(p, "fingerprint")
    args = p.parse_args(argv)
    count, repeats = (8, 2) if args.quick else (args.records, args.repeats)
    ptbxl = Path(args.ptbxl)
    result = {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "records": count, "repeats": repeats,
              "costs": costs(open_reader(ptbxl), count, repeats), "separation": separation(ptbxl, count),
              "comparisons_per_s": comparisons(10_000 if args.quick else 20_000_000)}
    publish(result, Path(args.work) / "fingerprint.json", args.write, table, BY, argv or sys.argv[1:])
    return result


if __name__ == "__main__":
    main()

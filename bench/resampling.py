"""Resampling: the project's (models/resampling.py, numpy's matrix product) against scipy's resample_poly, side by
side on real records, and what scipy.signal's import costs a process that needs neither.

    python bench/resampling.py --work bench/results/resampling --write bench/README.md:resampling
    python bench/resampling.py --quick --work /tmp/resampling     # a smoke run

For each ratio the readers meet, on the first PTB-XL records (12 leads, 10 s; 500 Hz, or resampled by scipy to the
source rate first, outside the timing): ms per record of scipy's ``resample_poly`` with its default filter
designed once (the project's previous path) and of ``models.preprocessing.resample``, interleaved and repeated so
that a drift of the machine reaches both alike (medians), their ratio, and the largest difference between the two
outputs relative to the record's range (float32). Then the wall time of ``import scipy.signal`` in a fresh
interpreter (median of runs). One thread (OMP_NUM_THREADS=1 is set for the whole run). The CPU and its flags are
stated; the last line printed is one JSON object.
"""
# ruff: noqa: E402  (the thread count is set before numpy is imported)
from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pipeline import SHARED

from models.preprocessing import resample, resample_ratio
from models.resampling import band, lowpass
from utils.io import publish, write_option
from utils.machine import cpu_flags, cpu_name

BY = "bench/resampling.py"
RATIOS = [(500, 100), (400, 500), (500, 400), (250, 500), (1000, 500), (360, 500), (128, 100), (257, 500)]


def records(ptbxl: Path, count: int) -> list[np.ndarray]:
    from wfdb import rdsamp

    table = pd.read_csv(ptbxl / "ptbxl_database.csv").head(count)
    return [np.nan_to_num(rdsamp(str(ptbxl / f))[0].T).astype(np.float32) for f in table["filename_hr"]]


def per_record(function, signals: list[np.ndarray]) -> float:
    started = time.perf_counter()
    for x in signals:
        function(x)
    return (time.perf_counter() - started) / len(signals) * 1e3


def ratio_row(fs_in: int, fs_out: int, base: list[np.ndarray], repeats: int) -> dict:
    from scipy.signal import resample_poly

    up, down = resample_ratio(fs_in, fs_out)
    source = [x if fs_in == 500 else resample_poly(x, *resample_ratio(500, fs_in), axis=-1) for x in base]
    window = lowpass(up, down).astype(np.float32)  # designed once, as the project's previous path did
    theirs, ours = [], []
    for _ in range(repeats):
        theirs.append(per_record(lambda x: resample_poly(x, up, down, axis=-1, window=window), source))
        ours.append(per_record(lambda x: resample(x, fs_in, fs_out), source))
    error = max(float(np.abs(resample(x, fs_in, fs_out) - (y := resample_poly(x, up, down, axis=-1))).max()
                      / np.abs(y).max()) for x in source)
    return {"fs_in": fs_in, "fs_out": fs_out, "up": up, "down": down,
            "by": "numpy" if band(up, down, "<f4") is not None else "scipy",
            "scipy_ms": statistics.median(theirs), "ours_ms": statistics.median(ours),
            "ratio": statistics.median(a / b for a, b in zip(ours, theirs)), "max_relative_difference": error}


def import_seconds(runs: int) -> float:
    """Median wall seconds of ``import scipy.signal`` in a fresh interpreter (after numpy, which both need)."""
    code = "import time, numpy; t = time.perf_counter(); import scipy.signal; print(time.perf_counter() - t)"
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                  check=True).stdout) for _ in range(runs))


def table(result: dict, command: list[str]) -> str:
    lines = [f"Measured by `{' '.join(command)}` ({result['cpu']}, flags: {', '.join(result['cpu_flags']) or 'none'};"
             f" one thread; {result['records']} PTB-XL records of 10 s, 12 leads, float32; medians of "
             f"{result['repeats']} interleaved passes):", "",
             "| from → to Hz | up / down | ours by | scipy resample_poly (filter designed once), ms | ours, ms | "
             "ours / scipy | largest difference / range |", "|---|---|---|---|---|---|---|"]
    for r in result["ratios"]:
        lines.append(f"| {r['fs_in']} → {r['fs_out']} | {r['up']} / {r['down']} | {r['by']} | {r['scipy_ms']:.2f} | "
                     f"{r['ours_ms']:.2f} | **{r['ratio']:.2f}** | {r['max_relative_difference']:.1e} |")
    lines.append(f"\n`import scipy.signal` in a fresh interpreter: {result['scipy_signal_import_s']:.2f} s (median of "
                 f"{result['import_runs']}); a prediction whose recipe filters in its graph no longer pays it.")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ptbxl", default=str(SHARED))
    p.add_argument("--work", default="bench/results/resampling")
    p.add_argument("--quick", action="store_true", help="a smoke run: 4 records, 2 passes, 2 ratios")
    write_option(p, "resampling")
    args = p.parse_args(argv)
    count, repeats = (4, 2) if args.quick else (args.records, args.repeats)
    base = records(Path(args.ptbxl), count)
    rows = [ratio_row(fs_in, fs_out, base, repeats) for fs_in, fs_out in (RATIOS[:2] if args.quick else RATIOS)]
    runs = 2 if args.quick else 5
    result = {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "records": count, "repeats": repeats, "ratios": rows,
              "scipy_signal_import_s": import_seconds(runs), "import_runs": runs}
    publish(result, Path(args.work) / "resampling.json", args.write, table, BY, argv or sys.argv[1:])
    return result


if __name__ == "__main__":
    main()

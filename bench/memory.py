"""Memory stays bounded as data grows: one training epoch's loader over a 10k- and a 100k-ECG cache.

    python bench/memory.py --sizes 10000 100000 --json

Each size runs in a fresh process: a float16 cache of N × 12 × 4096 is created as a sparse file (the bytes are
never written, so the benchmark needs no 10 GB of real data), then every row is read once through the training
loader (shuffled, batch 32) as an epoch does. Reported per size: the peak of anonymous resident memory (RssAnon,
the process's own allocations, sampled every batch) and the peak total RSS (VmHWM), which also counts the cache's
file pages the kernel maps in (page cache, reclaimable). Bounded memory means RssAnon does not grow with N.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from dataloader.dataset import ECGDataset, train_loader
from dataloader.sources import SignalCache


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def one_size(n: int, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "signals.npy"
        signals = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, 12, 4096))
        del signals
        cache = SignalCache(Path(tmp), np.load(path, mmap_mode="r"), [str(i) for i in range(n)], {})
        data = ECGDataset(cache, np.arange(n), np.linspace(20, 90, n))
        loader = train_loader(data, batch_size, seed=0, workers=0)
        loader.sampler.set_epoch(1)
        baseline = status_kb("RssAnon")
        peak_anon, rows = baseline, 0
        for batch in loader:
            rows += len(batch["x"])
            peak_anon = max(peak_anon, status_kb("RssAnon"))
        return {"n": n, "rows_read": rows, "peak_rss_anon_mb": peak_anon / 1024,
                "rss_anon_growth_mb": (peak_anon - baseline) / 1024, "peak_rss_total_mb": status_kb("VmHWM") / 1024}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--json", action="store_true")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="a smoke test: 500 and 1,000 ECGs")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = [500, 1000]
    if args.one is not None:
        print(json.dumps(one_size(args.one, args.batch_size)))
        return []
    results = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--batch_size", str(args.batch_size)],
                             capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if not args.json:
            print(results[-1], file=sys.stderr)
    print(json.dumps({"sizes": results}))
    return results


if __name__ == "__main__":
    main()

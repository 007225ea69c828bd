"""onnxruntime's batch: ECG/s of each model by the number of ECGs per call, on one thread and on every core.

    python bench/onnx_batch.py --work bench/results/onnx_batch --write bench/README.md:onnx-batch
    python bench/onnx_batch.py --quick --work /tmp/onnx_batch     # a smoke run: the shipped model only

The models: the shipped one (models/shipped, ten BaselineNets at 100 Hz with the band-pass in the graph) and new
networks of three recipes as export_interface writes them (BaselineNet at 500 Hz, the modern ECGEfficientNet, Lima's
ResNet1d at 400 Hz; their speed, not their ages, is measured). Each runs on the graph's inputs of real PTB-XL
records (prepared outside the timing) for every batch size in turn, the sizes interleaved and repeated so that a
drift of the machine's speed reaches each alike; reported is the median ECG/s over the repeats, and each size's
ratio to the best. The CPU and its flags are stated; the last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from pipeline import SHARED, graph_inputs, model, rate

from models.files import SHIPPED_MODEL
from utils.io import publish, write_option
from utils.machine import cpu_flags, cpu_name, usable_cores

BY = "bench/onnx_batch.py"
NEW = {"BaselineNet, 500 Hz (--recipe baseline)": ("--arch", "BaselineNet", "--recipe", "baseline"),
       "ECGEfficientNet (--recipe modern)": ("--arch", "ECGEfficientNet", "--recipe", "modern"),
       "ResNet1d, 400 Hz (--recipe lima)": ("--arch", "ResNet1d", "--recipe", "lima")}


def sweep(onnx: Path, batches: list[int], threads: list[int], count: int, repeats: int) -> dict:
    """{threads: {batch: median ECG/s}} for one model."""
    from engine.deploy.onnx_model import OnnxModel

    base = OnnxModel.load(onnx, 1)
    x = graph_inputs(base, SHARED, count)  # the first PTB-XL records at 500 Hz
    found = {}
    for t in threads:
        session = base.with_threads(t, spinning=True)
        runs = {b: [] for b in batches}
        for _ in range(repeats):
            for b in batches:
                runs[b].append(rate(session, x, b))
        found[t] = {b: statistics.median(v) for b, v in runs.items()}
    return found


def table(result: dict, command: list[str]) -> str:
    batches = result["batches"]
    lines = [f"Measured by `{' '.join(command)}` ({result['cpu']}, flags: {', '.join(result['cpu_flags']) or 'none'}; "
             f"median of {result['repeats']} interleaved passes over {result['count']} ECGs; ECG/s, and in brackets "
             "the ratio to the model's best batch on those threads):", "",
             "| model | threads | " + " | ".join(f"batch {b}" for b in batches) + " |",
             "|---|---|" + "---|" * len(batches)]
    for name, by_threads in result["models"].items():
        for t, rates in by_threads.items():
            rates = {int(b): v for b, v in rates.items()}  # as read back from onnx_batch.json too
            best = max(rates.values())
            lines.append(f"| {name} | {t} | " + " | ".join(f"{rates[b]:.0f} ({rates[b] / best:.2f})"
                                                          for b in batches) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--threads", type=int, nargs="+", default=None, help="default: 1 and every usable core")
    p.add_argument("--count", type=int, default=128, help="ECGs per pass")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no_shipped", action="store_true", help="leave the shipped model out")
    p.add_argument("--work", default="bench/results/onnx_batch")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: the shipped model alone, 16 ECGs, batches 1 and 8, one pass")
    write_option(p, "onnx-batch")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.count, args.repeats = [1, 8], 16, 1
    threads = args.threads or sorted({1, usable_cores()})
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = {} if args.no_shipped else {"shipped (ten BaselineNets, 100 Hz)": SHIPPED_MODEL}
    if not args.quick:
        files.update({name: model(work, None, f"{new[1]}_{new[3]}.onnx", new=new) for name, new in NEW.items()})
    if not files:
        raise SystemExit("nothing to measure: --quick measures the shipped model alone (drop --no_shipped)")
    result = {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "count": args.count, "repeats": args.repeats,
              "batches": args.batches, "models": {}}
    for name, onnx in files.items():
        result["models"][name] = sweep(onnx, args.batches, threads, args.count, args.repeats)
        print(name, json.dumps(result["models"][name]), file=sys.stderr, flush=True)
    publish(result, work / "onnx_batch.json", args.write, table, BY, argv or sys.argv[1:])
    return result


if __name__ == "__main__":
    main()

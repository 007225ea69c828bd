"""Does the training data path keep up? For each architecture, on its own recipe: what one loader worker delivers
from the cache (ECG/s, plain and with the recipe's whole augmentation), what the default training step consumes
(ECG/s) and the fraction of each step spent waiting for data — with the loader in the training process (no worker,
train_interface's default on a CPU), with one worker process, and with the augmentation after the crops done on
the training device (``--augment_on device``; the device's augmentation timed apart from the wait), side by side —
and how many workers
keep the step fed. The CPU (or GPU) is named; the table can be written into a marked block of a document, and the
last line printed is one JSON object.

    OMP_NUM_THREADS=2 python bench/loader.py --archs BaselineNet ECGEfficientNet --batch_size 64 --steps 6 \
        --work bench/results/loader --write bench/README.md:loader

Each architecture is three ``bench/throughput.py --json`` runs (``--workers 0``, ``--workers 1``, ``--workers 0
--augment_on device``; the seed path included); their JSON is kept under --work, so an interrupted run resumes with
what is not yet measured.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import throughput

from models.registry import MODELS
from utils.io import write_block_at, write_option
from utils.machine import cpu_flags, cpu_name

WAYS = ((0, "loader"), (1, "loader"), (0, "device"))  # (loader workers, where the augmentation runs)


def measured(arch: str, args, work: Path, workers: int, augment_on: str) -> dict:
    """throughput.py's result for ``arch`` with ``workers`` loader workers and the augmentation on ``augment_on`` —
    kept in ``work``: measured once."""
    size = ["--quick"] if args.quick else ["--batch_size", str(args.batch_size), "--steps", str(args.steps)]
    suffix = "" if augment_on == "loader" else f"_{augment_on}"
    kept = work / f"{arch}_{'_'.join(size).replace('--', '')}_{args.device}_w{workers}{suffix}.json"
    if not kept.exists():
        result = throughput.main(["--arch", arch, *size, "--device", args.device, "--json", "--workers",
                                  str(workers), "--augment_on", augment_on])
        kept.write_text(json.dumps(result))
    return json.loads(kept.read_text())


def device_share(result: dict) -> str:
    """The data wait with the augmentation on the device, and the augmentation's own share of the step (a result
    kept before the two were timed apart has them together)."""
    if "augment_fraction" not in result:
        return f"{result['data_wait_fraction']:.1%} (the augmentation included)"
    return f"{result['data_wait_fraction']:.1%} (+ {result['augment_fraction']:.1%})"


def table(ways: list[tuple[dict, dict, dict]], machine: str, command: list[str]) -> str:
    first = ways[0][0]
    lines = [f"`{' '.join(command)}` ({machine}; batch {first['batch_size']}, {first['steps']} timed steps, "
             f"precision {first['precision']}; the recipe's whole augmentation):", "",
             "| arch | train ECG/s: no worker / one worker / on the device (× no worker) | data wait per step: no "
             "worker / one worker / on the device (+ the device's augmentation) | one worker delivers: plain / "
             "augmented (ECG/s) | workers to keep up |", "|---|---|---|---|---|"]
    for alone, worker, device in ways:
        loader = alone["loader"]
        plain, augmented = (loader["per_worker_ecg_per_s"][k] for k in ("plain", "augmented"))
        rates = [r["train_samples_per_s"] for r in (alone, worker, device)]
        lines.append(f"| {alone['arch']} | {rates[0]:.1f} / {rates[1]:.1f} (**{rates[1] / rates[0]:.2f}×**) / "
                     f"{rates[2]:.1f} (**{rates[2] / rates[0]:.2f}×**) | "
                     f"{alone['data_wait_fraction']:.1%} / {worker['data_wait_fraction']:.1%} / "
                     f"{device_share(device)} | "
                     f"{plain:.0f} / {augmented:.0f} | {loader['workers_needed']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> list[tuple[dict, dict, dict]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", choices=tuple(MODELS), default=["BaselineNet", "ECGEfficientNet"])
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--steps", type=int, default=4, help="timed training steps (and loader batches) per arch")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--work", default="bench/results/loader")
    p.add_argument("--quick", action="store_true", help="a smoke run: throughput.py --quick (batch 2, one step)")
    write_option(p, "loader")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ways = [tuple(measured(arch, args, work, *way) for way in WAYS) for arch in args.archs]
    machine = ways[0][0].get("gpu") or f"{cpu_name()} ({', '.join(cpu_flags()) or 'AVX2 only'})"
    text = table(ways, machine, ["python", "bench/loader.py", *(argv if argv is not None else sys.argv[1:])])
    if args.write:
        write_block_at(args.write, text, "bench/loader.py")
    print(text)
    rows = [{"arch": a["arch"], "no_worker": a, "one_worker": w, "on_device": d} for a, w, d in ways]
    print(json.dumps({"rows": rows}))
    return ways


if __name__ == "__main__":
    main()

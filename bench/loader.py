"""Does the training data path keep up? For each architecture, on its own recipe: what one loader worker delivers
from the cache (ECG/s, plain and with the recipe's whole augmentation), what the default training step consumes
(ECG/s) and the fraction of each step spent waiting for data — with the loader in the training process (no worker,
train_interface's default on a CPU) and with one worker process, side by side — and how many workers keep the step
fed. The CPU (or GPU)
is named; the table can be written into a marked block of a document, and the last line printed is one JSON object.

    OMP_NUM_THREADS=2 python bench/loader.py --archs BaselineNet ECGEfficientNet ResNet1d --batch_size 64 \
        --work bench/results/loader --write bench/README.md:loader

Each architecture is two ``bench/throughput.py --json`` runs (``--workers 0`` and ``--workers 1``; the seed path
included); their JSON is kept under --work, so an interrupted run resumes with what is not yet measured.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import throughput

from models.registry import MODELS
from utils.io import write_block
from utils.machine import cpu_flags, cpu_name


def measured(arch: str, args, work: Path, workers: int) -> dict:
    """throughput.py's result for ``arch`` with ``workers`` loader workers — kept in ``work``: measured once."""
    size = ["--quick"] if args.quick else ["--batch_size", str(args.batch_size), "--steps", str(args.steps)]
    kept = work / f"{arch}_{'_'.join(size).replace('--', '')}_{args.device}_w{workers}.json"
    if not kept.exists():
        result = throughput.main(["--arch", arch, *size, "--device", args.device, "--json", "--workers",
                                  str(workers)])
        kept.write_text(json.dumps(result))
    return json.loads(kept.read_text())


def table(pairs: list[tuple[dict, dict]], machine: str, command: list[str]) -> str:
    first = pairs[0][1]
    lines = [f"`{' '.join(command)}` ({machine}; batch {first['batch_size']}, {first['steps']} timed steps, "
             f"precision {first['precision']}; the recipe's whole augmentation):", "",
             "| arch | train ECG/s: no worker / one worker (×) | data wait per step: no worker / one worker | one "
             "worker delivers: plain / augmented (ECG/s) | workers to keep up |",
             "|---|---|---|---|---|"]
    for alone, default in pairs:
        loader = alone["loader"]
        plain, augmented = (loader["per_worker_ecg_per_s"][k] for k in ("plain", "augmented"))
        rates = alone["train_samples_per_s"], default["train_samples_per_s"]
        lines.append(f"| {default['arch']} | {rates[0]:.1f} / {rates[1]:.1f} "
                     f"(**{rates[1] / rates[0]:.2f}×**) | {alone['data_wait_fraction']:.1%} / "
                     f"{default['data_wait_fraction']:.1%} | {plain:.0f} / {augmented:.0f} | "
                     f"{loader['workers_needed']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> list[tuple[dict, dict]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", choices=tuple(MODELS), default=["BaselineNet", "ECGEfficientNet"])
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--steps", type=int, default=4, help="timed training steps (and loader batches) per arch")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--work", default="bench/results/loader")
    p.add_argument("--quick", action="store_true", help="a smoke run: throughput.py --quick (batch 2, one step)")
    p.add_argument("--write", default=None, metavar="FILE:BLOCK",
                   help="write the table into the marked block of FILE (e.g. bench/README.md:loader)")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pairs = [tuple(measured(arch, args, work, workers) for workers in (0, 1)) for arch in args.archs]
    machine = pairs[0][1].get("gpu") or f"{cpu_name()} ({', '.join(cpu_flags()) or 'AVX2 only'})"
    text = table(pairs, machine, ["python", "bench/loader.py", *(argv if argv is not None else sys.argv[1:])])
    if args.write:
        path, block = args.write.rsplit(":", 1)
        write_block(Path(path), block, text, "bench/loader.py")
    print(text)
    rows = [{"arch": alone["arch"], "no_worker": alone, "one_worker": one} for alone, one in pairs]
    print(json.dumps({"rows": rows}))
    return pairs


if __name__ == "__main__":
    main()

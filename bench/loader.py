"""Does the training data path keep up? For each architecture, on its own recipe: what one loader worker delivers
from the cache (ECG/s, plain and with the recipe's whole augmentation), what the default training step consumes
(ECG/s, fed by the default workers), the fraction of each step spent waiting for data, and how many workers keep
the step fed. The CPU (or GPU) is named; the table can be written into a marked block of a document.

    OMP_NUM_THREADS=2 python bench/loader.py --archs BaselineNet ECGEfficientNet ResNet1d --batch_size 64 \
        --work bench/results/loader --write bench/README.md:loader

Each architecture is one ``bench/throughput.py --json`` run (its seed path included); its JSON is kept under
--work, so an interrupted run resumes with the architectures not yet measured.
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


def measured(arch: str, batch: int, steps: int, device: str, work: Path) -> dict:
    """throughput.py's result for ``arch`` (kept in ``work``: measured once)."""
    kept = work / f"{arch}_b{batch}_s{steps}_{device}.json"
    if not kept.exists():
        result = throughput.main(["--arch", arch, "--batch_size", str(batch), "--steps", str(steps),
                                  "--device", device, "--json"])
        kept.write_text(json.dumps(result))
    return json.loads(kept.read_text())


def table(results: list[dict], machine: str, command: list[str]) -> str:
    lines = [f"`{' '.join(command)}` ({machine}; batch {results[0]['batch_size']}, {results[0]['steps']} timed "
             f"steps, precision {results[0]['precision']}):", "",
             "| arch | train step consumes (ECG/s) | data wait per step | one worker delivers: plain / augmented "
             "(ECG/s) | workers to keep up |", "|---|---|---|---|---|"]
    for r in results:
        loader = r["loader"]
        plain, augmented = (loader["per_worker_ecg_per_s"][k] for k in ("plain", "augmented"))
        lines.append(f"| {r['arch']} | {r['train_samples_per_s']:.0f} | {r['data_wait_fraction']:.1%} | "
                     f"{plain:.0f} / {augmented:.0f} | {loader['workers_needed']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", choices=tuple(MODELS), default=["BaselineNet", "ECGEfficientNet"])
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--steps", type=int, default=4, help="timed training steps (and loader batches) per arch")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--work", default="bench/results/loader")
    p.add_argument("--write", default=None, metavar="FILE:BLOCK",
                   help="write the table into the marked block of FILE (e.g. bench/README.md:loader)")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = [measured(arch, args.batch_size, args.steps, args.device, work) for arch in args.archs]
    machine = results[0].get("gpu") or f"{cpu_name()} ({', '.join(cpu_flags()) or 'AVX2 only'})"
    text = table(results, machine, ["python", "bench/loader.py", *(argv if argv is not None else sys.argv[1:])])
    if args.write:
        path, block = args.write.rsplit(":", 1)
        write_block(Path(path), block, text, "bench/loader.py")
    print(text)
    return results


if __name__ == "__main__":
    main()

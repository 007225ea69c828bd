"""The shipped model's price, measured and written where people read it: ``ecg-age predict`` from a cold start on
150 real ECGs (ages, intervals, 8 explained ECGs and the page), the end-to-end ECG/s on one core
(``test_interface.py --threads 1 --num_workers 0 --cache off``, the process pinned to one core where the OS can;
and per further ECG, the slope between 150 and 1,000 ECGs, the median of three passes of each), the network alone
on one core, and its GFLOP per ECG — with the CPU and its flags. The figures replace the marked blocks of
MODEL_CARD.md and README.md (so they are never copied by hand), and the last line printed is one JSON object.

    python bench/shipped.py                      # models/shipped/ecg_age_ptbxl.onnx on 150 PTB-XL records
    python bench/shipped.py --quick --model M --work W --no_write    # smoke test: 20 records, nothing rewritten
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pipeline import end_to_end, model_only

from ecg_age.cli import EXPLAINED
from engine.deploy.onnx_model import batch_for
from models.files import SHIPPED_MODEL
from utils.io import write_block
from utils.machine import cpu_flags, cpu_name
from utils.paths import ROOT

SHARED = ROOT.parent / "shared" / "data"
BY = "bench/shipped.py"
# whether the one-core passes could be held to one core (``--threads 1`` bounds the model's threads; the reading
# overlaps them on another core unless the process is pinned)
PINNED = {True: "the process pinned to one core",
          False: "not pinned, this OS cannot: the reading may overlap the model on a second core"}


def manifest(ptbxl: Path, count: int, work: Path) -> Path:
    """A manifest CSV of ``count`` PTB-XL records at 500 Hz with their ages (a user's folder of ECGs): the first
    ``count``, or every record in turn where the table holds fewer (each row read from its files again)."""
    table = pd.read_csv(ptbxl / "ptbxl_database.csv")
    rows = table.iloc[np.arange(count) % len(table)]
    (work / "records").mkdir(parents=True, exist_ok=True)
    path = work / "records" / f"ptbxl_{count}.csv"  # apart from the tables the measurements write in work
    ids = rows["ecg_id"].astype(str) if count <= len(table) else [f"r{i}" for i in range(count)]
    pd.DataFrame({"path": [str((ptbxl / f"{name}.hea").resolve()) for name in rows["filename_hr"]],
                  "id": list(ids), "age": rows["age"].to_numpy()}).to_csv(path, index=False)
    return path


def cold_predict(model: Path, records: Path, work: Path, explained: int) -> float:
    """Seconds of `ecg-age predict` in a new process, as a user runs it (startup, reading, ages, explanations of
    the first ``explained``, the page)."""
    with tempfile.TemporaryDirectory(dir=work) as folder:  # a new folder: nothing of an earlier run resumed
        out = Path(folder) / "page"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "ecg_age", "predict", str(records), "--out", str(out),
                               "--weights", str(model), "--explain_records", str(explained), "--quiet"],
                              capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - started
        if done.returncode or not (out / "report.html").exists():
            raise SystemExit(done.stderr[-3000:])
        return seconds


def graph_facts(model: Path) -> dict:
    """From one reading of the exported graph: its forward GFLOP per ECG — of the networks, and of the input stage
    (the band-pass as matrix products) — its convolutions' and matrix products' multiply-adds × 2 for one ECG of the
    model's input length (onnx's shape inference on the graph with those sizes set); and how it stores its weights
    (export_interface --weight_storage; older files: fp32)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    from engine.deploy.onnx_model import METADATA_KEY
    from engine.deploy.quantize import before_convolutions

    graph = onnx.load(str(model))
    stage = set(before_convolutions(graph))
    meta = json.loads({p.key: p.value for p in graph.metadata_props}[METADATA_KEY])
    length = meta["preprocessing"]["length"]
    for dim, size in zip(graph.graph.input[0].type.tensor_type.shape.dim, (1, 12, length)):
        dim.dim_value = size  # the graph takes any batch and length: one ECG of the model's length is counted
    graph = shape_inference.infer_shapes(graph).graph
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
              for v in [*graph.value_info, *graph.input, *graph.output]}
    weights = {w.name: numpy_helper.to_array(w).shape for w in graph.initializer}
    weights.update({n.output[0]: weights[n.input[0]] for n in graph.node  # weights stored as fp16, cast back
                    if n.op_type == "Cast" and n.input[0] in weights})
    totals = {True: 0.0, False: 0.0}  # in the stage or not
    for node in graph.node:
        if node.op_type == "Conv" and node.input[1] in weights and node.output[0] in shapes:
            kernel = weights[node.input[1]]  # (out, in / groups, k)
            totals[node.name in stage] += 2 * math.prod(shapes[node.output[0]]) * kernel[1] * kernel[2]
        elif node.op_type in ("Gemm", "MatMul") and node.output[0] in shapes:
            operand = weights.get(node.input[1]) or shapes.get(node.input[1])  # a constant, or a transposed one
            if operand:
                inner = operand[0] if node.op_type == "Gemm" else operand[-2]
                totals[node.name in stage] += 2 * math.prod(shapes[node.output[0]]) * inner
    return {"gflop_per_ecg": totals[False] / 1e9, "input_stage_gflop_per_ecg": totals[True] / 1e9,
            "weight_storage": meta.get("weight_storage", "fp32")}


def steady(ptbxl: Path, model: Path, work: Path, records: Path, small: dict, larger: int, repeats: int) -> dict:
    """ECG/s of each further ECG end to end on one core: the slope between the passes over the manifest ``records``
    (``small``, measured already, and ``repeats`` − 1 more) and ``repeats`` over ``larger`` records, each the
    median of its passes, which leaves the process start and the model's loading out."""
    smalls = [small["seconds"]] + [end_to_end(records, model, work, workers=0, threads=1, cores=1)["seconds"]
                                   for _ in range(repeats - 1)]
    bigger = manifest(ptbxl, larger, work)
    larges = [end_to_end(bigger, model, work, workers=0, threads=1, cores=1)["seconds"] for _ in range(repeats)]
    short, long = float(np.median(smalls)), float(np.median(larges))
    per_ecg = (long - short) / (larger - small["rows"])
    found = {"rows": (small["rows"], larger), "seconds": (smalls, larges)}
    if per_ecg <= 0:  # the larger pass was no slower: the machine's noise outweighs the ECGs (a tiny model)
        return found | {"ecg_per_s": None, "start_seconds": None}
    return found | {"ecg_per_s": 1 / per_ecg, "start_seconds": short - small["rows"] * per_ecg}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(SHIPPED_MODEL))
    p.add_argument("--records", type=int, default=150)
    p.add_argument("--ptbxl", default=str(SHARED / "ptbxl"))
    p.add_argument("--work", default=str(ROOT / "bench" / "results" / "shipped"))
    p.add_argument("--no_write", action="store_true", help="print the figures only (MODEL_CARD.md, README.md kept)")
    p.add_argument("--quick", action="store_true", help="20 records, one explained (a smoke test)")
    args = p.parse_args(argv)
    count = 20 if args.quick else args.records
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model, records = Path(args.model).resolve(), manifest(Path(args.ptbxl).resolve(), count, work)
    explained = 1 if args.quick else EXPLAINED
    result = {"model": model.name, "records": count, "cpu": cpu_name(), "cpu_flags": cpu_flags(),
              "explained": explained, "cold_predict_seconds": cold_predict(model, records, work, explained),
              "end_to_end_one_core": end_to_end(records, model, work, workers=0, threads=1, cores=1),
              "model_only_one_core": model_only(model, records, count if args.quick else 512, batch_for(1), 1),
              **graph_facts(model), "megabytes": model.stat().st_size / 1e6}
    result["end_to_end_one_core_steady"] = steady(Path(args.ptbxl).resolve(), model, work, records,
                                                  result["end_to_end_one_core"], 60 if args.quick else 1000,
                                                  1 if args.quick else 3)
    machine = f"{result['cpu']} ({', '.join(result['cpu_flags']) or 'AVX2 only'})"
    if not args.no_write:
        write_block(ROOT / "README.md", "quick-start-time",
                    f"On a 2-core {machine}, `ecg-age predict` took {result['cold_predict_seconds']:.0f} s for "
                    f"{count} PTB-XL ECGs from a cold start, the page and {result['explained']} explained ECGs "
                    f"included (`python bench/shipped.py`).", BY)
        write_block(ROOT / "MODEL_CARD.md", "speed", speed_table(result, machine), BY)
    print(json.dumps(result))
    return result


def speed_table(result: dict, machine: str) -> str:
    e2e, alone, steady = (result[k] for k in ("end_to_end_one_core", "model_only_one_core",
                                              "end_to_end_one_core_steady"))
    return "\n".join([
        f"Measured by `python bench/shipped.py` ({machine}; fp32, onnxruntime):", "",
        "| what | figure |", "|---|---|",
        f"| the file | {result['megabytes']:.1f} MB (weights stored as {result['weight_storage']}, computed in "
        f"fp32) |",
        f"| forward GFLOP per ECG (all members) | {result['gflop_per_ecg']:.3f} |",
        f"| GFLOP per ECG of the graph's input stage (band-pass and z-score, once for all members) | "
        f"{result['input_stage_gflop_per_ecg']:.4f} |",
        f"| the model's graph alone, one core (batches of {batch_for(1)} of the CPU's windows, as the pipeline's; the "
        f"graph's band-pass and z-score included) | {alone['ecg_per_s']:.0f} ECG/s |",
        f"| end to end, one core (read, check, preprocess, predict, write; `--threads 1 --num_workers 0 --cache off`, "
        f"{PINNED[e2e['pinned']]}) "
        f"| {e2e['ecg_per_s']:.0f} ECG/s ({e2e['rows']} ECGs in {e2e['seconds']:.1f} s, process start included) |",
        f"| end to end, one core, each further ECG (the slope between {steady['rows'][0]} and {steady['rows'][1]} "
        f"ECGs, the median of {len(steady['seconds'][1])} passes of each: the process start"
        + (f", about {steady['start_seconds']:.1f} s, left out) | {steady['ecg_per_s']:.0f} ECG/s |"
           if steady["ecg_per_s"] else " left out) | not measurable: the larger pass was no slower |"),
        f"| `ecg-age predict` on {result['records']} ECGs from a cold start (ages, intervals, {result['explained']} "
        f"explained, the page) | "
        f"{result['cold_predict_seconds']:.0f} s |"])


if __name__ == "__main__":
    main()

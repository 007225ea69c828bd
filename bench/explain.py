"""Which attribution is faithful: the deletion test of every explanation method on held-out records, side by side
in one run, and the coverage of the calibrated intervals on the same records.

    OMP_NUM_THREADS=2 python bench/explain.py --weights log/ECGEfficientNet_ptbxl_cv5 \
        --input ../shared/data/cinc2021 --work bench/results/explain

For each record the ensemble's most and least important lead (by the method's shares) is replaced, in turn, by faint
noise (engine/explain.DELETION_NOISE_MV) and the age predicted again. Per method: the mean |Δ age| of both, their
paired difference with a 95 % bootstrap interval over records, the share of records where the most important lead
mattered more, and the seconds per record (the whole ensemble, this machine). A method's result is kept in --work
(``deletion_<method>.json``), so an interrupted run resumes. The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from dataloader.checks import check_record
from dataloader.formats import open_reader
from dataloader.labels import table_sex
from engine.predict.explain import DELETION_NOISE_MV, deletion_test
from engine.predict.explanations import DEFAULT_METHOD, METHODS
from engine.predict.inference import InferenceConfig, predict_records
from engine.predict.torch_predictor import TorchPredictor
from engine.runs import run_members
from models.checkpoint import load_ensemble
from utils import metrics
from utils.calibration import interval_coverage


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+", required=True, help="checkpoint(s) or run folder(s): the ensemble")
    p.add_argument("--input", required=True, help="held-out records (any format the project reads)")
    p.add_argument("--work", required=True, help="folder for the per-method results (resumable)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--records", type=int, default=None, help="the first N usable records only")
    p.add_argument("--level", type=float, default=0.9, help="interval level whose coverage is measured")
    p.add_argument("--n_boot", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smoke test: 2 records, the default method, 200 resamples")
    args = p.parse_args(argv)
    if args.quick:
        args.records, args.methods, args.n_boot = 2, [DEFAULT_METHOD], 200
    return args


def summary(result: dict, seconds: float, n_boot: int, seed: int) -> dict:
    most, least = result["most"], result["least"]
    difference = most - least
    return {"records": len(most), "most_mean_abs_change": float(most.mean()),
            "least_mean_abs_change": float(least.mean()), "difference": float(difference.mean()),
            "difference_ci95": metrics.mean_interval(difference, n_boot=n_boot, seed=seed),
            "most_matters_more": float((most > least).mean()), "seconds_per_record": seconds / len(most),
            "most_leads": result["most_lead"], "least_leads": result["least_lead"]}


def intervals(bundles, reader, level: float) -> dict:
    """Coverage of the ensemble's calibrated intervals on the records with ages, and whether the members' spread
    says where the ensemble errs (Spearman ρ of spread and |error|): an interval scaled by the spread only pays
    where it does."""
    cfg = InferenceConfig(cache=InferenceConfig().cache.quiet())
    member_ages = np.stack([predict_records(b, reader, cfg)[0] for b in bundles])
    ages = np.asarray(reader.table["age"], dtype=np.float64) if "age" in reader.table.columns else None
    mean = member_ages.mean(axis=0)
    known = np.isfinite(mean) & (np.isfinite(ages) if ages is not None else False)
    fitted = TorchPredictor(bundles).intervals(level)
    lower, upper = fitted(mean[known])
    spread = member_ages[:, known].std(axis=0)
    rho = stats.spearmanr(spread, np.abs(mean[known] - ages[known])) if len(bundles) > 1 else None
    return {"level": level, "bands": fitted.describe()["bands"], **interval_coverage(lower, upper, ages[known]),
            "spread_error_spearman": None if rho is None else [float(rho.statistic), float(rho.pvalue)]}


def main(argv=None) -> int:
    args = parse(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    members = [m for w in args.weights for m in run_members(w)]
    bundles = load_ensemble(members)
    reader = open_reader(args.input)
    usable = [i for i in range(len(reader)) if check_record(reader.load(i)) is None][:args.records]
    records = [reader.load(i) for i in usable]
    sex = table_sex(reader.table)
    setting = {"weights": [str(m) for m in members], "input": str(args.input), "records": [r.id for r in records],
               "noise_mv": DELETION_NOISE_MV, "seed": args.seed}
    results = {}
    for method in args.methods:
        path = work / f"deletion_{method}.json"
        if path.exists() and json.loads(path.read_text()).get("setting") == setting:
            results[method] = json.loads(path.read_text())["summary"]
            continue
        started = time.perf_counter()
        raw = deletion_test(bundles, records, sex[usable], method, torch.device("cpu"), seed=args.seed)
        results[method] = summary(raw, time.perf_counter() - started, args.n_boot, args.seed)
        path.write_text(json.dumps({"setting": setting, "summary": results[method]}, indent=1))
        print(f"{method}: {json.dumps({k: v for k, v in results[method].items() if 'leads' not in k})}", flush=True)
    coverage = intervals(bundles, reader, args.level)
    (work / "intervals.json").write_text(json.dumps(coverage, indent=1))
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "models": len(bundles), "intervals": {k: v for k, v in coverage.items() if k != "bands"},
                      "methods": {m: {k: v for k, v in r.items() if "leads" not in k}
                                                          for m, r in results.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

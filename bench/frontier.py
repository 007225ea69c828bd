"""The accuracy–compute frontier, side by side in one run: what each deployable choice costs and what it scores.

    OMP_NUM_THREADS=2 python bench/frontier.py --teacher W/log/ECGEfficientNet_modern_s1000 \\
        --distilled W/log/ECGEfficientNet_distilled_s100[01] --alone W/log/ECGEfficientNet_modern_1seed_s100[01] \\
        --work bench/results/frontier                       # W: a bench/accuracy.py --work folder
    python bench/frontier.py --quick --teacher RUN --distilled RUN --alone RUN --work /tmp/frontier   # a smoke run

The runs are K-fold runs on the same folds (bench/accuracy.py trains them: rows ``modern``, ``distilled``,
``modern_1seed``). Out of fold, each record is predicted by the models of the fold that never saw it, so the
points are:

* **one fold's three** — the teacher run's out-of-fold ages (a fold's ECGEfficientNet + 2 BaselineNets);
* **the 15-network ensemble** — every fold's models together; it has no out-of-fold ages (every record is in
  some fold's training set), so only its external MAE (the CinC 2021 records) and its costs are reported;
* **one network** — ``--alone`` (ECGEfficientNet, no teacher) and ``--distilled`` (the same network taught by the
  teacher; fold k by fold k's three), each over its seeds;
* **the distilled network in int8** — each fold's student exported and quantized by ``export_interface.py
  --quantize int8`` (calibrated on its own training records, checked on the external records — refused when outside
  the tolerance, and then reported so), its held-out fold predicted by onnxruntime; paired with the same students'
  fp32 exports.

Accuracy: each point's pooled OOF MAE (seeds: each record's absolute error averaged over them) and its **paired**
difference from the teacher's and from the network alone with a 95% bootstrap interval over records. Cost: GFLOP
per ECG, training seconds (the members' epochs; the distilled point adds the teacher's pass over the stored views,
and needs the teacher trained), and onnxruntime ECG/s: the model alone on preprocessed inputs at ``--threads``
(default: onnxruntime's own, every core — the model's best), and end to end as a user runs it
(``test_interface.py --cache off`` on ``--size`` CODE-15%-layout ECGs with ``--workers`` preprocessing processes
and, unless ``--threads`` is given, test_interface's default: the model on the cores the workers leave;
bench/pipeline.py compares the two at equal threads). The CPU and its flags are stated. The last line printed is
one JSON object; exports and predictions are kept under --work.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from accuracy import gflop, paired, patients_of, training_seconds
from pipeline import end_to_end, hdf5, model_only

import export_interface
from dataloader.checks import prepare
from dataloader.formats import InputSettings, open_reader
from engine.deploy.job import calibration_set, check_set
from engine.deploy.onnx_model import METADATA_KEY, OnnxModel
from engine.deploy.quantize import quantize_int8
from engine.runs import FOLDS, MANIFEST, OOF, members_by_fold, run_members, training_input
from models.checkpoint import load_bundle
from utils.errors import RecordError, UserError
from utils.io import write_json
from utils.machine import cpu_flags, cpu_name
from utils.paths import ROOT

SHARED = ROOT.parent / "shared" / "data"
N_BOOT = 2000


def oof_ages(run: Path) -> pd.DataFrame:
    """The run's out-of-fold ages: id → age, predicted_age, fold."""
    return pd.read_csv(run / OOF, dtype={"id": str}).set_index("id")


def seed_errors(ages: list[pd.Series], truth: pd.Series) -> pd.Series:
    """Per record, the absolute error averaged over seeds."""
    return pd.concat([(a - truth).abs() for a in ages], axis=1).mean(axis=1)


def run_folds(run: Path) -> dict[int, list[Path]]:
    """A K-fold run's trained members by fold."""
    return members_by_fold(run_members(run))


def export_name(members: list[Path]) -> str:
    """<run>_fold<k> for one fold's models, <run>_all for a whole run's, else a hash of the paths."""
    runs = {m.parent.parent for m in members}
    folds = set(members_by_fold(members))
    if len(runs) == 1 and len(folds) == 1 and None not in folds:
        return f"{runs.pop().name}_fold{folds.pop()}"
    if len(runs) == 1 and sorted(members) == sorted(run_members(next(iter(runs)))):
        return f"{runs.pop().name}_all"
    return hashlib.sha256("\n".join(sorted(map(str, members))).encode()).hexdigest()[:16]


def export(members: list[Path], work: Path, args, int8: bool = False) -> Path | None:
    """``members`` as one ONNX file (checked on the external records; one file per set of members, reused);
    int8: that file quantized and checked as ``export_interface.py --quantize int8`` does (calibrated on the
    first member's training records), or None when every scope is refused (the refusal is printed)."""
    name = export_name(members)
    fp32, out = work / f"{name}.onnx", work / f"{name}.int8.onnx"
    if not fp32.exists() and export_interface.entry(["--weights", *map(str, members), "--output", str(fp32),
                                                     "--check_input", args.external, "--check_records",
                                                     str(args.check_records), "--quiet"]) != 0:
        raise SystemExit(f"exporting {members} failed")
    if not int8:
        return fp32
    if not out.exists():
        spec = OnnxModel.load(fp32).input_spec  # what the graph takes
        calibration = calibration_set(None, "auto", args.calibration_records, members, spec)
        check = check_set(args.external, "auto", args.check_records, spec)
        try:
            quantize_int8(fp32, out, calibration[:2], check[:2])
        except UserError as exc:
            print(f"int8 of {[str(m) for m in members]}: {exc}", file=sys.stderr)
            return None
    return out


def onnx_oof(run: Path, args, work: Path, int8: bool) -> tuple[pd.Series, list[dict]]:
    """Each fold's model exported (int8: quantized) and run by onnxruntime on its own held-out records: the
    out-of-fold ages (NaN for a fold whose int8 was refused) and, per fold, the int8 scope kept."""
    folds = pd.read_csv(run / FOLDS, dtype={"id": str}).set_index("id")["fold"]
    members = run_folds(run)
    reader = InputSettings.from_options(training_input(members[0][0])).open()
    position = {rid: i for i, rid in enumerate(reader.ids)}
    ages, notes = pd.Series(np.nan, index=folds.index), []
    for k, models in sorted(members.items()):
        path = export(models, work, args, int8)
        if path is None:
            notes.append({"fold": k, "scope": "refused"})
            continue
        model = OnnxModel.load(path, args.threads or 0)
        meta = json.loads(model.session.get_modelmeta().custom_metadata_map[METADATA_KEY])
        notes.append({"fold": k, "scope": meta.get("int8_scope", "fp32")})
        ids = folds.index[folds == k]
        x = []
        for rid in ids:
            try:
                x.append(prepare(reader.load(position[rid]), model.input_spec))
            except RecordError as exc:
                raise SystemExit(f"{rid}: {exc}") from exc
        ages[ids] = model.ages(np.stack(x))
    return ages, notes


def external_mae(onnx: Path, args) -> float:
    reader = open_reader(args.external)
    model = OnnxModel.load(onnx, args.threads or 0)
    truth = pd.to_numeric(reader.table["age"], errors="coerce").to_numpy(float)
    x, keep = [], []
    for i in range(len(reader)):
        try:
            x.append(prepare(reader.load(i), model.input_spec))
            keep.append(i)
        except RecordError:
            continue
    return float(np.nanmean(np.abs(model.ages(np.stack(x)) - truth[keep])))


def speed(onnx: Path, args, work: Path) -> dict:
    """onnxruntime ECG/s of ``onnx``: the model alone and end to end on ``--size`` ECGs, and their ratio."""
    data = hdf5(work, args.size, Path(args.ptbxl))
    whole = end_to_end(data, onnx, work, args.workers, args.threads)
    alone = model_only(onnx, data, args.size, 64, args.threads)
    return {"model_ecg_per_s": alone["ecg_per_s"], "end_to_end_ecg_per_s": whole["ecg_per_s"],
            "ratio": whole["ecg_per_s"] / alone["ecg_per_s"]}


def teacher_pass(run: Path) -> float:
    return float(json.loads((run / MANIFEST).read_text()).get("teacher_seconds") or 0.0)


def networks(args) -> dict[str, list[Path]]:
    """The single-network points: name → their runs (seeds)."""
    out = {"one_network": args.alone, "distilled": args.distilled}
    if args.baseline:
        out["baseline_network"] = args.baseline
    return {name: [Path(r) for r in runs] for name, runs in out.items()}


def points(args, work: Path) -> dict:
    teacher = Path(args.teacher)
    reference = oof_ages(teacher)
    truth = reference["age"]
    k = len(run_folds(teacher))
    singles = networks(args)
    teacher_gflop = [gflop(load_bundle(m, mode="adult")) for m in run_members(teacher)]
    exports = {"ensemble_15": export(run_members(teacher), work, args),
               "fold_three": export(run_folds(teacher)[0], work, args)}
    errors = {"fold_three": (reference["predicted_age"] - truth).abs()}
    costs = {"ensemble_15": (sum(teacher_gflop), training_seconds(teacher)),
             "fold_three": (sum(teacher_gflop) / k, training_seconds(teacher) / k)}
    scopes = {}
    for name, runs in singles.items():
        first = run_folds(runs[0])[0]
        errors[name] = seed_errors([oof_ages(r)["predicted_age"] for r in runs], truth)
        costs[name] = (gflop(load_bundle(first[0], mode="adult")),  # + the teacher's pass (and training), if any
                       np.mean([training_seconds(r) + teacher_pass(r) for r in runs]) / k)
        exports[name] = export(first, work, args)
        if name == "one_network":  # the untaught twin: its fp32 and int8 are the distilled network's
            continue
        exports[f"{name}_int8"] = export(first, work, args, int8=True)
        for kind, int8 in (("onnx_fp32", False), ("int8", True)):
            found = [onnx_oof(r, args, work, int8) for r in runs]
            errors[f"{name}_{kind}"] = seed_errors([a for a, _ in found], truth)
            costs[f"{name}_{kind}"] = costs[name]
            if int8:
                scopes[f"{name}_{kind}"] = [n for _, notes in found for n in notes]
    timed = ("one_network",) if args.quick else tuple(exports)
    speeds = {name: speed(path, args, work) for name, path in exports.items() if path is not None and name in timed}
    out = summary(pd.DataFrame(errors), costs, speeds, scopes, patients_of(args.ptbxl))
    out["ensemble_15"]["external_mae"] = external_mae(exports["ensemble_15"], args)
    out["teacher_train_seconds"] = training_seconds(teacher)
    return out


def summary(errors: pd.DataFrame, costs: dict, speeds: dict, scopes: dict, patients: pd.Series | None) -> dict:
    """Per point: its costs and speeds, and — where it has out-of-fold ages — its MAE paired with the teacher,
    the distilled ones with the untaught network, an int8 one with its fp32 export (whole ``patients`` resampled)."""
    out = {}
    for name in ["ensemble_15", *errors.columns]:
        gf, train = costs[name]
        entry = {"gflop_per_ecg": gf, "train_seconds_per_model": train,
                 **speeds.get(name, speeds.get(name.removesuffix("_onnx_fp32"), {}))}  # an export: its network's
        if name in errors:
            entry["oof_mae"] = float(errors[name].mean())
            entry["records"] = int(errors[name].notna().sum())
            if entry["records"] and name != "fold_three":
                entry["vs_teacher"] = paired(errors, name, "fold_three", N_BOOT, patients)
                if name.startswith("distilled"):
                    entry["vs_alone"] = paired(errors, name, "one_network", N_BOOT, patients)
                if name.endswith("_int8"):
                    entry["vs_fp32"] = paired(errors, name, name.replace("_int8", "_onnx_fp32"), N_BOOT,
                                             patients)
            if name in scopes:
                entry["scopes"] = scopes[name]  # per fold and seed: the int8 scope kept, or "refused"
        out[name] = entry
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="the K-fold teacher run (the modern defaults)")
    p.add_argument("--distilled", nargs="+", required=True, help="the distilled runs (seeds), on the same folds")
    p.add_argument("--alone", nargs="+", required=True, help="the same network without a teacher (seeds)")
    p.add_argument("--baseline", nargs="*", default=[],
                   help="another single network's runs (seeds) on the same folds, e.g. bench/accuracy.py's baseline "
                        "row (BaselineNet): one more point, with its int8")
    p.add_argument("--external", default=str(SHARED / "cinc2021"))
    p.add_argument("--ptbxl", default=str(SHARED / "ptbxl"))
    p.add_argument("--size", type=int, default=2000, help="ECGs of the end-to-end measurement")
    p.add_argument("--threads", type=int, default=None,
                   help="onnxruntime's threads, alone and end to end (default: its own choice alone, "
                        "test_interface's end to end)")
    p.add_argument("--workers", type=int, default=1, help="preprocessing workers end to end")
    p.add_argument("--check_records", type=int, default=100)
    p.add_argument("--calibration_records", type=int, default=64)
    p.add_argument("--work", default="bench/results/frontier")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 64 ECGs end to end, the one network's speeds only, 8 calibration records")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.calibration_records, args.check_records = 64, 8, 4
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result = {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "threads": args.threads or "onnxruntime's default",
              "workers": args.workers, "points": points(args, work)}
    write_json(work / "frontier.json", result)
    for name, entry in result["points"].items():
        if isinstance(entry, dict):
            print(f"{name}: {json.dumps(entry)}", file=sys.stderr)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

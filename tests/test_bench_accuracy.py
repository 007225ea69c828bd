"""The accuracy benchmark's quick mode: every default row through K-fold training on the shared folds, the
external test and the paired comparison with the reference row, end to end."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
from conftest import ROOT


def test_accuracy_benchmark_quick(ptbxl, cinc, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "bench" / "accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--quick", "--work", str(tmp_path), "--ptbxl", str(ptbxl), "--external", str(cinc)])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == json.loads(json.dumps(result))
    rows = last["rows"]
    assert set(rows) == {"maic", "lima", "modern", "baseline"}
    for name, entry in rows.items():
        assert entry["external_mae"] > 0 and entry["gflop_per_ecg"] > 0 and entry["infer_ecg_per_s"] > 0, name
        assert entry["folds"] == 2 and entry["seeds"] == 1 and entry["epochs"] == 1 and entry["cv_mae"] > 0
        assert entry["ensemble_gflop_per_ecg"] == 2 * entry["gflop_per_ecg"]
    assert "vs_reference" not in rows["modern"]
    # the paired difference is exactly the difference of the two MAEs over the records both rows predicted
    saved = {row: json.loads(next((tmp_path / "results").glob(f"{row}_s1000_*.json")).read_text())
             for row in ("baseline", "modern")}
    ids = sorted(saved["modern"]["oof"])
    expected = np.mean([saved["baseline"]["oof"][i] - saved["modern"]["oof"][i] for i in ids])
    paired = rows["baseline"]["vs_reference"]["cv"]
    assert paired["n"] == 349 and abs(paired["diff"] - expected) < 1e-12
    assert paired["ci95"][0] <= paired["diff"] <= paired["ci95"][1]
    assert abs(rows["baseline"]["cv_mae"] - rows["modern"]["cv_mae"] - expected) < 1e-9


def test_seed_ensemble_averages_the_seeds_predictions():
    """Two seeds whose errors cancel: their ensemble is exact where each alone is 2 years off."""
    import pandas as pd

    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "bench" / "accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    truth = {"a": 50.0, "b": 70.0}
    seeds = [{"oof_age": {"a": 52.0, "b": 68.0}, "oof_truth": truth, "external": {"x": 41.0, "y": 60.0},
              "gflop_per_ecg": 0.2, "members": 5},
             {"oof_age": {"a": 48.0, "b": 72.0}, "oof_truth": truth, "external": {"x": 39.0, "y": 62.0},
              "gflop_per_ecg": 0.2, "members": 5}]
    result = bench.seed_ensemble(seeds, pd.Series({"x": 40.0, "y": 64.0, "z": 30.0}))
    assert result["cv_mae"] == 0.0 and result["external_mae"] == 1.5 and abs(result["gflop_per_ecg"] - 2.0) < 1e-12

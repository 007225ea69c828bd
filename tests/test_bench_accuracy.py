"""The accuracy benchmark's quick mode: every recipe through K-fold training and the external test, end to end."""
from __future__ import annotations

import importlib.util
import json

from conftest import ROOT


def test_accuracy_benchmark_quick(ptbxl, cinc, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "bench" / "accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--quick", "--work", str(tmp_path), "--ptbxl", str(ptbxl), "--external", str(cinc)])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == json.loads(json.dumps(result))
    recipes = last["recipes"]
    assert set(recipes) == {"maic", "lima", "modern", "modern_ensemble"}
    for name, entry in recipes.items():
        assert entry["external_mae_mean"] > 0 and entry["gflop_per_ecg"] > 0 and entry["infer_ecg_per_s"] > 0, name
        assert entry["folds"] == 2 and entry["seeds"] == 1 and entry["epochs"] == 1
    assert recipes["modern_ensemble"]["gflop_per_ecg"] == 2 * recipes["modern"]["gflop_per_ecg"]
    assert recipes["maic"]["cv_mae_mean"] > 0 and recipes["modern_ensemble"]["cv_mae_mean"] is None

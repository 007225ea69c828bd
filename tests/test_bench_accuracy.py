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

"""The accuracy benchmark's quick mode: every default row through K-fold training on the shared folds, the
external test and the paired comparison with the reference row, end to end."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import ROOT

from engine.train.recipes import RECIPES
from utils import metrics


def load_bench():
    """bench/accuracy.py as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "bench" / "accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_accuracy_benchmark_quick(ptbxl, cinc, tmp_path, capsys):
    bench = load_bench()
    doc = tmp_path / "doc.md"
    marker = "t: written by bench/accuracy.py -->"
    doc.write_text(f"# figures\n<!-- {marker}\nold\n<!-- /{marker}\n")
    result = bench.main(["--quick", "--work", str(tmp_path), "--ptbxl", str(ptbxl), "--external", str(cinc),
                         "--blends", "modern+baseline", "--write", f"{doc}:t"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == json.loads(json.dumps(result))
    rows = last["rows"]
    assert set(rows) == {"maic", "lima", "modern", "baseline"}
    for name, entry in rows.items():
        assert entry["external_mae"] > 0 and entry["gflop_per_ecg"] > 0 and entry["infer_ecg_per_s"] > 0, name
        assert entry["folds"] == 2 and entry["seeds"] == 1 and entry["epochs"] == 1 and entry["cv_mae"] > 0
        if name != "modern":
            assert entry["ensemble_gflop_per_ecg"] == pytest.approx(2 * entry["gflop_per_ecg"])
    # the modern recipe's folds each hold its ECGEfficientNet and two BaselineNet partners (the baseline row's network)
    assert (RECIPES["modern"].partner, RECIPES["modern"].partners) == ("BaselineNet", 2)
    assert rows["modern"]["ensemble_gflop_per_ecg"] == pytest.approx(
        2 * (rows["modern"]["gflop_per_ecg"] + 2 * rows["baseline"]["gflop_per_ecg"]))
    assert "vs_reference" not in rows["modern"]
    # the paired difference is exactly the difference of the two MAEs over the records both rows predicted
    saved = {row: json.loads(next((tmp_path / "results").glob(f"{row}_s1000_*.json")).read_text())
             for row in ("baseline", "modern")}
    ids = sorted(saved["modern"]["oof"])
    expected = np.mean([saved["baseline"]["oof"][i] - saved["modern"]["oof"][i] for i in ids])
    paired = rows["baseline"]["vs_reference"]["cv"]
    assert paired["n"] == 349 and abs(paired["diff"] - expected) < 1e-12
    assert paired["ci95"][0] <= paired["diff"] <= paired["ci95"][1]
    # ... its interval resamples PTB-XL's patients (336 for these 349 records), as the folds deal them
    patients = bench.patients_of(str(ptbxl))
    diffs = [saved["baseline"]["oof"][i] - saved["modern"]["oof"][i] for i in ids]
    assert paired["resampled"] == "patients" and patients.reindex(ids).nunique() == 336
    assert paired["ci95"] == pytest.approx(metrics.mean_interval(diffs, seed=0, clusters=patients.reindex(ids)),
                                           abs=1e-9)
    assert rows["baseline"]["vs_reference"]["external"]["resampled"] == "records"
    assert abs(rows["baseline"]["cv_mae"] - rows["modern"]["cv_mae"] - expected) < 1e-9
    # the blend: every model of both runs weighted equally (modern's three models per fold against baseline's one)
    blend = last["blends"]["modern+baseline"]
    weight = saved["modern"]["members"] // 2
    assert weight == 3 and saved["baseline"]["members"] == 2
    ages = {i: (weight * saved["modern"]["oof_age"][i] + saved["baseline"]["oof_age"][i]) / (weight + 1) for i in ids}
    assert blend["cv_mae"] == pytest.approx(np.mean([abs(ages[i] - saved["modern"]["oof_truth"][i]) for i in ids]))
    assert blend["members"] == 2 * (weight + 1) and set(blend["vs"]) == {"modern", "baseline"}
    assert blend["vs"]["baseline"]["cv"]["diff"] == pytest.approx(blend["cv_mae"] - rows["baseline"]["cv_mae"])
    # --write: the rows' table in the document's block, its figures the result's, the command named
    table = {line.split(" | ")[0].strip("| "): line for line in doc.read_text().splitlines() if line.startswith("| ")}
    assert "\nold\n" not in doc.read_text() and "`python bench/accuracy.py --quick" in doc.read_text()
    assert "paired over patients out of fold, over records externally:" in doc.read_text()
    assert set(rows) <= set(table) and f"| {rows['maic']['cv_mae']:.2f} |" in table["maic"]
    assert f"| {paired['diff']:+.2f} [{paired['ci95'][0]:+.2f}, " in table["baseline"] and "| — |" in table["modern"]


def test_seed_ensemble_averages_the_seeds_predictions():
    """Two seeds whose errors cancel: their ensemble is exact where each alone is 2 years off."""
    import pandas as pd

    bench = load_bench()
    truth = {"a": 50.0, "b": 70.0}
    seeds = [{"oof_age": {"a": 52.0, "b": 68.0}, "oof_truth": truth, "external": {"x": 41.0, "y": 60.0},
              "gflop_per_ecg": 0.2, "members": 5},
             {"oof_age": {"a": 48.0, "b": 72.0}, "oof_truth": truth, "external": {"x": 39.0, "y": 62.0},
              "gflop_per_ecg": 0.2, "members": 5}]
    result = bench.seed_ensemble(seeds, pd.Series({"x": 40.0, "y": 64.0, "z": 30.0}))
    assert result["cv_mae"] == 0.0 and result["external_mae"] == 1.5 and abs(result["gflop_per_ecg"] - 2.0) < 1e-12


def test_a_seeds_ensemble_is_paired_with_the_reference_seed():
    """Two seeds 2 years off in opposite directions: their ensemble is exact, 2 years better than a reference
    seed that is 2 years off everywhere — out of fold and on the external records."""
    import pandas as pd

    bench = load_bench()
    truth = {"a": 50.0, "b": 70.0}
    seeds = [{"oof_age": {"a": 52.0, "b": 72.0}, "oof_truth": truth, "external": {"x": 42.0}},
             {"oof_age": {"a": 48.0, "b": 68.0}, "oof_truth": truth, "external": {"x": 38.0}}]
    reference = {"oof_age": {"a": 52.0, "b": 68.0}, "oof_truth": truth, "external": {"x": 42.0}}
    result = bench.ensemble_vs_one(seeds, [reference], pd.Series({"x": 40.0}), n_boot=200, patients=None)
    assert result["cv"] == {"diff": -2.0, "ci95": None, "n": 2, "resampled": "records"}  # too few for an interval
    assert result["external"]["diff"] == -2.0 and result["external"]["n"] == 1


def test_seed_curve_pairs_each_ensemble_with_the_first_seed():
    """Three seeds: the curve holds the ensembles of 1, 2 and 3 seeds, each paired with seed one alone on the same
    records (the first entry's gain is exactly 0), and its compute grows with the members."""
    import pandas as pd

    bench = load_bench()
    truth = {"a": 50.0, "b": 70.0, "c": 30.0}
    ages = [{"a": 54.0, "b": 70.0, "c": 33.0}, {"a": 46.0, "b": 72.0, "c": 30.0}, {"a": 50.0, "b": 68.0, "c": 30.0}]
    seeds = [{"oof_age": a, "oof_truth": truth, "external": {"x": 40.0}, "gflop_per_ecg": 0.1, "members": 5}
             for a in ages]
    curve = bench.seed_curve(seeds, pd.Series({"x": 41.0}), n_boot=200, patients=None)
    assert [c["seeds"] for c in curve] == [1, 2, 3]
    assert curve[0]["vs_one_seed"]["diff"] == 0.0 and curve[0]["cv_mae"] == (4 + 0 + 3) / 3
    assert curve[1]["cv_mae"] == (0 + 1 + 1.5) / 3 and curve[1]["vs_one_seed"]["diff"] == (2.5 - 7) / 3
    assert [round(c["gflop_per_ecg"], 9) for c in curve] == [0.5, 1.0, 1.5] and curve[2]["external_mae"] == 1.0
    # each further seed against the seeds before it, record by record: the third seed's own gain
    assert "vs_one_fewer" not in curve[0] and curve[1]["vs_one_fewer"]["cv"]["diff"] == (2.5 - 7) / 3
    third = ((0 - 0) + (0 - 1) + (1 - 1.5)) / 3  # per record: |mean of 3 − truth| − |mean of 2 − truth|
    assert curve[2]["vs_one_fewer"]["cv"]["diff"] == pytest.approx(third)
    assert curve[2]["vs_one_fewer"]["external"] == {"diff": 0.0, "ci95": None, "n": 1, "resampled": "records"}
    entry = {"seeds": 3, "per_seed": {"cv_mae": [1.0, 2.0, 3.0], "external_mae": [1.0, 1.0, 1.0]},
             "ensemble_gflop_per_ecg": 0.5, "train_seconds": 10.0, "seed_curve": curve}
    table = bench.rows_table({"machine": "m", "rows": {"r": entry}}, "cmd").splitlines()
    assert f"| r, its first 3 seeds' models together, against its first 2 | — | {curve[2]['cv_mae']:.2f} | " \
           f"{third:+.2f} [" in "\n".join(table) and len(table) == 4 + 1 + 2


def test_a_blend_weighs_every_model_equally_and_is_paired_with_its_rows():
    """Row A (2 models per fold) 3 years too old, row B (1 model per fold) 6 years too young: the blend of their
    three models per fold is exact; paired with each row over the records all of them have."""
    import pandas as pd

    bench = load_bench()
    truth = {"a": 50.0, "b": 70.0, "c": 30.0}
    a = [{"oof_age": {k: v + 3 for k, v in truth.items()}, "oof_truth": truth, "external": {"x": 43.0, "y": 63.0},
          "gflop_per_ecg": 0.2, "members": 10}]
    b = [{"oof_age": {k: v - 6 for k, v in truth.items() if k != "c"}, "oof_truth": truth,
          "external": {"x": 34.0, "y": 54.0}, "gflop_per_ecg": 0.1, "members": 5}]
    oof = pd.DataFrame({"A": {k: 3.0 for k in truth}, "B": {"a": 6.0, "b": 6.0}})
    external = pd.DataFrame({"A": {"x": 3.0, "y": 3.0}, "B": {"x": 6.0, "y": 6.0}})
    args = bench.parse(["--rows", "modern", "--blends", "modern+baseline", "--n_boot", "200"])
    assert args.blends == {"modern+baseline": ["modern", "baseline"]} and args.rows == ["modern", "baseline"]
    args.reference = "A"
    result = bench.blend({"A": a, "B": b}, pd.Series({"x": 40.0, "y": 60.0}), oof, external, None, args)
    assert result["cv_mae"] == 0.0 and result["external_mae"] == 0.0 and result["members"] == 15
    assert result["ensemble_gflop_per_ecg"] == pytest.approx(2.5)
    assert result["vs"]["A"]["cv"] == {"diff": -3.0, "ci95": None, "n": 2, "resampled": "records"}  # c: B never saw it
    assert result["vs"]["B"]["external"]["diff"] == -6.0 and set(result["vs"]) == {"A", "B"}
    with pytest.raises(SystemExit):
        bench.parse(["--blends", "modern+modern"])


def test_a_paired_difference_resamples_whole_patients():
    """40 patients with 3 records each, whose difference between two rows is the patient's (a person's ECGs err
    alike): resampled record by record the interval is too narrow; by patient it is the interval of the patients'
    40 independent differences. A record with no patient is a patient of its own."""
    import pandas as pd

    bench = load_bench()
    rng = np.random.default_rng(11)
    ids = [f"r{k}" for k in range(120)]
    reference = pd.Series(rng.uniform(0, 20, 120), index=ids)
    errors = pd.DataFrame({"ref": reference, "row": reference + np.repeat(rng.normal(-0.5, 2, 40), 3)})
    patients = pd.Series(np.repeat([f"p{k}" for k in range(40)], 3), index=ids)
    by_record = bench.paired(errors, "row", "ref", 2000)
    by_patient = bench.paired(errors, "row", "ref", 2000, patients)
    assert by_record["diff"] == by_patient["diff"] and by_patient["resampled"] == "patients"
    assert by_patient["ci95"][1] - by_patient["ci95"][0] > 1.5 * (by_record["ci95"][1] - by_record["ci95"][0])
    assert by_patient["ci95"] == metrics.mean_interval((errors["row"] - errors["ref"]).to_numpy(), seed=0,
                                                       clusters=patients.tolist())
    alone = bench.paired(errors, "row", "ref", 2000, pd.Series([f"p{k:03d}" for k in range(120)], index=ids))
    assert alone["ci95"] == pytest.approx(by_record["ci95"], abs=1e-12)  # every record its own patient
    unnamed = bench.paired(errors, "row", "ref", 2000, pd.Series(dtype=object))  # no record's patient known
    assert unnamed["ci95"] == pytest.approx(by_record["ci95"], abs=1e-12)


def test_a_stored_result_belongs_to_one_experiment(tmp_path):
    """The hash that ties a stored row to its run: the same for the same manifest wherever the run lies and however
    far it got, different when an option, the data, the split or the members differ."""
    bench = load_bench()
    manifest = {"format": "ecg-age-run/1", "options": {"seeds": 1, "nepoch": 40}, "data": {"sha256": "a"},
                "split": {"sha256": "b"}, "members": ["fold_0", "fold_1"], "finished": {}, "complete": False}

    def hashed(name, **changes):
        run = tmp_path / name
        run.mkdir()
        (run / "run.json").write_text(json.dumps({**manifest, **changes}))
        return bench.experiment_of(run)

    first = hashed("a")
    assert hashed("b", finished={"fold_0": "best.pt"}, complete=True) == first
    changed = [hashed("c", options={"seeds": 2, "nepoch": 40}), hashed("d", data={"sha256": "x"}),
               hashed("e", split={"sha256": "y"}), hashed("f", members=["fold_0"])]
    assert len({first, *changed}) == 5

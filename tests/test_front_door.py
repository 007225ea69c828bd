"""Issue 36: a newcomer's path — `ecg-age predict` from a folder of ECGs (with ages, or without) to ages, intervals,
explanations and a page, torch-free with an ONNX model; the shipped model; no silent assumptions about rates,
formats or where the ages are; a training run that says its plan."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, TINY_MODERN, cli

import train_interface
from ecg_age.cli import main as ecg_age_main
from models.files import SHIPPED_MODEL

RECORDS = ["E07500", "E07501", "E07502", "E07503", "E07504", "E07505"]


@pytest.fixture(scope="module")
def records(cinc, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("front") / "ecgs"
    folder.mkdir()
    for name in RECORDS:
        for path in cinc.glob(f"{name}.*"):
            shutil.copy(path, folder / path.name)
    return folder


NO_TORCH = ("import importlib.abc, sys\n"
            "class NoTorch(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'captum'):\n"
            "            raise ImportError(name + ' is not installed here')\n"
            "sys.meta_path.insert(0, NoTorch())\n")


def test_predict_writes_ages_intervals_explanations_and_a_page_without_torch(onnx_model, records, tmp_path):
    """The whole front door on an ONNX file in a process where torch and captum cannot be imported: the table with
    intervals, the explanations (occlusion by the model's own forward passes) and the page comparing with the ages
    the WFDB headers carry."""
    out = tmp_path / "out"
    code = NO_TORCH + (
        "from ecg_age.cli import main\n"
        f"code = main(['predict', {str(records)!r}, '--out', {str(out)!r}, '--weights', {str(onnx_model)!r},"
        " '--explain_records', '2', '--cache', 'off', '--quiet'])\n"
        "assert code == 0, code\n"
        "assert not [n for n in sys.modules if n.split('.')[0] in ('torch', 'captum')]\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(out / "predicted_age.csv", dtype={"ids": str})
    assert table["ids"].tolist() == RECORDS and (table["lower"] <= table["predicted_age"]).all()
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == len(RECORDS) and report["interval"]["level"] == 0.9 and "mae" in report
    explained = json.loads((out / "explanations" / "explanations.json").read_text())
    assert list(explained["done"]) == RECORDS[:2] and explained["made_by"]["ages"]
    page = (out / "report.html").read_text()
    assert page.count('<article class="card"') == 2 and "predicted ages against the ages on record" in page


def test_predict_on_ecgs_without_ages_and_the_shipped_model_by_default(records, tmp_path, capsys):
    """.npy files carry no age: the page shows ages and intervals without a gap. Without --weights the shipped
    model predicts, and says so."""
    folder = tmp_path / "npy"
    folder.mkdir()
    from dataloader.formats import open_reader

    reader = open_reader(records)
    for i in range(3):
        np.save(folder / f"{reader.ids[i]}.npy", reader.load(i).signal)
    out = tmp_path / "out"
    code = ecg_age_main(["predict", str(folder), "--out", str(out), "--fs", "500", "--explain_records", "0",
                         "--cache", "off"])
    err = capsys.readouterr().err
    assert code == 0 and "using the model that ships with the project" in err
    report = json.loads((out / "report.json").read_text())
    assert (report["n"], report["n_predictions"]) == (0, 3) and "mae" not in report
    assert not (out / "explanations").exists()  # --explain_records 0: none asked for, no folder of them
    html = (out / "report.html").read_text()
    assert "no ages on record" in html and "Error on ECGs it never saw" in html  # the shipped model's card
    assert json.loads((out / "predicted_age.csv.json").read_text())["card"]["trained_on"].startswith("PTB-XL")


def test_predict_on_a_ptbxl_records_folder_points_to_its_ages(ptbxl, tmp_path, capsys):
    """PTB-XL's records100/ given alone carries no ages: the page is made, and a note names the root whose database
    holds them (as training does)."""
    root = tmp_path / "ptbxl"
    (root / "records100" / "00000").mkdir(parents=True)
    shutil.copy(ptbxl / "ptbxl_database.csv", root)
    for path in sorted((ptbxl / "records100" / "00000").glob("0000[1-3]_lr.*")):
        shutil.copy(path, root / "records100" / "00000" / path.name)
    code = ecg_age_main(["predict", str(root / "records100"), "--out", str(tmp_path / "out"), "--explain_records",
                         "0"])
    err = capsys.readouterr().err
    assert code == 0 and json.loads((tmp_path / "out" / "report.json").read_text())["n_predictions"] == 3
    assert f"the ages (and the folds) are in {root.resolve() / 'ptbxl_database.csv'}: give {root.resolve()}" in err


def test_the_shipped_model_is_torch_free_and_gives_its_recorded_ages(cinc, tmp_path):
    """models/shipped/: the ONNX file loads without torch and predicts the CinC records as recorded when it was
    built (within 1e-4 years)."""
    recorded = pd.read_csv(SHIPPED_MODEL.with_suffix(".cinc2021.csv"), dtype={"ids": str})
    out = tmp_path / "p.csv"
    code = NO_TORCH + (
        "import test_interface\n"
        f"assert test_interface.entry(['--input', {str(cinc)!r}, '--weights', {str(SHIPPED_MODEL)!r}, '--output',"
        f" {str(out)!r}, '--on_bad', 'skip', '--cache', 'off', '--quiet']) == 0\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    now = pd.read_csv(out, dtype={"ids": str})
    assert now["ids"].tolist() == recorded["ids"].tolist()
    np.testing.assert_allclose(now["predicted_age"], recorded["predicted_age"], atol=1e-4, rtol=0)


def test_occlusion_by_forward_passes_equals_captums(modern_cv_run, onnx_model, onnx_cpu_model, cinc, tmp_path):
    """The forward-pass occlusion the ONNX path explains with is captum's Occlusion (the PyTorch path's): the same
    lead shares from the same checkpoints, and from their ONNX export (the whole preprocessing on the CPU) within its
    export tolerance. A file whose graph runs the band-pass (the default) is occluded on its own input, the
    recorded window: each half-second of a lead flattened before the graph filters it."""
    import torch

    from dataloader.checks import prepare
    from dataloader.formats import open_reader
    from engine.deploy.onnx_model import OnnxModel
    from engine.predict.explain import explain_by_occlusion, explain_record
    from engine.predict.predictor import OnnxPredictor
    from engine.predict.torch_predictor import TorchPredictor
    from engine.runs import run_members

    _, run = modern_cv_run
    torch_models = TorchPredictor.load(run_members(run))
    record = open_reader(cinc).load(3)
    captum = explain_record(torch_models.bundles, record, 0.5, "occlusion", torch.device("cpu"))
    ours = explain_by_occlusion(torch_models, record, 0.5)
    np.testing.assert_allclose(ours.shares, captum.shares, atol=1e-6)
    np.testing.assert_allclose(ours.attribution, captum.attribution, atol=1e-5 * captum.attribution.max())
    exported = explain_by_occlusion(OnnxPredictor(OnnxModel.load(onnx_cpu_model)), record, 0.5)
    np.testing.assert_allclose(exported.shares, captum.shares, atol=2e-3)
    graph = OnnxModel.load(onnx_model)
    assert graph.graph_preprocessing
    in_graph = explain_by_occlusion(OnnxPredictor(graph), record, 0.5)
    window = prepare(record, graph.input_spec)  # the definition, written out: zeroed half-seconds of the window
    width = int(round(0.5 * graph.preprocessing.fs))
    base = graph.member_ages(window[None], np.full(1, 0.5, np.float32))[0]
    change = np.zeros((len(base), 12))
    for lead in range(12):
        for start in range(0, window.shape[1] - width + 1, width):
            occluded = window.copy()
            occluded[lead, start:start + width] = 0.0
            change[:, lead] += np.abs(base - graph.member_ages(occluded[None], np.full(1, 0.5, np.float32))[0])
    expected = (change / change.sum(axis=1, keepdims=True)).mean(axis=0)
    np.testing.assert_allclose(in_graph.shares, expected / expected.sum(), atol=1e-5)
    import ecg_age  # the API explains an ONNX file the same way

    shares = ecg_age.load(onnx_model).explain(record.signal, record.fs, sex=None)
    np.testing.assert_allclose(list(shares.values()), in_graph.shares, atol=1e-6)


def test_no_silent_assumptions(cinc, ptbxl, records, onnx_model, tmp_path, capsys):
    """A default rate is announced; --fs where the format states its rate is an error; a folder of two formats is
    refused, never read in part; a PTB-XL records folder points to the root with the ages."""
    from dataloader.formats import open_reader
    from utils.errors import UserError

    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "a.npy", open_reader(records).load(0).signal)
    import logging

    from utils.cli import configure_logging

    configure_logging(sys.stderr)
    open_reader(folder)
    assert "read at 500 Hz (the MAIC rate) — give --fs if yours differ" in capsys.readouterr().err
    with pytest.raises(UserError, match="state their own sampling rate"):
        open_reader(records, fs=250)
    for path in cinc.glob("E07500.*"):
        shutil.copy(path, folder / path.name)
    with pytest.raises(UserError, match=r"holds records of several formats \(1 npy, 1 wfdb file\(s\)\)"):
        open_reader(folder)
    logging.getLogger().handlers.clear()
    code = cli(train_interface, [*TINY_MODERN, "--input", str(ptbxl / "records100"), "--folds", "5"], tmp_path,
               quiet=False)
    assert code == 2 and f"give --input {ptbxl.resolve()}" in capsys.readouterr().err


def test_training_says_its_plan_and_the_quick_preset(ptbxl, tmp_path, capsys):
    import options

    quick = options.parse_train(["--recipe", "modern", "--folds", "5", "--preset", "quick"])
    assert (quick.partner, quick.seeds, quick.nepoch) == ("none", 1, 20)
    assert options.parse_train(["--recipe", "modern", "--folds", "5", "--preset", "quick", "--nepoch", "7"]).nepoch == 7
    # with nothing named, quick is the modern recipe's ECGEfficientNet, not the MAIC ResDenseNet (87 GFLOP per ECG)
    plain = options.parse_train(["--input", str(ptbxl), "--folds", "5", "--preset", "quick"])
    assert (plain.arch, plain.recipe, plain.partner, plain.nepoch) == ("ECGEfficientNet", "modern", "none", 20)
    assert options.parse_train(["--input", str(ptbxl), "--folds", "5"]).arch == "ResDenseNet"  # the seed's default
    lima = options.parse_train(["--arch", "ResNet1d", "--input", str(ptbxl), "--folds", "5", "--preset", "quick"])
    assert (lima.recipe, lima.nepoch) == ("lima", 20)  # --arch brings its own recipe
    maic = options.parse_train(["--recipe", "maic", "--input", str(ptbxl), "--folds", "5", "--preset", "quick"])
    assert (maic.arch, maic.recipe, maic.nepoch) == ("ResDenseNet", "maic", 20)
    argv = [*TINY_MODERN, "--input", str(ptbxl), "--ptbxl_rate", "100", "--folds", "2", "--nepoch", "1",
            "--max_steps_per_epoch", "2", "--env", "plan"]
    assert cli(train_interface, argv, tmp_path, quiet=True) == 0
    out = capsys.readouterr().out
    assert "plan: 2 network(s) — 2 × ECGEfficientNet (1 epochs) — on" in out
    assert "network 2/2: fold_1 (ECGEfficientNet, 1 epochs)" in out and "the whole run (2 epochs) should take" in out


def test_a_resumed_run_estimates_what_is_left(caplog):
    """Resumed at network 2 of 3, epoch 4 of 10: the estimate counts that network's 7 epochs and the last one's 5."""
    import logging

    from engine.train.plan import Plan

    plan = Plan([("fold_0", "BaselineNet", 10), ("fold_1", "BaselineNet", 10), ("fold_2", "BaselineNet", 5)], 100)
    assert plan.epochs_left(1) == 25
    with caplog.at_level(logging.INFO, logger="train"):
        plan.starting("fold_1")
        plan.epoch_done(4, 2.0)
        plan.epoch_done(5, 2.0)  # said once
    said = [r.getMessage() for r in caplog.records if "should take" in r.getMessage()]
    assert said == ["the first epoch took 2.0 s: the rest of the run (12 epochs) should take about 24 s if every "
                    "epoch costs as much"]


def test_a_published_recipe_on_your_own_records_names_the_project_recipes():
    """The MAIC recipe (train_interface's default when nothing is named) or Lima's on --input records: a note names
    this project's recipes; on the MAIC challenge's own folders, and for this project's recipes, nothing is said."""
    from engine.train.plan import recipe_note

    for recipe in ("maic", "lima"):
        note = recipe_note(recipe, "/data/my_ecgs")
        assert note.startswith(f"note: the {recipe} recipe reproduces a published system")
        assert "--recipe modern" in note and "--recipe baseline" in note and "--preset quick" in note
    assert recipe_note("maic", None) is None  # the challenge's folders (--data_root): the MAIC models, as meant
    assert recipe_note("modern", "/data/my_ecgs") is None and recipe_note("baseline", "/data/my_ecgs") is None


def test_the_command_dispatches_to_every_program(capsys):
    for command in ("train", "report", "export", "predict"):
        done = subprocess.run([sys.executable, "-m", "ecg_age", command, "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and "usage:" in done.stdout, (command, done.stderr[-500:])
    assert ecg_age_main([]) == 2 and "ecg-age {predict,train,report,export}" in capsys.readouterr().err

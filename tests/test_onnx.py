"""Deployment (issue 19): ONNX export of every architecture and of ensembles, checked on export; the onnxruntime
path of test_interface (same ages, intervals and outputs as PyTorch), --engine, hostile ONNX files, and the Python
API."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, TINY

import ecg_age
import export_interface
import options
import test_interface
from dataloader.checks import prepare
from dataloader.formats import open_reader
from engine.deploy import export
from engine.deploy.onnx_model import METADATA_KEY, OnnxModel
from engine.deploy.quantize import SCOPES
from engine.train.members import build_bundle
from models.preprocessing import in_graph
from models.registry import MODELS
from utils.errors import CheckpointError, RecordError

ARCH_OPTIONS = {"ECGEfficientNet": ["--width", "0.25"], **TINY}  # tiny widths; any other: its defaults


@pytest.fixture(scope="module")
def ptbxl_records(ptbxl):
    reader = open_reader(ptbxl, ptbxl_rate=500)
    return [reader.load(i) for i in range(3)]


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_every_architecture_exports_and_matches(arch, ptbxl_records, tmp_path):
    bundle = build_bundle(options.train_settings(options.parse_train(["--arch", arch, *ARCH_OPTIONS.get(arch, [])])))
    bundle.model.eval()
    full = np.stack([prepare(r, bundle.preprocessing) for r in ptbxl_records])  # scipy's whole preprocessing
    x = np.stack([prepare(r, export.graph_input([bundle])) for r in ptbxl_records])  # what the graph takes
    sex = np.array([1.0, 0.0, 0.5], np.float32)
    result = export.export_onnx([bundle], tmp_path / "m.onnx", x, sex)
    assert result["records"] == 3 and result["max_difference_years"] <= export.TOLERANCE_YEARS
    model = OnnxModel.load(tmp_path / "m.onnx")
    assert model.archs == [arch] and model.preprocessing == bundle.preprocessing
    assert model.graph_preprocessing == in_graph(bundle.preprocessing)
    assert model.input_spec == export.graph_input([bundle])
    with torch.no_grad():  # the network on scipy's inputs: the graph's band-pass and z-score equal them
        reference = bundle.head(bundle.model(torch.from_numpy(full))).double().numpy()
    np.testing.assert_allclose(model.ages(x, sex), reference, atol=1e-3)
    # a dynamic batch: one record, and more than the export saw
    np.testing.assert_allclose(model.ages(x[:1], sex[:1]), reference[:1], atol=1e-3)
    np.testing.assert_allclose(model.ages(np.concatenate([x, x]), np.concatenate([sex, sex])),
                               np.concatenate([reference, reference]), atol=1e-3)


def test_a_failed_check_writes_nothing(ptbxl_records, tmp_path, monkeypatch):
    bundle = build_bundle(options.train_settings(options.parse_train(["--arch", "BaselineNet"])))
    x = np.stack([prepare(r, bundle.preprocessing) for r in ptbxl_records])
    monkeypatch.setattr(export, "TOLERANCE_YEARS", -1.0)  # no difference can pass
    bundle.model.eval()
    with pytest.raises(Exception, match="does not reproduce the models"):
        export.export_onnx([bundle], tmp_path / "m.onnx", x, np.full(3, 0.5, np.float32))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def exported(onnx_model):
    """The shared 2-fold run's ONNX export (conftest: checked on 4 CinC records), read-only."""
    return onnx_model


def test_the_file_alone_is_enough(exported, modern_cv_run):
    import onnxruntime

    meta = json.loads(onnxruntime.InferenceSession(str(exported)).get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert meta["format"] == "ecg-age-onnx/1" and meta["version"] and len(meta["members"]) == 2
    member = meta["members"][0]
    assert member["arch"] == "ECGEfficientNet" and member["calibration"]["n"] > 0 and member["head"]["kind"]
    assert meta["preprocessing"]["fs"] == 500.0 and member["training"]["median_age"] > 0
    assert str(ROOT).encode() not in exported.read_bytes()  # the exporter's stack traces of the build machine: gone


@pytest.mark.parametrize("engine", ["onnx_file", "onnxruntime"])
def test_onnxruntime_predicts_what_pytorch_predicts(exported, modern_cv_run, cinc, tmp_path, engine):
    tmp, run = modern_cv_run
    common = ["--input", str(cinc), "--interval", "0.9", "--on_bad", "skip", "--cache_dir", str(tmp / "cache"),
              "--quiet"]
    assert test_interface.entry([*common, "--weights", str(run), "--output", str(tmp_path / "torch.csv")]) == 0
    weights = ["--weights", str(exported)] if engine == "onnx_file" else ["--weights", str(run), "--engine",
                                                                           "onnxruntime"]
    assert test_interface.entry([*common, *weights, "--output", str(tmp_path / "onnx.csv")]) == 0
    torch_out, onnx_out = (pd.read_csv(tmp_path / f"{n}.csv", dtype={"ids": str}) for n in ("torch", "onnx"))
    assert list(onnx_out.columns) == ["ids", "predicted_age", "lower", "upper"]
    assert onnx_out["ids"].tolist() == torch_out["ids"].tolist() and len(onnx_out) == 48
    for column in ("predicted_age", "lower", "upper"):
        np.testing.assert_allclose(onnx_out[column], torch_out[column], atol=1e-3)
    notes = json.loads((tmp_path / "onnx.csv.json").read_text())
    assert notes["engine"] == "onnxruntime"


def test_the_graph_runs_the_band_pass_and_a_cpu_preprocessed_file_still_predicts(exported, onnx_cpu_model,
                                                                                 modern_cv_run, cinc, tmp_path):
    """By default the export runs the modern recipe's band-pass and z-score in its graph (the CPU only resamples and
    cuts); --cpu_preprocessing writes a file as before, whose graph takes scipy's whole preprocessing. Both give
    the same ages."""
    tmp, _ = modern_cv_run
    old = onnx_cpu_model
    graph, cpu = OnnxModel.load(exported), OnnxModel.load(old)
    assert graph.graph_preprocessing and not cpu.graph_preprocessing
    assert graph.preprocessing == cpu.preprocessing == cpu.input_spec and graph.input_spec.bandpass is None
    common = ["--input", str(cinc), "--on_bad", "skip", "--cache_dir", str(tmp / "cache"), "--quiet"]
    for name, path in (("graph", exported), ("cpu", old)):
        assert test_interface.entry([*common, "--weights", str(path), "--output", str(tmp_path / f"{name}.csv")]) == 0
    ages = [pd.read_csv(tmp_path / f"{name}.csv")["predicted_age"] for name in ("graph", "cpu")]
    assert len(ages[0]) == 48 and np.abs(ages[0] - ages[1]).max() < 1e-3


def test_onnxruntime_engine_explains_with_its_checkpoints(modern_cv_run, cinc, tmp_path):
    """--engine onnxruntime with --explain and the default threads (the pass's worker beside one model thread):
    the explanations come from the checkpoints it was exported from, never from its temporary file, long gone."""
    tmp, run = modern_cv_run
    folder = tmp_path / "explained"
    assert test_interface.entry(["--input", str(cinc), "--weights", str(run), "--engine", "onnxruntime", "--on_bad",
                                 "skip", "--cache", "off", "--explain", str(folder), "--explain_records", "1",
                                 "--output", str(tmp_path / "p.csv"), "--quiet"]) == 0
    assert len(list(folder.glob("*.png"))) == 1 and len(pd.read_csv(tmp_path / "p.csv")) == 48


def test_a_second_session_of_the_same_file_for_other_threads(exported, tmp_path):
    """The explanations' session (every core, after the pass) gives the pass's ages; a file changed since it was
    loaded is refused, never run under the first file's metadata."""
    import onnx

    copy = tmp_path / "m.onnx"
    copy.write_bytes(exported.read_bytes())
    one = OnnxModel.load(copy, threads=1)
    every = one.with_threads(0)
    assert every is not one and (every.threads, one.threads) == (0, 1) and one.with_threads(1) is one
    x = np.random.default_rng(0).normal(size=(3, 12, one.preprocessing.length)).astype(np.float32)
    np.testing.assert_allclose(every.member_ages(x), one.member_ages(x), atol=1e-5)
    changed = onnx.load(str(exported))
    changed.doc_string = "another file, the same metadata"
    onnx.save(changed, str(copy))
    with pytest.raises(CheckpointError, match="changed while it was in use"):
        one.with_threads(2)


def test_onnxruntime_gets_small_batches_by_its_threads(exported, cinc, tmp_path, monkeypatch):
    """4 ECGs per thread, at least 8 (bench/onnx_batch.py): 48 records on one thread in calls of 8;
    --infer_batch_size overrides it; the ages do not depend on the batch. 0 threads (onnxruntime's own: every
    core) counts the usable cores."""
    from engine.deploy import onnx_model

    assert [onnx_model.batch_for(t) for t in (1, 2, 3, 16)] == [8, 8, 12, 64]
    monkeypatch.setattr(onnx_model, "usable_cores", lambda: 6)
    assert onnx_model.batch_for(0) == 24 and OnnxModel.load(exported, 0).batch == 24
    monkeypatch.undo()
    calls, run = [], OnnxModel.member_ages
    monkeypatch.setattr(OnnxModel, "member_ages", lambda self, x, sex=None: calls.append(len(x)) or run(self, x, sex))
    ages = {}
    for flags, expected in [(["--threads", "1"], 8), (["--infer_batch_size", "5"], 5)]:
        calls.clear()
        out = tmp_path / f"{len(ages)}.csv"
        assert test_interface.entry(["--input", str(cinc), "--weights", str(exported), "--on_bad", "skip",
                                     "--output", str(out), "--cache", "off", "--num_workers", "0", "--quiet",
                                     *flags]) == 0
        assert max(calls) == expected and sum(calls) == 48 and len(calls) == -(-48 // expected)
        ages[expected] = pd.read_csv(out)["predicted_age"].to_numpy()
    np.testing.assert_allclose(ages[8], ages[5], atol=1e-4)


def test_a_graph_that_preprocesses_gets_every_core_and_yields_them_to_the_workers(exported, onnx_cpu_model):
    """The streamed pass's threads: a file whose graph runs the band-pass gets every core, as one single-thread
    call per core in flight together (its workers only read, check and resample); a file that takes the whole
    preprocessing gets the cores the workers leave; with the cache on, every core. The loaded sessions follow the
    plan."""
    from engine.predict.job import PredictJob
    from engine.predict.load import load_predictor
    from utils.machine import model_threads, usable_cores

    def plan(*argv):
        job = PredictJob.from_options(vars(options.parse_test(["--input", "x", "--weights", str(exported), *argv])))
        return [(c.threads, c.spinning, c.workers, c.calls) for c in (job.onnx_config(), job.onnx_config(graph=True))]

    (cpu, graph), = [plan("--cache", "off", "--num_workers", "1")]
    assert cpu == (model_threads(None, 1), True, 1, 1) and graph == (1, False, 1, usable_cores())
    assert plan("--cache", "on") == [(0, True, 0, 1), (0, True, 0, 1)] and usable_cores() >= 1
    # --threads given: one call on them, whatever the graph
    assert plan("--cache", "off", "--num_workers", "1", "--threads", "2")[1] == (2, False, 1, 1)
    graph_config = PredictJob.from_options(vars(options.parse_test(
        ["--input", "x", "--weights", str(exported), "--cache", "off", "--num_workers", "1"]))).onnx_config(graph=True)
    model = load_predictor([str(exported)], threads=1, graph=graph_config).model
    assert model.graph_preprocessing and (model.threads, model.spinning, model.calls) == (1, False, usable_cores())
    model = load_predictor([str(onnx_cpu_model)], threads=1, graph=graph_config).model
    assert not model.graph_preprocessing and (model.threads, model.spinning, model.calls) == (1, True, 1)


def test_hostile_and_foreign_onnx_files_are_refused(exported, cinc, tmp_path):
    import onnx

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07" + bytes(range(256)) * 10)
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        OnnxModel.load(garbage)
    model = onnx.load(str(exported))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(CheckpointError, match="without this project's metadata"):
        OnnxModel.load(tmp_path / "bare.onnx")
    meta = json.loads(onnx.load(str(exported)).metadata_props[0].value)
    meta["members"][0]["calibration"]["residual"] = ["x"]
    model = onnx.load(str(exported))
    model.metadata_props[0].value = json.dumps(meta)
    onnx.save(model, str(tmp_path / "bad_meta.onnx"))
    out = tmp_path / "p.csv"
    assert test_interface.entry(["--input", str(cinc), "--weights", str(tmp_path / "bad_meta.onnx"), "--on_bad", "skip",
                                 "--output", str(out), "--quiet"]) == 2 and not out.exists()
    assert test_interface.entry(["--input", str(cinc), "--weights", str(exported), "--engine", "torch", "--on_bad",
                                 "skip", "--output", str(out), "--quiet"]) == 2


def test_the_onnx_path_imports_no_torch(exported, cinc, tmp_path):
    """A process where importing torch fails runs test_interface on the ONNX file (and the API's predict)."""
    out = tmp_path / "p.csv"
    code = (
        "import importlib.abc, sys\n"
        "class NoTorch(importlib.abc.MetaPathFinder):\n"  # `import torch` raises ImportError, as without it
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is not installed here')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import numpy as np, test_interface, ecg_age\n"
        f"assert test_interface.entry(['--input', {str(cinc)!r}, '--weights', {str(exported)!r}, '--interval', '0.9',"
        f" '--on_bad', 'skip', '--output', {str(out)!r}, '--cache', 'off', '--quiet']) == 0\n"
        f"from dataloader.formats import open_reader\n"
        f"record = open_reader({str(cinc)!r}).load(0)\n"
        f"print(ecg_age.load({str(exported)!r}).predict(record.signal, record.fs))\n"
        "assert not any(name == 'torch' or name.startswith('torch.') for name, m in sys.modules.items() if m)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(pd.read_csv(out)) == 48 and float(done.stdout.strip().splitlines()[-1]) > 0


def test_the_python_api(modern_cv_run, exported, cinc):
    _, run = modern_cv_run
    reader = open_reader(cinc)
    records = [reader.load(i) for i in range(3)]
    batch = np.stack([r.signal for r in records])
    model = ecg_age.load(run)
    ages = model.predict(batch, fs=500)
    assert ages.shape == (3,) and model.predict(batch[0], fs=500) == pytest.approx(ages[0])
    single, lower, upper = model.predict(batch[0], fs=500, interval=0.9)
    assert lower <= single <= upper
    order = ["V6", "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5"]
    shuffled = batch[0][[11, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    assert model.predict(shuffled, fs=500, leads=order) == pytest.approx(ages[0])
    with pytest.raises(RecordError, match="signal 0: has amplitudes"):
        model.predict(batch[0] * 1000, fs=500)
    np.testing.assert_allclose(ecg_age.load(exported).predict(batch, fs=500), ages, atol=1e-3)
    shares = model.explain(batch[0], fs=500)
    assert list(shares) == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert sum(shares.values()) == pytest.approx(1.0)


def test_the_api_names_every_wrong_argument_and_reads_files(modern_cv_run, exported, cinc, tmp_path):
    """Issue 26: each of these was a traceback (or a CLI remedy) — now a UserError naming the argument."""
    from test_clinical import DICOM_UV_PER_COUNT, write_dicom

    from utils.errors import UserError

    _, run = modern_cv_run
    record = open_reader(cinc).load(0)
    signal, fs = ecg_age.read(write_dicom(tmp_path / "ecg.dcm", record.signal, record.fs))
    assert signal.shape == record.signal.shape and fs == 500.0
    np.testing.assert_allclose(signal, record.signal, atol=DICOM_UV_PER_COUNT / 1000)
    calls = [("interval", "predict", (signal, fs), {"interval": "abc"}),
             ("at least one ECG", "predict", (np.zeros((0, 12, 5000)), fs), {}),
             ("fs must", "predict", (signal, None), {}),
             ("sex must", "predict", (np.stack([signal] * 3), fs), {"sex": [1, 0]}),
             ("numeric array", "predict", ([["a"]], fs), {}),
             ("bias_correction", "predict", (signal, fs), {"bias_correction": "yes"}),
             ("leads must", "predict", (signal, fs), {"leads": "I II"}),
             ("multiply the signal by 0.001", "predict", (signal * 1000, fs), {}),
             ("method must", "explain", (signal, fs), {"method": "bogus"})]
    for model in (ecg_age.load(run), ecg_age.load(exported)):
        for named, method, args, kwargs in calls:
            if method == "explain" and model.engine != "torch":
                continue
            with pytest.raises(UserError, match=named) as caught:
                getattr(model, method)(*args, **kwargs)
            assert "--input_scale" not in str(caught.value)
    for path in (None, 123, ""):
        with pytest.raises(UserError, match="path must be"):
            ecg_age.load(path)
    with pytest.raises(UserError, match="engine must be"):
        ecg_age.load(run, engine="gpu")
    with pytest.raises(UserError, match="holds 50 records"):
        ecg_age.read(cinc)


@pytest.mark.parametrize("change", ["members_5", "member_list", "length_1048576", "members_many"])
def test_onnx_metadata_that_sizes_work_is_bounded(exported, cinc, change, tmp_path, capsys):
    """Issue 26: ``members: [5]`` was a traceback; ``preprocessing.length = 1048576`` was accepted (GBs of memory,
    other ages)."""
    import onnx

    model = onnx.load(str(exported))
    meta = json.loads(model.metadata_props[0].value)
    if change == "members_5":
        meta["members"] = [5] * len(meta["members"])
    elif change == "member_list":
        meta["members"][0] = ["x"]
    elif change == "members_many":
        meta["members"] = meta["members"] * 1000
    else:
        meta["preprocessing"]["length"] = 1_048_576  # 2.9 hours at 100 Hz
    model.metadata_props[0].value = json.dumps(meta)
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(CheckpointError, match="metadata cannot be used"):
        OnnxModel.load(tmp_path / "m.onnx")
    out = tmp_path / "p.csv"
    code = test_interface.entry(["--input", str(cinc), "--weights", str(tmp_path / "m.onnx"), "--on_bad", "skip",
                                 "--output", str(out), "--quiet"])
    assert code == 2 and not out.exists() and "Traceback" not in capsys.readouterr().err


def test_int8_export_is_checked_against_fp32_and_used_like_it(exported, modern_cv_run, cinc, tmp_path):
    """--quantize int8 calibrates on the training records (the run's options.json) by default, keeps the metadata
    (marked int8), stays within the stated tolerance of the fp32 export, and predicts through test_interface."""
    import onnx

    _, run = modern_cv_run
    out = tmp_path / "model.int8.onnx"
    assert export_interface.entry(["--weights", str(run), "--output", str(out), "--check_input", str(cinc),
                                   "--check_records", "8", "--quantize", "int8", "--calibration_records", "16",
                                   "--quiet"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx"]  # the fp32 staging file is gone
    graph = onnx.load(str(out))
    meta = json.loads(next(p.value for p in graph.metadata_props if p.key == METADATA_KEY))
    assert meta["quantized"] == "int8" and meta["calibration_records"] == 16 and len(meta["members"]) == 2
    assert meta["int8_scope"] in {scope.name for scope in SCOPES}
    assert any(node.op_type == "QuantizeLinear" for node in graph.graph.node)
    reader = open_reader(cinc)
    fp32, int8 = OnnxModel.load(exported), OnnxModel.load(out)
    x = np.stack([prepare(reader.load(i), fp32.input_spec) for i in range(12)])
    difference = np.abs(int8.ages(x) - fp32.ages(x))
    assert difference.mean() <= 0.1 and difference.max() <= 0.5
    assert test_interface.entry(["--input", str(cinc), "--weights", str(out), "--on_bad", "skip", "--output",
                                 str(tmp_path / "int8.csv"), "--cache", "off", "--quiet"]) == 0
    assert len(pd.read_csv(tmp_path / "int8.csv")) == 48


@pytest.mark.parametrize("storage", ["fp16", "int8"])
def test_smaller_weights_keep_the_fp32_computation_and_the_ages(exported, modern_cv_run, cinc, tmp_path, storage):
    """--weight_storage fp16 / int8: every convolution's weight stored smaller (fp16; int8 with one scale per output
    channel, each weight within half a step of its value) and turned back into fp32, every other tensor (the
    band-pass matrices) fp32; onnxruntime folds fp16's casts when it opens the file (it keeps int8's
    DequantizeLinear, its rule for quantized graphs), so the convolutions run in fp32;
    the ages stay within the stated tolerance of the fp32 export's and it predicts like it."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, numpy_helper

    from engine.deploy.storage import TOLERANCE

    _, run = modern_cv_run
    out = tmp_path / f"model.{storage}.onnx"
    assert export_interface.entry(["--weights", str(run), "--output", str(out), "--check_input", str(cinc),
                                   "--check_records", "4", "--weight_storage", storage, "--quiet"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # the fp32 staging file is gone
    small, full = onnx.load(str(out)), onnx.load(str(exported))
    meta = json.loads(next(p.value for p in small.metadata_props if p.key == METADATA_KEY))
    assert meta["weight_storage"] == storage
    weights = {t.name: numpy_helper.to_array(t) for t in full.graph.initializer}
    conv_weights = {n.input[1] for n in full.graph.node if n.op_type == "Conv"}
    stored = {t.name: t for t in small.graph.initializer}
    back = {n.output[0]: n for n in small.graph.node if n.op_type in ("Cast", "DequantizeLinear")}
    assert conv_weights and set(back) == conv_weights and not conv_weights & set(stored)
    kinds = {n.input[0] for n in back.values()}
    assert all(t.data_type == TensorProto.FLOAT for name, t in stored.items()  # the rest stays fp32
               if name not in kinds and numpy_helper.to_array(t).dtype.kind == "f")
    for name, node in back.items():
        values = numpy_helper.to_array(stored[node.input[0]])
        if storage == "fp16":
            assert node.op_type == "Cast" and values.dtype == np.float16
            np.testing.assert_array_equal(values, weights[name].astype(np.float16))
        else:
            scale = numpy_helper.to_array(stored[node.input[1]])
            assert node.op_type == "DequantizeLinear" and values.dtype == np.int8 and scale.shape == (len(values),)
            step = scale.reshape((-1,) + (1,) * (values.ndim - 1)).astype(np.float64)
            # half a step, plus float32's rounding of weight / step before it is rounded to an integer (at most
            # 127 × 2⁻²⁴ steps; a trained weight was once 1.3e-6 steps past the half), measured in float64
            off = np.abs(values.astype(np.float64) * step - weights[name].astype(np.float64))
            assert np.all(off <= step * (0.5 + 128 * 2.0 ** -24))
            assert np.all(np.abs(values).reshape(len(values), -1).max(1)[scale != 1] == 127)  # each channel's range
    numbers = sum(weights[w].size for w in conv_weights)
    channels = sum(len(weights[w]) for w in conv_weights)
    saving = {"fp16": 2 * numbers, "int8": 3 * numbers - 5 * channels}[storage]  # int8 pays a scale and a zero
    assert exported.stat().st_size - out.stat().st_size >= saving - 500 * len(conv_weights)  # names: a node, tensors
    session_options = onnxruntime.SessionOptions()
    session_options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnxruntime.InferenceSession(str(out), session_options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx")).graph.node
    kept = [n for n in optimized if n.op_type in ("Cast", "DequantizeLinear") and n.input[0] in kinds]
    assert len(kept) == (0 if storage == "fp16" else len(conv_weights))  # fp16's folded: fp32 weights run
    assert not any(n.op_type.startswith("QLinear") for n in optimized)  # never an int8 convolution
    (tmp_path / "optimized.onnx").unlink()
    reader = open_reader(cinc)
    fp32, smaller = OnnxModel.load(exported), OnnxModel.load(out)
    x = np.stack([prepare(reader.load(i), fp32.input_spec) for i in range(12)])
    difference = np.abs(smaller.ages(x) - fp32.ages(x))
    mean_limit, max_limit = TOLERANCE[storage]
    assert 0 < difference.max() <= max_limit and difference.mean() <= mean_limit  # rounded weights, not the same
    assert test_interface.entry(["--input", str(cinc), "--weights", str(out), "--on_bad", "skip", "--output",
                                 str(tmp_path / "ages.csv"), "--cache", "off", "--quiet"]) == 0
    assert len(pd.read_csv(tmp_path / "ages.csv")) == 48


def test_smaller_weights_outside_the_tolerance_or_with_int8_write_nothing(exported, modern_cv_run, cinc, tmp_path,
                                                                          monkeypatch, capsys):
    from engine.deploy import storage
    from utils.errors import UserError

    _, run = modern_cv_run
    out = tmp_path / "model.onnx"
    assert export_interface.entry(["--weights", str(run), "--output", str(out), "--weight_storage", "fp16",
                                   "--quantize", "int8", "--quiet"]) != 0
    assert "cannot be combined" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
    monkeypatch.setitem(storage.TOLERANCE, "int8", (0.0, 0.0))
    reader = open_reader(cinc)
    x = np.stack([prepare(reader.load(i), OnnxModel.load(exported).input_spec) for i in range(6)])
    with pytest.raises(UserError, match="differ from the fp32 export's"):
        storage.stored_file(exported, out, (x, np.full(len(x), 0.5, np.float32)), "int8")
    assert list(tmp_path.iterdir()) == []


def test_an_int8_model_outside_its_tolerance_writes_nothing(exported, cinc, tmp_path, monkeypatch):
    from engine.deploy import quantize
    from utils.errors import UserError

    monkeypatch.setattr(quantize, "INT8_MAX_YEARS", 0.0)
    reader = open_reader(cinc)
    model = OnnxModel.load(exported)
    x = np.stack([prepare(reader.load(i), model.input_spec) for i in range(6)])
    sex = np.full(len(x), 0.5, np.float32)
    with pytest.raises(UserError, match="too far from the fp32 export") as refused:
        quantize.quantize_int8(exported, tmp_path / "model.int8.onnx", (x, sex), (x, sex))
    assert all(f"{scope.name}: mean" in str(refused.value) for scope in SCOPES)  # every scope tried, each reported
    assert list(tmp_path.iterdir()) == []


def test_the_careful_int8_scope_keeps_the_stem_gates_and_activations_in_fp32(exported, cinc, tmp_path):
    """Convolutions over time in int8; the stem, the squeeze-excitation gates' convolutions on pooled features, the
    activations and the head stay fp32 — found from the graph's shapes, not from names."""
    import onnx

    from engine.deploy.quantize import before_convolutions, fp32_edges, quantize_int8

    graph = onnx.load(str(exported))
    kept = set(fp32_edges(graph))
    producer = {out: n.op_type for n in graph.graph.node for out in n.output}
    stage = set(before_convolutions(graph))  # the band-pass as matrix products, then the z-score
    assert sum(n.op_type == "MatMul" for n in graph.graph.node if n.name in stage) >= 6  # two passes of three
    staged = {"x"} | {out for n in graph.graph.node if n.name in stage for out in n.output}
    stems = [n.name for n in graph.graph.node if n.op_type == "Conv" and n.input[0] in staged]
    squeezes = [n.name for n in graph.graph.node if n.op_type == "Conv" and producer.get(n.input[0]) == "ReduceMean"]
    assert len(stems) == 2 and squeezes and set(stems + squeezes) <= kept  # each gate: a squeeze and an excitation conv
    assert len(kept) == len(stems) + 2 * len(squeezes)
    reader = open_reader(cinc)
    model = OnnxModel.load(exported)
    x = np.stack([prepare(reader.load(i), model.input_spec) for i in range(6)])
    sex = np.full(len(x), 0.5, np.float32)
    result = quantize_int8(exported, tmp_path / "conv.onnx", (x, sex), (x, sex), limits=(np.inf, np.inf),
                           scopes=(SCOPES[1],))
    assert result["scope"] == "convolutions" and result["tried"][0][0] == "convolutions"
    quantized = onnx.load(str(tmp_path / "conv.onnx")).graph.node
    produced_by = {out: n for n in quantized for out in n.output}
    consumers = {}
    for n in quantized:
        for name in n.input:
            consumers.setdefault(name, []).append(n.op_type)
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == "x" for n in quantized)  # the stage stays fp32
    for node in quantized:
        if node.op_type == "Conv":  # int8 exactly where the rule says: its input comes through a DequantizeLinear
            source = produced_by.get(node.input[0])
            assert (source is not None and source.op_type == "DequantizeLinear") == (node.name not in kept), node.name
        if node.op_type == "Sigmoid":  # the activations run in fp32: nothing quantizes what they give
            assert "QuantizeLinear" not in consumers.get(node.output[0], [])
        if node.op_type == "Gemm":  # the head's weights stay fp32
            assert node.input[1] not in produced_by or produced_by[node.input[1]].op_type != "DequantizeLinear"

"""A record's fingerprint (dataloader/fingerprint.py) on real records; a model file names its training records by
them (export, the shipped model), and a prediction and its page leave those records out of the accuracy figures."""
from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from dataloader import fingerprint as fp
from dataloader.formats import open_reader
from ecg_age.cli import main as ecg_age_main
from engine.deploy.onnx_model import OnnxModel


def test_equal_fingerprints_exactly_for_equal_recordings(cinc):
    """The 50 CinC records hold one pair of identical recordings (E07509 and E07510): their fingerprints are
    equal, every other one is distinct; the same record read twice gives the same fingerprint."""
    reader = open_reader(cinc)
    items = [reader.load(i) for i in range(len(reader))]
    prints = np.array([fp.of_item(item) for item in items], fp.PRINTS)
    hashes = prints["exact"]
    assert hashes.all() and fp.of_item(reader.load(3)) == prints[3]
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            same = items[i].signal.shape == items[j].signal.shape and np.array_equal(items[i].signal,
                                                                                    items[j].signal)
            assert (hashes[i] == hashes[j]) == same, (reader.ids[i], reader.ids[j])
    assert len(set(hashes.tolist())) == len(items) - 1
    assert fp.fingerprint(items[0].signal, 250) != hashes[0]  # the rate is part of the recording
    known = fp.unpacked(*fp.packed(prints[:10]))
    # the first ten (E07500–E07509) and E07510, the same recording as E07509
    assert len(known) == 10 and fp.seen(prints, known).tolist() == [True] * 11 + [False] * 39
    assert not fp.seen(np.array([fp.NONE], fp.PRINTS), known).any()


@pytest.mark.parametrize("text, reason", [
    ("not base64!", "not base64"), (base64.b64encode(b"1234567").decode(), "whole number"),
    (base64.b64encode(np.array([5, 3], "<u8").tobytes()).decode(), "ascending"),
    (base64.b64encode(np.array([0, 3], "<u8").tobytes()).decode(), "nonzero"), (7, "base64 text")])
def test_a_models_fingerprints_are_checked_as_untrusted_input(text, reason):
    with pytest.raises(ValueError, match=reason):
        fp.unpacked(text)


def test_fingerprints_beyond_the_bound_are_refused(monkeypatch):
    monkeypatch.setattr(fp, "MAX_TRAINING_FINGERPRINTS", 2)
    with pytest.raises(ValueError, match="at most 2"):
        fp.unpacked(fp.packed(np.array([1, 2, 3, 4], fp.PRINTS))[0])


def test_sketches_beyond_their_bound_are_left_out_of_a_file_and_refused_in_one(monkeypatch):
    prints = np.array([1, 2, 3, 4], fp.PRINTS)  # hash and every sketch word alike
    hashes, sketches = fp.packed(prints)
    monkeypatch.setattr(fp, "MAX_TRAINING_SKETCHES", 3)
    assert fp.packed(prints) == (hashes, None)
    with pytest.raises(ValueError, match="training_sketches must be base64 text of at most 3"):
        fp.unpacked(hashes, sketches)
    assert not fp.unpacked(hashes)["sketch"].any()  # a file without them: hashes only


def test_a_copy_at_another_rate_or_in_other_units_is_the_same_recording_by_its_sketch(ptbxl, cinc):
    """Each shared PTB-XL record's 100-Hz copy (records100/, PTB-XL's own decimation) is within NEAR_BITS of its
    500-Hz original and of no other recording (the four pairs of identical recordings under two ids are the same
    recording); the original in µV, re-quantized at 5 µV, is near it too; no CinC record is near any of them.
    The exact hashes of the two rates never agree."""
    high, low = open_reader(ptbxl), open_reader(ptbxl, ptbxl_rate=100)
    assert high.ids == low.ids
    signals = [high.load(i).signal for i in range(len(high))]
    originals = np.array([fp.of_item(high.load(i)) for i in range(len(high))], fp.PRINTS)
    copies = np.array([fp.of_item(low.load(i)) for i in range(len(low))], fp.PRINTS)
    assert not np.isin(copies["exact"], originals["exact"]).any()
    apart = np.bitwise_count(copies["sketch"][:, None, :] ^ originals["sketch"][None, :, :]).sum(axis=2)
    same = apart <= fp.NEAR_BITS
    twins = {("137", "138"), ("145", "463"), ("456", "457"), ("459", "460")}
    expected = np.eye(len(high), dtype=bool)
    for a, b in twins:
        i, j = high.ids.index(a), high.ids.index(b)
        expected[i, j] = expected[j, i] = True
    assert np.array_equal(same, expected)
    assert fp.seen(copies, fp.unpacked(*fp.packed(originals))).all()
    requantized = np.round(signals[0] * 1000 / 5) * 5  # µV, in steps of 5 µV
    assert np.bitwise_count(fp.sketch(requantized, 500.0) ^ originals["sketch"][0]).sum() <= fp.NEAR_BITS
    for length in (4996, 4999, 5004, 6000):  # a few samples short or long, or longer than the 10 s sketched
        padded = np.pad(signals[0], ((0, 0), (0, max(0, length - 5000))))[:, :length]
        assert np.bitwise_count(fp.sketch(padded, 500.0) ^ originals["sketch"][0]).sum() <= fp.NEAR_BITS, length
    others = np.array([fp.of_item(item) for item in map(open_reader(cinc).load, range(50))], fp.PRINTS)
    assert not fp.seen(others, fp.unpacked(*fp.packed(originals))).any()


def test_a_re_export_in_a_hospital_format_is_the_same_recording_by_its_sketch(ptbxl, tmp_path):
    """Two PTB-XL records written by independent writers (tests/test_clinical.py) as DICOM (int16, 2.5 µV), EDF+
    (µV), GE MUSE XML (8 leads, 4.88 µV) and — resampled to 250 Hz by scipy — DICOM again: each file's hash differs
    from the original's, its sketch finds it among the original's, and not among the other record's."""
    from scipy.signal import resample_poly
    from test_clinical import muse_xml, write_dicom, write_edf

    reader = open_reader(ptbxl)
    for rid, other in (("1", "2"), ("200", "300")):
        original = reader.load(reader.ids.index(rid))
        signal = original.signal.astype(np.float64)
        folder = tmp_path / rid
        folder.mkdir()
        (folder / "muse.xml").write_bytes(muse_xml(signal, 500.0))
        files = [write_dicom(folder / "a.dcm", signal, 500.0), write_edf(folder / "b.edf", signal, 500.0),
                 folder / "muse.xml", write_dicom(folder / "c.dcm", resample_poly(signal, 1, 2, axis=1), 250.0)]
        mine = fp.unpacked(*fp.packed(np.array([fp.of_item(original)], fp.PRINTS)))
        theirs = fp.unpacked(*fp.packed(np.array([fp.of_item(reader.load(reader.ids.index(other)))], fp.PRINTS)))
        for path in files:
            copy = np.array([fp.of_item(open_reader(path).load(0))], fp.PRINTS)
            assert copy["exact"][0] != mine["exact"][0], path.name
            assert fp.seen(copy, mine).tolist() == [True] and fp.seen(copy, theirs).tolist() == [False], path.name


def test_a_record_without_a_sketch_is_matched_exactly():
    """Too short for the band, or flat: no sketch (zeros), never near anything; its hash still matches."""
    rng = np.random.default_rng(0)
    assert not fp.sketch(rng.normal(size=(12, 900)), 500.0).any()  # 1.8 s
    assert not fp.sketch(np.zeros((12, 5000)), 500.0).any()
    assert not fp.sketch(rng.normal(size=(8, 5000)), 500.0).any()  # fewer than 12 leads
    flat = fp.of_item(type("Record", (), {"signal": np.zeros((12, 5000)), "fs": 500.0})())
    known = fp.unpacked(*fp.packed(np.array([flat], fp.PRINTS)))
    assert fp.seen(np.array([flat, fp.NONE], fp.PRINTS), known).tolist() == [True, False]


def test_sketches_beyond_the_comparison_bound_fall_back_to_the_exact_hashes(ptbxl, monkeypatch):
    """More predicted × training records than MAX_NEAR_PAIRS, and more training records than NEAR_KNOWN_ALWAYS:
    only exact copies are found, and near_checked says so (the prediction's note)."""
    high, low = open_reader(ptbxl), open_reader(ptbxl, ptbxl_rate=100)
    known = fp.unpacked(*fp.packed(np.array([fp.of_item(high.load(i)) for i in range(3)], fp.PRINTS)))
    asked = np.array([fp.of_item(low.load(0)), fp.of_item(high.load(1))], fp.PRINTS)
    assert fp.seen(asked, known).tolist() == [True, True] and fp.near_checked(asked, known)
    monkeypatch.setattr(fp, "MAX_NEAR_PAIRS", 5)  # 2 × 3 pairs: still compared, 3 known ones are few
    assert fp.seen(asked, known).tolist() == [True, True] and fp.near_checked(asked, known)
    monkeypatch.setattr(fp, "NEAR_KNOWN_ALWAYS", 2)  # now too many pairs and too many known ones
    assert fp.seen(asked, known).tolist() == [False, True] and not fp.near_checked(asked, known)
    monkeypatch.setattr(fp, "MAX_NEAR_PAIRS", 6)
    assert fp.seen(asked, known).tolist() == [True, True]


@pytest.mark.parametrize("sketches, reason", [
    ("not base64!", "not base64"), (base64.b64encode(bytes(31)).decode(), "whole number"),
    (base64.b64encode(bytes(64)).decode(), "2 sketches for 1"), (3, "base64 text")])
def test_a_models_sketches_are_checked_as_untrusted_input(sketches, reason):
    hashes = base64.b64encode(np.array([7], "<u8").tobytes()).decode()
    with pytest.raises(ValueError, match=reason):
        fp.unpacked(hashes, sketches)


def test_an_export_names_the_records_its_run_was_trained_on(modern_cv_run, onnx_model, ptbxl):
    """The 2-fold run (PTB-XL at 100 Hz) exported: the file's fingerprints are those of the records the folds
    trained on, read as they were read for training (--ptbxl_rate 100)."""
    _, run = modern_cv_run
    out = onnx_model
    reader = open_reader(ptbxl, ptbxl_rate=100)
    trained = set()
    for fold in sorted(run.glob("fold_*")):
        split = pd.read_csv(fold / "split.csv", dtype=str)
        trained |= set(split.loc[split["split"] == "train", "id"])
    expected = {int(fp.of_item(reader.load(i))["exact"]) for i, rid in enumerate(reader.ids) if rid in trained}
    named = OnnxModel.load(out).training_prints
    assert len(trained) > 300 and set(named["exact"].tolist()) == expected
    assert named["sketch"].all(axis=1).all()  # every training record's sketch too


def test_the_shipped_model_knows_its_training_records_and_the_page_leaves_them_out(ptbxl, cinc, tmp_path, capsys):
    """A manifest mixing 3 PTB-XL records the shipped model was trained on (its WFDB files, read as plain records)
    with 3 CinC records it never saw: the notes name the 3, the accuracy figures are the CinC records' alone, and
    the page says why."""
    database = pd.read_csv(ptbxl / "ptbxl_database.csv", index_col="ecg_id")
    rows = [{"path": str(ptbxl / database.loc[k, "filename_hr"]), "age": database.loc[k, "age"], "id": f"ptbxl{k}"}
            for k in (1, 2, 3)]
    # two more of its training records as PTB-XL's 100-Hz copies (records100/): found by their sketches
    rows += [{"path": str(ptbxl / database.loc[k, "filename_lr"]), "age": database.loc[k, "age"], "id": f"lr{k}"}
             for k in (4, 5)]
    rows += [{"path": str(cinc / name), "age": age, "id": name} for name, age in
             (("E07500", 78), ("E07501", 65), ("E07502", 65))]  # their headers' ages
    pd.DataFrame(rows).to_csv(tmp_path / "list.csv", index=False)
    out = tmp_path / "out"
    assert ecg_age_main(["predict", str(tmp_path / "list.csv"), "--out", str(out), "--explain_records", "0",
                         "--cache", "off"]) == 0
    said = capsys.readouterr().err
    assert "5 of the 8 record(s) were among the model's training records" in said
    assert ("3 of the 8 ECG(s) predicted have an age and were not trained on (5 more with an age left out: the model "
            "was trained on them)  MAE") in said
    trained = ["ptbxl1", "ptbxl2", "ptbxl3", "lr4", "lr5"]
    assert json.loads((out / "predicted_age.csv.json").read_text())["in_training"] == trained
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 3 and report["in_training"] == {"checked": True, "n": 5, "n_aged": 5, "ids": trained}
    table = pd.read_csv(out / "predicted_age.csv").set_index("ids")
    cinc_ages = np.array([78, 65, 65])
    assert report["mae"] == pytest.approx(np.abs(table.loc[["E07500", "E07501", "E07502"], "predicted_age"]
                                                 - cinc_ages).mean())
    page = (out / "report.html").read_text()
    assert "5 of the 8 ECGs were among the model&#39;s training records" in page or \
        "5 of the 8 ECGs were among the model's training records" in page
    assert "Of them, the model" in page


def test_identical_recordings_the_folds_put_apart_are_named(ptbxl, caplog):
    """PTB-XL's shared records hold four pairs of identical recordings under different ids; one pair (145 and 463)
    even under two patient ids, so patient-level folds can part it — the 5 folds of split seed 1234 do, and a
    training run says so (the other pairs share a patient and stay together)."""
    from dataloader.splits import kfold_split
    from engine.train.data import Records, parted_duplicates, warn_parted_duplicates

    reader = open_reader(ptbxl)
    prints = np.array([fp.of_item(reader.load(i)) for i in range(len(reader))], fp.PRINTS)
    usable = np.flatnonzero(pd.to_numeric(reader.table["age"], errors="coerce").notna().to_numpy())
    table = reader.table.iloc[usable]
    folds = kfold_split(table["age"], table["patient_id"], 5, 1234)
    ids = reader.table["id"].astype(str).to_numpy()
    labels, checked = fp.recordings(prints[usable])
    assert checked and len(set(labels.tolist())) == len(usable) - 4  # four pairs: no copies at another rate here
    assert parted_duplicates(labels, ids[usable], folds) == [["145", "463"]]
    assert parted_duplicates(labels, ids[usable], np.zeros(len(usable))) == []
    same = parted_duplicates(labels, ids[usable], np.arange(len(usable)))  # every record apart
    assert sorted(map(sorted, same)) == [["137", "138"], ["145", "463"], ["456", "457"], ["459", "460"]]

    class Source:
        pass

    source = Source()
    source.prints = prints
    with caplog.at_level("WARNING"):
        warn_parted_duplicates(Records(reader, source, usable), usable, folds, "different folds")
    assert "1 recording(s) appear under several ids (the same recording: 145 = 463)" in caplog.text


def test_a_run_folder_names_its_training_records_for_pytorch_predictions(modern_cv_run, ptbxl, tmp_path, capsys):
    """The run writes fingerprints.csv; predicting with its checkpoints marks its own training records (here two
    PTB-XL 100-Hz files listed in a manifest), and the same run without that file says nothing (not checked)."""
    import shutil

    from conftest import cli

    import test_interface

    _, run = modern_cv_run
    assert (run / "fingerprints.csv").is_file()
    database = pd.read_csv(ptbxl / "ptbxl_database.csv", index_col="ecg_id")
    rows = [{"path": str(ptbxl / database.loc[k, "filename_lr"]), "id": f"lr{k}"} for k in (1, 2)]
    rows.append({"path": str(ptbxl / database.loc[3, "filename_hr"]), "id": "hr3"})  # its 500-Hz copy: the sketch
    pd.DataFrame(rows).to_csv(tmp_path / "list.csv", index=False)
    out = tmp_path / "p.csv"
    assert cli(test_interface, ["--input", str(tmp_path / "list.csv"), "--weights", str(run), "--output", str(out),
                                "--cache", "off"], tmp_path) == 0
    assert json.loads((tmp_path / "p.csv.json").read_text())["in_training"] == ["lr1", "lr2", "hr3"]
    older = tmp_path / "older"
    shutil.copytree(run, older, ignore=shutil.ignore_patterns("fingerprints.csv", "*.lock"))
    assert cli(test_interface, ["--input", str(tmp_path / "list.csv"), "--weights", str(older), "--output",
                                str(tmp_path / "q.csv"), "--cache", "off"], tmp_path) == 0
    assert "in_training" not in json.loads((tmp_path / "q.csv.json").read_text())
    # a run written before sketches (fingerprints.csv without them): its own files found, the other rate's not
    pd.read_csv(run / "fingerprints.csv", dtype=str).drop(columns="sketch").to_csv(older / "fingerprints.csv",
                                                                                  index=False)
    capsys.readouterr()
    assert cli(test_interface, ["--input", str(tmp_path / "list.csv"), "--weights", str(older), "--output",
                                str(tmp_path / "r.csv"), "--cache", "off"], tmp_path, quiet=False) == 0
    assert json.loads((tmp_path / "r.csv.json").read_text())["in_training"] == ["lr1", "lr2"]
    assert ("matched by their exact fingerprints only (the model holds no sketches): a copy of one at another rate "
            "or from another file is not found") in capsys.readouterr().err


def test_duplicates_together_keeps_each_recordings_copies_in_one_fold(ptbxl):
    """--duplicates together: 145 and 463 (one recording, two patient ids) are dealt as one patient, so the folds
    keep them together and no identical recordings are parted; every patient stays in one fold."""
    from engine.train.data import Records, fold_split, parted_duplicates
    from engine.train.settings import TrainSettings, resolve
    from options import train_parser

    reader = open_reader(ptbxl)

    class Source:
        prints = np.array([fp.of_item(reader.load(i)) for i in range(len(reader))], fp.PRINTS)

    usable = np.flatnonzero(pd.to_numeric(reader.table["age"], errors="coerce").notna().to_numpy())
    records = Records(reader, Source(), usable)
    ids = reader.table["id"].astype(str).to_numpy()[usable]
    for choice, parted in (("warn", [["145", "463"]]), ("together", [])):
        argv = ["--input", str(ptbxl), "--folds", "5", "--split_seed", "1234", "--duplicates", choice]
        folds, by_id = fold_split(TrainSettings.from_options(resolve(vars(train_parser().parse_args(argv)))), records)
        assert parted_duplicates(fp.recordings(Source.prints[usable])[0], ids, folds) == parted
        patients = reader.table["patient_id"].iloc[usable].to_numpy()
        assert all(len(set(folds[patients == p])) == 1 for p in set(patients))
    assert by_id["145"] == by_id["463"]


def test_a_copy_at_another_rate_under_another_id_is_one_recording_for_the_folds(ptbxl, caplog, monkeypatch):
    """Record 300's print replaced by the 100-Hz copy of record 200 (another patient): as if the input held that
    ECG twice, once at each rate. The 5 folds of split seed 1234 part the two, a run says so, and --duplicates
    together deals them as one patient; with sketches too many to compare, only identical copies are grouped."""
    from engine.train.data import Records, fold_split, parted_duplicates
    from engine.train.settings import TrainSettings, resolve
    from options import train_parser

    reader, low = open_reader(ptbxl), open_reader(ptbxl, ptbxl_rate=100)
    a, b = reader.ids.index("200"), reader.ids.index("300")
    assert reader.table["patient_id"].iloc[a] != reader.table["patient_id"].iloc[b]

    class Source:
        prints = np.array([fp.of_item(reader.load(i)) for i in range(len(reader))], fp.PRINTS)

    Source.prints[b] = fp.of_item(low.load(a))
    usable = np.flatnonzero(pd.to_numeric(reader.table["age"], errors="coerce").notna().to_numpy())
    ids = reader.table["id"].astype(str).to_numpy()[usable]
    labels, checked = fp.recordings(Source.prints[usable])
    assert checked and labels[list(usable).index(b)] == labels[list(usable).index(a)]
    for choice, parted in (("warn", [["145", "463"], ["200", "300"]]), ("together", [])):
        argv = ["--input", str(ptbxl), "--folds", "5", "--split_seed", "1234", "--duplicates", choice]
        with caplog.at_level("WARNING"):
            folds, by_id = fold_split(TrainSettings.from_options(resolve(vars(train_parser().parse_args(argv)))),
                                      Records(reader, Source(), usable))
        assert sorted(map(sorted, parted_duplicates(labels, ids, folds))) == parted
    assert "2 recording(s) appear under several ids (the same recording: " in caplog.text
    assert by_id["200"] == by_id["300"]
    monkeypatch.setattr(fp, "NEAR_KNOWN_ALWAYS", 10)
    monkeypatch.setattr(fp, "MAX_NEAR_PAIRS", 100)
    labels, checked = fp.recordings(Source.prints[usable])
    assert not checked and labels[list(usable).index(b)] != labels[list(usable).index(a)]
    assert len(set(labels.tolist())) == len(usable) - 4  # the identical pairs still grouped


def test_a_page_whose_aged_ecgs_were_all_trained_on_says_why_it_has_no_accuracy():
    from engine.report.page import metric_rows, training_caveat

    rows = metric_rows({"n": 0, "n_predictions": 353, "in_training": {"checked": True, "n": 353, "n_aged": 349}})
    assert [(r["name"], r["value"]) for r in rows] == [("ECGs predicted", "353"), ("ECGs with an age on record", "349"),
                                                       ("Of them, the model's training records", "349")]
    assert "once the model's training records are set aside" in rows[1]["meaning"]
    assert training_caveat({"checked": True, "n": 0}, 5).startswith("None of these ECGs")
    assert training_caveat({}, 5).startswith("Whether the model was trained on any of these ECGs is not known")


def test_every_training_record_leaves_the_figures_however_few_report_json_lists(tmp_path, monkeypatch):
    """report.json lists at most MAX_LISTED ids, but every record the notes name is left out of the accuracy."""
    import report_interface
    from engine.report import report as report_module

    monkeypatch.setattr(report_module, "MAX_LISTED", 1)
    ids = ["a", "b", "c", "d", "e"]
    pd.DataFrame({"ids": ids, "predicted_age": [50.0, 61.0, 70.5, 40.0, 30.0]}).to_csv(tmp_path / "p.csv",
                                                                                      index=False)
    (tmp_path / "p.csv.json").write_text(json.dumps({"in_training": ["a", "b", "c"]}))
    pd.DataFrame({"id": ids, "age": [48, 66, 71, 45, 33]}).to_csv(tmp_path / "l.csv", index=False)
    assert report_interface.entry(["--predictions", str(tmp_path / "p.csv"), "--labels", str(tmp_path / "l.csv"),
                                   "--id_col", "id", "--age_col", "age", "--out", str(tmp_path / "out"),
                                   "--quiet"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["n"] == 2 and report["mae"] == pytest.approx(4.0)  # d and e: |40-45|, |30-33|
    assert report["in_training"] == {"checked": True, "n": 3, "n_aged": 3, "ids": ["a"]}

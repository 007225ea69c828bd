"""The third hostile pass (issue 26), readers: what a clinical file declares is checked against what it holds, an
unreadable file is a bad record, no reader library's text reaches a message or the cache, parsing is bounded before
it starts, a multi-group DICOM is read by rule, and a unit advice names a remedy that works."""
from __future__ import annotations

import builtins
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom import dcmread
from test_clinical import PHI, aecg_xml, assert_no_phi_in_cache, muse_xml, philips_xml, write_dicom, write_edf
from test_trust import run_cli

import dataloader.clinical as clinical
import test_interface
from dataloader.formats import open_reader
from utils.bounds import MAX_SAMPLES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def signal(ptbxl, ptbxl_table):
    from conftest import ptbxl_signal

    return ptbxl_signal(ptbxl, ptbxl_table.iloc[0].filename_hr)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    import torch
    from test_security import adult_model

    path = tmp_path_factory.mktemp("w") / "resnet.pt"
    torch.save({"model": adult_model().state_dict()}, path)
    return str(path)


def predict(folder: Path, weights: str, tmp_path: Path, capsys, *extra) -> tuple[int, str, Path]:
    out = tmp_path / "p.csv"
    code, err = run_cli(test_interface, ["--input", str(folder), "--weights", weights, "--output", str(out),
                                         *extra], tmp_path, capsys)
    return code, err, out


def edf_pair(signal, tmp_path: Path) -> tuple[Path, Path, bytes]:
    folder = tmp_path / "in"
    folder.mkdir()
    write_edf(folder / "good.edf", signal, 500.0)
    content = write_edf(tmp_path / "whole.edf", signal, 500.0).read_bytes()
    return folder, folder / "bad.edf", content


@pytest.mark.parametrize("case", ["60_percent", "mid_record", "declares_99999999", "appended"])
def test_an_edf_that_holds_other_than_it_declares_is_a_bad_record_with_both_numbers(case, signal, weights,
                                                                                   tmp_path, capsys):
    folder, bad, content = edf_pair(signal, tmp_path)
    header = 256 * 13
    record = (len(content) - header) // 10  # pyedflib writes 1-s data records: 10 of them
    if case == "60_percent":
        bad.write_bytes(content[:header + 6 * record])
    elif case == "mid_record":
        bad.write_bytes(content[:header + 3 * record + record // 2])
    elif case == "declares_99999999":
        bad.write_bytes(content[:236] + b"99999999" + content[244:])
    else:
        bad.write_bytes(content + b"\0" * record)
    with pytest.raises(clinical.RecordError) as caught:
        clinical.parse_file(str(bad), "edf")
    assert "declares" in caught.value.reason and "holds" in caught.value.reason
    code, err, out = predict(folder, weights, tmp_path, capsys)
    assert code == 2 and "bad.edf" in err and not out.exists(), err
    declared = "99,999,999" if case == "declares_99999999" else "10"
    assert f"declares {declared} data records" in err, err
    code, err, out = predict(folder, weights, tmp_path, capsys, "--on_bad", "skip")
    assert code == 0 and list(pd.read_csv(out)["ids"]) == ["good.edf"], err


def test_an_unreadable_file_in_a_folder_is_a_bad_record_never_left_out(signal, weights, tmp_path, capsys,
                                                                      monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.xml").write_bytes(muse_xml(signal, 500.0))
    (folder / "locked.xml").write_bytes(muse_xml(signal, 500.0))

    def denied(path, *args, **kwargs):  # root reads through permissions: the OS error is simulated
        if str(path).endswith("locked.xml"):
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(clinical, "open", denied, raising=False)
    code, err, out = predict(folder, weights, tmp_path, capsys)
    assert code == 2 and "locked.xml" in err and "Permission" in err and not out.exists(), err
    code, err, out = predict(folder, weights, tmp_path, capsys, "--on_bad", "skip")
    assert code == 0 and list(pd.read_csv(out)["ids"]) == ["good.xml"], err
    only = tmp_path / "only"
    only.mkdir()
    (only / "locked.xml").write_bytes(b"<x/>")
    assert open_reader(only).table["error"].str.contains("Permission").all()  # the folder is not "empty"


def planted(signal, case: str, tmp_path: Path) -> Path:
    """A malformed file whose broken field (or label, unit, version) holds an identifier."""
    if case == "edf_duration":
        content = write_edf(tmp_path / "x.edf", signal, 500.0).read_bytes()
        path = tmp_path / "bad.edf"
        path.write_bytes(content[:244] + b"MRN0042 " + content[252:])
    elif case == "edf_label":
        content = bytearray(write_edf(tmp_path / "x.edf", signal, 500.0).read_bytes())
        content[256:272] = b"Doe Jane MRN0042"  # the first signal's label
        path = tmp_path / "bad.edf"
        path.write_bytes(bytes(content))
    elif case == "aecg_digits":
        document = aecg_xml(signal, 500.0).decode()
        start = document.index("<digits>") + len("<digits>")
        path = tmp_path / "bad.xml"
        path.write_text(document[:start] + "12 MRN0042 Doe " + document[start:])
    elif case == "philips_version":
        path = tmp_path / "bad.xml"
        path.write_bytes(philips_xml(signal, 500.0).replace(b"<documentversion>1.04", b"<documentversion>MRN0042"))
    elif case == "muse_unit":
        path = tmp_path / "bad.xml"
        path.write_bytes(muse_xml(signal, 500.0).replace(b"MICROVOLTS", b"MRN0042"))
    else:  # muse_base64: a damaged payload quoting the identifier
        path = tmp_path / "bad.xml"
        document = muse_xml(signal, 500.0)
        start = document.index(b"<WaveFormData>") + len(b"<WaveFormData>")
        path.write_bytes(document[:start] + b"MRN0042Doe!" + document[start:])
    return path


@pytest.mark.parametrize("case", ["edf_duration", "edf_label", "aecg_digits", "philips_version", "muse_unit",
                                  "muse_base64"])
def test_no_reader_library_text_reaches_a_message_or_the_cache(case, signal, weights, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    bad = planted(signal, case, tmp_path)
    bad.rename(folder / bad.name)
    (folder / "good.xml").write_bytes(muse_xml(signal, 500.0))
    code, err, out = predict(folder, weights, tmp_path, capsys)
    assert code == 2 and bad.name in err, err
    code, err2, out = predict(folder, weights, tmp_path, capsys, "--on_bad", "skip", "--cache", "on")
    assert code == 0, err2
    reasons = [json.loads(p.read_text())["bad"] for p in (tmp_path / "cache").rglob("meta.json")]
    assert any(reason.get(bad.name) for reason in reasons), reasons  # the cache records the bad record's reason ...
    assert_no_phi_in_cache(tmp_path / "cache")  # ... in the project's words
    for text in (err.encode(), err2.encode(), out.read_bytes()):
        assert not any(word.encode() in text for word in PHI), (case, text[-2000:])


def aecg_with_long_digits(path: Path, characters: int) -> Path:
    """An aECG whose one <digits> element holds ``characters`` characters of samples."""
    template = aecg_xml(np.full((12, 500), 0.5, np.float32), 500.0).decode()
    start = template.index("<digits>") + len("<digits>")
    end = template.index("</digits>", start)
    with open(path, "w") as handle:
        handle.write(template[:start])
        piece = "123 " * 262_144  # 1 MiB
        for _ in range(characters // len(piece)):
            handle.write(piece)
        handle.write(template[end:])
    return path


def peak_rss_mib(code: str) -> float:
    """The peak RSS of a fresh process running ``code``: VmHWM (ru_maxrss would carry over this process's peak)."""
    done = subprocess.run([sys.executable, "-c", code + "\nprint(next(int(line.split()[1]) for line in open("
                           "'/proc/self/status') if line.startswith('VmHWM:')) / 1024)"], capture_output=True,
                          text=True, cwd=ROOT, check=True)
    return float(done.stdout.split()[-1])


def test_xml_text_is_bounded_before_parsing_and_memory_stays_small(tmp_path):
    limit = clinical.MAX_TEXT_BYTES["aecg"]
    assert limit == 12 * MAX_SAMPLES
    big = aecg_with_long_digits(tmp_path / "big.xml", limit + (2 << 20))
    with pytest.raises(clinical.RecordError, match="run of more than"):
        clinical.check_text_runs(str(big), limit)
    parse = f"import dataloader.clinical as c\ntry:\n    c.parse_file({str(big)!r}, 'aecg')\nexcept c.RecordError:\n" \
            f"    pass"
    baseline = peak_rss_mib("import dataloader.clinical as c; c._parsers()")
    assert peak_rss_mib(parse) - baseline < 64  # refused on the raw bytes: nothing parsed (the file is 14 MiB)
    muse = tmp_path / "big_muse.xml"  # one lead's base64 longer than any lead of MAX_SAMPLES 4-byte samples
    document = muse_xml(np.full((12, 500), 0.5, np.float32), 500.0)
    start = document.index(b"<WaveFormData>") + len(b"<WaveFormData>")
    muse.write_bytes(document[:start] + b"A" * (clinical.MAX_TEXT_BYTES["muse"] + 4) + document[start:])
    parse = f"import dataloader.clinical as c\ntry:\n    c.parse_file({str(muse)!r}, 'muse')\nexcept c.RecordError " \
            f"as e:\n    assert 'run of more than' in e.reason, e.reason"
    assert peak_rss_mib(parse) - baseline < 64
    # a lead of more one-digit values than MAX_SAMPLES, well inside the byte bound: refused by its value count
    short = aecg_with_long_digits(tmp_path / "short.xml", 0)
    document = short.read_text()
    start = document.index("<digits>") + len("<digits>")
    short.write_text(document[:start] + "1 " * (MAX_SAMPLES + 1) + document[start:])
    with pytest.raises(clinical.RecordError, match="values between two XML tags"):
        clinical.parse_file(str(short), "aecg")
    # the checks are exact at block boundaries: runs split across blocks add up, a run just inside the limit passes
    path = tmp_path / "runs.xml"
    path.write_bytes(b"<a>" + b"x" * 10 + b"<b>" + b"y" * 25 + b"</b><c>1 2  3\n4 5</c>")
    for block in (1, 3, 7, 64):
        clinical._SCAN_BYTES = block
        try:
            clinical.check_text_runs(str(path), 27, 5)  # 'b>' and 25 'y'; 'c>1 2  3\n4 5': 5 values
            with pytest.raises(clinical.RecordError, match="bytes"):
                clinical.check_text_runs(str(path), 26)
            with pytest.raises(clinical.RecordError, match="values"):
                clinical.check_text_runs(str(path), 27, 4)
        finally:
            clinical._SCAN_BYTES = 1 << 20


def two_group_dicom(path: Path, signal: np.ndarray, first_fs: float, second_fs: float) -> Path:
    """A DICOM with two rhythm groups: the record at ``first_fs`` then at ``second_fs`` (both 10 s)."""
    from scipy.signal import resample_poly

    def at(fs):
        return resample_poly(signal, int(fs), 500, axis=1).astype(np.float32) if fs != 500 else signal

    write_dicom(path, at(first_fs), first_fs)
    other = write_dicom(path.with_suffix(".tmp"), at(second_fs), second_fs)
    ds, extra = dcmread(path), dcmread(other)
    ds.WaveformSequence = [ds.WaveformSequence[0], extra.WaveformSequence[0]]
    ds.save_as(path)
    other.unlink()
    return path


def test_a_dicom_with_two_rhythm_groups_is_read_by_rule_or_refused(signal, tmp_path):
    refused = two_group_dicom(tmp_path / "low_first.dcm", signal, 250.0, 500.0)
    reader = open_reader(refused)
    reason = reader.table["error"].iloc[0]
    assert "2 rhythm multiplex groups" in reason and "picks group 2" in reason, reason
    chosen = two_group_dicom(tmp_path / "high_first.dcm", signal, 500.0, 250.0)
    record = open_reader(chosen).load(0)
    assert record.fs == 500.0 and "rhythm group 1 of 2" in record.meta["dicom_group"]
    assert np.abs(record.signal - signal).max() < 0.01


def test_a_dicom_read_1000_times_too_large_is_fixed_by_the_advice_it_gives(signal, weights, tmp_path, capsys):
    folder, reference = tmp_path / "in", tmp_path / "ref"
    folder.mkdir()
    reference.mkdir()
    write_dicom(reference / "ecg.dcm", signal, 500.0)
    ds = dcmread(reference / "ecg.dcm")
    for channel in ds.WaveformSequence[0].ChannelDefinitionSequence:
        channel.ChannelSensitivity = channel.ChannelSensitivity * 1000  # an export that wrote mV for µV
    ds.save_as(folder / "ecg.dcm")
    code, err, out = predict(folder, weights, tmp_path, capsys)
    assert code == 2 and "--input_scale 0.001" in err, err
    code, err, out = predict(folder, weights, tmp_path, capsys, "--input_scale", "0.001")
    assert code == 0, err
    ages = pd.read_csv(out)["predicted_age"].tolist()
    code, err, ref = predict(reference, weights, tmp_path, capsys)
    assert code == 0, err
    assert ages == pytest.approx(pd.read_csv(ref)["predicted_age"].tolist(), abs=0.01)

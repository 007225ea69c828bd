"""Hospital exports (issue: read the ECGs hospitals actually export): real PTB-XL records written by independent
writers — pydicom (DICOM 12-lead ECG waveform storage), pyedflib (EDF+), and GE MUSE XML, HL7 aECG, Philips Sierra
XML and SCP-ECG built here from their documented structures — read back through the clinical reader; format found
by content; the same age whichever format holds a record; no patient identifier in any output; hostile files end in
the bad-input policy."""
from __future__ import annotations

import base64
import datetime
import json
import re
import resource
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pyedflib
import pytest
import torch
import wfdb
from conftest import cli, ptbxl_signal
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from test_security import adult_model
from test_trust import run_cli

import dataloader.clinical as clinical
import report_interface
import test_interface
from dataloader.formats import open_reader
from dataloader.records import LEADS, RecordError

PHI = ("Doe", "Jane", "MRN0042", "19800101", "1980")  # written into every file; must never come out
AGE, SEX = 42, "F"
DICOM_CODES = {"I": "1", "II": "2", "V1": "3", "V2": "4", "V3": "5", "V4": "6", "V5": "7", "V6": "8", "III": "61",
               "aVR": "62", "aVL": "63", "aVF": "64"}  # SCP-ECG lead codes 5.6.3-9-n (DICOM CID 3001)
DICOM_UV_PER_COUNT = 2.5
MUSE_UV_PER_BIT = 4.88


def write_dicom(path: Path, signal: np.ndarray, fs: float, leads=LEADS) -> Path:
    """DICOM 12-lead ECG Waveform Storage with pydicom: one RHYTHM multiplex group, int16 at 2.5 µV per count."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.9.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "ECG", "Doe^Jane", "MRN0042"
    ds.PatientBirthDate, ds.PatientAge, ds.PatientSex = "19800101", f"{AGE:03d}Y", SEX
    group = Dataset()
    group.MultiplexGroupLabel, group.SamplingFrequency = "RHYTHM", fs
    group.NumberOfWaveformChannels, group.NumberOfWaveformSamples = len(leads), signal.shape[1]
    group.WaveformBitsAllocated, group.WaveformSampleInterpretation = 16, "SS"
    channels = []
    for name in leads:
        channel = Dataset()
        source = Dataset()
        source.CodeValue, source.CodingSchemeDesignator = f"5.6.3-9-{DICOM_CODES[name]}", "SCPECG"
        source.CodeMeaning = f"Lead {name}"
        unit = Dataset()
        unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "uV", "UCUM", "microvolt"
        channel.ChannelSourceSequence, channel.ChannelSensitivityUnitsSequence = [source], [unit]
        channel.ChannelSensitivity, channel.ChannelSensitivityCorrectionFactor = DICOM_UV_PER_COUNT, 1
        channel.ChannelBaseline, channel.WaveformBitsStored = 0, 16
        channels.append(channel)
    group.ChannelDefinitionSequence = channels
    counts = np.round(signal * 1000 / DICOM_UV_PER_COUNT).astype("<i2")
    group.WaveformData = counts.T.tobytes()  # interleaved: sample by sample, channels within
    ds.WaveformSequence = [group]
    ds.save_as(path, enforce_file_format=True)
    return path


def write_edf(path: Path, signal: np.ndarray, fs: float) -> Path:
    """EDF+ with pyedflib: labels 'ECG I' ..., µV, 16-bit, birth date and start date 42 years apart."""
    writer = pyedflib.EdfWriter(str(path), len(LEADS), file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        writer.setPatientName("Doe_Jane")
        writer.setPatientCode("MRN0042")
        writer.setSex(SEX)
        writer.setBirthdate(datetime.date(1980, 1, 1))
        writer.setStartdatetime(datetime.datetime(2022, 6, 1, 9))
        writer.setSignalHeaders([{"label": f"ECG {name}", "dimension": "uV", "sample_frequency": fs,
                                  "physical_max": 32767.0, "physical_min": -32768.0, "digital_max": 32767,
                                  "digital_min": -32768} for name in LEADS])
        writer.writeSamples([np.ascontiguousarray(row * 1000, dtype=np.float64) for row in signal])
    finally:
        writer.close()
    return path


def muse_xml(signal: np.ndarray, fs: float, leads=("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"),
             payload=None, doctype: str = "") -> bytes:
    """A GE MUSE RestingECG document (its documented structure): demographics and an 8-lead rhythm waveform of
    little-endian int16 in base64 at 4.88 µV per bit."""
    lead_data = []
    for name in leads:
        counts = np.round(signal[LEADS.index(name)] * 1000 / MUSE_UV_PER_BIT).astype("<i2")
        data = payload if payload is not None else base64.b64encode(counts.tobytes()).decode()
        lead_data.append(f"<LeadData><LeadByteCountTotal>{counts.nbytes}</LeadByteCountTotal>"
                         f"<LeadSampleCountTotal>{counts.size}</LeadSampleCountTotal><LeadSampleSize>2"
                         f"</LeadSampleSize><LeadAmplitudeUnitsPerBit>{MUSE_UV_PER_BIT}</LeadAmplitudeUnitsPerBit>"
                         f"<LeadAmplitudeUnits>MICROVOLTS</LeadAmplitudeUnits><LeadID>{name}</LeadID>"
                         f"<WaveFormData>{data}</WaveFormData></LeadData>")
    return (f'<?xml version="1.0" encoding="ISO-8859-1"?>{doctype}<RestingECG><MuseInfo><MuseVersion>9.0.9.18167'
            f"</MuseVersion></MuseInfo><PatientDemographics><PatientID>MRN0042</PatientID><PatientAge>{AGE}"
            f"</PatientAge><AgeUnits>YEARS</AgeUnits><DateofBirth>01-01-1980</DateofBirth><Gender>FEMALE</Gender>"
            f"<PatientLastName>Doe</PatientLastName><PatientFirstName>Jane</PatientFirstName>"
            f"</PatientDemographics><TestDemographics><AcquisitionDate>06-01-2022</AcquisitionDate>"
            f"</TestDemographics><Waveform><WaveformType>Rhythm</WaveformType><WaveformStartTime>0"
            f"</WaveformStartTime><NumberofLeads>{len(leads)}</NumberofLeads><SampleType>CONTINUOUS_SAMPLES"
            f"</SampleType><SampleBase>{int(fs)}</SampleBase><SampleExponent>0</SampleExponent>"
            f"{''.join(lead_data)}</Waveform></RestingECG>").encode("latin-1")


def aecg_xml(signal: np.ndarray, fs: float) -> bytes:
    """An HL7 aECG document (the HL7 v3 Annotated ECG structure): a trial subject with birth time and sex, one
    RHYTHM series whose sequence set holds the time sequence and one SLIST_PQ sequence per lead (MDC codes), digits
    in µV."""
    mdc = {"I": "I", "II": "II", "III": "III", "aVR": "AVR", "aVL": "AVL", "aVF": "AVF", "V1": "V1", "V2": "V2",
           "V3": "V3", "V4": "V4", "V5": "V5", "V6": "V6"}
    sequences = [f'<component><sequence><code code="TIME_ABSOLUTE" codeSystem="2.16.840.1.113883.5.4"/>'
                 f'<value xsi:type="GLIST_TS"><head value="20220601090000.000"/><increment value="{1 / fs}" '
                 f'unit="s"/></value></sequence></component>']
    for name in LEADS:
        digits = " ".join(str(v) for v in np.round(signal[LEADS.index(name)] * 1000).astype(int))
        sequences.append(f'<component><sequence><code code="MDC_ECG_LEAD_{mdc[name]}" '
                         f'codeSystem="2.16.840.1.113883.6.24"/><value xsi:type="SLIST_PQ"><origin value="0" '
                         f'unit="uV"/><scale value="1" unit="uV"/><digits>{digits}</digits></value></sequence>'
                         f'</component>')
    return ('<?xml version="1.0" encoding="UTF-8"?><AnnotatedECG xmlns="urn:hl7-org:v3" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><id root="1.2.3.4"/><code code="93000" '
            'codeSystem="2.16.840.1.113883.6.12"/><effectiveTime><low value="20220601090000"/><high '
            'value="20220601090010"/></effectiveTime><componentOf><timepointEvent><componentOf><subjectAssignment>'
            '<subject><trialSubject><id extension="MRN0042"/><subjectDemographicPerson><name><family>Doe</family>'
            '<given>Jane</given></name><administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/>'
            '<birthTime value="19800101"/></subjectDemographicPerson></trialSubject></subject></subjectAssignment>'
            '</componentOf></timepointEvent></componentOf><component><series><code code="RHYTHM" '
            'codeSystem="2.16.840.1.113883.5.4"/><effectiveTime><low value="20220601090000"/></effectiveTime>'
            f'<component><sequenceSet>{"".join(sequences)}</sequenceSet></component></series></component>'
            '</AnnotatedECG>').encode()


PHILIPS_UV_PER_COUNT = 5.0


def philips_xml(signal: np.ndarray, fs: float) -> bytes:
    """A Philips Sierra ECG 1.04 document (its published schema): patient data with age in years and sex, signal
    characteristics (resolution in µV per count) and the 12-lead rhythm as uncompressed base64 little-endian int16,
    lead after lead."""
    counts = np.round(signal * 1000 / PHILIPS_UV_PER_COUNT).astype("<i2")
    data = base64.b64encode(counts.tobytes()).decode()
    duration = int(round(signal.shape[1] / fs * 1000))
    return (f'<?xml version="1.0" encoding="utf-8"?><restingecgdata><documentinfo><documenttype>SierraECG'
            f'</documenttype><documentversion>1.04</documentversion></documentinfo><patient><generalpatientdata>'
            f'<patientid>MRN0042</patientid><name><lastname>Doe</lastname><firstname>Jane</firstname></name><age>'
            f'<years>{AGE}</years><dateofbirth>1980-01-01</dateofbirth></age><sex>Female</sex></generalpatientdata>'
            f'</patient><dataacquisition date="2022-06-01" time="09:00:00"><signalcharacteristics><samplingrate>'
            f'{int(fs)}</samplingrate><resolution>{PHILIPS_UV_PER_COUNT:g}</resolution><signalsigned>true'
            f'</signalsigned><numberchannelsvalid>12</numberchannelsvalid><numberchannelsallocated>12'
            f'</numberchannelsallocated></signalcharacteristics></dataacquisition><waveforms><parsedwaveforms '
            f'durationperchannel="{duration}" samplespersecond="{int(fs)}" dataencoding="Base64" '
            f'compression="Uncompressed" numberofleads="12" leadlabels="{" ".join(LEADS)}">{data}</parsedwaveforms>'
            f'</waveforms></restingecgdata>').encode()


SCP_NV_PER_COUNT = 5000
SCP_LEAD_CODES = {"I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8, "III": 61, "aVR": 62,
                  "aVL": 63, "aVF": 64}  # EN 1064 lead identification


def crc_ccitt(data: bytes) -> int:
    """CRC-CCITT (polynomial 0x1021, initial 0xFFFF): SCP-ECG's checksum."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def scp_section(sid: int, body: bytes) -> bytes:
    """An SCP-ECG section: CRC, id, length (header included, even), version 2.0, reserved ('SCPECG' in section 0)."""
    body += b"\0" * (len(body) % 2)
    rest = struct.pack("<HIBB6s", sid, 16 + len(body), 20, 20, b"SCPECG" if sid == 0 else b"\0" * 6) + body
    return struct.pack("<H", crc_ccitt(rest)) + rest


def write_scp(path: Path, signal: np.ndarray, fs: float, declared: int | None = None) -> Path:
    """SCP-ECG (EN 1064) written from the standard's structure: section 0 (pointers), 1 (patient tags: names, id,
    age in years, sex, date), 3 (lead definition: 12 simultaneous leads), 6 (rhythm data: uncompressed int16 at
    5000 nV per count, no Huffman table — section 2 absent)."""
    counts = np.round(signal * 1e6 / SCP_NV_PER_COUNT).astype("<i2")
    tags = [(0, b"Doe\0"), (1, b"Jane\0"), (2, b"MRN0042\0"), (4, struct.pack("<HB", AGE, 1)),
            (5, struct.pack("<HBB", 1980, 1, 1)), (8, bytes([2 if SEX == "F" else 1])),
            (25, struct.pack("<HBB", 2022, 6, 1)), (26, bytes([9, 0, 0]))]
    section1 = b"".join(struct.pack("<BH", tag, len(value)) + value for tag, value in tags) + b"\xff\0\0"
    section3 = bytes([12, 0x04 | (12 << 3)]) + b"".join(
        struct.pack("<IIB", 1, declared or signal.shape[1], SCP_LEAD_CODES[name]) for name in LEADS)
    section6 = struct.pack("<HHBB", SCP_NV_PER_COUNT, int(round(1e6 / fs)), 0, 0) + \
        b"".join(struct.pack("<H", row.nbytes) for row in counts) + counts.tobytes()
    sections = {1: scp_section(1, section1), 3: scp_section(3, section3), 6: scp_section(6, section6)}
    pointer_bytes = 16 + 12 * 10
    start, table = 7 + pointer_bytes, [(0, pointer_bytes, 7)]
    for sid in range(1, 12):
        if sid in sections:
            table.append((sid, len(sections[sid]), start))
            start += len(sections[sid])
        else:
            table.append((sid, 0, 0))
    section0 = scp_section(0, b"".join(struct.pack("<HII", *entry) for entry in table))
    rest = section0 + b"".join(sections[sid] for sid in sorted(sections))
    size = 6 + len(rest)
    body = struct.pack("<I", size) + rest
    path.write_bytes(struct.pack("<H", crc_ccitt(body)) + body)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    """The spec's ResNet1d fixture (real weights of the original implementation) as a checkpoint."""
    path = tmp_path_factory.mktemp("weights") / "resnet.pt"
    torch.save({"model": adult_model().state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def source(ptbxl, ptbxl_table):
    """Three real PTB-XL records (500 Hz, mV) and their ids."""
    rows = ptbxl_table.head(3)
    return [(f"r{int(row.ecg_id)}", ptbxl_signal(ptbxl, row.filename_hr)) for row in rows.itertuples()]


@pytest.fixture(scope="module")
def exports(source, tmp_path_factory):
    """The same records as WFDB (the reference), DICOM, EDF+ and GE MUSE XML, one folder per format, plus one
    folder that mixes them (names without extensions: found by content)."""
    root = tmp_path_factory.mktemp("exports")
    folders = {name: root / name for name in ("wfdb", "dicom", "edf", "muse", "aecg", "philips", "scp", "mixed")}
    for folder in folders.values():
        folder.mkdir()
    for i, (rid, signal) in enumerate(source):
        wfdb.wrsamp(rid, fs=500, units=["mV"] * 12, sig_name=list(LEADS), p_signal=signal.T.astype(np.float64),
                    fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folders["wfdb"]),
                    comments=[f"Age: {AGE}", f"Sex: {'Female' if SEX == 'F' else 'Male'}"])
        write_dicom(folders["dicom"] / f"{rid}.dcm", signal, 500.0)
        write_edf(folders["edf"] / f"{rid}.edf", signal, 500.0)
        (folders["muse"] / f"{rid}.xml").write_bytes(muse_xml(signal, 500.0))
        (folders["aecg"] / f"{rid}.xml").write_bytes(aecg_xml(signal, 500.0))
        (folders["philips"] / f"{rid}.xml").write_bytes(philips_xml(signal, 500.0))
        write_scp(folders["scp"] / f"{rid}.scp", signal, 500.0)
        kind = ("dicom", "edf", "muse")[i % 3]
        shutil.copy(next(folders[kind].glob(f"{rid}.*")), folders["mixed"] / f"{rid}_export")
    return folders


@pytest.mark.parametrize("kind,tolerance", [("dicom", DICOM_UV_PER_COUNT / 2000), ("edf", 0.0011),
                                            ("muse", MUSE_UV_PER_BIT / 2000), ("aecg", 0.0005),
                                            ("philips", PHILIPS_UV_PER_COUNT / 2000),
                                            ("scp", SCP_NV_PER_COUNT / 2e6)])
def test_each_format_reads_the_source_within_its_quantisation(exports, source, kind, tolerance):
    reader = open_reader(exports[kind])
    assert reader.format == "clinical" and set(reader.table["file_format"]) == {kind}
    assert list(reader.table["age"]) == [AGE] * 3 and list(reader.table["sex"]) == [SEX] * 3
    for index, (rid, signal) in enumerate(source):
        record = reader.load(index)
        assert record.id == f"{rid}.{ {'dicom': 'dcm', 'edf': 'edf', 'scp': 'scp'}.get(kind, 'xml')}"
        assert record.fs == 500.0 and record.signal.dtype == np.float32 and record.signal.shape == signal.shape
        measured = np.abs(record.signal[[0, 1, *range(6, 12)]] - signal[[0, 1, *range(6, 12)]]).max()
        assert measured <= tolerance + 1e-6, (kind, measured)
        if kind != "muse":  # all 12 stored
            assert np.abs(record.signal - signal).max() <= tolerance + 1e-6


def test_muse_eight_leads_give_the_derived_limb_leads(exports, source):
    record = open_reader(exports["muse"]).load(0)
    i, ii = record.signal[0].astype(np.float64), record.signal[1].astype(np.float64)
    np.testing.assert_allclose(record.signal[2], ii - i, atol=1e-5)
    np.testing.assert_allclose(record.signal[3], -(i + ii) / 2, atol=1e-5)
    np.testing.assert_allclose(record.signal[4], i - ii / 2, atol=1e-5)
    np.testing.assert_allclose(record.signal[5], ii - i / 2, atol=1e-5)
    # PTB-XL's own limb leads obey Einthoven's and Goldberger's laws to within its quantisation
    assert np.abs(record.signal[2:6] - source[0][1][2:6]).max() < 0.02


def test_mixed_folder_found_by_content_and_forced_format(exports):
    reader = open_reader(exports["mixed"])
    assert sorted(reader.table["file_format"]) == ["dicom", "edf", "muse"]
    assert all(reader.load(i).signal.shape == (12, 5000) for i in range(3))
    single = open_reader(next(exports["dicom"].glob("*.dcm")))  # one file: its name is its id
    assert len(single) == 1 and single.ids[0].endswith(".dcm") and single.load(0).signal.shape == (12, 5000)
    forced = open_reader(exports["mixed"], fmt="dicom")  # every file read as DICOM: two are bad records
    errors = forced.table.set_index("file_format")["error"]
    assert errors.notna().sum() == 2 and "cannot be read as dicom" in " ".join(errors.dropna())


def test_same_age_whichever_format_holds_the_record_and_no_phi_leaves(exports, source, weights, tmp_path,
                                                                     capsys):
    ages = {}
    for kind in ("wfdb", "dicom", "edf", "muse", "aecg", "philips", "scp"):
        out = tmp_path / f"{kind}.csv"
        code, err = run_cli(test_interface, ["--input", str(exports[kind]), "--weights", weights, "--output",
                                             str(out)], tmp_path, capsys)
        assert code == 0, err
        table = pd.read_csv(out, dtype={"ids": str})
        ages[kind] = table["predicted_age"].to_numpy()
        assert [Path(i).stem for i in table["ids"]] == [rid for rid, _ in source]
        for text in (out.read_text(), err):
            assert not any(word in text for word in PHI), (kind, text)
    for kind in ("dicom", "edf", "muse", "aecg", "philips", "scp"):
        np.testing.assert_allclose(ages[kind], ages["wfdb"], atol=0.05)  # years, within quantisation
    assert_no_phi_in_cache(tmp_path / "cache")


def assert_no_phi_in_cache(cache: Path) -> None:
    """The cache holds numbers and the record ids only. Its arrays are searched by what they can hold (a numeric
    dtype, loaded without pickle) and their headers as text: the raw bytes of 4 MB of samples and hashes hold any
    3-byte word by chance (p ≈ 0.2 for "Doe"), and did so once on another CPU."""
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False, mmap_mode="r")
            kinds = [array.dtype[name].base.kind for name in array.dtype.names] if array.dtype.names else \
                [array.dtype.kind]
            assert set(kinds) <= set("fiuV"), (path, array.dtype)
            data = data[:data.index(b"\n") + 1]  # the header: magic, dtype, shape
        elif path.name == "meta.json":  # its key and source are hex digests, which hold "1980" by chance (they did)
            meta = json.loads(data)
            assert all(re.fullmatch("[0-9a-f]+", meta.pop(field)) for field in ("key", "source")), path
            data = json.dumps(meta).encode()
        assert not any(word.encode() in data for word in PHI), path


def test_report_reads_the_ages_the_files_carry(exports, weights, tmp_path):
    out = tmp_path / "pred.csv"
    assert cli(test_interface, ["--input", str(exports["dicom"]), "--weights", weights, "--output", str(out)],
               tmp_path) == 0
    assert report_interface.entry(["--predictions", str(out), "--labels", str(exports["dicom"]), "--out",
                                   str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    predicted = pd.read_csv(out)["predicted_age"].to_numpy()
    assert report["n"] == 3 and report["mae"] == pytest.approx(np.abs(predicted - AGE).mean(), abs=1e-6)


def test_missing_and_duplicated_leads_are_bad_records_naming_what_they_have(source, tmp_path):
    signal = source[0][1]
    write_dicom(tmp_path / "six.dcm", signal[[0, 1, 6, 7, 8, 9]], 500.0, leads=("I", "II", "V1", "V2", "V3", "V4"))
    write_dicom(tmp_path / "twice.dcm", signal[[0, 1, 1, 6, 7, 8, 9, 10, 11]], 500.0,
                leads=("I", "II", "II", "V1", "V2", "V3", "V4", "V5", "V6"))
    reader = open_reader(tmp_path)
    messages = {}
    for i, rid in enumerate(reader.ids):
        with pytest.raises(RecordError) as caught:
            reader.load(i)
        messages[rid] = str(caught.value)
    assert "lacks lead(s) V5, V6" in messages["six.dcm"] and "has I, II" in messages["six.dcm"]
    assert "names lead II more than once" in messages["twice.dcm"]


def test_leads_beyond_the_twelve_are_left_out_whatever_their_length():
    leads = {name: np.full(1000, i / 10) for i, name in enumerate(LEADS)}
    leads["V7"] = np.zeros(600)  # a 13th lead of another length (a Holter or a 15-lead export)
    signal = clinical.to_signal(clinical._Parsed(leads, 500.0, None, None), "f.xml")
    assert signal.shape == (12, 1000) and np.allclose(signal[:, 0], np.arange(12) / 10)


HOSTILE = {
    "bomb": '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
            '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">'
            '<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>',
    "external": '<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
}


@pytest.mark.parametrize("case", ["bomb", "external", "philips_bomb", "philips_external", "truncated_base64",
                                  "too_large", "short_dicom", "short_scp", "scp_declares_2e9_samples"])
def test_hostile_files_end_in_the_bad_input_policy(case, source, weights, tmp_path, capsys, monkeypatch):
    signal = source[0][1]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.xml").write_bytes(muse_xml(signal, 500.0))
    bad = folder / "bad.xml"
    if case in HOSTILE:
        document = muse_xml(signal, 500.0, doctype=HOSTILE[case]).decode("latin-1")
        entity = "&lol4;" if case == "bomb" else "&xxe;"
        bad.write_text(document.replace("<PatientAge>42", f"<PatientAge>{entity}42"), encoding="latin-1")
    elif case.startswith("philips"):  # the Philips reader parses XML another way (xmltodict): refused there too
        entity = "&lol4;" if case.endswith("bomb") else "&xxe;"
        bad.write_text(f'<?xml version="1.0"?>{HOSTILE[case.split("_")[1]]}<restingecgdata><patient>{entity}'
                       f'</patient></restingecgdata>')
    elif case == "truncated_base64":
        bad.write_bytes(muse_xml(signal, 500.0, payload="AAECAwQFBgcICQ"))  # not a whole number of samples
    elif case == "too_large":  # the bound lowered to just above the good file's size
        bad.write_bytes(muse_xml(signal, 500.0) + b"<!--" + b" " * 100_000 + b"-->")
        monkeypatch.setattr(clinical, "MAX_ECG_FILE_BYTES", (folder / "good.xml").stat().st_size + 1)
    elif case == "scp_declares_2e9_samples":  # read within the file's own bytes, never allocated as declared
        bad = write_scp(folder / "bad.scp", signal, 500.0, declared=2_000_000_000)
    else:
        bad = write_dicom(folder / "bad.dcm", signal, 500.0) if case == "short_dicom" else \
            write_scp(folder / "bad.scp", signal, 500.0)
        content = bad.read_bytes()
        bad.write_bytes(content[: len(content) // 2])  # declares 5000 samples, holds half
    out = tmp_path / "p.csv"
    argv = ["--input", str(folder), "--weights", weights, "--output", str(out)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, err = run_cli(test_interface, argv, tmp_path, capsys)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 512 * 1024  # KiB: bounded memory
    assert code == 2 and bad.name in err and not out.exists(), err
    assert "root:" not in err  # /etc/passwd never read into anything
    if case == "too_large":
        assert "more than the" in err
    code, err = run_cli(test_interface, [*argv, "--on_bad", "skip"], tmp_path, capsys)
    assert code == 0, err
    assert list(pd.read_csv(out, dtype={"ids": str})["ids"]) == ["good.xml"]

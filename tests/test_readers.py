"""Every reader on real records, lead order by name, and clear errors for bad inputs."""
from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from dataloader.formats import open_reader
from dataloader.hdf5 import HDF5Reader
from dataloader.manifest import ManifestReader
from dataloader.records import LEADS, NpyFolderReader, RecordError
from dataloader.wfdb_records import PTBXLReader, WFDBFolderReader


def test_ptbxl_root_and_database_csv_at_both_rates(ptbxl, ptbxl_table):
    for path in (ptbxl, ptbxl / "ptbxl_database.csv"):
        for rate, n in ((500, 5000), (100, 1000)):
            reader = open_reader(path, ptbxl_rate=rate)
            assert isinstance(reader, PTBXLReader) and len(reader) == 353
            record = reader.load(0)
            assert record.id == "1" and record.fs == rate and record.signal.shape == (12, n)
            assert record.signal.dtype == np.float32
            assert record.meta["age"] == 56 and record.meta["sex"] == "F" and record.meta["strat_fold"] == 3
            assert record.meta["patient_id"] == "15709"
    hr, lr = open_reader(ptbxl, ptbxl_rate=500).load(5).signal, open_reader(ptbxl, ptbxl_rate=100).load(5).signal
    # the 100 Hz record is the 500 Hz one decimated: same ECG, same amplitudes (mV)
    assert np.corrcoef(hr[1, ::5], lr[1])[0, 1] > 0.9


def test_ptbxl_leads_reordered_by_name(ptbxl):
    import wfdb

    record = wfdb.rdrecord(str(ptbxl / "records500/00000/00001_hr"))
    assert record.sig_name[3] == "AVR"  # PTB-XL spells the augmented leads in capitals
    ours = open_reader(ptbxl).load(0).signal
    np.testing.assert_allclose(ours, record.p_signal.T.astype(np.float32))


def test_cinc_folder_with_header_labels(cinc):
    reader = open_reader(cinc)
    assert isinstance(reader, WFDBFolderReader) and len(reader) == 50
    table = reader.table.set_index("id")
    assert table.loc["E07500", "age"] == 78 and table.loc["E07500", "sex"] == "M"
    record = reader.load(0)
    assert record.signal.shape == (12, 5000) and record.fs == 500


def test_cinc_shuffled_leads_are_put_back_in_order(cinc, tmp_path):
    import wfdb

    source = wfdb.rdrecord(str(cinc / "E07501"))
    order = [11, 0, 5, 3, 1, 2, 4, 6, 7, 8, 9, 10]
    wfdb.wrsamp("shuffled", fs=source.fs, units=["mV"] * 12, sig_name=[source.sig_name[i] for i in order],
                p_signal=source.p_signal[:, order], fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12,
                comments=["Age: 65", "Sex: Female"], write_dir=str(tmp_path))
    record = open_reader(tmp_path).load(0)
    np.testing.assert_allclose(record.signal, source.p_signal.T, atol=1e-3)
    assert record.meta["age"] == 65 and record.meta["sex"] == "F"


def test_hdf5_reader_lazy_parts_and_labels(code15):
    reader = open_reader(code15)
    assert isinstance(reader, HDF5Reader) and len(reader) == 40 and len(reader.hdf5_files) == 2
    exams = pd.read_csv(code15 / "exams.csv")
    assert reader.ids == exams["exam_id"].astype(str).tolist()
    assert reader.table["age"].tolist() == exams["age"].tolist()
    assert set(reader.table["sex"]) <= {"M", "F"} and reader.table["patient_id"].notna().all()
    record = reader.load(30)
    with h5py.File(code15 / "exams_part1.hdf5") as handle:
        np.testing.assert_array_equal(record.signal, handle["tracings"][5].T)
    block = reader.load_block(20, 30)  # crosses the file boundary
    assert [r.id for r in block] == reader.ids[20:30]
    np.testing.assert_array_equal(block[-1].signal, reader.load(29).signal)


def test_a_readers_ids_are_made_once_per_table_and_not_sent_to_workers(code15):
    """``reader.ids`` is indexed record by record in the pipeline: it is the same list until the table changes,
    a subset has its own, and a pickled reader (what a worker process gets) leaves it to be rebuilt."""
    import pickle

    reader = open_reader(code15)
    ids = reader.ids
    assert reader.ids is ids and ids == reader.table["id"].astype(str).tolist()
    part = reader.subset([3, 1])
    assert part.ids == [ids[3], ids[1]] and reader.ids is ids
    state = reader.__getstate__()
    assert "_ids" not in state and "_ids" in reader.__dict__
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.ids == ids and clone.load(30).id == ids[30]
    chunk = reader.part(20, 30)  # what a worker is sent for one chunk: those records only, the same ones
    assert len(chunk) == 10 and chunk.ids == ids[20:30]
    assert len(pickle.dumps(chunk)) < len(pickle.dumps(reader))
    np.testing.assert_array_equal(chunk.load_block(0, 10)[-1].signal, reader.load(29).signal)
    reader.table = reader.table.iloc[::-1].reset_index(drop=True)
    assert reader.ids == ids[::-1]


def test_npy_folder_and_manifest(maic_adult, tmp_path):
    folder = NpyFolderReader(maic_adult / "ECG_adult_numpy_train", labels=maic_adult / "ECG_adult_age_train.csv")
    assert len(folder) == 24 and folder.ids[:3] == ["ecg_adult_0", "ecg_adult_1", "ecg_adult_2"]
    flat, square = folder.load(0), folder.load(1)  # stored (60000,) and (12, 5000)
    assert flat.signal.shape == square.signal.shape == (12, 5000)
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"path": folder.table["path"], "age": folder.table["age"]}).to_csv(manifest, index=False)
    reader = open_reader(manifest, fs=500)
    assert isinstance(reader, ManifestReader)
    np.testing.assert_array_equal(reader.load(3).signal, folder.load(3).signal)
    assert reader.table["age"].tolist() == folder.table["age"].tolist()


def test_manifest_of_wfdb_records(ptbxl, ptbxl_table, tmp_path):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(ptbxl / f) for f in ptbxl_table["filename_lr"].head(3)],
                  "age": ptbxl_table["age"].head(3)}).to_csv(manifest, index=False)
    record = open_reader(manifest).load(2)
    assert record.fs == 100 and record.signal.shape == (12, 1000)


# ---- bad inputs: clear errors that name the record ------------------------------------------------------------
def test_missing_lead_is_named(cinc, tmp_path):
    import wfdb

    source = wfdb.rdrecord(str(cinc / "E07502"))
    wfdb.wrsamp("no_v6", fs=500, units=["mV"] * 11, sig_name=source.sig_name[:11], p_signal=source.p_signal[:, :11],
                fmt=["16"] * 11, adc_gain=[1000.0] * 11, baseline=[0] * 11, write_dir=str(tmp_path))
    with pytest.raises(RecordError, match=r"no_v6\.hea: lacks lead\(s\) V6"):
        open_reader(tmp_path).load(0)


def test_wrong_shape_npy_is_named(tmp_path):
    np.save(tmp_path / "ecg_adult_1.npy", np.zeros((11, 5000), np.float32))
    with pytest.raises(RecordError, match=r"ecg_adult_1\.npy: has shape \(11, 5000\)"):
        NpyFolderReader(tmp_path).load(0)


def test_truncated_npy_is_named(tmp_path):
    np.save(tmp_path / "ecg_adult_2.npy", np.ones((12, 5000), np.float32))
    data = (tmp_path / "ecg_adult_2.npy").read_bytes()
    (tmp_path / "ecg_adult_2.npy").write_bytes(data[:1000])
    with pytest.raises(RecordError, match=r"ecg_adult_2\.npy: is not a readable \.npy"):
        NpyFolderReader(tmp_path).load(0)


def test_unreadable_header_is_named(tmp_path):
    (tmp_path / "broken.hea").write_text("this is not a header\n\x00\x01")
    with pytest.raises(RecordError, match=r"broken\.hea"):
        reader = open_reader(tmp_path)
        reader.load(0)


@pytest.mark.parametrize("dataset,shape,message", [
    ("signals", (2, 4096, 12), r"exams_part9\.hdf5: has no 'tracings' dataset"),
    ("tracings", (2, 4096, 8), r"exams_part9\.hdf5: 'tracings' has shape \(2, 4096, 8\)")])
def test_bad_hdf5_is_named(tmp_path, dataset, shape, message):
    path = tmp_path / "exams_part9.hdf5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset(dataset, data=np.zeros(shape, np.float32))
    with pytest.raises(RecordError, match=message):
        open_reader(path)


def test_unknown_inputs(tmp_path):
    with pytest.raises(RecordError, match="does not exist"):
        open_reader(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordError, match="holds no"):
        open_reader(tmp_path / "empty")
    assert LEADS[3] == "aVR"


def test_format16_records_are_read_by_numpy_exactly_as_wfdb_reads_them(ptbxl, cinc, tmp_path):
    """The fast path (one format-16 file, read by numpy) gives wfdb's own numbers on every shared PTB-XL record at
    both rates and every CinC record; a record it does not recognise (format 212, a skewed or oversized file, a
    baseline given only as the ADC zero) goes to wfdb, and NaN samples stay NaN either way."""
    import wfdb

    from dataloader import wfdb_records as w

    def both(base: str) -> tuple:
        header = w.check_wfdb_header(base, base)
        plain = w.plain_format16(base, header)
        return plain, w.read_with_wfdb(base, base)

    bases = sorted({str(p.with_suffix("")) for p in (ptbxl / "records500").rglob("*.hea")})[:60] + \
        sorted({str(p.with_suffix("")) for p in (ptbxl / "records100").rglob("*.hea")})[:20] + \
        sorted(str(p.with_suffix("")) for p in cinc.glob("*.hea"))
    for base in bases:
        plain, reference = both(base)
        assert plain is not None, base  # the shared records are all plain format 16
        fast = w.read_plain16(plain, base)
        assert np.array_equal(fast[0], reference[0], equal_nan=True), base
        assert fast[1:] == reference[1:], base
    # records wfdb writes in other layouts, with a missing sample, a baseline and no parenthesised one
    source = wfdb.rdrecord(bases[0])
    digital = source.adc().astype(np.int64)
    digital[10, 3] = -32768  # format 16's "no sample"
    for name, fmt, baseline in (("f212", "212", 0), ("f16", "16", 25), ("f16_zero", "16", None)):
        kwargs = dict(fs=500, units=["mV"] * 12, sig_name=source.sig_name, fmt=[fmt] * 12, adc_gain=[1000.0] * 12,
                      baseline=[baseline or 0] * 12, write_dir=str(tmp_path))
        wfdb.wrsamp(name, d_signal=np.clip(digital, -2048 if fmt == "212" else -32768, 2047 if fmt == "212" else
                                           32767).astype(np.int16 if fmt == "16" else np.int32), **kwargs)
        header = tmp_path / f"{name}.hea"
        if baseline is None:  # no "(baseline)": wfdb takes the ADC zero (written as 0)
            header.write_text(header.read_text().replace("1000.0(0)/mV", "1000.0/mV"))
        plain, reference = both(str(tmp_path / name))
        assert (plain is None) == (fmt == "212"), name
        if plain is not None:
            fast = w.read_plain16(plain, name)
            assert np.array_equal(fast[0], reference[0], equal_nan=True) and np.isnan(fast[0][10, 3]), name
            assert np.allclose(np.nan_to_num(fast[0][:, 0]), np.nan_to_num((digital[:, 0] - (baseline or 0)) / 1000.0))
    with open(tmp_path / "f16.dat", "ab") as handle:  # a file longer than its header says: wfdb's to read
        handle.write(b"\0\0")
    assert both(str(tmp_path / "f16"))[0] is None
    signal, fs = w.read_wfdb(str(tmp_path / "f16"))
    assert fs == 500 and signal.shape == (12, len(digital))

"""Untrusted files: checkpoints never run code, the cache can never serve stale signals, run folders are locked,
outputs never replace inputs, and hostile inputs end in clear errors with bounded work (issue: security and
silent-corruption defects)."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CINC, ROOT, SPEC, TINY, cli, need, write_code15

import report_interface
import test_interface
import train_interface
from models.registry import get_model


class Planted:
    """Unpickling this calls open(marker, 'w'): a stand-in for any code a hostile pickle could run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def fixture_model(arch: str = "ResNet1d"):
    fixture = torch.load(need(SPEC / f"{arch}_small.pt"), weights_only=False)
    model = get_model(arch, **fixture["config"])
    model.load_state_dict(fixture["state_dict"])
    return model


@pytest.fixture()
def evil(tmp_path):
    """A seed-format checkpoint with valid weights plus an object whose unpickling creates a marker file."""
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"model": fixture_model().state_dict(), "epoch": 1, "payload": Planted(marker)}, path)
    return path, marker


def expect_refusal(code: int, marker: Path, err: str, path: Path) -> None:
    assert code == 2, err
    assert not marker.exists()
    assert str(path) in err and "--trust_checkpoint" in err and "Traceback" not in err, err


def test_crafted_checkpoint_is_refused_by_every_loading_cli(evil, maic_adult, tmp_path, capsys):
    path, marker = evil
    records = str(maic_adult / "ECG_adult_numpy_valid")
    out = tmp_path / "out.csv"
    code = cli(test_interface, ["--input", records, "--weights", str(path), "--output", str(out)], tmp_path)
    expect_refusal(code, marker, capsys.readouterr().err, path)
    code = cli(test_interface, ["--test_for_adult", records, "--submission_template",
                                str(maic_adult / "submission.csv"), "--weights_adult", str(path), "--output",
                                str(out)], tmp_path)
    expect_refusal(code, marker, capsys.readouterr().err, path)
    published = tmp_path / "published"
    published.mkdir()
    shutil.copy(path, published / "model.pth")
    (published / "config.json").write_text('{"seq_length": 4096, "net_filter_size": [8, 16, 24, 32, 40], '
                                           '"net_seq_lengh": [4096, 1024, 256, 64, 16]}')
    code = cli(test_interface, ["--input", records, "--weights", str(published), "--output", str(out)], tmp_path)
    expect_refusal(code, marker, capsys.readouterr().err, published / "model.pth")
    train = ["--data_root", str(maic_adult), "--arch", "ResNet1d", *TINY["ResNet1d"], "--nepoch", "2", "--batch_size",
             "8", "--device", "cpu"]
    code = cli(train_interface, [*train, "--env", "pre", "--pretrained", "--pretrain_model_path", str(path)], tmp_path)
    expect_refusal(code, marker, capsys.readouterr().err, path)
    run = tmp_path / "log" / "ResNet1d_res"
    run.mkdir(parents=True)
    shutil.copy(path, run / "last.pt")
    code = cli(train_interface, [*train, "--env", "res", "--resume"], tmp_path)
    expect_refusal(code, marker, capsys.readouterr().err, run / "last.pt")
    assert not out.exists()


def test_trust_checkpoint_loads_with_full_unpickling(evil, maic_adult, tmp_path, capsys):
    path, marker = evil
    out = tmp_path / "out.csv"
    code = cli(test_interface, ["--input", str(maic_adult / "ECG_adult_numpy_valid"), "--weights", str(path),
                                "--output", str(out), "--trust_checkpoint"], tmp_path)
    assert code == 0 and marker.exists() and len(pd.read_csv(out)) == 6
    assert "full unpickling" in capsys.readouterr().err


def test_our_checkpoints_hold_only_plain_data(maic_adult, tmp_path):
    assert cli(train_interface, ["--data_root", str(maic_adult), "--arch", "ResNet1d", *TINY["ResNet1d"], "--nepoch",
                                 "1", "--batch_size", "8", "--device", "cpu", "--env", "plain"], tmp_path) == 0
    run = tmp_path / "log" / "ResNet1d_plain"
    for checkpoint in [*run.glob("*.pt"), run / "model.pth"]:
        state = torch.load(checkpoint, weights_only=True)  # raises on anything beyond tensors and plain data
        assert {"model", "optimizer", "rng", "arch", "preprocessing", "head"} <= set(state)


# ---- the cache ---------------------------------------------------------------------------------------------------
@pytest.fixture()
def npy_folder(maic_adult, tmp_path) -> Path:
    folder = tmp_path / "npy"
    shutil.copytree(maic_adult / "ECG_adult_numpy_valid", folder)
    return folder


def adult_model():
    """The ResNet1d fixture with its output moved by 50 years into the adult range (untrained, it predicts about 0,
    and ages below 0 are bad output)."""
    model = fixture_model()
    with torch.no_grad():
        model.lin.bias += 50.0
    return model


@pytest.fixture()
def weights(tmp_path) -> str:
    torch.save({"model": adult_model().state_dict()}, tmp_path / "resnet.pt")
    return str(tmp_path / "resnet.pt")


def predicted(folder, weights, tmp_path, *extra, cache="on") -> pd.Series:
    out = tmp_path / "pred.csv"
    assert cli(test_interface, ["--input", str(folder), "--weights", weights, "--output", str(out), "--cache", cache,
                                *extra], tmp_path) == 0
    return pd.read_csv(out, dtype={"ids": str}).set_index("ids")["predicted_age"]


@pytest.mark.parametrize("option", [["--input_scale", "0.5"], ["--fs", "250"], ["--tta", "3"]])
def test_every_input_option_is_in_the_cache_key(npy_folder, weights, tmp_path, option):
    """The Lima model reads millivolts at 400 Hz: scale and rate change its inputs, so cached ages must change
    exactly as uncached ones do."""
    plain = predicted(npy_folder, weights, tmp_path)
    cached = predicted(npy_folder, weights, tmp_path, *option)
    uncached = predicted(npy_folder, weights, tmp_path, *option, cache="off")
    pd.testing.assert_series_equal(cached, uncached, atol=1e-5, rtol=0)
    if option[0] != "--tta":  # 10 s at 400 Hz is one window: TTA changes nothing for this model
        assert (cached - plain).abs().max() > 1e-3


def test_swapped_same_size_files_with_kept_times(npy_folder, weights, tmp_path):
    before = predicted(npy_folder, weights, tmp_path)
    a, b = sorted(npy_folder.glob("*.npy"))[:2]
    times = [(p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (a, b)]
    data_a, data_b = a.read_bytes(), b.read_bytes()
    if len(data_a) != len(data_b):
        pytest.skip("the two records are stored in different layouts")
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    for path, ns in zip((a, b), times):
        os.utime(path, ns=ns)
    after = predicted(npy_folder, weights, tmp_path)
    assert after[a.stem] == pytest.approx(before[b.stem], abs=1e-5)
    assert after[b.stem] == pytest.approx(before[a.stem], abs=1e-5)


def test_permuted_leads_in_a_wfdb_header_are_not_served_from_cache(cinc, weights, tmp_path):
    folder = tmp_path / "cinc"
    folder.mkdir()
    for suffix in ("hea", "mat"):
        shutil.copy(cinc / f"E07500.{suffix}", folder / f"E07500.{suffix}")
    before = predicted(folder, weights, tmp_path)
    header = folder / "E07500.hea"
    ns = (header.stat().st_atime_ns, header.stat().st_mtime_ns)
    lines = header.read_text().splitlines()
    names = [line.split()[-1] for line in lines[1:13]]
    swapped = [line.rsplit(" ", 1)[0] + " " + names[(i + 1) % 12] for i, line in enumerate(lines[1:13])]
    header.write_text("\n".join([lines[0], *swapped, *lines[13:]]) + "\n")
    os.utime(header, ns=ns)
    after = predicted(folder, weights, tmp_path)
    assert abs(after.iloc[0] - before.iloc[0]) > 1e-3


def test_read_failures_are_never_cached(npy_folder, weights, tmp_path, capsys):
    victim = sorted(npy_folder.glob("*.npy"))[0]
    hidden = tmp_path / "hidden.npy"
    victim.rename(hidden)
    victim.symlink_to(tmp_path / "not_there_yet.npy")  # listed, then unreadable: an access failure
    out = tmp_path / "pred.csv"
    argv = ["--input", str(npy_folder), "--weights", weights, "--output", str(out)]
    assert cli(test_interface, argv, tmp_path) == 2
    assert victim.stem in capsys.readouterr().err
    hidden.rename(tmp_path / "not_there_yet.npy")  # the file becomes readable: the next run must read it
    assert cli(test_interface, argv, tmp_path) == 0 and len(pd.read_csv(out)) == 6
    assert not list((tmp_path / "cache").glob(".*.tmp"))


def test_tta_windows_come_from_one_cache(maic_adult, tmp_path):
    child = tmp_path / "child.pt"
    torch.save({"model": fixture_model("ResUDenseNet").state_dict()}, child)
    out = tmp_path / "p.csv"
    assert cli(test_interface, ["--input", str(maic_adult / "ECG_adult_numpy_valid"), "--weights", str(child),
                                "--mode", "child", "--tta", "5", "--output", str(out)], tmp_path) == 0
    caches = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert len(caches) == 1 and np.load(caches[0] / "windows.npy").shape == (6, 5)


def test_killed_cache_build_is_cleaned_up(npy_folder, weights, tmp_path):
    from dataloader.sources import HOST

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / "cache" / f".npy-0123.{HOST}.{int(dead.stdout)}.tmp"
    leftover.mkdir(parents=True)
    (leftover / "signals.npy").write_bytes(b"\0" * 1000)
    predicted(npy_folder, weights, tmp_path, "--input_scale", "2")
    assert not leftover.exists()


# ---- run folders -------------------------------------------------------------------------------------------------
def test_two_runs_in_one_folder_at_once(maic_adult, tmp_path):
    argv = [sys.executable, str(ROOT / "train_interface.py"), "--data_root", str(maic_adult), "--arch", "ResNet1d",
            *TINY["ResNet1d"], "--nepoch", "30", "--batch_size", "8", "--device", "cpu", "--env", "same", "--quiet",
            "--log_dir", str(tmp_path / "log"), "--cache_dir", str(tmp_path / "cache"), "--dataset_dir",
            str(tmp_path / "dataset")]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "log" / "ResNet1d_same" / ".lock"
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text().startswith("pid")) and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    first.kill()
    first.wait()
    assert second.returncode == 2
    assert f"is in use by another training run (pid {first.pid} on" in second.stderr, second.stderr
    # the first run was killed: its lock is stale, and the next run takes the folder over
    again = subprocess.run([*argv[:argv.index("30")], "1", *argv[argv.index("30") + 1:], "--overwrite"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "no longer running; taking it over" in again.stdout


# ---- outputs -----------------------------------------------------------------------------------------------------
def test_output_equal_to_an_input_is_refused(code15, cinc, weights, tmp_path, capsys):
    hdf5 = tmp_path / "exams.hdf5"
    shutil.copy(code15 / "exams_part0.hdf5", hdf5)
    manifest = tmp_path / "list.csv"
    pd.DataFrame({"path": [str(p) for p in sorted(cinc.glob("E075*.hea"))[:2]]}).to_csv(manifest, index=False)
    for source, output in ((hdf5, hdf5), (manifest, manifest), (hdf5, Path(weights))):
        before = output.read_bytes()
        code = cli(test_interface, ["--input", str(source), "--weights", weights, "--output", str(output)], tmp_path)
        assert code == 2 and "is an input of this run" in capsys.readouterr().err
        assert output.read_bytes() == before


def test_outputs_keep_the_umask_and_write_through_symlinks(npy_folder, weights, tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "pred.csv"
        assert cli(test_interface, ["--input", str(npy_folder), "--weights", weights, "--output", str(out)],
                   tmp_path) == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o640
    finally:
        os.umask(old)
    target = tmp_path / "shared" / "result.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert cli(test_interface, ["--input", str(npy_folder), "--weights", weights, "--output", str(link)],
               tmp_path) == 0
    assert link.is_symlink() and len(pd.read_csv(target)) == 6


def test_formula_like_ids_are_refused(npy_folder, weights, tmp_path, capsys):
    shutil.copy(sorted(npy_folder.glob("*.npy"))[0], npy_folder / "=HYPERLINK(1).npy")
    out = tmp_path / "pred.csv"
    assert cli(test_interface, ["--input", str(npy_folder), "--weights", weights, "--output", str(out)], tmp_path) == 2
    assert "'=HYPERLINK(1)'" in capsys.readouterr().err and not out.exists()


# ---- hostile or odd inputs ---------------------------------------------------------------------------------------
def run_predict(source, weights, tmp_path, capsys, *extra) -> tuple[int, str]:
    out = tmp_path / "pred.csv"
    out.unlink(missing_ok=True)
    code = cli(test_interface, ["--input", str(source), "--weights", weights, "--output", str(out), *extra], tmp_path)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code:
        assert not out.exists()
    return code, err


def test_huge_declared_hdf5_is_refused_before_reading(weights, tmp_path, capsys):
    path = tmp_path / "sparse.hdf5"
    with h5py.File(path, "w") as handle:  # a few KB on disk, 960 MB declared
        handle.create_dataset("tracings", shape=(2, 10_000_000, 12), dtype="float32", chunks=(1, 4096, 12))
        handle.create_dataset("exam_id", data=np.array([1, 2]))
    assert path.stat().st_size < 100_000
    code, err = run_predict(path, weights, tmp_path, capsys)
    assert code == 2 and "declares 10,000,000 samples per lead" in err


def test_huge_declared_wfdb_and_device_files_are_refused(cinc, weights, tmp_path, capsys):
    folder = tmp_path / "wfdb"
    folder.mkdir()
    header = (cinc / "E07500.hea").read_text().splitlines()
    record = header[0].split()
    (folder / "huge.hea").write_text("\n".join([" ".join(["huge", *record[1:3], "10000000"]),
                                                *[line.replace("E07500.mat", "huge.dat") for line in header[1:]]]))
    (folder / "huge.dat").symlink_to("/dev/zero")
    code, err = run_predict(folder, weights, tmp_path, capsys)
    assert code == 2 and "declares 10,000,000 samples per lead" in err


def test_hdf5_layout_problems_are_named(weights, tmp_path, capsys):
    group = tmp_path / "group.hdf5"
    with h5py.File(group, "w") as handle:
        handle.create_group("tracings")
    two_d = tmp_path / "twod.hdf5"
    with h5py.File(two_d, "w") as handle:
        handle.create_dataset("tracings", data=np.ones((2, 4096, 12), np.float32))
        handle.create_dataset("exam_id", data=np.ones((2, 2), np.int64))
    ints = tmp_path / "int16.hdf5"
    with h5py.File(ints, "w") as handle:
        handle.create_dataset("tracings", data=np.random.default_rng(0).integers(-900, 900, (2, 4096, 12), np.int16))
    for path, message in ((group, "has no 'tracings' dataset"), (two_d, "'exam_id' is (2, 2)"),
                          (ints, "integer (int16) samples")):
        code, err = run_predict(path, weights, tmp_path, capsys)
        assert code == 2 and message in err, err
    code, _ = run_predict(ints, weights, tmp_path, capsys, "--input_scale", "0.001")  # µV → mV: read
    assert code == 0 and len(pd.read_csv(tmp_path / "pred.csv")) == 2


def test_label_tables_with_repeated_headers_or_missing_ids(code15, ptbxl, weights, tmp_path, capsys):
    exams = pd.read_csv(code15 / "exams.csv", dtype=str)
    folder = tmp_path / "code15"
    shutil.copytree(code15, folder)
    pd.concat([exams.head(3), pd.DataFrame([exams.columns], columns=exams.columns), exams.iloc[3:]]).to_csv(
        folder / "exams.csv", index=False)
    code, err = run_predict(folder, weights, tmp_path, capsys)
    assert code == 0, err
    root = tmp_path / "ptbxl"
    root.mkdir()
    for sub in ("records100", "records500"):
        (root / sub).symlink_to(ptbxl / sub)
    database = pd.read_csv(ptbxl / "ptbxl_database.csv", dtype=str).head(5)
    database.loc[2, "ecg_id"] = None
    database.to_csv(root / "ptbxl_database.csv", index=False)
    code, err = run_predict(root, weights, tmp_path, capsys)
    assert code == 2 and "1 record(s) have no id" in err


def test_one_bad_header_does_not_stop_a_wfdb_folder(cinc, weights, tmp_path, capsys):
    folder = tmp_path / "wfdb"
    folder.mkdir()
    for name in ("E07500", "E07501", "E07502"):
        for suffix in ("hea", "mat"):
            shutil.copy(cinc / f"{name}.{suffix}", folder / f"{name}.{suffix}")
    (folder / "E07501.hea").write_bytes(b"\xff\xfe garbage")
    lines = (folder / "E07502.hea").read_text().splitlines()
    record = lines[0].split()
    (folder / "E07502.hea").write_text("\n".join([" ".join([*record[:2], "-" + record[2], *record[3:]]), *lines[1:]]))
    code, err = run_predict(folder, weights, tmp_path, capsys)
    assert code == 2 and "E07501.hea" in err and "invalid sampling rate" in err
    code, err = run_predict(folder, weights, tmp_path, capsys, "--on_bad", "skip")
    assert code == 0 and len(pd.read_csv(tmp_path / "pred.csv")) == 1


def test_fifo_short_records_and_odd_rates_are_bad_records(npy_folder, weights, tmp_path, capsys):
    os.mkfifo(npy_folder / "pipe.npy")
    np.save(npy_folder / "tiny.npy", np.ones((12, 2), np.float32))
    started = time.time()
    code, err = run_predict(npy_folder, weights, tmp_path, capsys)
    assert time.time() - started < 60
    assert code == 2 and "pipe.npy: is not a regular file" in err and "tiny: lasts" in err
    (npy_folder / "pipe.npy").unlink()
    (npy_folder / "tiny.npy").unlink()
    with pytest.raises(SystemExit) as stop:  # an odd --fs is the option's fault: refused where it is parsed
        run_predict(npy_folder, weights, tmp_path, capsys, "--fs", "0.1")
    assert stop.value.code == 2 and "--fs: a number from 50 to 20000 (Hz), got '0.1'" in capsys.readouterr().err
    odd = tmp_path / "odd_rate"  # a record whose own header states an odd rate is a bad record
    odd.mkdir()
    shutil.copy(need(CINC) / "E07500.mat", odd)
    header = (CINC / "E07500.hea").read_text().splitlines()
    first = header[0].split()
    (odd / "E07500.hea").write_text("\n".join([" ".join([first[0], first[1], "10", *first[3:]]), *header[1:]]) + "\n")
    code, err = run_predict(odd, weights, tmp_path, capsys)
    assert code == 2 and "E07500: has a sampling rate of 10.0 Hz" in err


def test_bad_options_and_unwritable_places(npy_folder, weights, tmp_path, capsys):
    code, err = run_predict(npy_folder, weights, tmp_path, capsys, "--tta", "-3")
    assert code == 2 and "--tta must be ≥ 1" in err
    code, err = run_predict(npy_folder, weights, tmp_path, capsys, "--cache_dir", "/proc/ecg_age_cache")
    assert code == 2 and "cannot write the preprocessing cache in /proc/ecg_age_cache" in err
    (tmp_path / "a_file").write_text("x")
    pred = tmp_path / "p.csv"
    pd.DataFrame({"ids": ["1"], "predicted_age": [50.0]}).to_csv(pred, index=False)
    pd.DataFrame({"ids": ["1"], "age": [52.0]}).to_csv(tmp_path / "l.csv", index=False)
    code = report_interface.entry(["--predictions", str(pred), "--labels", str(tmp_path / "l.csv"), "--id_col", "ids",
                                   "--age_col", "age", "--out", str(tmp_path / "a_file")])
    err = capsys.readouterr().err
    assert code == 2 and "--out" in err and "is a file; give a folder" in err and "Traceback" not in err


def test_write_code15_fixture_is_plain_data(tmp_path):
    """The CODE-15% writer used by these tests stores float32 millivolts, which the reader accepts as is."""
    signal = np.random.default_rng(0).normal(size=(12, 5000)).astype(np.float32)
    path = write_code15(tmp_path / "x.hdf5", [(signal, 500.0)], [7])
    with h5py.File(path) as handle:
        assert handle["tracings"].dtype == np.float32 and handle["exam_id"][0] == 7

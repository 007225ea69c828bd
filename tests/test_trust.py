"""Numbers you can trust: a run folder is one experiment, ensembles use exactly its members, the cache follows every
file a record reads, outputs never replace inputs, implausible inputs and outputs never pass, a diverged run stops,
and hostile inputs end in exit 2 with bounded resources (issue: numbers you can trust)."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import wfdb
from conftest import ROOT, TINY_MODERN, cli, need, write_code15
from test_security import adult_model, fixture_model

import options
import report_interface
import test_interface
import train_interface
from dataloader.wfdb_records import read_wfdb
from engine.train.members import build_bundle
from models.checkpoint import TrainingFacts, save_checkpoint

CV = [*TINY_MODERN, "--ptbxl_rate", "100", "--folds", "2", "--nepoch", "1", "--env", "cv"]

def result_options(args, precision):
    return options.train_settings(args).result_options(precision)


def partner_args(args):
    """The partner's resolved options as a namespace (None without a partner)."""
    partner = options.train_settings(args).partner()
    return None if partner is None else argparse.Namespace(**partner.options)



@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) if the block takes longer than ``seconds`` — e.g. a FIFO being read."""
    def expire(*_):
        raise TimeoutError(f"took longer than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(module, argv, tmp, capsys) -> tuple[int, str]:
    code = cli(module, argv, tmp, quiet=False)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


@pytest.fixture(scope="module")
def cv_run(ptbxl, tmp_path_factory):
    """A complete 2-fold modern run on the real PTB-XL records (100 Hz, tiny width, 1 epoch)."""
    tmp = tmp_path_factory.mktemp("trust")
    assert cli(train_interface, [*CV, "--input", str(ptbxl)], tmp) == 0
    return tmp, tmp / "log" / "ECGEfficientNet_cv"


@pytest.fixture()
def lima_weights(tmp_path) -> str:
    torch.save({"model": adult_model().state_dict()}, tmp_path / "resnet.pt")
    return str(tmp_path / "resnet.pt")


def predicted(source, weights, tmp, *extra) -> pd.Series:
    out = tmp / "pred.csv"
    assert cli(test_interface, ["--input", str(source), "--weights", *weights, "--output", str(out), *extra],
               tmp) == 0
    return pd.read_csv(out, dtype={"ids": str}).set_index("ids")["predicted_age"]


# ---- a run folder is one experiment --------------------------------------------------------------------------------
def test_manifest_names_options_data_split_and_members(cv_run):
    _, run = cv_run
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["members"] == ["fold_0", "fold_1"] and manifest["complete"] is True
    assert manifest["options"]["seed"] == 5 and manifest["options"]["width"] == 0.25
    assert manifest["split"]["folds"] == 2 and manifest["split"]["records"] == 349
    folds = pd.read_csv(run / "folds.csv", dtype={"id": str})
    assert len(folds) == 349 and set(folds["fold"]) == {0, 1}
    assert set(manifest["finished"]) == {"fold_0", "fold_1"}


@pytest.mark.parametrize("change,named", [(["--seed", "99"], "--seed: 5 in the run, 99 now"),
                                          (["--folds", "3"], "--folds: 2 in the run, 3 now"),
                                          (["--width", "0.5"], "--width: 0.25 in the run, 0.5 now"),
                                          (["--nepoch", "2"], "--nepoch: 1 in the run, 2 now")])
def test_resume_with_a_changed_experiment_is_refused(cv_run, ptbxl, capsys, change, named):
    tmp, run = cv_run
    before = (run / "oof.csv").read_bytes()
    code, err = run_cli(train_interface, [*CV, "--input", str(ptbxl), *change, "--resume"], tmp, capsys)
    assert code == 2 and "--resume refused" in err and named in err, err
    if change[0] in ("--seed", "--folds"):
        assert "the split of records" in err
    assert (run / "oof.csv").read_bytes() == before and json.loads((run / "run.json").read_text())["complete"]


def test_resume_follows_the_content_not_where_it_lies(cv_run, ptbxl, tmp_path, capsys):
    """The same records copied elsewhere (another path, inode and time: another machine, a new mount) are the same
    experiment for --resume; one changed byte in a record file is not."""
    tmp, old = cv_run
    data, log = tmp_path / "ptbxl", tmp_path / "log"
    shutil.copytree(ptbxl, data)  # copytree keeps times: touch them so only the content is the same
    for path in data.rglob("*"):
        os.utime(path, ns=(time.time_ns(), time.time_ns()))
    shutil.copytree(old, log / old.name)
    run = log / old.name
    before = (run / "oof.csv").read_text()
    argv = [*CV, "--input", str(data), "--log_dir", str(log), "--cache_dir", str(tmp / "cache"), "--resume"]
    code, err = run_cli(train_interface, argv, tmp_path, capsys)
    assert code == 0, err
    assert (run / "oof.csv").read_text() == before  # nothing retrained: every fold was finished
    signal_file = next(data.rglob("*.dat"))
    content = bytearray(signal_file.read_bytes())
    content[len(content) // 2] ^= 1
    signal_file.write_bytes(bytes(content))
    code, err = run_cli(train_interface, argv, tmp_path, capsys)
    assert code == 2 and "--resume refused" in err and "the records" in err, err


def test_one_cycle_and_cosine_runs_cannot_be_extended(ptbxl):
    """The epoch count shapes every epoch of a cosine or one-cycle schedule, so it is part of the experiment; a step
    schedule's is not (a run may be extended by --resume)."""
    for scheduler, counts in (("cosine", True), ("onecycle", True), ("step", False)):
        args = options.parse_train([*CV, "--input", str(ptbxl), "--scheduler", scheduler])
        assert ("nepoch" in result_options(args, "fp32")) is counts, scheduler


def test_fresh_run_into_an_old_cv_folder_needs_overwrite(cv_run, ptbxl, cinc, tmp_path, capsys):
    tmp, old = cv_run
    log = tmp_path / "log"
    shutil.copytree(old, log / old.name)
    run = log / old.name
    argv = [*CV, "--input", str(ptbxl), "--folds", "1", "--log_dir", str(log), "--cache_dir", str(tmp / "cache")]
    code, err = run_cli(train_interface, argv, tmp_path, capsys)
    assert code == 2 and "holds an earlier experiment" in err and "--overwrite" in err
    assert (run / "fold_1" / "best.pt").exists()
    assert cli(train_interface, [*argv, "--overwrite"], tmp_path) == 0
    assert not list(run.glob("fold_*")) and not (run / "oof.csv").exists() and not (run / "cv.json").exists()
    assert json.loads((run / "run.json").read_text())["members"] == ["."]
    out = tmp_path / "p.csv"
    code, err = run_cli(test_interface, ["--input", str(cinc), "--weights", str(run), "--output", str(out),
                                         "--on_bad", "skip", "--cache_dir", str(tmp / "cache")], tmp_path, capsys)
    assert code == 0 and f"from {run / 'best.pt'}" in err  # the new single model, not the stale folds


def test_every_member_folder_is_an_earlier_result_and_is_cleared(tmp_path):
    """Seed and partner members (fold_<k>_seed_<j>, fold_<k>_<arch>, fold_<k>_<arch>_<i>) hold an earlier
    experiment's results like fold_<k> does, and --overwrite removes them; folders a run never writes are never
    removed: while they are there, clearing is refused, naming them (issue 26)."""
    from engine.runs import clear_run, earlier_results
    from utils.errors import UserError

    members = ["fold_0", "fold_0_seed_1", "fold_1_BaselineNet", "fold_1_BaselineNet_1", "fold_12_ResNet1d_0"]
    for name in members:
        (tmp_path / name).mkdir()
    for name in ("notes", "fold_x", "fold_1_Baseline-Net"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "kept.pt").write_bytes(b"mine")
    (tmp_path / "fold_1_BaselineNet_1" / "best.pt").write_bytes(b"old")
    assert earlier_results(tmp_path) == ["fold_1_BaselineNet_1/best.pt"]
    with pytest.raises(UserError, match="did not write") as refused:
        clear_run(tmp_path)
    assert all(name in str(refused.value) for name in ("notes", "fold_x", "fold_1_Baseline-Net"))
    assert (tmp_path / "fold_1_BaselineNet_1" / "best.pt").exists()  # nothing removed
    for name in ("notes", "fold_x", "fold_1_Baseline-Net"):
        shutil.move(tmp_path / name, tmp_path.parent / f"{tmp_path.name}_{name}")
    clear_run(tmp_path)
    assert not list(tmp_path.iterdir())


def test_ensemble_is_exactly_the_manifest_members(cv_run, cinc, tmp_path, capsys):
    tmp, old = cv_run
    run = tmp_path / "run"
    shutil.copytree(old, run)
    out = tmp_path / "p.csv"
    argv = ["--input", str(cinc), "--weights", str(run), "--output", str(out), "--on_bad", "skip", "--cache_dir",
            str(tmp / "cache")]
    reference = None
    code, err = run_cli(test_interface, argv, tmp_path, capsys)
    assert code == 0 and "an ensemble of 2 models" in err
    reference = pd.read_csv(out)
    shutil.copytree(run / "fold_0", run / "fold_old")  # strays: ignored
    shutil.copytree(run / "fold_0", run / "fold_2")
    torch.save({"model": fixture_model().state_dict()}, run / "fold_2" / "best.pt")
    (run / "fold_notes.txt").write_text("notes")
    code, err = run_cli(test_interface, argv, tmp_path, capsys)
    assert code == 0 and "an ensemble of 2 models" in err
    pd.testing.assert_frame_equal(pd.read_csv(out), reference)
    checkpoint = run / "fold_1" / "best.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-8] + b"\0" * 8)  # changed since training
    code, err = run_cli(test_interface, argv, tmp_path, capsys)
    assert code == 2 and "member fold_1 is missing or has changed" in err
    shutil.rmtree(run / "fold_1")
    code, err = run_cli(test_interface, argv, tmp_path, capsys)
    assert code == 2 and "member fold_1 is missing" in err


def copied_run(cv_run, tmp_path) -> tuple[Path, Path, list[str]]:
    """A copy of the 2-fold run in its own log folder, and the arguments that trained it."""
    tmp, old = cv_run
    run = tmp_path / "log" / old.name
    shutil.copytree(old, run)
    return tmp, run, [*CV, "--log_dir", str(tmp_path / "log"), "--cache_dir", str(tmp / "cache")]


def test_overwrite_never_deletes_what_the_run_reads_or_what_it_did_not_write(cv_run, ptbxl, tmp_path, capsys):
    """Issue 26: --overwrite deleted the --pretrain_model_path checkpoint lying in the run folder, a user's
    fold_0_backup/ and a file called my_model_v3.pt."""
    tmp, run, argv = copied_run(cv_run, tmp_path)
    argv = [*argv, "--input", str(ptbxl), "--overwrite"]
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    code, err = run_cli(train_interface, [*argv, "--pretrained", "--pretrain_model_path",
                                          str(run / "fold_0" / "best.pt")], tmp_path, capsys)
    assert code == 2 and "--pretrain_model_path" in err and "would delete" in err, err
    (run / "fold_0_backup").mkdir()
    (run / "fold_0_backup" / "notes.txt").write_text("mine")
    (run / "my_model_v3.pt").write_bytes(b"mine")
    code, err = run_cli(train_interface, argv, tmp_path, capsys)
    assert code == 2 and "fold_0_backup" in err and "my_model_v3.pt" in err and "did not write" in err, err
    assert all(p.read_bytes() == content for p, content in before.items())  # nothing of the run removed
    assert (run / "fold_0_backup" / "notes.txt").exists() and (run / "my_model_v3.pt").exists()


def test_temporaries_of_a_killed_run_are_removed_once_the_lock_is_held(cv_run, ptbxl, tmp_path, capsys):
    tmp, run, argv = copied_run(cv_run, tmp_path)
    left = [run / ".learning_curves.png.k1_x9q2.tmp", run / "fold_1" / ".best.pt.abc123de.tmp",
            run / ".run.json.zz99yy88.tmp"]
    mine = [run / ".mynotes.abcdefgh.tmp", run / "fold_0" / "learning_curves.png.tmp"]
    for path in [*left, *mine]:
        path.write_bytes(b"partial")
    code, err = run_cli(train_interface, [*argv, "--input", str(ptbxl), "--resume", "--seed", "99"], tmp_path,
                        capsys)
    assert code == 2 and "--resume refused" in err  # a failed resume still cleans up after the killed run
    assert not any(p.exists() for p in left) and all(p.exists() for p in mine)


@pytest.mark.parametrize("folds", [1_000_000_000, -5, "3", 2.0, None])
def test_a_run_folder_claiming_absurd_folds_is_refused_at_once(cv_run, cinc, folds, tmp_path, capsys):
    tmp, run, _ = copied_run(cv_run, tmp_path)
    (run / "run.json").unlink()  # a folder of an older version: cv.json says how many folds
    (run / "cv.json").write_text(json.dumps({"folds": folds}))
    with deadline(60):
        code, err = run_cli(test_interface, ["--input", str(cinc), "--weights", str(run), "--output",
                                             str(tmp_path / "p.csv"), "--cache_dir", str(tmp / "cache")],
                            tmp_path, capsys)
    assert code == 2 and "cv.json" in err and "folds" in err, err


@pytest.mark.parametrize("member", ["../ECGEfficientNet_single", "fold_0/../../x", ["x"], 5, "/etc"])
def test_a_manifest_member_outside_the_run_folder_is_refused(cv_run, cinc, member, tmp_path, capsys):
    tmp, run, _ = copied_run(cv_run, tmp_path)
    outside = tmp_path / "log" / "ECGEfficientNet_single"
    shutil.copytree(run / "fold_0", outside)
    manifest = json.loads((run / "run.json").read_text())
    manifest["members"][0] = member
    if isinstance(member, str):
        manifest["finished"][member] = manifest["finished"].pop("fold_0")  # its matching hash
    (run / "run.json").write_text(json.dumps(manifest))
    code, err = run_cli(test_interface, ["--input", str(cinc), "--weights", str(run), "--output",
                                         str(tmp_path / "p.csv"), "--cache_dir", str(tmp / "cache")], tmp_path,
                        capsys)
    assert code == 2 and "run.json" in err and not (tmp_path / "p.csv").exists(), err


def test_a_member_folder_linked_outside_the_run_is_refused(cv_run, cinc, tmp_path, capsys):
    tmp, run, _ = copied_run(cv_run, tmp_path)
    shutil.move(run / "fold_1", tmp_path / "elsewhere")
    (run / "fold_1").symlink_to(tmp_path / "elsewhere")
    code, err = run_cli(test_interface, ["--input", str(cinc), "--weights", str(run), "--output",
                                         str(tmp_path / "p.csv"), "--cache_dir", str(tmp / "cache")], tmp_path,
                        capsys)
    assert code == 2 and "outside the run folder" in err, err


def test_unfinished_cv_run_is_refused_with_what_to_do(cv_run, cinc, tmp_path, capsys):
    _, old = cv_run
    run = tmp_path / "run"
    shutil.copytree(old, run)
    manifest = json.loads((run / "run.json").read_text())
    del manifest["finished"]["fold_1"]
    manifest["complete"] = False
    (run / "run.json").write_text(json.dumps(manifest))
    (run / "cv.json").unlink()
    code, err = run_cli(test_interface, ["--input", str(cinc), "--weights", str(run), "--output",
                                         str(tmp_path / "p.csv")], tmp_path, capsys)
    assert code == 2 and "unfinished (1 of 2 folds trained" in err and "--resume" in err
    assert f"--weights {run / 'fold_0'}" in err


def test_divergence_stops_at_once_and_leaves_the_folder_consistent(cv_run, ptbxl, cinc, tmp_path, capsys):
    tmp, old = cv_run
    log = tmp_path / "log"
    shutil.copytree(old, log / old.name)
    run = log / old.name
    argv = [*CV, "--input", str(ptbxl), "--lr_initial", "1e30", "--overwrite", "--log_dir", str(log), "--cache_dir",
            str(tmp / "cache")]
    code, err = run_cli(train_interface, argv, tmp_path, capsys)
    assert code == 2 and "training diverged at epoch 1" in err and "--lr_initial" in err, err
    assert not (run / "oof.csv").exists() and not (run / "cv.json").exists()
    assert not (run / "fold_0" / "best.pt").exists() and not (run / "fold_1").exists()
    assert json.loads((run / "run.json").read_text())["complete"] is False
    code, err = run_cli(test_interface, ["--input", str(cinc), "--weights", str(run), "--output",
                                         str(tmp_path / "p.csv")], tmp_path, capsys)
    assert code == 2 and "unfinished" in err


def test_resnet1d_with_the_modern_preprocessing_is_refused_before_anything(ptbxl, tmp_path, capsys):
    code, err = run_cli(train_interface, ["--input", str(ptbxl), "--arch", "ResNet1d", "--preprocessing", "modern",
                                          "--device", "cpu"], tmp_path, capsys)
    assert code == 2 and "takes exactly 4096 samples per lead, but its preprocessing gives 5000" in err
    assert not (tmp_path / "log").exists() and not (tmp_path / "cache").exists()


# ---- the cache follows every file a record reads -------------------------------------------------------------------
def copy_record(cinc: Path, folder: Path, name: str, new: str | None = None, data: str | None = None) -> Path:
    """A CinC record copied as ``new`` whose header names the signal file ``data``."""
    folder.mkdir(exist_ok=True)
    new, data = new or name, data or f"{new or name}.mat"
    header = (cinc / f"{name}.hea").read_text().replace(f"{name}.mat", data)
    (folder / f"{new}.hea").write_text(header.replace(name, new, 1))
    shutil.copy(cinc / f"{name}.mat", folder / data)
    return folder


def assert_cache_follows(folder, weights, tmp, change) -> None:
    before = predicted(folder, weights, tmp)
    change()
    cached, uncached = predicted(folder, weights, tmp), predicted(folder, weights, tmp, "--cache", "off")
    pd.testing.assert_series_equal(cached, uncached, atol=1e-5, rtol=0)
    assert (cached - before).abs().max() > 1e-3


def test_header_naming_another_signal_file(cinc, lima_weights, tmp_path):
    folder = copy_record(cinc, tmp_path / "wfdb", "E07500", "rec", "data.mat")
    assert_cache_follows(folder, [lima_weights], tmp_path,
                         lambda: shutil.copy(cinc / "E07501.mat", folder / "data.mat"))


def write_multisegment(cinc: Path, folder: Path) -> Path:
    """A fixed-layout two-segment WFDB record cut from a real CinC record (written with wfdb's own writer)."""
    signal, fs = read_wfdb(str(cinc / "E07500"))
    folder.mkdir()
    names = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    for k, part in enumerate((signal[:, :2500], signal[:, 2500:])):
        wfdb.wrsamp(f"multi_{k}", fs=fs, units=["mV"] * 12, sig_name=names, p_signal=part.T.astype(np.float64),
                    fmt=["16"] * 12, write_dir=str(folder))
    (folder / "multi.hea").write_text(f"multi/2 12 {fs:g} 5000\nmulti_0 2500\nmulti_1 2500\n# Age: 60\n")
    return folder


def test_multisegment_record_is_one_record_and_its_segments_are_followed(cinc, lima_weights, tmp_path):
    folder = write_multisegment(cinc, tmp_path / "multi")
    assert list(predicted(folder, [lima_weights], tmp_path).index) == ["multi"]  # segments are not records
    other, _ = read_wfdb(str(cinc / "E07501"))

    def replace_segment():
        wfdb.wrsamp("multi_1", fs=500, units=["mV"] * 12, sig_name=["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2",
                                                                    "V3", "V4", "V5", "V6"],
                    p_signal=other[:, 2500:].T.astype(np.float64), fmt=["16"] * 12, write_dir=str(folder))
    assert_cache_follows(folder, [lima_weights], tmp_path, replace_segment)


def test_hdf5_external_link_and_virtual_dataset_targets(ptbxl, ptbxl_table, lima_weights, tmp_path):
    from conftest import ptbxl_signal

    signals = [(ptbxl_signal(ptbxl, f), 500.0) for f in ptbxl_table["filename_hr"].head(6)]
    write_code15(tmp_path / "target.hdf5", signals[:3], [1, 2, 3])
    linked = tmp_path / "linked.hdf5"
    with h5py.File(linked, "w") as handle:
        handle["tracings"] = h5py.ExternalLink("target.hdf5", "tracings")
        handle.create_dataset("exam_id", data=np.array([1, 2, 3]))
    virtual = tmp_path / "virtual.hdf5"
    with h5py.File(virtual, "w") as handle:
        layout = h5py.VirtualLayout(shape=(3, 4096, 12), dtype="float32")
        layout[:] = h5py.VirtualSource("target.hdf5", "tracings", shape=(3, 4096, 12))
        handle.create_virtual_dataset("tracings", layout)
        handle.create_dataset("exam_id", data=np.array([1, 2, 3]))
    cwd = os.getcwd()
    os.chdir(tmp_path)  # HDF5 resolves relative link targets from here too
    try:
        for source in (linked, virtual):
            write_code15(tmp_path / "target.hdf5", signals[:3], [1, 2, 3])
            assert_cache_follows(source, [lima_weights], tmp_path,
                                 lambda: write_code15(tmp_path / "target.hdf5", signals[3:], [1, 2, 3]))
    finally:
        os.chdir(cwd)


def test_in_place_edit_keeping_size_inode_and_time(cinc, lima_weights, tmp_path):
    folder = copy_record(cinc, tmp_path / "wfdb", "E07500")
    mat = folder / "E07500.mat"

    def edit_middle():
        info = mat.stat()
        with open(mat, "r+b") as handle:  # the same inode, the same size: the middle overwritten by the start
            handle.seek(4096)
            samples = handle.read(40000)
            handle.seek(info.st_size // 2)
            handle.write(samples)
        os.utime(mat, ns=(info.st_atime_ns, info.st_mtime_ns))
        assert mat.stat().st_ino == info.st_ino and mat.stat().st_mtime_ns == info.st_mtime_ns
    assert_cache_follows(folder, [lima_weights], tmp_path, edit_middle)


@pytest.mark.parametrize("damage", ["truncate", "meta"])
def test_damaged_cache_entry_is_rebuilt(cinc, lima_weights, tmp_path, capsys, damage):
    folder = copy_record(cinc, tmp_path / "wfdb", "E07500")
    before = predicted(folder, [lima_weights], tmp_path)
    entry = next(p for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))
    if damage == "truncate":
        signals = entry / "signals.npy"
        signals.write_bytes(signals.read_bytes()[:1000])
    else:
        (entry / "meta.json").write_text("{not json")
    capsys.readouterr()
    pd.testing.assert_series_equal(predicted(folder, [lima_weights], tmp_path), before)
    assert "is damaged; rebuilding it" in capsys.readouterr().err


def test_full_disk_during_a_cache_build_is_a_clear_error(cinc, lima_weights, tmp_path):
    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        started = time.time()
        result = subprocess.run([sys.executable, str(ROOT / "test_interface.py"), "--input", str(cinc), "--weights",
                                 lima_weights, "--output", str(tmp_path / "p.csv"), "--cache_dir", str(disk / "c"),
                                 "--on_bad", "skip", "--quiet"], capture_output=True, text=True, timeout=120)
        assert time.time() - started < 60
        assert result.returncode == 2 and "cannot write the preprocessing cache" in result.stderr
        assert "the disk is full" in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "p.csv").exists() and not [p for p in (disk / "c").iterdir() if p.name != ".probe"]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ---- outputs never replace inputs ----------------------------------------------------------------------------------
def test_outputs_onto_inputs_and_devices_are_refused(cinc, ptbxl, ptbxl_table, lima_weights, tmp_path, capsys):
    folder = copy_record(cinc, tmp_path / "wfdb", "E07500")
    target = tmp_path / "target.hdf5"
    from conftest import ptbxl_signal
    write_code15(target, [(ptbxl_signal(ptbxl, ptbxl_table["filename_hr"][0]), 500.0)], [1])
    linked = tmp_path / "linked.hdf5"
    with h5py.File(linked, "w") as handle:
        handle["tracings"] = h5py.ExternalLink(str(target), "tracings")
    for source, output, message in ((folder, folder / "E07500.mat", "lies inside the input folder"),
                                    (folder, folder / "new.csv", "lies inside the input folder"),
                                    (folder, Path("/dev/null"), "is not a regular file"),
                                    (linked, target, "is an input of this run")):
        before = output.read_bytes() if output.is_file() else None
        code, err = run_cli(test_interface, ["--input", str(source), "--weights", lima_weights, "--output",
                                             str(output)], tmp_path, capsys)
        assert code == 2 and message in err, err
        assert (output.read_bytes() if output.is_file() else None) == before
    assert Path("/dev/null").is_char_device() and not (folder / "new.csv").exists()


def test_report_never_overwrites_its_labels(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    labels = out / "report.json"
    pd.DataFrame({"ids": ["1", "2", "3"], "age": [50, 60, 70]}).to_csv(labels, index=False)
    pred = tmp_path / "p.csv"
    pd.DataFrame({"ids": ["1", "2", "3"], "predicted_age": [52, 58, 71]}).to_csv(pred, index=False)
    before = labels.read_bytes()
    code = report_interface.entry(["--predictions", str(pred), "--labels", str(labels), "--id_col", "ids",
                                   "--age_col", "age", "--out", str(out)])
    assert code == 2 and "is an input of this run" in capsys.readouterr().err and labels.read_bytes() == before


# ---- plausibility on the way in and out ----------------------------------------------------------------------------
def test_microvolt_npy_is_refused_until_scaled(cinc, lima_weights, tmp_path, capsys):
    signal_mv, _ = read_wfdb(str(cinc / "E07500"))
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "ints.npy", np.round(signal_mv * 1000).astype(np.int16))
    code, err = run_cli(test_interface, ["--input", str(folder), "--weights", lima_weights, "--output",
                                         str(tmp_path / "p.csv")], tmp_path, capsys)
    assert code == 2 and "integer (int16) samples" in err and "--input_scale" in err
    np.save(folder / "ints.npy", (signal_mv * 1000).astype(np.float32))  # float µV: caught by the amplitude check
    code, err = run_cli(test_interface, ["--input", str(folder), "--weights", lima_weights, "--output",
                                         str(tmp_path / "p.csv")], tmp_path, capsys)
    assert code == 2 and "they look like µV; give --input_scale 0.001" in err
    scaled = predicted(folder, [lima_weights], tmp_path, "--input_scale", "0.001")
    np.save(folder / "ints.npy", signal_mv)
    assert scaled["ints"] == pytest.approx(predicted(folder, [lima_weights], tmp_path)["ints"], abs=0.05)


def checkpoint_with(tmp_path: Path, name: str, bias: float = 50.0, correction=None) -> Path:
    """A tiny modern checkpoint whose untrained output is ``bias`` years for every ECG."""
    args = options.parse_train(["--recipe", "modern", "--width", "0.25"])
    bundle = build_bundle(options.train_settings(args))
    with torch.no_grad():
        bundle.model.fc.weight.zero_()
        bundle.model.fc.bias.fill_(bias)
    bundle.bias_correction = correction
    bundle.facts = TrainingFacts(n=100, median_age=55.0)
    return save_checkpoint(tmp_path / name, bundle)


def test_implausible_ages_are_never_written(cinc, tmp_path, capsys):
    folder = copy_record(cinc, tmp_path / "wfdb", "E07500")
    copy_record(cinc, folder, "E07501")
    negative = str(checkpoint_with(tmp_path, "negative.pt", bias=-12.0))
    out = tmp_path / "p.csv"
    argv = ["--input", str(folder), "--weights", negative, "--output", str(out)]
    code, err = run_cli(test_interface, argv, tmp_path, capsys)
    assert code == 2 and "-12.00 years lies outside the plausible 0–125" in err and not out.exists()
    code, err = run_cli(test_interface, [*argv, "--on_bad", "skip"], tmp_path, capsys)
    assert code == 2 and "Every record is bad (--on_bad skip): nothing was written" in err and not out.exists()
    code, err = run_cli(test_interface, [*argv, "--on_bad", "fill"], tmp_path, capsys)
    assert code == 0 and pd.read_csv(out)["predicted_age"].tolist() == [55.0, 55.0]
    shifted = checkpoint_with(tmp_path, "shifted.pt", correction={"intercept": -1e6, "slope": 0.0})
    code, err = run_cli(test_interface, [*argv[:3], str(shifted), "--output", str(out), "--bias_correction"],
                        tmp_path, capsys)
    assert code == 2 and "claims the model errs by up to 1e+06 years" in err


def test_label_rules_apply_to_every_format(cinc, code15, lima_weights, tmp_path, capsys):
    folder = copy_record(cinc, tmp_path / "wfdb", "E07500")
    copy_record(cinc, folder, "E07501")
    for name, age in (("E07500", "300"), ("E07501", "150")):
        header = folder / f"{name}.hea"
        header.write_text("\n".join(f"# Age: {age}" if line.startswith("# Age") else line
                                    for line in header.read_text().splitlines()) + "\n")
    pred = tmp_path / "p.csv"
    pd.DataFrame({"ids": ["E07500", "E07501"], "predicted_age": [50.0, 60.0]}).to_csv(pred, index=False)
    code = report_interface.entry(["--predictions", str(pred), "--labels", str(folder), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "E07501" in err and "outside the plausible" in err  # 150: an implausible age
    only_300 = tmp_path / "only_300"  # PTB-XL's code for an unknown age over 89: no age on record
    shutil.copytree(folder, only_300, ignore=shutil.ignore_patterns("E07501.*"))
    code = report_interface.entry(["--predictions", str(pred), "--labels", str(only_300), "--out",
                                   str(tmp_path / "r")])
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert code == 0 and report["without_age"] == ["E07500", "E07501"] and report["n"] == 0
    code, err = run_cli(train_interface, ["--input", str(folder), "--arch", "ECGEfficientNet", "--width", "0.25",
                                          "--device", "cpu", "--nepoch", "1"], tmp_path, capsys)
    assert "E07500: has age 300: PTB-XL's code for over 89 years" in err
    assert "E07501: has an invalid age 150 (plausible ages: 0–125 years)" in err and code == 2
    exams = pd.read_csv(code15 / "exams.csv")
    data = tmp_path / "code15"
    shutil.copytree(code15, data)
    twice = exams.iloc[[0]].assign(age=exams["age"].iloc[0] + 35)
    pd.concat([exams, twice]).to_csv(data / "exams.csv", index=False)
    code, err = run_cli(test_interface, ["--input", str(data), "--weights", lima_weights, "--output", str(pred)],
                        tmp_path, capsys)
    assert code == 2 and f"{exams['exam_id'].iloc[0]} (age {exams['age'].iloc[0]}, age" in err


def test_duplicated_leads_and_ids(cinc, ptbxl, ptbxl_table, lima_weights, tmp_path, capsys):
    folder = copy_record(cinc, tmp_path / "wfdb", "E07500")
    header = folder / "E07500.hea"
    lines = header.read_text().splitlines()
    lines[3] = lines[3].rsplit(" ", 1)[0] + " II"  # lead III relabelled as a second II
    header.write_text("\n".join(lines) + "\n")
    code, err = run_cli(test_interface, ["--input", str(folder), "--weights", lima_weights, "--output",
                                         str(tmp_path / "p.csv")], tmp_path, capsys)
    assert code == 2 and "names lead(s) II more than once" in err
    from conftest import ptbxl_signal
    signals = [(ptbxl_signal(ptbxl, f), 500.0) for f in ptbxl_table["filename_hr"].head(3)]
    hdf5 = write_code15(tmp_path / "dup.hdf5", signals, [7, 7, 8])
    out = tmp_path / "p.csv"
    code, err = run_cli(test_interface, ["--input", str(hdf5), "--weights", lima_weights, "--output", str(out),
                                         "--on_bad", "fill"], tmp_path, capsys)
    assert code == 2 and "id 7 appears 2 times" in err and not out.exists()


# ---- bounded resources and clear errors ----------------------------------------------------------------------------
def test_bombs_are_refused_before_allocating(tmp_path, lima_weights, capsys):
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb/data.pkl", b"\0" * (200 << 20))  # 200 MB of zeros in about 200 KB
    assert bomb.stat().st_size < 1 << 20
    rows = tmp_path / "rows.hdf5"
    with h5py.File(rows, "w") as handle:
        handle.create_dataset("tracings", shape=(100_000_000, 4096, 12), dtype="float32", chunks=(1, 4096, 12))
    chunk = tmp_path / "chunk.hdf5"
    with h5py.File(chunk, "w") as handle:
        handle.create_dataset("tracings", data=np.zeros((400, 4096, 12), np.float32), chunks=(400, 4096, 12),
                              compression="gzip")
    deep = tmp_path / "deep.pt"
    state = torch.load(checkpoint_with(tmp_path, "ok.pt"), weights_only=True)
    torch.save({**state, "model_args": {**state["model_args"], "depth": 1e4}}, deep)
    records = copy_record(need(ROOT.parent / "shared" / "data" / "cinc2021"), tmp_path / "wfdb", "E07500")
    cases = [(records, str(bomb), "declare 209,715,200 bytes once uncompressed"),
             (rows, lima_weights, "declares 100,000,000 tracings"),
             (chunk, lima_weights, "stored in chunks of 78,643,200 bytes"),
             (records, str(deep), "depth must be float in [0.05, 8.0]")]
    for source, weights, message in cases:
        started = time.time()
        code, err = run_cli(test_interface, ["--input", str(source), "--weights", weights, "--output",
                                             str(tmp_path / "o.csv")], tmp_path, capsys)
        assert code == 2 and message in err, err
        assert time.time() - started < 20


def test_fifos_are_never_opened(cinc, code15, lima_weights, tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    folder = write_multisegment(cinc, tmp_path / "multi")
    (folder / "multi_1.dat").unlink()
    os.mkfifo(folder / "multi_1.dat")
    pred = tmp_path / "p.csv"
    pd.DataFrame({"ids": ["1"], "predicted_age": [50.0]}).to_csv(pred, index=False)
    with deadline(60):
        code, err = run_cli(test_interface, ["--input", str(cinc), "--weights", str(fifo), "--output",
                                             str(tmp_path / "o.csv")], tmp_path, capsys)
        assert code == 2 and "is not a regular file" in err
        code, err = run_cli(test_interface, ["--input", str(folder), "--weights", lima_weights, "--output",
                                             str(tmp_path / "o.csv")], tmp_path, capsys)
        assert code == 2 and "segment multi_1" in err and "is not a regular file" in err
        code = report_interface.entry(["--predictions", str(fifo), "--labels", str(pred), "--id_col", "ids",
                                       "--age_col", "predicted_age", "--out", str(tmp_path / "r")])
        assert code == 2 and "is not a regular file" in capsys.readouterr().err
        code, err = run_cli(train_interface, ["--input", str(code15 / "exams_part0.hdf5"), "--labels", str(fifo),
                                              "--arch", "ResNet1d", "--device", "cpu"], tmp_path, capsys)
        assert code == 2 and "is not a regular file" in err


def broken_checkpoints(tmp_path: Path) -> dict[str, Path]:
    """This project's checkpoint format with one field of the wrong type or size each."""
    good = torch.load(checkpoint_with(tmp_path, "good.pt"), weights_only=True)
    lima = {"model": fixture_model().state_dict(), "arch": "ResNet1d",
            "model_args": {"input_dim": [12, 4096], "blocks_dim": [[8, 4096], [16, 1024], [24, 256], [32, 64],
                                                                   [40, 16]]},
            "preprocessing": {"fs": 400.0, "length": 4096, "crop": "center", "pad": "center", "zscore": False,
                              "bandpass": None, "nan_to_zero": False}, "head": {"kind": "linear"}}
    maic = torch.load(need(ROOT.parent / "shared" / "spec" / "ResDenseNet_small.pt"), weights_only=False)
    nested: list = []
    for _ in range(200):
        nested = [nested]
    sparse = dict(good["model"])
    sparse["fc.weight"] = sparse["fc.weight"].to_sparse()
    variants = {
        "heads": {"model": maic["state_dict"], "arch": "ResDenseNet",
                  "model_args": {**maic["config"], "heads": 1_000_000}, "preprocessing": good["preprocessing"],
                  "head": {"kind": "sigmoid", "low": 19.0, "high": 122.0}},
        "mid_ch": {**good, "arch": "ResDenseNet", "model_args": {"mid_ch": -3}},
        "sparse": {**good, "model": sparse},
        "negative_length": {**good, "preprocessing": {**good["preprocessing"], "length": -5}},
        "float_length": {**good, "preprocessing": {**good["preprocessing"], "length": 2.5}},
        "string_length": {**good, "preprocessing": {**good["preprocessing"], "length": "5000"}},
        "nested_crop": {**good, "preprocessing": {**good["preprocessing"], "crop": nested}},
        "list_correction": {**good, "bias_correction": [1.0, 2.0]},
        "resnet_length": {**lima, "preprocessing": {**lima["preprocessing"], "length": 5000}},
    }
    paths = {}
    for name, content in variants.items():
        paths[name] = tmp_path / f"{name}.pt"
        torch.save(content, paths[name])
    return paths


def test_checkpoint_fields_of_the_wrong_type_are_clear_errors(cinc, tmp_path, capsys):
    folder = copy_record(cinc, tmp_path / "wfdb", "E07500")
    for name, path in broken_checkpoints(tmp_path).items():
        code, err = run_cli(test_interface, ["--input", str(folder), "--weights", str(path), "--output",
                                             str(tmp_path / "o.csv")], tmp_path, capsys)
        assert code == 2 and str(path) in err, (name, err)
        assert not (tmp_path / "o.csv").exists()


def test_a_run_that_does_not_beat_the_constant_predictor_says_so(ptbxl, tmp_path, capsys):
    """Issue 26: a bf16 CPU run reached the constant predictor's MAE and nothing said so. A model that learns
    nothing (a learning rate of 1e-9 from an output far from any age) is reported as such, and the precision's
    reason is named at the start."""
    argv = [*CV, "--input", str(ptbxl), "--lr_initial", "1e-9", "--head_bias_init", "none", "--output_init",
            "default", "--log_dir", str(tmp_path / "log"), "--cache_dir", str(tmp_path / "cache")]
    assert cli(train_interface, argv, tmp_path, quiet=False) == 0
    said = capsys.readouterr()
    text = said.out + said.err
    assert "precision fp32 (--precision fp32)" in text
    assert text.count("does not beat the constant predictor") == 3, text[-3000:]  # two folds and the OOF

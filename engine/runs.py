"""A training run's folder, ``log/<arch>_<env>/``: its lock, its manifest, which checkpoint is the best, which one a
resume starts from, and which checkpoints a run folder stands for when it is given as ``--weights``.

A run folder holds one experiment. ``run.json`` (the manifest) is written before training and names the options
that change the result, the data's identity, the split and the members (``.`` or ``fold_<k>``); a member's
checkpoint and its SHA-256 are added once it is trained, and ``complete`` once cross-validation has written its
out-of-fold results. ``--resume`` continues only the identical experiment; a new run into a folder holding trained
results needs ``--overwrite``, which removes them first; prediction from a cross-validated folder uses exactly the
members the manifest names."""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from dataloader.fingerprint import PRINTS, SKETCH_WORDS
from models.files import BEST, PUBLISHED_CONFIG, PUBLISHED_WEIGHTS
from models.schema import MAIC_MODES
from utils.bounds import MAX_FOLDS
from utils.errors import CheckpointError, RecordError, UserError
from utils.io import read_csv, regular_file, temporary_target, write_csv, write_json
from utils.tables import RUN_ID

logger = logging.getLogger(__name__)

# every file name of a run folder, here and — those a model folder is read by — in models/checkpoint.py
LAST, OPTIONS, SPLIT, HISTORY, CURVES = "last.pt", "options.json", "split.csv", "history.csv", "learning_curves.png"
PUBLISHED_ARGS, TENSORBOARD, LOCK = "args.json", "logs", ".lock"
MANIFEST = "run.json"
CV_SUMMARY, OOF, FOLDS = "cv.json", "oof.csv", "folds.csv"
RUN_PRINTS = "fingerprints.csv"  # id, fingerprint, sketch (hex) of every usable record (dataloader.fingerprint)


def run_dir(log_dir: str | Path, arch: str, env: str) -> Path:
    return Path(log_dir) / f"{arch}_{env}"


def default_weights(log_dir: str | Path, mode: str) -> Path:
    """The best checkpoint of the default run of MAIC ``mode`` (what the submission uses without --weights_<mode>)."""
    return run_dir(log_dir, MAIC_MODES[mode].arch, mode) / BEST


def input_name(path: str) -> str:
    """A run name from ``--input``: its folder or file name (without suffix), e.g. ptbxl for /data/ptbxl."""
    name = Path(path).resolve()
    name = name.parent.name if name.name == "ptbxl_database.csv" else \
        (name.stem if name.suffix and not name.is_dir() else name.name)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "input"


def best_checkpoint_name(checkpoints: str) -> str:
    """``model.pth`` for the best-only recipe (the published folder layout), else ``best.pt``."""
    return PUBLISHED_WEIGHTS if checkpoints == "best_only" else BEST


def epoch_checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


def latest_checkpoint(run: Path) -> Path | None:
    """The run's most recent complete epoch: ``last.pt``, else the highest ``epoch_NNN.pt`` (seed runs)."""
    if (run / LAST).exists():
        return run / LAST
    epochs = sorted(run.glob("epoch_*.pt"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    return epochs[-1] if epochs else None


# ---- the run manifest: a run folder is one experiment ------------------------------------------------------------
MANIFEST_FORMAT = "ecg-age-run/1"
# what makes a folder hold an earlier experiment's trained results
TRAINED = ("*.pt", PUBLISHED_WEIGHTS, HISTORY, OOF, CV_SUMMARY, TENSORBOARD)
# a cross-validated run's member folders: fold_<k>, fold_<k>_seed_<j>, fold_<k>_<partner arch>[_<i>] — built by
# member_name, recognised by this pattern (tests check that every name built is recognised as its parts)
FOLD_DIR = re.compile(r"fold_(?P<fold>\d+)(_seed_(?P<seed>\d+)|_(?P<partner>[A-Za-z][A-Za-z0-9]*)(_(?P<index>\d+))?)?")
SINGLE = "."  # the member of a run that trains one model: the run folder itself


def member_name(fold: int, seed: int | None = None, partner: str | None = None, index: int | None = None) -> str:
    """The folder of one model of fold ``fold``: fold_<k>, its ``seed``-th seed model fold_<k>_seed_<j>, or its
    ``partner`` architecture's model fold_<k>_<arch> (the ``index``-th of several: fold_<k>_<arch>_<i>)."""
    name = f"fold_{fold}" + (f"_seed_{seed}" if seed is not None else "") + \
        (f"_{partner}" if partner is not None else "") + (f"_{index}" if index is not None else "")
    if not FOLD_DIR.fullmatch(name):
        raise ValueError(f"{name!r} is not a member folder name")
    return name


def member_parts(name: str) -> dict | None:
    """{fold, seed, partner, index} of a member folder name (None where absent), or None for another name."""
    found = FOLD_DIR.fullmatch(name)
    if found is None:
        return None
    return {k: (int(v) if v is not None and k != "partner" else v) for k, v in found.groupdict().items()}


def members_by_fold(members: list[Path]) -> dict[int | None, list[Path]]:
    """Trained members (checkpoint paths, as run_members gives them) grouped by the fold their folder names, in
    fold order (None: members that are not a fold's)."""
    groups: dict[int | None, list[Path]] = {}
    for member in members:
        parts = member_parts(Path(member).parent.name)
        groups.setdefault(None if parts is None else parts["fold"], []).append(member)
    return dict(sorted(groups.items(), key=lambda item: -1 if item[0] is None else item[0]))


def fold_members(fold: int, seeds: int, partner: str, partners: int) -> list[str]:
    """The models of one fold: fold_<k> (or fold_<k>_seed_<j> for each of ``seeds``), then fold_<k>_<partner> (or
    fold_<k>_<partner>_<i> for each of ``partners``; ``partner`` 'none': no partner)."""
    names = [member_name(fold, None if seeds == 1 else j) for j in range(seeds)]
    if partner == "none":
        return names
    return names + [member_name(fold, partner=partner, index=None if partners == 1 else i) for i in range(partners)]


def run_member_names(folds: int, seeds: int, partner: str, partners: int) -> list[str]:
    """The members of a run: the run folder itself (one split), or every fold's models."""
    return [SINGLE] if folds == 1 else [m for k in range(folds) for m in fold_members(k, seeds, partner, partners)]
# the exact names of what a run writes in its folder and in each member folder (``*.pt`` of TRAINED are these)
OWN_FILES = frozenset({LAST, BEST, PUBLISHED_WEIGHTS, OPTIONS, SPLIT, HISTORY, CURVES, PUBLISHED_ARGS,
                       PUBLISHED_CONFIG, MANIFEST, CV_SUMMARY, OOF, FOLDS, LOCK, RUN_PRINTS})
EPOCH_FILE = re.compile(r"epoch_\d{3,}\.pt")


def own_name(name: str) -> bool:
    """A file name this project writes in a run or member folder (its temporaries included)."""
    name = temporary_target(name) or name
    return name in OWN_FILES or bool(EPOCH_FILE.fullmatch(name))


def member_dirs(run: Path) -> list[Path]:
    return sorted((p for p in run.glob("fold_*") if p.is_dir() and FOLD_DIR.fullmatch(p.name)),
                  key=lambda p: [int(n) for n in re.findall(r"\d+", p.name)])


def earlier_results(run: Path) -> list[str]:
    """The trained results of an earlier experiment in ``run`` (checkpoints, histories, out-of-fold files)."""
    found = []
    for folder in (run, *member_dirs(run)):
        found.extend(str(p.relative_to(run)) for pattern in TRAINED for p in folder.glob(pattern))
    return sorted(found)


def _own_entry(path: Path) -> bool:
    """A file this project writes (never a link or a folder of that name), or its TensorBoard folder."""
    if path.is_symlink():
        return False
    if path.name == TENSORBOARD:
        return path.is_dir()
    return path.is_file() and own_name(path.name)


def _recorded_members(run: Path) -> set[str] | None:
    try:
        manifest = read_manifest(run)
    except UserError:
        return None
    return None if manifest is None else set(manifest["members"]) - {SINGLE}


def run_inventory(run: Path) -> tuple[list[Path], list[Path]]:
    """(what the project wrote in ``run``, what else is there). A member folder is the project's when the run's
    manifest names it, or — for a run written before manifests — when its name is a member's and it holds only
    the project's files; anything else (a user's ``fold_0_backup/``, ``my_model_v3.pt``, notes) is not."""
    recorded = _recorded_members(run)
    own, other = [], []
    for entry in sorted(run.iterdir()) if run.is_dir() else []:
        is_member = entry.is_dir() and not entry.is_symlink() and FOLD_DIR.fullmatch(entry.name) and (
            entry.name in recorded if recorded is not None else all(map(_own_entry, entry.iterdir())))
        if is_member:
            inside = list(entry.iterdir())
            own.extend(p for p in inside if _own_entry(p))
            other.extend(p for p in inside if not _own_entry(p))
            own.append(entry)
        elif _own_entry(entry):
            own.append(entry)
        else:
            other.append(entry)
    return own, other


def clear_run(run: Path, reads: list[tuple[str, str | Path | None, bool]] = ()) -> None:
    """Remove every file an earlier run wrote in ``run`` (member folders included) — and nothing else: anything
    the project did not write there, or a path this run reads (``reads``: (option, path, whether everything under
    the path is read, as a model folder's files are), e.g. the --pretrain_model_path checkpoint or a --teacher run,
    makes it refuse (exit 2) before anything is removed."""
    own, other = run_inventory(run)
    own = [p for p in own if p.name != LOCK]  # the lock is held by this process
    if not [p for p in own if p.is_file() or p.name == TENSORBOARD]:
        return  # nothing of an earlier run: nothing to remove
    if other:
        shown = ", ".join(str(p.relative_to(run)) for p in other[:10]) + (" ..." if len(other) > 10 else "")
        raise UserError(f"{run} holds files this project did not write ({shown}); they are never deleted. Move them "
                        f"out of the run folder (or give another --env), then run again")
    for option, path, whole in reads:
        target = Path(path).resolve() if path else None
        hit = target and next((p for p in own if target == p.resolve() or p.resolve() in target.parents or
                               (whole and target in p.resolve().parents)), None)
        if hit:
            raise UserError(f"{option} {path} lies in {run}, whose earlier results this run would delete; copy it "
                            f"out of the run folder (or give another --env) first")
    for path in sorted(own, key=lambda p: len(p.parts), reverse=True):  # files before their member folders
        if path.is_dir():
            shutil.rmtree(path) if path.name == TENSORBOARD else path.rmdir()
        else:
            path.unlink()


def clean_temporaries(run: Path) -> list[Path]:
    """Remove the temporary files an interrupted run left (``.<own name>.<random>.tmp``) in ``run`` and its
    member folders; called once the run's lock is held, so no live writer owns them."""
    removed = []
    for folder in (run, *member_dirs(run)):
        for path in folder.glob(".*.tmp"):
            target = temporary_target(path.name)
            if target and path.is_file() and not path.is_symlink() and own_name(target):
                path.unlink()
                removed.append(path)
    return removed


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def new_manifest(options: dict, data: dict, split: dict, members: list[str]) -> dict:
    """What identifies an experiment: the options that change its result, the data's identity, the split (a hash of
    every record's assignment) and its members ('.' for a single model, fold_<k> for cross-validation)."""
    return {"format": MANIFEST_FORMAT, "options": options, "data": data, "split": split, "members": members,
            "finished": {}, "complete": False}


def read_manifest(run: Path) -> dict | None:
    path = run / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(regular_file(path, str(path), max_bytes=64 << 20).read_text())
    except (OSError, ValueError, RecordError) as exc:
        raise UserError(f"{path}: the run's manifest cannot be read ({exc}); start the run again with --overwrite") \
            from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or \
            not isinstance(manifest.get("members"), list) or not isinstance(manifest.get("finished"), dict):
        raise UserError(f"{path}: not a run manifest of this project ({MANIFEST_FORMAT}); start the run again with "
                        f"--overwrite")
    problem = manifest_problem(manifest)
    if problem:
        raise UserError(f"{path}: {problem}; this is not a manifest this project wrote (start the run again with "
                        f"--overwrite)")
    return manifest


def manifest_problem(manifest: dict) -> str | None:
    """Why a manifest's members cannot be trusted, or None: members are '.' alone or plain member folder names
    (never a path: nothing outside the run folder is ever read), each finished one names its checkpoint file."""
    members = manifest["members"]
    if not members or not all(isinstance(m, str) for m in members) or len(set(members)) != len(members):
        return "its members are not a list of distinct names"
    if members != [SINGLE] and not all(FOLD_DIR.fullmatch(m) for m in members):
        bad = next(m for m in members if not FOLD_DIR.fullmatch(m))
        return f"member {bad!r} is not a member folder name (fold_<k>[_seed_<j> | _<architecture>[_<i>]])"
    for member, entry in manifest["finished"].items():
        if member not in members or not isinstance(entry, dict) or \
                entry.get("checkpoint") not in (BEST, PUBLISHED_WEIGHTS) or not isinstance(entry.get("sha256"), str):
            return f"its finished member {member!r} is not a member with a checkpoint ({BEST} or {PUBLISHED_WEIGHTS})"
    return None


def manifest_differences(old: dict, new: dict, absent: dict) -> list[str]:
    """One line per difference that changes the result: options (by name, both values), data, split, members. An
    option a manifest lacks (one written before the option existed) has the value ``absent`` says such runs used —
    its declared default unless its declaration says otherwise — so adding an option keeps older runs resumable."""
    lines = []
    for key in sorted(set(old["options"]) | set(new["options"])):
        before, after = (side["options"].get(key, absent.get(key, "(not set)")) for side in (old, new))
        if before != after:
            lines.append(f"--{key}: {before!r} in the run, {after!r} now")
    for part, what in (("data", "the records (their files or ids)"), ("split", "the split of records into "
                                                                                "train/validation or folds")):
        if old.get(part) != new.get(part):
            lines.append(f"{what} differ: {old.get(part)} in the run, {new.get(part)} now")
    if old["members"] != new["members"]:
        lines.append(f"the members differ: {old['members']} in the run, {new['members']} now")
    return lines


def write_manifest(run: Path, manifest: dict) -> None:
    write_json(run / MANIFEST, manifest)


def finish_member(run: Path, manifest: dict, member: str, checkpoint: str) -> None:
    """Record a trained member (its checkpoint and the checkpoint's SHA-256) in the manifest."""
    path = run / member / checkpoint
    manifest["finished"][member] = {"checkpoint": checkpoint, "sha256": file_sha256(path)}
    write_manifest(run, manifest)


def run_folders(log_dir: str | Path) -> list[Path]:
    """The run folders under ``log_dir`` that hold a model (a manifest, best.pt or model.pth)."""
    folder = Path(log_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and any((p / n).exists() for n in
                                                                  (MANIFEST, BEST, PUBLISHED_WEIGHTS)))


def run_members(path: str | Path) -> list[Path]:
    """The checkpoints a ``--weights`` path stands for. A cross-validated run folder stands for exactly the fold
    members its manifest names — each checked to exist unchanged since training — and only once the run is complete
    (cv.json written); any other file or folder stands for itself. Other files in a run folder are ignored."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    manifest = read_manifest(path)
    if manifest is None:
        return _legacy_members(path)
    if manifest["members"] == [SINGLE]:
        return [path]
    if not manifest.get("complete") or not (path / CV_SUMMARY).exists():
        done = [m for m in manifest["members"] if m in manifest["finished"]]
        explicit = " ".join(str(path / m) for m in done) or "(none has finished yet)"
        raise CheckpointError(f"{path}: this cross-validated run is unfinished ({len(done)} of "
                              f"{len(manifest['members'])} folds trained, no {CV_SUMMARY}); finish it with the same "
                              f"command and --resume, or use the finished folds explicitly: --weights {explicit}")
    members = []
    for member in manifest["members"]:
        entry = manifest["finished"].get(member)
        checkpoint = path / member / entry["checkpoint"] if isinstance(entry, dict) else None
        if checkpoint is not None and path.resolve() not in checkpoint.resolve().parents:
            raise CheckpointError(f"{path}: member {member} leads outside the run folder (a link); only checkpoints "
                                  f"inside it are read")
        if checkpoint is None or not checkpoint.is_file() or file_sha256(checkpoint) != entry.get("sha256"):
            raise CheckpointError(f"{path}: member {member} is missing or has changed since training "
                                  f"({checkpoint or 'never finished'}); this run folder no longer holds the "
                                  f"experiment its {MANIFEST} describes. Retrain it, or give the checkpoints you "
                                  f"mean explicitly")
        members.append(checkpoint)
    return members


def _legacy_members(path: Path) -> list[Path]:
    """A run folder written before manifests: its fold_<k> members as many as its cv.json says, or itself."""
    folds = member_dirs(path)
    if not folds:
        return [path]
    try:
        summary = json.loads(regular_file(path / CV_SUMMARY, max_bytes=64 << 20).read_text())
        count = summary["folds"]
    except (OSError, ValueError, KeyError, TypeError, RecordError) as exc:
        raise CheckpointError(f"{path}: holds fold folders but no readable {CV_SUMMARY} (an unfinished or damaged "
                              f"cross-validated run); finish it with --resume, or give the fold checkpoints "
                              f"explicitly (--weights {path}/fold_0 ...)") from exc
    if type(count) is not int or not 2 <= count <= MAX_FOLDS:
        raise CheckpointError(f"{path}: its {CV_SUMMARY} gives folds = {str(count)[:40]!r}, not a whole number "
                              f"from 2 to {MAX_FOLDS}; give the fold checkpoints explicitly (--weights "
                              f"{path}/fold_0 ...)")
    members = [path / member_name(k) for k in range(count)]
    missing = [str(m) for m in members if not m.is_dir()]
    if missing:
        raise CheckpointError(f"{path}: its {CV_SUMMARY} names {count} folds but {', '.join(missing)} is missing")
    return members


# what a member's options.json may say about the records it was trained on (read back for int8 calibration)
TRAINING_INPUT = {"input": str, "input_format": str, "ptbxl_rate": int, "fs": (int, float), "input_scale": (int, float),
                  "traces_dset": str, "ids_dset": str}


def training_input(member: str | Path) -> dict | None:
    """The ``--input`` options a trained member (a checkpoint or its folder) was trained with, from its
    options.json — only those fields, only of the right types — or None (no such file, MAIC data, or unreadable)."""
    folder = Path(member) if Path(member).is_dir() else Path(member).parent
    try:
        options = json.loads(regular_file(folder / OPTIONS, max_bytes=1 << 20).read_text())
    except (OSError, ValueError, RecordError, RecursionError):
        return None
    if not isinstance(options, dict) or not isinstance(options.get("input"), str):
        return None
    return {k: options[k] for k, kind in TRAINING_INPUT.items()
            if isinstance(options.get(k), kind) and not isinstance(options.get(k), bool)}


# ---- which records a member was trained on ----------------------------------------------------------------------
def _member_folder(member: str | Path) -> Path:
    return Path(member) if Path(member).is_dir() else Path(member).parent


def trained_ids(member: str | Path) -> set[str] | None:
    """The ids a member was trained on (its split.csv's ``train`` rows), or None where it does not say."""
    folder = _member_folder(member)
    if not (folder / SPLIT).is_file():
        return None
    try:
        table = read_csv(folder / SPLIT, "a run's split", dtype=str, keep_default_na=False)
    except RecordError:
        return None
    if not {RUN_ID, "split"} <= set(table.columns):
        return None
    return set(table.loc[table["split"] == "train", RUN_ID])


def write_run_prints(folder: Path, ids: list[str], prints: np.ndarray) -> None:
    """The run's fingerprints.csv: each usable record's fingerprint and sketch (those not read are left out)."""
    prints = np.asarray(prints, PRINTS)
    known = prints["exact"] != 0
    write_csv(folder / RUN_PRINTS, pd.DataFrame({
        RUN_ID: np.asarray(ids, dtype=object)[known], "fingerprint": [f"{p:016x}" for p in prints["exact"][known]],
        "sketch": ["".join(f"{w:016x}" for w in words) for words in prints["sketch"][known]]}))


def member_training_prints(member: str | Path) -> np.ndarray | None:
    """The fingerprints of the records a member was trained on, from its run's fingerprints.csv and its split.csv;
    None where the run does not say (written before them, or damaged — with a warning)."""
    folder, ids = _member_folder(member), trained_ids(member)
    path = next((f / RUN_PRINTS for f in (folder, folder.parent) if (f / RUN_PRINTS).is_file()), None)
    if ids is None or path is None:
        return None
    try:
        table = read_csv(path, "a run's fingerprints", dtype=str, keep_default_na=False)
        chosen = table.loc[table[RUN_ID].isin(ids)]
        if not chosen["fingerprint"].str.fullmatch(r"[0-9a-f]{16}").all():
            raise ValueError("a fingerprint is not 16 hexadecimal digits")
        prints = np.zeros(len(chosen), PRINTS)
        prints["exact"] = [int(p, 16) for p in chosen["fingerprint"]]
        if "sketch" in chosen.columns:  # runs written before sketches have none: their records match exactly
            if not chosen["sketch"].str.fullmatch(f"[0-9a-f]{{{16 * SKETCH_WORDS}}}").all():
                raise ValueError(f"a sketch is not {16 * SKETCH_WORDS} hexadecimal digits")
            prints["sketch"] = [[int(s[i:i + 16], 16) for i in range(0, 16 * SKETCH_WORDS, 16)]
                                for s in chosen["sketch"]]
        return prints
    except (RecordError, KeyError, ValueError) as exc:
        logger.warning(f"note: {path} cannot be read ({exc.reason if isinstance(exc, RecordError) else exc}); "
                       f"which records {member} was trained on is unknown")
        return None

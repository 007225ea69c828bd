"""A training run's folder and its manifest: what an interrupted run left is removed, an earlier experiment is
refused or cleared (``start_afresh``), and the manifest this experiment trains under is settled (``settle_manifest``:
checked against the run's own on --resume, else written before the first epoch)."""
from __future__ import annotations

import hashlib
import json
import logging

import pandas as pd

from dataloader.records import Reader
from engine.runs import (
    MANIFEST,
    clean_temporaries,
    clear_run,
    earlier_results,
    manifest_differences,
    new_manifest,
    read_manifest,
    write_manifest,
)
from utils.errors import UserError
from utils.ranks import barrier, is_main

from .settings import TrainSettings, absent_values

logger = logging.getLogger("train")


def remove_temporaries(settings: TrainSettings) -> None:
    """The temporary files an interrupted run left in the folder (the lock is held: no live writer owns them)."""
    if is_main():
        for path in clean_temporaries(settings.folder):
            logger.info(f"note: removed {path.relative_to(settings.folder)}, left by an interrupted run")


def start_afresh(settings: TrainSettings) -> None:
    """A new run: refused while the folder holds an earlier experiment's results unless --overwrite, which
    removes them (and every file a run writes) first — nothing of an earlier experiment survives into this one,
    and nothing this run reads is removed."""
    folder = settings.folder
    earlier = earlier_results(folder)
    if earlier and not settings.run.overwrite:
        shown = ", ".join(earlier[:6]) + (" ..." if len(earlier) > 6 else "")
        raise UserError(f"{folder} holds an earlier experiment ({shown}); pass --overwrite to replace it, --resume "
                        f"to continue it with the same options, or another --env for a new run folder")
    if is_main():
        clear_run(folder, settings.reads())
    barrier()


def identify(settings: TrainSettings, precision: str, reader: Reader, assignment: pd.Series, method: str,
             teacher_seconds: float | None) -> dict:
    """This experiment's manifest: result-changing options, the data's identity and the split's (and what the
    teacher's ages cost: a figure, not the experiment's identity)."""
    data = hashlib.sha256(json.dumps({"format": reader.format, "settings": reader.settings(), "ids": reader.ids},
                                     sort_keys=True, default=str).encode())
    data.update(reader.fingerprint("auto", where=False).encode())  # another machine or mount: the same data
    split = hashlib.sha256("\n".join(f"{i}\t{a}" for i, a in assignment.items()).encode()).hexdigest()
    manifest = new_manifest(settings.result_options(precision), {"records": len(reader), "sha256": data.hexdigest()},
                            {"method": method, "folds": settings.run.folds, "records": len(assignment),
                             "sha256": split}, settings.members)
    if teacher_seconds is not None:
        manifest["teacher_seconds"] = teacher_seconds
    return manifest


def settle_manifest(settings: TrainSettings, manifest: dict) -> dict:
    """The manifest to train under: with --resume the run's own, after checking that nothing that changes the
    result differs (exit 2 naming each difference); otherwise this one, written before training starts."""
    run = settings.folder
    if settings.run.resume and earlier_results(run):
        old = read_manifest(run)
        if old is None:
            raise UserError(f"{run} holds results but no {MANIFEST} (a run of an older version, or files put there by "
                            f"hand): it cannot be checked to be the same experiment. Start again with --overwrite")
        differences = manifest_differences(old, manifest, absent_values())
        if differences:
            raise UserError(f"--resume refused: this is not the experiment in {run}:\n  " + "\n  ".join(differences) +
                            "\nResume with the run's own options, or start a new experiment with --overwrite or "
                            "another --env")
        return old
    if settings.run.resume:
        logger.info(f"--resume: {run} has no trained results yet; starting from scratch")
        if is_main():
            clear_run(run, settings.reads())
    if is_main():
        write_manifest(run, manifest)
    barrier()
    return manifest

"""An exported model file run by onnxruntime — numpy and onnxruntime only, no torch.

``OnnxModel.load`` reads a file written by engine/deploy/export.py and checks its metadata like a checkpoint's
description (the preprocessing spec, heads, bias corrections and calibrations); ``ages`` runs model inputs through
it. Running it over records (windows, cache, bad records) is engine/predict/onnx_engine.py's.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from dataloader.fingerprint import unpacked
from models.preprocessing import PreprocessSpec, cpu_part
from models.schema import Description, ModelCard
from utils.bounds import MAX_CHECKPOINT_BYTES
from utils.errors import CheckpointError, RecordError
from utils.io import regular_file
from utils.machine import usable_cores
from utils.metrics import apply_bias_correction, ensemble_mean, stored_correction

ONNX_FORMAT = "ecg-age-onnx/1"  # engine/deploy/export.py writes it (that module needs torch; this one must not)
METADATA_KEY = "ecg_age"
TRAINING_PRINTS = "training_fingerprints"  # the metadata's field: its training records' fingerprints, packed
TRAINING_SKETCHES = "training_sketches"  # and their sketches, in the same order (absent: matched exactly only)
MAX_MEMBERS = 1000  # models in one exported ensemble (a 5-fold run with every option holds 15)
# ECGs per onnxruntime call: 4 per thread, at least 8. Small batches keep a network's activations in the caches; on
# 1–2 cores batch 8 runs within 7 % of each model's best, batch 64 at 0.74–0.97 of it (bench/README.md,
# "onnxruntime's batch")
BATCH_PER_THREAD, MIN_BATCH = 4, 8


def batch_for(threads: int) -> int:
    """ECGs per onnxruntime call on ``threads`` threads (0: every usable core)."""
    return max(MIN_BATCH, BATCH_PER_THREAD * (threads or usable_cores()))


@dataclasses.dataclass
class OnnxModel:
    """An exported model: the onnxruntime session and what its metadata says."""

    source: str
    session: object
    preprocessing: PreprocessSpec
    takes_sex: bool
    members: list[Description]  # each member's description (models.schema), checked as a checkpoint's is
    card: dict | None = None  # the model's card (models.schema.ModelCard), where it carries one
    threads: int = 0  # onnxruntime's threads (0: its own choice, every core)
    spinning: bool = True  # its idle threads spin (off where worker processes share the cores)
    calls: int = 1  # calls in flight together on this session (engine/predict/onnx_engine.py), each on ``threads``
    digest: str = ""  # the file's sha256 when it was loaded
    graph_preprocessing: bool = False  # the graph runs the band-pass, z-score and NaN → 0 (absent in older files)
    # the fingerprints of the records its members were trained on (dataloader.fingerprint); None: not recorded
    training_prints: np.ndarray | None = None

    @property
    def input_spec(self) -> PreprocessSpec:
        """What the CPU makes of each record for the graph's ``x``: the window alone where the graph runs the
        rest of ``preprocessing``."""
        return cpu_part(self.preprocessing) if self.graph_preprocessing else self.preprocessing

    @property
    def batch(self) -> int:
        """ECGs per call on this session's threads."""
        return batch_for(self.threads)

    @property
    def median_age(self) -> float | None:
        return self.members[0].facts.median_age

    @property
    def archs(self) -> list[str]:
        return [m.arch for m in self.members]

    @classmethod
    def load(cls, path: str | Path, threads: int = 0, spinning: bool = True, calls: int = 1) -> "OnnxModel":
        import onnxruntime

        path = Path(path)
        try:
            regular_file(path, str(path), max_bytes=MAX_CHECKPOINT_BYTES)
            with open(path, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
            options.log_severity_level = 3
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except RecordError as exc:
            raise CheckpointError(f"{path}: {exc.reason}") from exc
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types on a damaged or foreign file
            raise CheckpointError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:300]})") \
                from exc
        text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is None:
            raise CheckpointError(f"{path}: an ONNX model without this project's metadata ({METADATA_KEY}); export "
                                  f"it with export_interface.py")
        try:
            return dataclasses.replace(cls._described(path, session, json.loads(text)), threads=threads,
                                       spinning=spinning, calls=max(1, calls), digest=digest)
        except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
            raise CheckpointError(f"{path}: its metadata cannot be used ({type(exc).__name__}: {str(exc)[:300]})") \
                from exc

    @classmethod
    def _described(cls, path: Path, session, meta: dict) -> "OnnxModel":
        if not isinstance(meta, dict) or meta.get("format") != ONNX_FORMAT:
            raise ValueError(f"expected format {ONNX_FORMAT}, got {str(meta.get('format'))[:50]}")
        members = meta["members"]
        if not isinstance(members, list) or not members or len(members) > MAX_MEMBERS:
            raise ValueError(f"members must be a list of 1–{MAX_MEMBERS} objects, each naming its arch")
        members = [Description.from_dict(m) for m in members]
        width = session.get_outputs()[0].shape[-1]
        if width != len(members):
            raise ValueError(f"the graph gives {width} ages per record but the metadata names {len(members)} models")
        inputs = [i.name for i in session.get_inputs()]
        takes_sex = bool(meta["takes_sex"])
        if inputs != (["x", "sex"] if takes_sex else ["x"]):
            raise ValueError(f"the graph's inputs {inputs} do not match its metadata")
        spec = PreprocessSpec.from_dict(meta["preprocessing"])
        length = session.get_inputs()[0].shape[-1]
        if isinstance(length, int) and length != spec.length:
            raise ValueError(f"the graph takes inputs of {length} samples but the metadata's preprocessing makes "
                             f"{spec.length}")
        card = ModelCard.from_dict(meta["card"]).to_dict() if meta.get("card") is not None else None
        graph = meta.get("graph_preprocessing", False)
        if not isinstance(graph, bool) or (graph and cpu_part(spec) == spec):
            raise ValueError(f"graph_preprocessing must be true only for a preprocessing a graph can run, got "
                             f"{str(graph)[:20]}")
        prints = unpacked(meta[TRAINING_PRINTS], meta.get(TRAINING_SKETCHES)) \
            if meta.get(TRAINING_PRINTS) is not None else None
        return cls(str(path), session, spec, takes_sex, members, card, graph_preprocessing=graph,
                   training_prints=prints)

    def with_threads(self, threads: int, spinning: bool | None = None) -> "OnnxModel":
        """The same model on a session of ``threads`` threads (spinning or not; by default as this one), one call at
        a time — a second session of the same file, which must not have changed since it was loaded."""
        spinning = self.spinning if spinning is None else spinning
        if (threads, spinning, 1) == (self.threads, self.spinning, self.calls):
            return self
        other = OnnxModel.load(self.source, threads, spinning)
        if other.digest != self.digest:
            raise CheckpointError(f"{self.source}: the file changed while it was in use (loaded again for "
                                  f"{threads or 'every'} thread(s)); run again")
        return other

    def member_ages(self, x: np.ndarray, sex: np.ndarray | None = None) -> np.ndarray:
        """Every member's age (B, M) for ``x`` (B, 12, L), the records made by :attr:`input_spec`."""
        feed = {"x": np.ascontiguousarray(x, dtype=np.float32)}
        if self.takes_sex:
            feed["sex"] = np.ascontiguousarray(sex, dtype=np.float32)
        return self.session.run(["ages"], feed)[0].astype(np.float64)

    def ages(self, x: np.ndarray, sex: np.ndarray | None = None, bias_correction: bool = False) -> np.ndarray:
        """The ensemble's age (B,): each member's (bias-corrected if asked) age, averaged."""
        member = self.member_ages(x, sex)
        if bias_correction:
            member = np.stack([apply_bias_correction(member[:, k], stored_correction(
                d.bias_correction, f"{self.source} member {k}")) for k, d in enumerate(self.members)], 1)
        return ensemble_mean(member, axis=1)

"""The model bundle and its checkpoints: one format written, three read, never code.

A ``ModelBundle`` is a network with everything that says how to feed it and read its output: architecture and
constructor arguments, preprocessing spec, age head and (optionally) the age-gap bias correction.

Written (``save_checkpoint``, format 2): the seed's ``{'model', 'optimizer', 'epoch'}`` plus the schema —
``arch``, ``model_args``, ``preprocessing``, ``head``, ``bias_correction``, ``training`` (``TrainingFacts``:
statistics of the training ages) and ``calibration`` (the epoch's validation predictions and residuals, for
intervals: utils/calibration.py) — and whatever training state the trainer adds, the command line among it as
``options`` (provenance, kept for people and format-1 tools to read; this project never reads it back, so renaming
an option changes no checkpoint's meaning).
Only tensors, numbers, strings, lists and dicts, so that it loads with ``torch.load(weights_only=True)``.
Format 1 checkpoints (this project before 0.4) load too: their median training age is read from their options.

Read (``load_bundle``):
* this project's checkpoints (``.pt``, or a run folder → its ``best.pt`` / ``model.pth``; which checkpoints a
  cross-validated run folder stands for is engine.runs.run_members);
* the seed's checkpoints (``{'model', 'optimizer', 'epoch'}`` or a bare state dict, ``module.`` prefixes
  stripped): the architecture and widths are read from the tensor shapes, the preprocessing is the MAIC one and
  the head that of the mode (adult/child);
* the published Lima et al. folder (``model.pth`` + ``config.json`` with seq_length, net_filter_size,
  net_seq_lengh, kernel_size, dropout_rate): ResNet1d, 400 Hz, centred zero-padding, mV, no head.

Every file is checked before it is read (a regular file, its size and its declared uncompressed size bounded) and
every field of its description after (types and bounds of the architecture's arguments, the preprocessing spec,
the head, the bias correction; dense tensors of the right shapes). Every file is read with ``weights_only=True``:
a checkpoint whose pickle needs anything else (arbitrary Python objects, which could run code) is refused unless
the caller passes ``trust=True`` (``--trust_checkpoint``).
"""
from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from utils.bounds import MAX_CHECKPOINT_BYTES, MAX_INFLATION
from utils.calibration import Calibration
from utils.errors import CheckpointError, RecordError
from utils.io import atomic_write, explain_write_error, regular_file

from .files import resolve_weights
from .heads import LINEAR_HEAD, MODE_HEADS, AgeHead
from .preprocessing import LIMA, MAIC, PreprocessSpec
from .registry import ARCHITECTURES, MODELS, get_model, infer_model_args, input_length, model_args, takes_sex
from .schema import MAIC_MODES, Description, TrainingFacts  # noqa: F401 - TrainingFacts: part of the bundle

logger = logging.getLogger(__name__)
FORMAT = "ecg-age/2"  # 2: training facts under "training"; the command line ("options") is provenance only
TRUST_HINT = ("if you trust whoever made it, pass --trust_checkpoint to load it with full unpickling (that can run "
              "code); otherwise re-save its state dict with torch.save(model.state_dict(), path)")


@dataclasses.dataclass
class ModelBundle:
    """A model with everything that says how to feed it and read its output."""

    model: nn.Module
    arch: str
    model_args: dict
    preprocessing: PreprocessSpec
    head: AgeHead
    source: str = ""
    checkpoint: dict = dataclasses.field(default_factory=dict)
    bias_correction: dict | None = None
    facts: TrainingFacts = TrainingFacts()
    calibration: Calibration | None = None  # held-out residuals for intervals (utils/calibration.py)

    def description(self) -> Description:
        return Description(self.arch, self.bias_correction, self.calibration, self.facts)

    def metadata(self) -> dict:
        """The checkpoint schema (format 2): everything that says how to build, feed and read the model (the
        architecture's arguments, preprocessing, head) and its description (models.schema), shared with ONNX."""
        return {"format": FORMAT, "model_args": self.model_args, "preprocessing": self.preprocessing.to_dict(),
                "head": self.head.to_dict(), **self.description().to_dict()}

    @property
    def takes_sex(self) -> bool:
        return takes_sex(self.arch, self.model_args)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / torch.compile wrappers (so saved keys have no ``module.`` prefix)."""
    while True:
        if isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


RENAMED = {"head.": "conv_head."}  # ECGEfficientNet's final convolution, called "head" before version 0.4


def clean_state_dict(state_dict: dict) -> dict:
    """Keys without the ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes, and with the
    names of renamed layers."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        for old, new in RENAMED.items():
            key = new + key[len(old):] if key.startswith(old) else key
        out[key] = value
    return out


def check_checkpoint_size(path: Path) -> None:
    """Before a checkpoint is read: a regular file of at most MAX_CHECKPOINT_BYTES whose zip entries (PyTorch's
    format) declare at most MAX_INFLATION times its size once uncompressed — PyTorch stores tensors uncompressed,
    so a larger ratio is a zip bomb that would inflate in memory."""
    try:
        regular_file(path, str(path), max_bytes=MAX_CHECKPOINT_BYTES)
    except RecordError as exc:
        raise CheckpointError(f"{path}: {exc.reason}") from exc
    size = path.stat().st_size
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if declared > max(MAX_INFLATION * size, size + (1 << 20)) or declared > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path}: its {size:,} bytes declare {declared:,} bytes once uncompressed; a PyTorch "
                              f"checkpoint stores tensors uncompressed, so this is refused before it is read")


def torch_load(path: Path, trust: bool = False) -> dict:
    """A checkpoint's content, read as data only (``weights_only=True``) unless ``trust``; its size is checked
    first (:func:`check_checkpoint_size`)."""
    check_checkpoint_size(path)
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):  # PyTorch's zip archive, or a legacy pickle
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle); give a .pt "
                              f"checkpoint, a run folder, or a published model folder")
    try:
        if trust:
            logger.warning(f"--trust_checkpoint: loading {path} with full unpickling (it may run code)")
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:  # the library's text may quote the file's content: never shown
        raise CheckpointError(f"{path}: holds Python objects beyond tensors, numbers, strings, lists and dicts, and "
                              f"was not loaded; {TRUST_HINT}") from exc
    except (OSError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, ImportError, MemoryError,
            RecursionError, KeyError, IndexError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__})") from exc


def save_torch(path: str | os.PathLike, obj) -> Path:
    """torch.save through the atomic writer; PyTorch's own writer reports a full disk as a RuntimeError, which
    becomes the same OutputError as any other failed write."""
    try:
        return atomic_write(path, lambda handle: torch.save(obj, handle), binary=True)
    except RuntimeError as exc:
        if "write" not in str(exc).lower():
            raise
        full = OSError(errno.ENOSPC, f"PyTorch could not write the checkpoint ({exc})")
        raise explain_write_error(Path(path), full) from exc


def save_checkpoint(path: str | Path, bundle: ModelBundle, **state) -> Path:
    """Atomically save ``bundle``'s weights and metadata plus ``state`` (optimizer, epoch, ...)."""
    payload = {"model": unwrap(bundle.model).state_dict(), **state, **bundle.metadata()}
    return save_torch(path, payload)


def _published_config(path: Path) -> dict:
    try:
        config = json.loads(regular_file(path, str(path), max_bytes=1 << 20).read_text())
    except RecordError as exc:
        raise CheckpointError(f"{path}: {exc.reason}") from exc
    except (OSError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not a readable config.json ({exc})") from exc
    missing = [k for k in ("seq_length", "net_filter_size", "net_seq_lengh") if k not in config]
    if not isinstance(config, dict) or missing:
        raise CheckpointError(f"{path}: lacks {', '.join(missing) or 'its settings'}; a published ResNet1d "
                              f"config.json has seq_length, net_filter_size, net_seq_lengh, kernel_size, "
                              f"dropout_rate")
    return config


def published_config(bundle: ModelBundle) -> dict | None:
    """The published Lima et al. config.json fields of a bundle whose architecture keeps that folder layout (the
    names ``_published`` reads back), or None."""
    if not ARCHITECTURES[bundle.arch].published_layout:
        return None
    args, blocks = bundle.model_args, bundle.model_args["blocks_dim"]
    return {"seq_length": args["input_dim"][1], "net_filter_size": [b[0] for b in blocks],
            "net_seq_lengh": [b[1] for b in blocks], "kernel_size": args["kernel_size"],
            "dropout_rate": args["dropout_rate"], "sample_freq": bundle.preprocessing.fs}


def _state_dict(ckpt, weights: Path) -> dict:
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{weights}: expected a dict (state dict or {{'model': ...}}), got "
                              f"{type(ckpt).__name__}")
    bare = ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values())
    state_dict = ckpt.get("model", ckpt if bare else None)
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{weights}: no 'model' state dict inside (keys: {', '.join(map(str, ckpt))[:300]})")
    return clean_state_dict(state_dict)


def _ours(ckpt: dict) -> tuple[str, dict, PreprocessSpec, AgeHead]:
    arch, args = ckpt["arch"], ckpt["model_args"]
    if not isinstance(arch, str) or arch not in MODELS or not isinstance(args, dict):
        raise ValueError(f"arch must name one of {', '.join(MODELS)} and model_args be a dict, got {arch!r:.100}")
    return arch, model_args(arch, **args), PreprocessSpec.from_dict(ckpt["preprocessing"]), \
        AgeHead.from_dict(ckpt["head"])


def _published(config: dict) -> tuple[str, dict, PreprocessSpec, AgeHead]:
    args = model_args("ResNet1d", input_dim=[12, int(config["seq_length"])],
                      blocks_dim=[[int(f), int(n)] for f, n in zip(config["net_filter_size"],
                                                                   config["net_seq_lengh"])],
                      n_classes=1, kernel_size=int(config.get("kernel_size", 17)),
                      dropout_rate=float(config.get("dropout_rate", 0.8)))
    spec = dataclasses.replace(LIMA, fs=float(config.get("sample_freq", LIMA.fs)), length=int(config["seq_length"]))
    return "ResNet1d", args, spec, LINEAR_HEAD


def _challenge_entry(state_dict: dict, mode: str | None) -> tuple[str, dict, PreprocessSpec, AgeHead]:
    arch, args = infer_model_args(state_dict)
    if arch == "ResNet1d":
        return arch, args, dataclasses.replace(LIMA, length=args["input_dim"][1]), LINEAR_HEAD
    mode = mode or next(m.name for m in MAIC_MODES.values() if m.arch == arch)  # the mode this network was for
    return arch, args, MAIC, MODE_HEADS[mode]


def _check_shapes(arch: str, args: dict, state_dict: dict, weights: Path) -> None:
    """The weights must fit the described network exactly — same names, shapes, dense tensors of real numbers;
    checked on a network built on the 'meta' device (no memory), so a description of an enormous network is
    refused before anything is allocated."""
    odd = [k for k, v in state_dict.items() if isinstance(v, torch.Tensor) and
           (v.layout != torch.strided or v.is_complex() or v.dtype == torch.bool or v.is_quantized)]
    if odd:
        raise CheckpointError(f"{weights}: tensor(s) {', '.join(odd[:5])} are not dense tensors of real numbers")
    with torch.device("meta"):
        skeleton = get_model(arch, **args)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    given = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for k, v in state_dict.items()}
    if expected != given:
        wrong = sorted(k for k in set(expected) | set(given) if expected.get(k) != given.get(k))
        shown = ", ".join(f"{k} ({given.get(k, 'missing')} vs {expected.get(k, 'unexpected')})" for k in wrong[:5])
        raise CheckpointError(f"{weights}: weights do not fit {arch}: {len(wrong)} tensor(s) differ: {shown}")


def load_bundle(path: str | Path, mode: str | None = None, trust: bool = False) -> ModelBundle:
    """Load any supported checkpoint into a ModelBundle (model in eval mode, on the CPU)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    weights, config_path = resolve_weights(path)
    ckpt = torch_load(weights, trust)
    state_dict = _state_dict(ckpt, weights)
    try:
        if "arch" in ckpt and "model_args" in ckpt:
            arch, args, spec, head = _ours(ckpt)
        elif config_path is not None:
            arch, args, spec, head = _published(_published_config(config_path))
        else:
            arch, args, spec, head = _challenge_entry(state_dict, mode)
        check_fits(arch, args, spec)
        _check_shapes(arch, args, state_dict, weights)
        described = Description.from_dict({**ckpt, "arch": arch})
        model = get_model(arch, **args)
    except (KeyError, TypeError, ValueError, IndexError, AssertionError, RecursionError, OverflowError) as exc:
        raise CheckpointError(f"{weights}: its description cannot be used ({type(exc).__name__}: "
                              f"{str(exc)[:300]})") from exc
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: its weights cannot be loaded ({str(exc)[:300]})") from exc
    model.eval()
    return ModelBundle(model, arch, args, spec, head, str(weights), ckpt, described.bias_correction,
                       described.facts, described.calibration)


def check_fits(arch: str, args: dict, spec: PreprocessSpec) -> None:
    """The preprocessing must give the input the network takes (ResNet1d takes exactly its input length)."""
    length = input_length(arch, args)
    if length is not None and spec.length != length:
        raise ValueError(f"{arch} takes exactly {length} samples per lead, but its preprocessing gives "
                         f"{spec.length}")


def load_ensemble(paths, mode: str | None = None, trust: bool = False) -> list[ModelBundle]:
    """Every model named by ``paths`` (checkpoint files or model folders), to be averaged."""
    return [load_bundle(path, mode=mode, trust=trust) for path in paths]

"""Checkpoints: one format written, three read.

Written (``save_checkpoint``): the seed's ``{'model', 'optimizer', 'epoch'}`` plus everything needed to use the
model without re-guessing — ``arch``, ``model_args``, ``preprocessing``, ``head``, ``scheduler``, ``options``,
``history``, RNG states — saved atomically.

Read (``load_bundle``):
* this project's checkpoints (``.pt``, or a run folder → its ``best.pt`` / ``model.pth``);
* the seed's checkpoints (``{'model', 'optimizer', 'epoch'}`` or a bare state dict, ``module.`` prefixes
  stripped): the architecture and widths are read from the tensor shapes, the preprocessing is the MAIC one and
  the head that of the mode (adult/child);
* the published Lima et al. folder (``model.pth`` + ``config.json`` with seq_length, net_filter_size,
  net_seq_lengh, kernel_size, dropout_rate): ResNet1d, 400 Hz, centred zero-padding, mV, no head.
"""
from __future__ import annotations

import dataclasses
import json
import pickle
import warnings
from pathlib import Path

import torch
from torch import nn

from dataloader.preprocessing import LIMA, MAIC, PreprocessSpec
from models import ADULT_HEAD, CHILD_HEAD, LINEAR_HEAD, AgeHead, get_model, infer_model_args, model_args

from .io import save_torch

FORMAT = "ecg-age/1"


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

    def metadata(self) -> dict:
        return {"format": FORMAT, "arch": self.arch, "model_args": self.model_args,
                "preprocessing": self.preprocessing.to_dict(), "head": self.head.to_dict(),
                "bias_correction": self.bias_correction}


class CheckpointError(ValueError):
    pass


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / torch.compile wrappers (so saved keys have no ``module.`` prefix)."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def clean_state_dict(state_dict: dict) -> dict:
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        warnings.warn(f"{path} holds Python objects beyond tensors; loading it with weights_only=False "
                      f"(only do this for checkpoints you trust)")
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc


def save_checkpoint(path: str | Path, bundle: ModelBundle, **state) -> Path:
    """Atomically save ``bundle``'s weights and metadata plus ``state`` (optimizer, epoch, ...)."""
    payload = {"model": unwrap(bundle.model).state_dict(), **state, **bundle.metadata()}
    return save_torch(path, payload)


def _published_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable config.json ({exc})") from exc
    missing = [k for k in ("seq_length", "net_filter_size", "net_seq_lengh") if k not in config]
    if missing:
        raise CheckpointError(f"{path}: lacks {', '.join(missing)}; a published ResNet1d config.json has "
                              f"seq_length, net_filter_size, net_seq_lengh, kernel_size, dropout_rate")
    return config


def _resolve_path(path: Path) -> tuple[Path, Path | None]:
    """(weights file, published config.json or None) for a file or folder."""
    if path.is_dir():
        for name in ("best.pt", "model.pth"):
            if (path / name).exists():
                weights = path / name
                break
        else:
            raise CheckpointError(f"{path}: folder holds no best.pt or model.pth")
    else:
        weights = path
    config = weights.parent / "config.json" if weights.name == "model.pth" else None
    return weights, config if config is not None and config.exists() else None


def load_bundle(path: str | Path, mode: str | None = None) -> ModelBundle:
    """Load any supported checkpoint into a ModelBundle (model in eval mode, on the CPU)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    weights, config_path = _resolve_path(path)
    ckpt = torch_load(weights)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{weights}: expected a dict (state dict or {{'model': ...}}), got {type(ckpt)}")
    state_dict = ckpt.get("model", ckpt if all(isinstance(v, torch.Tensor) for v in ckpt.values()) else None)
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{weights}: no 'model' state dict inside (keys: {', '.join(map(str, ckpt))})")
    state_dict = clean_state_dict(state_dict)
    correction = ckpt.get("bias_correction")

    if "arch" in ckpt and "model_args" in ckpt:  # this project's format
        arch, args = ckpt["arch"], model_args(ckpt["arch"], **ckpt["model_args"])
        spec = PreprocessSpec.from_dict(ckpt["preprocessing"])
        head = AgeHead.from_dict(ckpt["head"])
    elif config_path is not None:  # published Lima et al. folder
        config = _published_config(config_path)
        arch = "ResNet1d"
        args = model_args(arch, input_dim=[12, int(config["seq_length"])],
                          blocks_dim=[[int(f), int(n)] for f, n in zip(config["net_filter_size"],
                                                                       config["net_seq_lengh"])],
                          n_classes=1, kernel_size=int(config.get("kernel_size", 17)),
                          dropout_rate=float(config.get("dropout_rate", 0.8)))
        spec = dataclasses.replace(LIMA, fs=float(config.get("sample_freq", LIMA.fs)),
                                   length=int(config["seq_length"]))
        head = LINEAR_HEAD
    else:  # the seed's format: read the architecture off the tensor shapes
        try:
            arch, args = infer_model_args(state_dict)
        except ValueError as exc:
            raise CheckpointError(f"{weights}: {exc}") from exc
        if arch == "ResNet1d":
            spec, head = dataclasses.replace(LIMA, length=args["input_dim"][1]), LINEAR_HEAD
        else:
            spec = MAIC
            head = {"adult": ADULT_HEAD, "child": CHILD_HEAD}.get(
                mode or ("adult" if arch == "ResDenseNet" else "child"))
    model = get_model(arch, **args)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: weights do not fit {arch}({args}): {str(exc).splitlines()[0]}") from exc
    model.eval()
    return ModelBundle(model, arch, args, spec, head, str(weights), ckpt, correction)

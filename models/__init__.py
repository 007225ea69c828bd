"""Model registry: ``get_model(name, **overrides)`` builds any architecture by name.

``model_args(name, **overrides)`` returns the complete constructor arguments (defaults filled in), which is what
checkpoints store; ``infer_model_args(state_dict)`` recovers them from a foreign checkpoint's tensor shapes.
"""
from __future__ import annotations

import inspect

from torch import nn

from .ecg_efficientnet import ECGEfficientNet
from .heads import ADULT_HEAD, CHILD_HEAD, LINEAR_HEAD, AgeHead
from .res_dense_net import ResDenseNet
from .res_u_dense_net import ResUDenseNet
from .resnet1d import ResNet1d

MODELS: dict[str, type[nn.Module]] = {"ResDenseNet": ResDenseNet, "ResUDenseNet": ResUDenseNet,
                                      "ResNet1d": ResNet1d, "ECGEfficientNet": ECGEfficientNet}

__all__ = ["MODELS", "get_model", "model_args", "infer_model_args", "output_layer", "AgeHead", "ADULT_HEAD",
           "CHILD_HEAD", "LINEAR_HEAD", "ResDenseNet", "ResUDenseNet", "ResNet1d", "ECGEfficientNet"]


def _model_class(name: str) -> type[nn.Module]:
    if name not in MODELS:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def model_args(name: str, **overrides) -> dict:
    """Full constructor arguments of ``name`` with ``overrides`` applied (unknown keys are an error)."""
    signature = inspect.signature(_model_class(name).__init__)
    args = {k: p.default for k, p in signature.parameters.items() if k != "self"}
    unknown = set(overrides) - set(args)
    if unknown:
        raise ValueError(f"{name} has no argument(s) {', '.join(sorted(unknown))}; it takes {', '.join(args)}")
    args.update({k: v for k, v in overrides.items()})
    if name == "ResNet1d":
        args["input_dim"] = list(args["input_dim"])
        args["blocks_dim"] = [list(b) for b in args["blocks_dim"]]
    return args


def get_model(name: str, **overrides) -> nn.Module:
    return _model_class(name)(**model_args(name, **overrides))


def output_layer(model: nn.Module) -> nn.Linear:
    """The final linear layer whose output the age head reads (each model class names it in ``OUTPUT``)."""
    return getattr(model, type(model).OUTPUT)


def infer_model_args(state_dict: dict) -> tuple[str, dict]:
    """(architecture, constructor args) of a state dict, read from its tensor names and shapes."""
    keys = set(state_dict)
    if "resblock1d_0.conv1.weight" in keys:
        blocks, i = [], 0
        first = state_dict["conv1.weight"]
        while f"resblock1d_{i}.conv1.weight" in keys:
            blocks.append(state_dict[f"resblock1d_{i}.conv1.weight"].shape[0])
            i += 1
        n_classes, flat = state_dict["lin.weight"].shape
        last_length = flat // blocks[-1]
        # lengths are not stored in weights; the published ones shrink 4× per block after the first
        lengths = [last_length * 4 ** (len(blocks) - 1 - j) for j in range(len(blocks))]
        return "ResNet1d", model_args("ResNet1d", input_dim=[first.shape[1], lengths[0]],
                                      blocks_dim=[[f, n] for f, n in zip(blocks, lengths)], n_classes=n_classes,
                                      kernel_size=first.shape[-1])
    if "rub_0.conv1.weight" in keys and "conv.weight" in keys:
        conv = state_dict["conv.weight"]
        out_ch, mid_ch = conv.shape[0], state_dict["rub_0.encoders.0.0.weight"].shape[0]
        n_out = state_dict["fc_1.weight"].shape[0]
        if conv.dim() == 4:
            lead = state_dict["conv2.weight"].shape[1] // out_ch
            return "ResDenseNet", model_args("ResDenseNet", nOUT=n_out, in_ch=conv.shape[1], out_ch=out_ch,
                                             mid_ch=mid_ch, lead=lead)
        return "ResUDenseNet", model_args("ResUDenseNet", nOUT=n_out, in_ch=conv.shape[1], out_ch=out_ch,
                                          mid_ch=mid_ch)
    raise ValueError("the weights match none of ResDenseNet, ResUDenseNet, ResNet1d (an ECGEfficientNet is "
                     "loaded from the checkpoints this project writes, which carry its arguments; "
                     f"first keys: {', '.join(list(state_dict)[:4])})")

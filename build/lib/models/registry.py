"""Model registry: ``get_model(name, **overrides)`` builds any architecture by name.

``model_args(name, **overrides)`` returns the complete constructor arguments (defaults filled in), which is what
checkpoints store, after checking every one against the architecture's bounds (``ARG_BOUNDS``: a checkpoint is
untrusted, and its description must not build a network that exhausts memory or time — nor one that cannot read
12 leads or give one age); ``get_model`` also refuses a network of more than ``MAX_PARAMETERS`` parameters, counted
on PyTorch's 'meta' device before anything is allocated. ``input_length`` is the one length an architecture takes,
where it takes only one (ResNet1d). ``infer_model_args(state_dict)`` recovers the arguments from a foreign
checkpoint's tensor shapes.
"""
from __future__ import annotations

import dataclasses
import inspect
import numbers
from typing import Callable

import torch
from torch import nn

from utils.bounds import MAX_BLOCKS, MAX_PARAMETERS, MAX_SAMPLES, finite_number

from .baseline_net import BaselineNet
from .ecg_efficientnet import ECGEfficientNet
from .heads import ADULT_HEAD, CHILD_HEAD, LINEAR_HEAD, AgeHead
from .res_dense_net import ResDenseNet
from .res_u_dense_net import ResUDenseNet
from .resnet1d import ResNet1d


@dataclasses.dataclass(frozen=True)
class ArchOption:
    """A training option an architecture takes (``--<name>``), with what argparse needs to offer it: the command
    line's model options are generated from the architectures' entries, each named once."""

    name: str
    help: str
    type: type | None = None
    nargs: str | None = None
    choices: tuple | None = None
    flag: bool = False  # a switch (store_true): default False, not None

    @property
    def default(self):
        return False if self.flag else None


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What the rest of the pipeline may know about a network — nothing outside models/ tests its name, and
    nothing here either: every rule of an architecture is in its entry.

    ``bounds``: (type, lowest, highest) of every constructor argument (12 leads in and one output are what the
    pipeline feeds and reads). ``check``: the rule for arguments bounds cannot say (ResNet1d's input_dim and
    blocks_dim), returning them checked. ``input_length``: the one input length (samples) it takes, from its
    arguments, where it takes only one (None: any length). ``output``: the final linear layer the age head reads.
    ``sex_input``: the constructor argument that gives the network the person's sex (None: it takes none).
    ``recipe``: the training recipe it comes with. ``options``: the training options it takes (generated into the
    command line) and ``option_args``: how their values (a plain dict by option name) become constructor
    arguments. ``published_layout``: its run folders are also published-style model folders (model.pth +
    config.json). ``whole_record``: the network is made for whole records of any length (its ONNX export keeps the
    length dynamic; the fixed-window networks' exports take their window, which also keeps their export fast)."""

    cls: type[nn.Module]
    bounds: dict
    output: str
    recipe: str
    option_args: Callable[[dict], dict]
    sex_input: str | None = None
    published_layout: bool = False
    options: tuple[ArchOption, ...] = ()
    whole_record: bool = False
    check: Callable[[dict], dict] = lambda args: args
    input_length: Callable[[dict], int | None] = lambda args: None

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)


def _maic_options(options: dict) -> dict:
    return {k: options[k] for k in ("out_ch", "mid_ch") if options.get(k)}


def _given(options: dict, *names: str) -> dict:
    return {k: options[k] for k in names if options.get(k) is not None}


def _efficientnet_options(options: dict) -> dict:
    return {"sex_input": bool(options.get("sex_input")), **_given(options, "width", "pooling")}


def _resnet1d_options(options: dict) -> dict:
    """The published option names: net_filter_size and net_seq_lengh (one entry per block), seq_length,
    kernel_size, dropout_rate."""
    base = _defaults(ResNet1d)
    filters = options.get("net_filter_size") or [b[0] for b in base["blocks_dim"]]
    lengths = options.get("net_seq_lengh") or [b[1] for b in base["blocks_dim"]]
    if len(filters) != len(lengths):
        raise ValueError("--net_filter_size and --net_seq_lengh need the same number of entries")
    out = {"input_dim": [12, options.get("seq_length") or lengths[0]],
           "blocks_dim": [[f, n] for f, n in zip(filters, lengths)]}
    out.update({k: options[k] for k in ("kernel_size", "dropout_rate") if options.get(k) is not None})
    return out


def _check_resnet1d(args: dict) -> dict:
    input_dim, blocks_dim = args["input_dim"], args["blocks_dim"]
    pairs = lambda v: isinstance(v, (list, tuple)) and len(v) == 2  # noqa: E731
    if not pairs(input_dim) or not isinstance(blocks_dim, (list, tuple)) or not 1 <= len(blocks_dim) <= MAX_BLOCKS \
            or not all(pairs(b) for b in blocks_dim):
        raise ValueError(f"ResNet1d needs input_dim [12, length] and 1–{MAX_BLOCKS} blocks_dim pairs [filters, "
                         f"length]")
    dims = [_bounded("ResNet1d", "input_dim[0]", input_dim[0], int, 12, 12),
            _bounded("ResNet1d", "input_dim[1]", input_dim[1], int, 1, MAX_SAMPLES)]
    blocks = [[_bounded("ResNet1d", f"blocks_dim[{i}][0]", f, int, 1, 4096),
               _bounded("ResNet1d", f"blocks_dim[{i}][1]", n, int, 1, MAX_SAMPLES)] for i, (f, n) in
              enumerate(blocks_dim)]
    return {**args, "input_dim": dims, "blocks_dim": blocks}


# the architectures' command-line options (an option two architectures take is one object)
MAIC_WIDTHS = (ArchOption("out_ch", "MAIC models' width (default 128 adult / 256 child)", int),
               ArchOption("mid_ch", "MAIC models' U-block width (default 64)", int))
WIDTH = ArchOption("width", "ECGEfficientNet and BaselineNet channel multiplier (1.0)", float)
POOLINGS = ("avgmax", "avg")
RESNET1D_OPTIONS = (ArchOption("net_filter_size", "ResNet1d filters per block", int, "+"),
                    ArchOption("net_seq_lengh", "ResNet1d length per block (published spelling)", int, "+"),
                    ArchOption("kernel_size", "ResNet1d kernel size (17)", int),
                    ArchOption("dropout_rate", "ResNet1d dropout (0.8)", float))
EFFICIENTNET_OPTIONS = (WIDTH, ArchOption("pooling", "ECGEfficientNet: global average + max pooling, or average "
                                                     "only (avgmax)", choices=POOLINGS),
                        ArchOption("sex_input", "ECGEfficientNet: give the network the person's sex where the labels "
                                                "carry it (off)", flag=True))

ARCHITECTURES: dict[str, Architecture] = {
    "ResDenseNet": Architecture(ResDenseNet, {"nOUT": (int, 1, 1), "in_ch": (int, 1, 1), "out_ch": (int, 1, 1024),
                                              "mid_ch": (int, 1, 1024), "lead": (int, 12, 12),
                                              "heads": (int, 1, 64)}, "fc_1", "maic", _maic_options,
                                options=MAIC_WIDTHS),
    "ResUDenseNet": Architecture(ResUDenseNet, {"nOUT": (int, 1, 1), "in_ch": (int, 12, 12),
                                                "out_ch": (int, 1, 2048), "mid_ch": (int, 1, 1024),
                                                "heads": (int, 1, 64)}, "fc_1", "maic", _maic_options,
                                 options=MAIC_WIDTHS),
    "ResNet1d": Architecture(ResNet1d, {"n_classes": (int, 1, 1), "kernel_size": (int, 1, 255),
                                        "dropout_rate": (float, 0.0, 0.99)}, "lin", "lima", _resnet1d_options,
                             published_layout=True, options=RESNET1D_OPTIONS, check=_check_resnet1d,
                             input_length=lambda args: int(args["input_dim"][1])),
    "BaselineNet": Architecture(BaselineNet, {"in_ch": (int, 12, 12), "width": (float, 0.05, 8.0),
                                              "kernel": (int, 1, 63), "dropout": (float, 0.0, 0.99)}, "fc",
                                "baseline", lambda options: _given(options, "width"), options=(WIDTH,),
                                whole_record=True),
    "ECGEfficientNet": Architecture(ECGEfficientNet, {"in_ch": (int, 12, 12), "width": (float, 0.05, 8.0),
                                                      "depth": (float, 0.05, 8.0), "head_ch": (int, 1, 8192),
                                                      "dropout": (float, 0.0, 0.99),
                                                      "drop_path": (float, 0.0, 0.99),
                                                      "sex_input": (bool, False, True),
                                                      "pooling": (str, POOLINGS, None)}, "fc", "modern",
                                    _efficientnet_options, sex_input="sex_input", options=EFFICIENTNET_OPTIONS,
                                    whole_record=True),
}
MODELS: dict[str, type[nn.Module]] = {name: a.cls for name, a in ARCHITECTURES.items()}
ARG_BOUNDS: dict[str, dict[str, tuple]] = {name: a.bounds for name, a in ARCHITECTURES.items()}

__all__ = ["ARCHITECTURES", "MODELS", "ARG_BOUNDS", "get_model", "model_args", "options_to_args",
           "input_length", "infer_model_args", "output_layer", "takes_sex", "accepts_sex", "default_recipe",
           "architecture_of_recipe", "AgeHead", "ADULT_HEAD", "CHILD_HEAD", "LINEAR_HEAD", "ResDenseNet",
           "ResUDenseNet", "ResNet1d", "ECGEfficientNet", "BaselineNet"]


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def model_options() -> list[ArchOption]:
    """Every architecture's training options, each once, in the registry's order."""
    return list({o.name: o for a in ARCHITECTURES.values() for o in a.options}.values())


def default_recipe(name: str) -> str:
    return architecture(name).recipe


def architecture_of_recipe(recipe: str) -> str | None:
    """The architecture a recipe was made for, where only one is (modern → ECGEfficientNet)."""
    names = [name for name, a in ARCHITECTURES.items() if a.recipe == recipe]
    return names[0] if len(names) == 1 else None


def accepts_sex(name: str) -> bool:
    return architecture(name).sex_input is not None


def takes_sex(name: str, args: dict) -> bool:
    """Whether a network built with ``args`` reads the person's sex."""
    key = architecture(name).sex_input
    return key is not None and bool(args.get(key))


def options_to_args(name: str, options: dict) -> dict:
    """Constructor overrides from training options (a plain dict of option values); an option of another
    architecture that was given is an error (it would be silently ignored)."""
    foreign = sorted(o.name for o in model_options() if o.name not in architecture(name).option_names
                     and options.get(o.name) not in (None, False))
    if foreign:
        takes = ", ".join("--" + k for k in architecture(name).option_names) or "none of them"
        raise ValueError(f"{', '.join('--' + k for k in foreign)}: option(s) of other architectures; {name} takes "
                         f"{takes}")
    return architecture(name).option_args(options)


def _defaults(cls: type) -> dict:
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}


def _model_class(name: str) -> type[nn.Module]:
    return architecture(name).cls


def model_args(name: str, **overrides) -> dict:
    """Full constructor arguments of ``name`` with ``overrides`` applied; unknown keys, wrong types and values
    outside ``ARG_BOUNDS`` raise ValueError naming the argument."""
    args = _defaults(_model_class(name))
    unknown = set(overrides) - set(args)
    if unknown:
        raise ValueError(f"{name} has no argument(s) {', '.join(sorted(unknown))}; it takes {', '.join(args)}")
    args.update({k: v for k, v in overrides.items()})
    for key, bound in ARG_BOUNDS[name].items():
        args[key] = _bounded(name, key, args[key], *bound)
    return architecture(name).check(args)


def _bounded(name: str, key: str, value, kind: type, low, high):
    """``value`` as ``kind`` if it is one (a bool is not a number; a whole float is an int) within [low, high] (for
    a str: one of the names in ``low``)."""
    if kind is str:
        if not isinstance(value, str) or value not in low:
            raise ValueError(f"{name} argument {key} must be one of {', '.join(low)}, got {value!r}")
        return value
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) or \
            isinstance(value, float) and value.is_integer()
    else:
        ok = finite_number(value) is not None
    if not ok or not low <= value <= high:
        raise ValueError(f"{name} argument {key} must be {kind.__name__} in [{low}, {high}], got {value!r}")
    return kind(value)


def input_length(name: str, args: dict) -> int | None:
    """The one input length (samples) an architecture takes, or None where it takes any length (ResNet1d's
    flattening output layer fixes it; the others pool over time)."""
    return architecture(name).input_length(args)


def get_model(name: str, **overrides) -> nn.Module:
    """Build ``name``: its arguments are checked first, then its size on the 'meta' device (nothing allocated)."""
    args = model_args(name, **overrides)
    with torch.device("meta"):
        skeleton = _model_class(name)(**args)
    parameters = sum(p.numel() for p in skeleton.parameters())
    if parameters > MAX_PARAMETERS:
        raise ValueError(f"{name} with these arguments has {parameters:,} parameters, more than the "
                         f"{MAX_PARAMETERS:,} allowed")
    model = _model_class(name)(**args)
    layer = output_layer(name, model)
    if type(layer) is nn.Linear:
        layer.__class__ = FP32OutputLinear  # same parameters and state-dict keys; see the class
    return model


class FP32OutputLinear(nn.Linear):
    """The output layer, computed in fp32 even under bf16 autocast: bf16 holds an age of 32–64 years to 0.25 years
    and 64–128 to 0.5, so a network's small steps vanish in rounding (a CPU run under --precision auto trained to
    the constant predictor, issue 26). Outside autocast (fp32 runs, export) it is an ordinary nn.Linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled(x.device.type):
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return nn.functional.linear(x.float(), self.weight.float(), self.bias.float() if self.bias is not None
                                        else None)


def output_layer(name: str, model: nn.Module) -> nn.Linear:
    """The final linear layer whose output the age head reads."""
    return getattr(model, architecture(name).output)


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

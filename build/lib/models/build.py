"""A new model from the training options: ``ModelSettings`` (the model options, each architecture's own among
them) and ``new_bundle`` (network, preprocessing and head as the options and the recipe say)."""
from __future__ import annotations

import dataclasses

from utils.settings import Settings, option

from .checkpoint import ModelBundle, check_fits
from .heads import LINEAR_HEAD, AgeHead
from .preprocessing import PRESETS
from .registry import MODELS, get_model, model_args, model_options, options_to_args
from .schema import maic_mode, mode_option


def sigmoid_bounds(mode: str, age_min: float | None, age_max: float | None) -> tuple[float, float]:
    """A sigmoid head's age bounds: those given, else the MAIC mode's."""
    bounds = maic_mode(mode)
    return (bounds.low if age_min is None else age_min), (bounds.high if age_max is None else age_max)


@dataclasses.dataclass(frozen=True)
class ModelSettings(Settings):
    """``--mode``, ``--arch`` and the model options: the head's bounds, ``--zscore``, ``--sample_rate``,
    ``--seq_length`` and the options of the architectures (``arch_options``, by name, as the registry defines
    them)."""

    TITLE = "model"

    mode: str = mode_option()
    arch: str | None = option(None, "default: ECGEfficientNet for --recipe modern, else ResDenseNet (adult) / "
                                    "ResUDenseNet (child)", choices=tuple(MODELS))
    age_min: float | None = option(None, "lower bound of the sigmoid head (19 / 0)")
    age_max: float | None = option(None, "upper bound of the sigmoid head (122 / 9)")
    zscore: str = option("auto", "z-score each lead (auto: as the preprocessing; off keeps amplitudes in mV)",
                         choices=("auto", "on", "off"))
    sample_rate: float | None = option(None, "model's sampling rate (500 MAIC, 400 Lima)")
    seq_length: int | None = option(None, "model's input length in samples (4096)")
    arch_options: dict = dataclasses.field(default_factory=dict)  # each architecture's own options (the registry's)

    @classmethod
    def option_names(cls) -> frozenset[str]:
        return (super().option_names() - {"arch_options"}) | {o.name for o in model_options()}

    @classmethod
    def absent_values(cls) -> dict:
        return {**{k: v for k, v in super().absent_values().items() if k != "arch_options"},
                **{o.name: o.default for o in model_options()}}

    @classmethod
    def add_options(cls, parser, title=None, only=None, skip=(), aliases=None) -> None:
        """The group's own options, then every architecture's (declared in its registry entry)."""
        super().add_options(parser, title, only, skip, aliases)
        group = next(g for g in parser._action_groups if g.title == (title or cls.TITLE))
        for o in model_options():
            if o.flag:
                group.add_argument(f"--{o.name}", action="store_true", help=o.help)
            else:
                group.add_argument(f"--{o.name}", type=o.type, nargs=o.nargs, choices=o.choices, default=None,
                                   help=o.help)

    @classmethod
    def from_options(cls, options: dict) -> "ModelSettings":
        own = {f.name for f in dataclasses.fields(cls)} - {"arch_options"}
        return cls(**{k: options[k] for k in own if k in options},
                   arch_options={o.name: options.get(o.name, o.default) for o in model_options()})


def new_bundle(model: ModelSettings, preprocessing: str, head: str) -> ModelBundle:
    """A new network of ``model.arch`` with the options' constructor arguments, the preset ``preprocessing``
    (adjusted by --sample_rate, --seq_length, --zscore) and the ``head`` kind; ValueError names what is wrong."""
    spec = PRESETS[preprocessing]
    overrides = options_to_args(model.arch, {**model.arch_options, "seq_length": model.seq_length})
    spec = dataclasses.replace(spec, fs=model.sample_rate or spec.fs, length=model.seq_length or spec.length,
                               zscore=spec.zscore if model.zscore == "auto" else model.zscore == "on")
    age_head = AgeHead("sigmoid", *sigmoid_bounds(model.mode, model.age_min, model.age_max)) \
        if head == "sigmoid" else LINEAR_HEAD
    arguments = model_args(model.arch, **overrides)
    check_fits(model.arch, arguments, spec)
    return ModelBundle(get_model(model.arch, **arguments), model.arch, arguments, spec, age_head)

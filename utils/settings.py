"""Typed settings, each option declared once: the field of its settings group carries its command-line flag, help,
type, choices and default, and the programs' parsers are generated from the groups they read.

Each group of settings is a frozen dataclass defined next to the code that reads it (``InputSettings`` in
dataloader/formats.py, ``ModelSettings`` in models/build.py, ``Recipe`` in engine/train/recipes.py, ...), its fields
named as the options they come from (``option(default, help, ...)``). A field that says where things are or how the
work runs — not what a model learns — is ``runtime``: a resumed run may change it, and the run's manifest leaves it
out. So whether an option changes the result is said once, where the option is declared. A result-changing option
added later may say which value runs from before it existed implied (``absent``; by default its default), so that
their manifests still compare — nothing else has to change for older runs to stay resumable.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable

from .bounds import MAX_INFER_BATCH, MAX_WORKERS
from .machine import usable_cores

_RUNTIME = "runtime"
OPTION = "option"  # the metadata key of a declared field
PRECISIONS = ("auto", "fp32", "bf16")  # --precision: the arithmetic a program may be asked for
_DEFAULT = object()  # "absent" not given: a manifest without the option implies its default


@dataclasses.dataclass(frozen=True)
class Option:
    """How a settings field is offered on the command line (argparse's words)."""

    help: str = ""
    flag: str | None = None  # the command-line name when it is not --<field name>
    aliases: tuple = ()
    type: Callable | None = None  # the parse function (default: from the field's annotation)
    choices: tuple | None = None
    nargs: str | None = None
    metavar: str | None = None
    required: bool = False
    absent: Any = _DEFAULT


def option(default=dataclasses.MISSING, help: str = "", *, runtime: bool = False, **how) -> Any:
    """A settings field offered as a command-line option (see ``Option`` for ``how``): ``runtime`` when it does not
    change a run's result; a field without a default is required on the command line unless its group resolves
    it (``Recipe``)."""
    metadata = {OPTION: Option(help, **how), _RUNTIME: runtime}
    return dataclasses.field(default=default, metadata=metadata)


def runtime(default=None, help: str = "", **how) -> Any:
    """A field that does not change a run's result (a path, a device, a switch for output)."""
    return option(default, help, runtime=True, **how)


def truthy(text: str) -> bool:
    """true/false on the command line (1/0, yes/no, on/off)."""
    if str(text).lower() in ("1", "true", "yes", "on"):
        return True
    if str(text).lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def bounded(kind: type, low, high, what: str) -> Callable[[str], Any]:
    """The parse function of a number option (``kind`` int or float) bounded where it is parsed (``low``–``high``;
    NaN is refused too)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            shown = "{:d}" if kind is int else "{:g}"  # a whole number in full: 4294967295, not 4.29497e+09
            raise argparse.ArgumentTypeError(f"a {'whole ' if kind is int else ''}number from {shown.format(low)} to "
                                             f"{shown.format(high)} ({what}), got {text!r}")
        return value
    parse.__name__ = "whole number" if kind is int else "number"
    return parse


def whole_number(low: int, high: int, what: str) -> Callable[[str], int]:
    return bounded(int, low, high, what)


def number_between(low: float, high: float, what: str) -> Callable[[str], float]:
    return bounded(float, low, high, what)


def _plain_type(annotation) -> type | None:
    """int for ``int | None``, list for ``list | None``, ... (None when the annotation names no single type)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return kinds[0] if len(kinds) == 1 else None
    return typing.get_origin(annotation) or annotation


class Settings:
    """A group of settings read from options by name (mixed into frozen dataclasses); ``TITLE`` heads its options
    in ``--help``."""

    TITLE = ""

    @classmethod
    def option_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))

    @classmethod
    def runtime_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get(_RUNTIME))

    @classmethod
    def from_options(cls, options: dict):
        """The group from a plain dict of option values (those it does not name are left to other groups)."""
        return cls(**{name: options[name] for name in cls.option_names() if name in options})

    # ---- the command line ---------------------------------------------------------------------------------------
    @classmethod
    def declared(cls) -> list[dataclasses.Field]:
        """The fields offered as options, in declaration order."""
        return [f for f in dataclasses.fields(cls) if OPTION in f.metadata]

    @classmethod
    def parser_default(cls, field: dataclasses.Field):
        """What the command line gives when the option is left out: the field's default."""
        return None if field.default is dataclasses.MISSING else field.default

    @classmethod
    def absent_values(cls) -> dict:
        """Result-changing field → the value a manifest without it implies (its declared ``absent``, else its
        default; fields without a default are always recorded)."""
        out = {}
        for f in dataclasses.fields(cls):
            absent = f.metadata[OPTION].absent if OPTION in f.metadata else _DEFAULT
            if f.metadata.get(_RUNTIME) or (absent is _DEFAULT and f.default is dataclasses.MISSING):
                continue
            out[f.name] = f.default if absent is _DEFAULT else absent
        return out

    @classmethod
    def argument(cls, field: dataclasses.Field) -> tuple[list[str], dict]:
        """(flags, argparse keywords) of one declared field."""
        how: Option = field.metadata[OPTION]
        kind = _plain_type(typing.get_type_hints(cls)[field.name])
        default = cls.parser_default(field)
        keywords = dict(dest=field.name, help=how.help.replace("%", "%%"), default=default)
        if kind is bool and default is False and how.type is None:
            keywords["action"] = "store_true"
        else:
            keywords.update(type=how.type or (str if kind in (list, tuple) else kind), nargs=how.nargs,
                            choices=how.choices, metavar=how.metavar)
        if how.required:
            keywords.update(required=True, default=None)
        return [how.flag or f"--{field.name}", *how.aliases], keywords

    @classmethod
    def add_options(cls, parser: argparse.ArgumentParser, title: str | None = None, only=None, skip=(),
                    aliases: dict | None = None) -> None:
        """Add this group's options (``only`` these names, none of ``skip``; more ``aliases`` by name) to ``parser``
        under ``title`` (default the group's ``TITLE``; '' = the parser's own options)."""
        title = cls.TITLE if title is None else title
        group = parser.add_argument_group(title) if title else parser
        for field in cls.declared():
            if (only is None or field.name in only) and field.name not in skip:
                flags, keywords = cls.argument(field)
                group.add_argument(*flags, *(aliases or {}).get(field.name, ()), **keywords)


@dataclasses.dataclass(frozen=True)
class RuntimeSettings(Settings):
    """Where and how the work runs (the runtime options of every program; torch-free, as the ONNX path reads it
    too): all runtime but ``--sync_bn``, which changes what a distributed run's batch norm learns."""

    TITLE = "runtime"

    device: str = runtime("auto", "where the model runs; auto = a CUDA GPU, else Apple's MPS, else the CPU",
                          choices=("auto", "cpu", "cuda", "mps"))
    precision: str = runtime("auto", "auto = bf16 autocast where the hardware runs it fast (CUDA, AMX/AVX512-BF16 "
                                     "CPUs) for training, fp32 numerics for inference; fp32 = the exact reference "
                                     "path", choices=PRECISIONS)
    num_workers: int | None = runtime(None, "processes that read and preprocess records beside the model "
                                            "(default: by the device and the cache — none from a cache on a CPU, "
                                            "one core left to the model otherwise)",
                                      type=whole_number(0, MAX_WORKERS, "processes beside the model"))
    threads: int | None = runtime(None, "CPU threads the model runs on, at most the cores this process may use: "
                                        "onnxruntime's intra-op threads, PyTorch's torch.set_num_threads (default: "
                                        "onnxruntime takes the cores the preprocessing workers leave, PyTorch its "
                                        "own choice)",
                                  type=whole_number(1, usable_cores(), "the cores this process may use"))
    deterministic: bool = runtime(True, "deterministic algorithms (CPU always)", type=truthy)
    quiet: bool = runtime(False, "no progress bars or notes: results (epoch metrics, files written), warnings and "
                                 "errors only")
    trust_checkpoint: bool = runtime(False, "load checkpoints that hold Python objects with full unpickling — this "
                                            "can run code: only for files from people you trust (default: tensors "
                                            "and plain data only)")
    compile: str = runtime("auto", "torch.compile the model (auto = on CUDA only)", choices=("auto", "on", "off"))
    infer_batch_size: int | None = runtime(None, "inference batch: validation, out-of-fold and prediction (default: "
                                                 "4×batch_size for training and 32 for prediction on GPUs, 8 on "
                                                 "CPUs; onnxruntime: by its threads, "
                                                 "engine/deploy/onnx_model.batch_for)",
                                      type=whole_number(1, MAX_INFER_BATCH, "ECGs per forward pass"))
    sync_bn: bool = option(False, "SyncBatchNorm across processes (GPU, torchrun)")

    def workers(self, default: int) -> int:
        return self.num_workers if self.num_workers is not None else default

    @property
    def fast_layout(self) -> bool:
        """channels-last and the fast kernels, unless --precision fp32 asks for the reference path."""
        return self.precision != "fp32"

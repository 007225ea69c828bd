"""Typed settings: what the programs' options become before any layer below them sees them.

Each group of settings is a frozen dataclass defined next to the code that reads it (``InputSettings`` in
dataloader/formats.py, ``ModelSettings`` in models/build.py, ``Recipe`` in engine/recipes.py, ...), its fields named
as the options they come from. A field that says where things are or how the work runs — not what a model learns
— is marked ``runtime()``: a resumed run may change it, and the run's manifest leaves it out. So whether an option
changes the result is said once, where the option's setting is defined.
"""
from __future__ import annotations

import dataclasses

_RUNTIME = "runtime"


def runtime(default=None):
    """A field that does not change a run's result (a path, a device, a switch for output)."""
    return dataclasses.field(default=default, metadata={_RUNTIME: True})


class Settings:
    """A group of settings read from options by name (mixed into frozen dataclasses)."""

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


@dataclasses.dataclass(frozen=True)
class RuntimeSettings(Settings):
    """Where and how the work runs (the runtime options of every program; torch-free, as the ONNX path reads it
    too): all runtime but ``--sync_bn``, which changes what a distributed run's batch norm learns."""

    device: str = runtime("auto")
    precision: str = runtime("auto")
    num_workers: int | None = runtime()
    deterministic: bool = runtime(True)
    quiet: bool = runtime(False)
    compile: str = runtime("auto")
    trust_checkpoint: bool = runtime(False)
    infer_batch_size: int | None = runtime()
    threads: int | None = runtime()  # the model's CPU threads (None: the library's own choice, every core)
    sync_bn: bool = False

    def workers(self, default: int) -> int:
        return self.num_workers if self.num_workers is not None else default

    @property
    def fast_layout(self) -> bool:
        """channels-last and the fast kernels, unless --precision fp32 asks for the reference path."""
        return self.precision != "fp32"

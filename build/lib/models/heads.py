"""Output heads: how a network's raw output becomes an age in years.

The MAIC models bound their output with a scaled sigmoid (adult 19 + 103·sigmoid, child 9·sigmoid); the Lima et
al. ResNet1d outputs the age directly. The head is stored in every checkpoint next to the weights.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from utils.bounds import AGE_RANGE, is_real

from .schema import MAIC_MODES

HEAD_KINDS = ("sigmoid", "linear")


@dataclasses.dataclass(frozen=True)
class AgeHead:
    kind: str = "sigmoid"  # "sigmoid": low + (high − low)·sigmoid(raw); "linear": raw
    low: float = 0.0
    high: float = 9.0

    def __post_init__(self):
        if not isinstance(self.kind, str) or self.kind not in HEAD_KINDS:
            raise ValueError(f"head kind must be 'sigmoid' or 'linear', got {self.kind!r}")
        if not all(is_real(v) for v in (self.low, self.high)):
            raise ValueError(f"head bounds must be numbers, got {self.low!r}, {self.high!r}")
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))
        if self.kind == "sigmoid" and not AGE_RANGE[0] <= self.low < self.high <= AGE_RANGE[1]:
            raise ValueError(f"a sigmoid head's bounds must satisfy {AGE_RANGE[0]:g} ≤ low < high ≤ "
                             f"{AGE_RANGE[1]:g} (the plausible ages), got [{self.low}, {self.high}]")

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        raw = raw.float().reshape(-1)
        if self.kind == "linear":
            return raw
        return self.low + (self.high - self.low) * torch.sigmoid(raw)

    def inverse(self, age: float) -> float:
        """The raw output that this head maps to ``age`` (to start a network's output bias at a mean age)."""
        if self.kind == "linear":
            return float(age)
        share = min(max((age - self.low) / (self.high - self.low), 1e-4), 1 - 1e-4)
        return float(math.log(share / (1 - share)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AgeHead":
        if not isinstance(data, dict):
            raise ValueError(f"a head is a dict with kind, low and high, got {type(data).__name__}")
        return cls(**{k: data[k] for k in ("kind", "low", "high") if k in data})


MODE_HEADS = {m.name: AgeHead("sigmoid", m.low, m.high) for m in MAIC_MODES.values()}  # bounds: models.schema
ADULT_HEAD, CHILD_HEAD = MODE_HEADS["adult"], MODE_HEADS["child"]
LINEAR_HEAD = AgeHead("linear", float("-inf"), float("inf"))

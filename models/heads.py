"""Output heads: how a network's raw output becomes an age in years.

The MAIC models bound their output with a scaled sigmoid (adult 19 + 103·sigmoid, child 9·sigmoid); the Lima et
al. ResNet1d outputs the age directly. The head is stored in every checkpoint next to the weights.
"""
from __future__ import annotations

import dataclasses
import math

import torch


@dataclasses.dataclass(frozen=True)
class AgeHead:
    kind: str = "sigmoid"  # "sigmoid": low + (high − low)·sigmoid(raw); "linear": raw
    low: float = 0.0
    high: float = 9.0

    def __post_init__(self):
        if self.kind not in ("sigmoid", "linear"):
            raise ValueError(f"head kind must be 'sigmoid' or 'linear', got {self.kind!r}")
        if self.kind == "sigmoid" and not self.high > self.low:
            raise ValueError(f"head bounds must satisfy high > low, got [{self.low}, {self.high}]")

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
        return cls(**{k: data[k] for k in ("kind", "low", "high") if k in data})


ADULT_HEAD = AgeHead("sigmoid", 19.0, 122.0)
CHILD_HEAD = AgeHead("sigmoid", 0.0, 9.0)
LINEAR_HEAD = AgeHead("linear", float("-inf"), float("inf"))
MODE_HEADS = {"adult": ADULT_HEAD, "child": CHILD_HEAD}  # the MAIC age bounds of each mode, defined here only

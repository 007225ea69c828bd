"""The graph's part of the preprocessing (models.preprocessing.in_graph): the CPU's windows (B, 12, L) → the model's
input, as batched tensor operations that run with the network (PyTorch or the exported ONNX graph, every thread or
a GPU): the exact zero-phase band-pass (scipy's filtfilt as block matrices, models/zero_phase.py), each lead
z-scored (eps 1e-8), NaN → 0. Always float32, whatever the network's precision."""
from __future__ import annotations

import torch
from torch import nn

from .preprocessing import PreprocessSpec, in_graph
from .zero_phase import padlen, pass_blocks


class InputStage(nn.Module):
    """``spec``'s band-pass, z-score and NaN → 0 for windows of ``spec.length`` samples (its buffers are constants,
    never saved in a checkpoint)."""

    def __init__(self, spec: PreprocessSpec):
        super().__init__()
        if not in_graph(spec):
            raise ValueError(f"this preprocessing stays on the CPU, whole: {spec}")
        self.pad = padlen(spec.filter_order)
        n = spec.length + 2 * self.pad
        blocks = pass_blocks(spec.filter_order, *spec.bandpass, spec.fs, n)
        self.n, self.block, self.blocks = n, blocks.block, blocks.blocks
        self.states = blocks.to_state.shape[0]
        for name in ("inner", "to_state", "carry", "from_state", "start"):
            self.register_buffer(name, torch.tensor(getattr(blocks, name), dtype=torch.float32), persistent=False)
        self.zscore, self.nan_to_zero = spec.zscore, spec.nan_to_zero

    def one_pass(self, u: torch.Tensor) -> torch.Tensor:
        """lfilter from lfilter_zi · u[:, 0] over rows ``u`` (R, n)."""
        rows = u.shape[0]
        x = nn.functional.pad(u, (0, self.blocks * self.block - self.n)).reshape(rows, self.blocks, self.block)
        states = (x @ self.to_state.T).reshape(rows, self.blocks * self.states) @ self.carry.T
        y = x @ self.inner.T + states.reshape(rows, self.blocks, self.states) @ self.from_state.T
        return (y.reshape(rows, self.blocks * self.block) + u[:, :1] * self.start)[:, :self.n]

    def filtfilt(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        left = 2 * x[:, :1] - x[:, 1:p + 1].flip(1)
        right = 2 * x[:, -1:] - x[:, -p - 1:-1].flip(1)
        y = self.one_pass(torch.cat([left, x, right], dim=1))
        return self.one_pass(y.flip(1)).flip(1)[:, p:p + self.n - 2 * p]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, leads, length = x.shape
        y = self.filtfilt(x.float().reshape(batch * leads, length))
        if self.zscore:
            mean = y.mean(dim=1, keepdim=True)
            y = (y - mean) / (((y - mean) ** 2).mean(dim=1, keepdim=True).sqrt() + 1e-8)
        if self.nan_to_zero:
            y = torch.where(torch.isnan(y), torch.zeros_like(y), y)
        return y.reshape(batch, leads, length)

"""The graph's part of the preprocessing (models.preprocessing.in_graph): the CPU's windows (B, 12, L) → the model's
input, as batched tensor operations that run with the network (PyTorch or the exported ONNX graph, every thread or
a GPU): the exact zero-phase band-pass (scipy's filtfilt as block matrices, models/zero_phase.py), each lead
z-scored (eps 1e-8), NaN → 0. Always float32, whatever the network's precision."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .preprocessing import PreprocessSpec, in_graph
from .zero_phase import PassBlocks, padlen, pass_blocks


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
        self.spare = blocks.blocks * blocks.block - n  # the zeros that fill the last block
        for direction, matrices in (("forward", _forward(blocks)), ("backward", _backward(blocks))):
            for name, value in matrices.items():
                constant = torch.tensor(np.ascontiguousarray(value), dtype=torch.float32)
                self.register_buffer(f"{direction}_{name}", constant, persistent=False)
        self.zscore, self.nan_to_zero = spec.zscore, spec.nan_to_zero

    def one_pass(self, u: torch.Tensor, first: torch.Tensor, direction: str) -> torch.Tensor:
        """lfilter over rows ``u`` (R, blocks·block: the pass's samples, with the blocks' spare zeros after them
        forward and before them backward) from lfilter_zi times the pass's ``first`` sample (R, 1): forward, or
        backward (scipy's pass over the reversed rows, written with reversed matrices so that no row is
        reversed). The outputs at the spare positions are not the filter's."""
        rows = u.shape[0]
        inner, to_state, carry, from_state, start = (getattr(self, f"{direction}_{name}") for name in
                                                     ("inner", "to_state", "carry", "from_state", "start"))
        x = u.reshape(rows, self.blocks, self.block)
        own = x @ inner  # each block's own response and (below) the state it leaves: two products, no split copy
        left = (x @ to_state).reshape(rows, self.blocks * self.states)
        entering = (left @ carry).reshape(rows, self.blocks, self.states) + first[:, :, None] * start
        return (own + entering @ from_state).reshape(rows, self.blocks * self.block)

    def filtfilt(self, x: torch.Tensor) -> torch.Tensor:
        p, spare = self.pad, self.spare
        left = 2 * x[:, :1] - x[:, 1:p + 1].flip(1)
        right = 2 * x[:, -1:] - x[:, -p - 1:-1].flip(1)
        u = torch.cat([left, x, right, x.new_zeros(x.shape[0], spare)], dim=1)  # one copy: extension and spare
        y = self.one_pass(u, u[:, :1], "forward")
        y = nn.functional.pad(y, (spare, -spare))  # the spare zeros moved before the samples, in one copy
        return self.one_pass(y, y[:, -1:], "backward")[:, spare + p:spare + self.n - p]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, leads, length = x.shape
        y = self.filtfilt(x.float().reshape(batch * leads, length))
        nan = y  # where a NaN shows: in each sample, or once z-scored in each lead's variance
        if self.zscore:
            centred = y - y.mean(dim=1, keepdim=True)
            nan = (centred * centred).mean(dim=1, keepdim=True)
            y = centred / (nan.sqrt() + 1e-8)
            # the filter and the z-score spread one NaN (or an overflow) over its whole lead, so a lead is NaN
            # throughout exactly when its variance is: one test per lead instead of one per sample
        if self.nan_to_zero:
            y = torch.where(torch.isnan(nan), 0.0, y)  # a scalar, not a tensor of zeros (one pass less)
        return y.reshape(batch, leads, length)


def _forward(blocks: PassBlocks) -> dict[str, np.ndarray]:
    """The matrices of a pass, arranged for row vectors."""
    return {"inner": blocks.inner.T, "to_state": blocks.to_state.T, "carry": blocks.carry.T,
            "from_state": blocks.from_state.T, "start": blocks.start}


def _backward(blocks: PassBlocks) -> dict[str, np.ndarray]:
    """The same pass run over reversed rows, as matrices on the rows as they are: every block and every sample
    order reversed (the states' own order kept), so that the backward pass needs no reversal of the signal."""
    order = blocks.to_state.shape[0]
    reverse = np.arange(blocks.blocks)[::-1, None] * order + np.arange(order)  # block b's states ↔ block -1-b's
    carry = blocks.carry[np.ix_(reverse.ravel(), reverse.ravel())]
    return {"inner": blocks.inner[::-1, ::-1].T, "to_state": blocks.to_state[:, ::-1].T, "carry": carry.T,
            "from_state": blocks.from_state[::-1].T, "start": blocks.start[::-1]}

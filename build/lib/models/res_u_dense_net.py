"""ResUDenseNet: the challenge entry's child model (1-D residual U-blocks, DenseNet blocks, self-attention)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ResidualUBlock, TimeSelfAttention, Transition, dense_block

RUB_LAYERS = (6, 5, 4, 3)
DENSE_LAYERS, GROWTH = 16, 12


class ResUDenseNet(nn.Module):
    """Input (B, 12, T) → raw output (B,) (before the age head)."""


    def __init__(self, nOUT: int = 1, in_ch: int = 12, out_ch: int = 256, mid_ch: int = 64, heads: int = 8):
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, 15, stride=2, padding=7, bias=False)
        self.bn = nn.BatchNorm1d(out_ch)
        for i, layers in enumerate(RUB_LAYERS):
            self.add_module(f"rub_{i}", ResidualUBlock(out_ch, mid_ch, layers, dims=1))
        width = out_ch + DENSE_LAYERS * GROWTH
        self.dense1 = dense_block(out_ch, DENSE_LAYERS, GROWTH)
        self.trans1 = Transition(width, width // 2)
        self.dense2 = dense_block(width // 2, DENSE_LAYERS, GROWTH)
        self.trans2 = Transition(width // 2 + DENSE_LAYERS * GROWTH, out_ch)
        self.dropout = nn.Dropout(0.5)
        self.mha = TimeSelfAttention(out_ch, heads)
        self.pool = nn.AdaptiveMaxPool1d(1)
        self.fc_1 = nn.Linear(out_ch, nOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.bn(self.conv(x)))
        for i in range(len(RUB_LAYERS)):
            x = getattr(self, f"rub_{i}")(x)
        x = self.trans1(self.dense1(x))
        x = self.trans2(self.dense2(x))
        x = self.mha(self.dropout(x))
        return self.fc_1(self.pool(x).flatten(1)).squeeze()

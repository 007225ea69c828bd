"""ResDenseNet: the challenge entry's adult model (2-D residual U-blocks over leads × time, then 1-D DenseNet)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ResidualUBlock, TimeSelfAttention, Transition, dense_block
from .res_u_dense_net import DENSE_LAYERS, GROWTH, RUB_LAYERS


class ResDenseNet(nn.Module):
    """Input (B, 12, T) → raw output (B,) (before the age head)."""


    def __init__(self, nOUT: int = 1, in_ch: int = 1, out_ch: int = 128, mid_ch: int = 64, lead: int = 12,
                 heads: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, (3, 15), stride=(1, 2), padding=(1, 7), bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        for i, layers in enumerate(RUB_LAYERS):
            self.add_module(f"rub_{i}", ResidualUBlock(out_ch, mid_ch, layers, dims=2))
        self.conv2 = nn.Conv1d(lead * out_ch, out_ch, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(out_ch)
        width = out_ch + DENSE_LAYERS * GROWTH
        self.dense1 = dense_block(out_ch, DENSE_LAYERS, GROWTH)
        self.trans1 = Transition(width, width // 2)
        self.mha_small = TimeSelfAttention(width // 2, heads)
        self.dense2 = dense_block(width // 2, DENSE_LAYERS, GROWTH)
        self.trans2 = Transition(width // 2 + DENSE_LAYERS * GROWTH, out_ch, pool=True)
        self.dropout = nn.Dropout(0.5)
        self.mha = TimeSelfAttention(out_ch, heads)
        self.pool = nn.AdaptiveMaxPool1d(1)
        self.fc_1 = nn.Linear(out_ch, nOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.bn(self.conv(x.unsqueeze(1))))
        for i in range(len(RUB_LAYERS)):
            x = getattr(self, f"rub_{i}")(x)
        x = x.flatten(1, 2)  # (B, C, lead, T) → (B, C·lead, T), channel-major as in the seed
        x = F.leaky_relu(self.bn2(self.conv2(x)))
        x = self.mha_small(self.trans1(self.dense1(x)))
        x = self.trans2(self.dense2(x))
        x = self.mha(self.dropout(x))
        return self.fc_1(self.pool(x).flatten(1)).squeeze()

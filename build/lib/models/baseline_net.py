"""BaselineNet: a plain 1-D convolutional network for whole 12-lead records — the "100-line baseline" the modern
recipe is measured against (reproduced in this project's code from its published description).

Six stages, each a 7-tap convolution with stride 2, a 7-tap depthwise convolution and a 1×1 convolution, every one
followed by BatchNorm and GELU; channels 32-48-64-96-128-160 (373 k parameters, 0.15 GFLOP per 10-s ECG at
500 Hz); global average pooling, dropout and one linear output (its weight started at zero and its bias at the
training-mean age by the baseline recipe). Any length works (the pooling is global).
"""
from __future__ import annotations

import torch
from torch import nn

CHANNELS = (32, 48, 64, 96, 128, 160)


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups,
                                   bias=False), nn.BatchNorm1d(out_ch), nn.GELU())


class BaselineNet(nn.Module):
    """Input (B, 12, T) → raw output (B,) in years (linear age head)."""

    def __init__(self, in_ch: int = 12, width: float = 1.0, kernel: int = 7, dropout: float = 0.3):
        super().__init__()
        stages, channels = [], in_ch
        for out in (max(8, int(round(c * width))) for c in CHANNELS):
            stages += [_conv(channels, out, kernel, stride=2), _conv(out, out, kernel, groups=out), _conv(out, out, 1)]
            channels = out
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.stages(x).mean(dim=-1))).squeeze(-1)

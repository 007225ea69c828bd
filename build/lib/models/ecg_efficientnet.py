"""ECGEfficientNet: a 1-D EfficientNet-style network for whole 12-lead records (this project's own design).

The MAIC 2023 winning entry used a 1-D EfficientNet on the whole 12 × 5000 record; this is an independent design in
that family: a strided stem, stages of inverted-residual (MBConv) blocks — 1×1 expansion, depthwise convolution,
squeeze-and-excitation, 1×1 projection, residual when the shape allows, stochastic depth — then a final 1×1
convolution (``conv_head``), global average + max pooling (``pooling="avg"``: average only; any length ≥ 2 s at
500 Hz works) and a linear age
output whose bias is started at the training-mean age by the recipe. Optionally the person's sex (1 male, 0 female, 0.5
unknown) joins the pooled features before the output layer.

About 0.21 GFLOP per 10-s ECG at the default width (measured by bench/accuracy.py; ResUDenseNet: 7.3 per 8.2 s,
ResDenseNet: 87).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (expansion, kernel, stride, output channels, blocks) per stage at width 1.0
STAGES = ((1, 7, 2, 24, 1), (4, 7, 2, 40, 2), (4, 7, 2, 64, 2), (4, 5, 2, 96, 3), (4, 5, 2, 128, 2))


def _width(channels: int, width: float) -> int:
    return max(8, int(round(channels * width / 8)) * 8)


class SqueezeExcite(nn.Module):
    """Channel gating from the time-averaged activations."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.reduce = nn.Conv1d(channels, squeezed, 1)
        self.expand = nn.Conv1d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(F.silu(self.reduce(x.mean(dim=-1, keepdim=True))))
        return x * torch.sigmoid(gate)


class MBConv1d(nn.Module):
    """Inverted residual: expand (1×1) → depthwise (k, stride) → SE → project (1×1), BN after each convolution."""

    def __init__(self, in_ch: int, out_ch: int, expansion: int, kernel: int, stride: int, drop_path: float):
        super().__init__()
        mid = in_ch * expansion
        self.expand = nn.Sequential(nn.Conv1d(in_ch, mid, 1, bias=False), nn.BatchNorm1d(mid), nn.SiLU()) \
            if expansion != 1 else nn.Identity()
        self.depthwise = nn.Sequential(nn.Conv1d(mid, mid, kernel, stride=stride, padding=kernel // 2, groups=mid,
                                                 bias=False), nn.BatchNorm1d(mid), nn.SiLU())
        self.se = SqueezeExcite(mid, max(4, in_ch // 4))
        self.project = nn.Sequential(nn.Conv1d(mid, out_ch, 1, bias=False), nn.BatchNorm1d(out_ch))
        self.residual = stride == 1 and in_ch == out_ch
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        if not self.residual:
            return out
        if self.training and self.drop_path > 0:  # stochastic depth: drop the whole branch per sample
            keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= self.drop_path
            out = out * keep / (1 - self.drop_path)
        return x + out


class ECGEfficientNet(nn.Module):
    """Input (B, 12, T), T ≥ 1000 (2 s at 500 Hz) → raw output (B,) in years (linear age head). With
    ``sex_input`` the forward pass also takes each person's sex code (1 male, 0 female, 0.5 unknown)."""

    def __init__(self, in_ch: int = 12, width: float = 1.0, depth: float = 1.0, head_ch: int = 256,
                 dropout: float = 0.2, drop_path: float = 0.1, sex_input: bool = False, pooling: str = "avgmax"):
        super().__init__()
        stem = _width(32, width)
        self.stem = nn.Sequential(nn.Conv1d(in_ch, stem, 15, stride=2, padding=7, bias=False),
                                  nn.BatchNorm1d(stem), nn.SiLU())
        blocks, channels = [], stem
        total = sum(max(1, round(n * depth)) for *_, n in STAGES)
        for expansion, kernel, stride, out, n in STAGES:
            for i in range(max(1, round(n * depth))):
                rate = drop_path * len(blocks) / max(1, total - 1)
                blocks.append(MBConv1d(channels, _width(out, width), expansion, kernel, stride if i == 0 else 1,
                                       rate))
                channels = _width(out, width)
        self.blocks = nn.Sequential(*blocks)
        features = _width(head_ch, width)
        self.conv_head = nn.Sequential(nn.Conv1d(channels, features, 1, bias=False), nn.BatchNorm1d(features),
                                       nn.SiLU())
        self.dropout = nn.Dropout(dropout)
        self.sex_input, self.pooling = sex_input, pooling
        self.fc = nn.Linear((2 if pooling == "avgmax" else 1) * features + int(sex_input), 1)

    def forward(self, x: torch.Tensor, sex: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv_head(self.blocks(self.stem(x)))
        features = torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1) if self.pooling == "avgmax" else x.mean(dim=-1)
        if self.sex_input:
            if sex is None:
                raise ValueError("this network was built with sex_input: give each record's sex code")
            features = torch.cat([features, sex.reshape(-1, 1).to(features.dtype)], dim=1)
        return self.fc(self.dropout(features)).squeeze(-1)

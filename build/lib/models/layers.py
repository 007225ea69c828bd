"""Building blocks shared by ResDenseNet and ResUDenseNet.

Module and attribute names follow the challenge entry's seed code exactly, because checkpoints trained with it
must load with ``strict=True``. The residual U-block is written once for 1-D and 2-D signals; the dimension only
changes which conv/BN/pool classes are used and along which axis time runs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_lrelu(conv: nn.Module, channels: int, dims: int) -> nn.Sequential:
    """``[conv, BN, LeakyReLU]`` as an ``nn.Sequential`` so that keys read ``<name>.0.weight``, ``<name>.1.*``."""
    batch_norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    return nn.Sequential(conv, batch_norm(channels), nn.LeakyReLU())


class ResidualUBlock(nn.Module):
    """Residual U-block: a small U-Net whose output is added to its input, then halved in time.

    ``dims=1`` works on (B, C, T) with kernel 9; ``dims=2`` on (B, C, lead, T) with kernel (3, 9) and strides
    along time only, so the lead axis keeps its size.
    """

    def __init__(self, out_ch: int, mid_ch: int, layers: int, dims: int = 1):
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2, got {dims}")
        self.dims = dims
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        deconv = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
        kernel, pad = (9, 4) if dims == 1 else ((3, 9), (1, 4))
        down = 2 if dims == 1 else (1, 2)
        out_pad = 1 if dims == 1 else (0, 1)

        self.conv1 = conv(out_ch, out_ch, kernel, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(out_ch) if dims == 1 else nn.BatchNorm2d(out_ch)
        self.encoders = nn.ModuleList(
            _conv_bn_lrelu(conv(out_ch if i == 0 else mid_ch, mid_ch, kernel, stride=down, padding=pad, bias=False),
                           mid_ch, dims)
            for i in range(layers))
        self.decoders = nn.ModuleList(
            _conv_bn_lrelu(deconv(2 * mid_ch, out_ch if i == layers - 1 else mid_ch, kernel, stride=down,
                                  padding=pad, output_padding=out_pad, bias=False),
                           out_ch if i == layers - 1 else mid_ch, dims)
            for i in range(layers))
        # registered after the decoders: the seed's state-dict order
        self.bottleneck = _conv_bn_lrelu(conv(mid_ch, mid_ch, kernel, padding=pad, bias=False), mid_ch, dims)
        self.idfunc_0 = nn.AvgPool1d(2) if dims == 1 else nn.AvgPool2d((1, 2))
        self.idfunc_1 = conv(out_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = F.leaky_relu(self.bn1(self.conv1(x)))
        x = x_in
        skips = []
        for encoder in self.encoders:
            # The 1-D seed pads one zero on the left when the length is not a multiple of 4 so that the
            # decoder's doubling lands back on the skip's length; with 4096-sample input it never triggers.
            if self.dims == 1 and x.size(-1) % 4:
                x = F.pad(x, (1, 0))
            x = encoder(x)
            skips.append(x)
        x = self.bottleneck(x)
        for decoder, skip in zip(self.decoders, reversed(skips)):
            if x.size(-1) != skip.size(-1):
                x = x[..., -skip.size(-1):]
            x = decoder(torch.cat([x, skip], dim=1))
        x = x[..., -x_in.size(-1):] + x_in
        return self.idfunc_1(self.idfunc_0(x))


class DenseLayer(nn.Module):
    """DenseNet bottleneck layer: BN-ReLU-1x1 conv to 4·growth, BN-ReLU-k3 conv to growth, concatenated."""

    def __init__(self, in_ch: int, growth: int):
        super().__init__()
        self.bn1 = nn.BatchNorm1d(in_ch)
        self.conv1 = nn.Conv1d(in_ch, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(4 * growth)
        self.conv2 = nn.Conv1d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


def dense_block(in_ch: int, layers: int = 16, growth: int = 12) -> nn.Sequential:
    """``layers`` dense layers; the block outputs ``in_ch + layers·growth`` channels."""
    return nn.Sequential(*(DenseLayer(in_ch + i * growth, growth) for i in range(layers)))


class Transition(nn.Module):
    """BN-ReLU-1x1 conv, optionally followed by AvgPool1d(2) (only ResDenseNet's ``trans2`` pools)."""

    def __init__(self, in_ch: int, out_ch: int, pool: bool = False):
        super().__init__()
        self.bn1 = nn.BatchNorm1d(in_ch)
        self.conv1 = nn.Conv1d(in_ch, out_ch, 1, bias=False)
        self.pool = nn.AvgPool1d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv1(F.relu(self.bn1(x))))


class TimeSelfAttention(nn.MultiheadAttention):
    """Multi-head self-attention over time for (B, C, T) tensors (the seed feeds it sequence-first)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        seq = x.permute(2, 0, 1)
        out, _ = super().forward(seq, seq, seq, need_weights=False)
        return out.permute(1, 2, 0)

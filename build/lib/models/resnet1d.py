"""ResNet1d of Lima et al. (Nat Commun 2021): the published ECG-age network, parameter names as published."""
from __future__ import annotations

import torch
from torch import nn


def same_padding(downsample: int, kernel_size: int) -> int:
    """Padding that keeps length/downsample samples: max(0, floor((k − d + 1) / 2))."""
    return max(0, (kernel_size - downsample + 1) // 2)


class ResBlock1d(nn.Module):
    """Pre-activation residual unit; returns (activated x, un-normalised sum y) for the next block's skip."""

    def __init__(self, in_ch: int, out_ch: int, downsample: int, kernel_size: int, dropout_rate: float):
        super().__init__()
        self.conv1 = nn.Conv1d(in_ch, out_ch, kernel_size, padding=same_padding(1, kernel_size), bias=False)
        self.bn1 = nn.BatchNorm1d(out_ch)
        self.relu = nn.ReLU()
        self.dropout1 = nn.Dropout(dropout_rate)
        self.conv2 = nn.Conv1d(out_ch, out_ch, kernel_size, stride=downsample,
                               padding=same_padding(downsample, kernel_size), bias=False)
        self.bn2 = nn.BatchNorm1d(out_ch)
        self.dropout2 = nn.Dropout(dropout_rate)
        skip = ([nn.MaxPool1d(downsample, stride=downsample)] if downsample > 1 else []) + \
               ([nn.Conv1d(in_ch, out_ch, 1, bias=False)] if in_ch != out_ch else [])
        self.skip_connection = nn.Sequential(*skip) if skip else None

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_connection is not None:
            y = self.skip_connection(y)
        x = self.dropout1(self.relu(self.bn1(self.conv1(x))))
        x = self.conv2(x) + y
        y = x
        x = self.dropout2(self.relu(self.bn2(x)))
        return x, y


class ResNet1d(nn.Module):
    """Input (B, 12, seq_length) in mV at 400 Hz → (B, n_classes) age in years (no output non-linearity)."""


    def __init__(self, input_dim=(12, 4096), blocks_dim=((64, 4096), (128, 1024), (196, 256), (256, 64), (320, 16)),
                 n_classes: int = 1, kernel_size: int = 17, dropout_rate: float = 0.8):
        super().__init__()
        n_leads, length = input_dim
        blocks_dim = [tuple(b) for b in blocks_dim]
        first_filters, first_length = blocks_dim[0]
        self.conv1 = nn.Conv1d(n_leads, first_filters, kernel_size, stride=self._downsample(length, first_length),
                               padding=same_padding(self._downsample(length, first_length), kernel_size), bias=False)
        self.bn1 = nn.BatchNorm1d(first_filters)
        self.res_blocks = []
        prev_filters, prev_length = first_filters, first_length
        for i, (filters, block_length) in enumerate(blocks_dim):
            block = ResBlock1d(prev_filters, filters, self._downsample(prev_length, block_length), kernel_size,
                               dropout_rate)
            self.add_module(f"resblock1d_{i}", block)
            self.res_blocks.append(block)
            prev_filters, prev_length = filters, block_length
        self.lin = nn.Linear(prev_filters * prev_length, n_classes)

    @staticmethod
    def _downsample(n_in: int, n_out: int) -> int:
        if n_in < n_out or n_in % n_out:
            raise ValueError(f"ResNet1d sequence lengths must shrink by whole factors, got {n_in} → {n_out}")
        return n_in // n_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        y = x
        for block in self.res_blocks:
            x, y = block(x, y)
        return self.lin(x.flatten(1))

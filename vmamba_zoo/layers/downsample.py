"""Downsampling between stages, channels last: (B, H, W, C) -> (B, H/2, W/2, C')."""
from __future__ import annotations

import torch
from torch import nn


class ConvDownsample(nn.Module):
    """Overlapping 3x3 stride-2 convolution, then LayerNorm (VMamba v2 'v3' downsample)."""

    def __init__(self, dim: int, out_dim: int, eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))

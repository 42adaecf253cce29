"""Stems: image (B, 3, H, W) -> first feature map (B, H/4, W/4, C), channels last."""
from __future__ import annotations

import torch
from torch import nn
from timm.layers import LayerNorm2d


class ConvStem(nn.Module):
    """Two overlapping 3x3 stride-2 convolutions, LayerNorm and GELU between (VMamba v2 patch embed)."""

    def __init__(self, in_chans: int = 3, dim: int = 96, eps: float = 1e-5):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, dim // 2, kernel_size=3, stride=2, padding=1)
        self.norm1 = LayerNorm2d(dim // 2, eps=eps)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1)
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.act(self.norm1(self.conv1(x))))
        return self.norm2(x.permute(0, 2, 3, 1))

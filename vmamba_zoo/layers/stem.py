"""Stems: image (B, 3, H, W) -> first feature map (B, H/4, W/4, C), channels last."""
from __future__ import annotations

import torch
from torch import nn

from .conv import Conv2d
from .norm import FastLayerNorm, FastLayerNorm2d


class ConvStem(nn.Module):
    """Two overlapping 3x3 stride-2 convolutions, LayerNorm and GELU between (VMamba v2 patch embed)."""

    def __init__(self, in_chans: int = 3, dim: int = 96, eps: float = 1e-5):
        super().__init__()
        self.conv1 = Conv2d(in_chans, dim // 2, kernel_size=3, stride=2, padding=1)
        self.norm1 = FastLayerNorm2d(dim // 2, eps=eps)  # into GELU and a conv: the autocast dtype
        self.act = nn.GELU()
        self.conv2 = Conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1)
        self.norm2 = FastLayerNorm(dim, eps=eps, residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.act(self.norm1(self.conv1(x))))
        return self.norm2(x.permute(0, 2, 3, 1))


class PatchStem(nn.Module):
    """Non-overlapping ``patch`` x ``patch`` convolution, then LayerNorm (the v1 patch embedding of
    VMamba v0, EfficientVMamba and MSVMamba)."""

    def __init__(self, in_chans: int = 3, dim: int = 96, patch: int = 4, eps: float = 1e-5):
        super().__init__()
        self.conv = Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = FastLayerNorm(dim, eps=eps, residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class ConvBN(nn.Sequential):
    """Convolution without bias, BatchNorm, optional ReLU (NCHW)."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 3, stride: int = 1, act: bool = True):
        layers = [Conv2d(in_dim, out_dim, kernel_size, stride, padding=kernel_size // 2, bias=False),
                  nn.BatchNorm2d(out_dim)]
        super().__init__(*layers, *([nn.ReLU()] if act else []))


class ConvBNStem(nn.Module):
    """Convolution-BatchNorm stem of Spatial-Mamba and VSSD: a stride-2 3x3 conv to dim/2, a residual
    pair of 3x3 convs, a stride-2 3x3 conv to 4*dim and a 1x1 conv to dim."""

    def __init__(self, in_chans: int = 3, dim: int = 64):
        super().__init__()
        half = dim // 2
        self.conv1 = ConvBN(in_chans, half, stride=2)
        self.residual = nn.Sequential(ConvBN(half, half), ConvBN(half, half, act=False))
        self.conv2 = ConvBN(half, 4 * dim, stride=2)
        self.proj = ConvBN(4 * dim, dim, kernel_size=1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x + self.residual(x)
        return self.proj(self.conv2(x)).permute(0, 2, 3, 1)

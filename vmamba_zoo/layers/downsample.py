"""Downsampling between stages, channels last: (B, H, W, C) -> (B, H/2, W/2, C')."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

from .conv import Conv2d
from .norm import FastLayerNorm


class ConvDownsample(nn.Module):
    """Overlapping 3x3 stride-2 convolution, then LayerNorm (VMamba v2 'v3' downsample)."""

    def __init__(self, dim: int, out_dim: int, eps: float = 1e-5):
        super().__init__()
        self.conv = Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1)
        self.norm = FastLayerNorm(out_dim, eps=eps, residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


@register_notrace_function  # it branches on the map's size, which torch.fx cannot see: one leaf node
def pad_to_even(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad a channels-last map (B, H, W, C) at the bottom / right to an even height and width."""
    height, width = x.shape[1:3]
    if height % 2 or width % 2:
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
    return x


class PatchMerging(nn.Module):
    """Swin's patch merging (the 'v1' downsample of VMamba v0, EfficientVMamba, MSVMamba): the four
    phases of every 2x2 neighbourhood side by side, LayerNorm over the 4*dim channels, a linear map to
    ``out_dim`` without bias. An odd height or width is zero-padded at the bottom / right first. The norm
    feeds the linear map: a :class:`FastLayerNorm`."""

    def __init__(self, dim: int, out_dim: int, eps: float = 1e-5):
        super().__init__()
        self.norm = FastLayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_even(x)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class ExpandDownsample(nn.Module):
    """Inverted-bottleneck downsample of Spatial-Mamba and VSSD: 1x1 conv to 4*out_dim, ReLU, stride-2
    depthwise 3x3, ReLU, 1x1 conv to out_dim, BatchNorm (all convs with bias)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        hidden = 4 * out_dim
        self.expand = Conv2d(dim, hidden, 1)
        self.dwconv = Conv2d(hidden, hidden, 3, stride=2, padding=1, groups=hidden)
        self.proj = Conv2d(hidden, out_dim, 1)
        self.norm = nn.BatchNorm2d(out_dim)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.dwconv(self.act(self.expand(x.permute(0, 3, 1, 2)))))
        return self.norm(self.proj(x)).permute(0, 2, 3, 1)

"""Structure-aware state fusion (Spatial-Mamba): the SSM's hidden states mixed over the 2-D map."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class StateFusion(nn.Module):
    """h' = sum_i alpha_i * dwconv3x3_{dilation d_i}(h) on a (B, C, H, W) map of states, replicate padding.

    With dilations (1, 3, 5) each fused state sees a 11x11 neighbourhood of the map (the official eval
    path merges the three kernels into one 11x11 depthwise kernel, cached outside the state dict; this
    computes the same from the current parameters, always). The map is padded once, by the largest
    dilation, and each convolution reads its own window of it: replicate padding clamps indices to the
    map, so the window equals that convolution's own padding. Kernels and weights start at ones.
    """

    def __init__(self, dim: int, dilations: Sequence[int] = (1, 3, 5)):
        super().__init__()
        self.dim, self.dilations = dim, tuple(dilations)
        self.weight = nn.ParameterList([nn.Parameter(torch.ones(dim, 1, 3, 3)) for _ in self.dilations])
        self.alpha = nn.Parameter(torch.ones(len(self.dilations)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        height, width = h.shape[-2:]
        pad = max(self.dilations)
        padded = F.pad(h, (pad, pad, pad, pad), mode="replicate")
        out = 0
        for i, (d, weight) in enumerate(zip(self.dilations, self.weight)):
            window = padded[..., pad - d:pad + height + d, pad - d:pad + width + d]
            out = out + self.alpha[i] * F.conv2d(window, weight, dilation=d, groups=self.dim)
        return out

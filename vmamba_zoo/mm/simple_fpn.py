"""``SimpleFPN``: ViTDet's simple feature pyramid (Li et al., ECCV 2022) as an mmdet neck.

A plain backbone gives one map (stride 16). The pyramid is built from that map alone: deconvolutions
up to strides 4 and 8, the map itself at 16, a 2x2 max-pool to 32, each followed by a 1x1 and a 3x3 conv
(no bias) with a channels-first LayerNorm, and one more level by a stride-2 1x1 max-pool of the last
(detectron2's ``LastLevelMaxPool``). mmdet's pip package ships no such neck (``projects/ViTDet`` is
not installed with it); this follows detectron2's ``SimpleFeaturePyramid`` as the official Vim
detection code configures it (``scale_factors=(4.0, 2.0, 1.0, 0.5)``, ``norm='LN'``, ``top_block``).
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from timm.layers import LayerNorm2d
from torch import nn

__all__ = ["SimpleFPN"]


def _conv_norm(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
                         LayerNorm2d(out_channels, eps=1e-6))


class SimpleFPN(BaseModule):
    """One map (B, C, H, W) at stride s -> ``num_outs`` maps of ``out_channels`` at strides s / scale, ...

    Args:
        in_channels: channels of the backbone's map (an int, or a one-element sequence: the backbone's
            ``channels``).
        out_channels: channels of every output level.
        scale_factors: resampling of each level relative to the input: 4 (deconv, LN, GELU, deconv to
            C / 4 channels), 2 (deconv to C / 2), 1 (identity) or 0.5 (2x2 max-pool).
        num_outs: levels returned; levels beyond ``len(scale_factors)`` are 1x1 stride-2 max-pools of
            the previous one (ViTDet: one, P6, for the RPN's largest anchors).
        init_cfg: mmengine init config (default: PyTorch's own initialisation, as detectron2's).
    """

    def __init__(self, in_channels: Union[int, Sequence[int]], out_channels: int = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5), num_outs: int = 5, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(in_channels, int):
            if len(in_channels) != 1:
                raise ValueError(f"SimpleFPN takes one input map, got in_channels={list(in_channels)}")
            in_channels = in_channels[0]
        if num_outs < len(scale_factors):
            raise ValueError(f"num_outs ({num_outs}) must be at least the number of scale factors "
                             f"({len(scale_factors)})")
        dim = in_channels
        self.in_channels, self.out_channels, self.num_outs = in_channels, out_channels, num_outs
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.stages = nn.ModuleList()
        for scale in self.scale_factors:
            if scale == 4.0:
                resample = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2, eps=1e-6), nn.GELU(),
                            nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)]
                channels = dim // 4
            elif scale == 2.0:
                resample, channels = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)], dim // 2
            elif scale == 1.0:
                resample, channels = [], dim
            elif scale == 0.5:
                resample, channels = [nn.MaxPool2d(2, stride=2)], dim
            else:
                raise ValueError(f"scale factors must be 4, 2, 1 or 0.5, got {scale}")
            self.stages.append(nn.Sequential(*resample, _conv_norm(channels, out_channels, 1),
                                             _conv_norm(out_channels, out_channels, 3)))

    def forward(self, inputs: Union[torch.Tensor, Sequence[torch.Tensor]]) -> Tuple[torch.Tensor, ...]:
        x = inputs if isinstance(inputs, torch.Tensor) else inputs[-1]
        outs = [stage(x) for stage in self.stages]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)

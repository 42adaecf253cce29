"""The pre-norm residual block that visual SSMs share: token mixer, then MLP."""
from __future__ import annotations

import torch
from torch import nn
from timm.layers import DropPath, Mlp


class MixerBlock(nn.Module):
    """x + drop_path(mixer(norm1(x))), then x + drop_path(mlp(norm2(x))); channels last.

    The mixer is any module mapping (B, H, W, C) to itself (VMamba's SS2D, ...). ``mlp_ratio=0``
    drops the MLP half (the v0 VMamba blocks have none).
    """

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 norm_layer=nn.LayerNorm, act_layer=nn.GELU):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.mixer = mixer
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if mlp_ratio > 0:
            self.norm2 = norm_layer(dim)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)
        else:
            self.norm2 = self.mlp = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.mixer(self.norm1(x)))
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x

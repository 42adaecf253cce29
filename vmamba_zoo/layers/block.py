"""The pre-norm residual block that visual SSMs share: token mixer, then MLP."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import DropPath

from ssm_kernels import dwconv2d

from .mlp import Mlp
from .norm import FastLayerNorm


class MixerBlock(nn.Module):
    """x + drop_path(mixer(norm1(x))), then x + drop_path(mlp(norm2(x))); channels last.

    The mixer is any module mapping (B, H, W, C) to itself (VMamba's SS2D, ...). ``mlp_ratio=0``
    drops the MLP half (the v0 VMamba blocks have none). ``cpe=True`` adds a conditional position
    encoding before each half, x + dwconv3x3(x) (Spatial-Mamba, VSSD). ``mlp_layer`` builds the MLP
    half from (dim, hidden, act_layer=) (e.g. :class:`~vmamba_zoo.layers.ConvFFN`).
    """

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 norm_layer=nn.LayerNorm, act_layer=nn.GELU, cpe: bool = False, mlp_layer=Mlp):
        super().__init__()
        self.cpe1 = ConvPosEnc(dim) if cpe else None
        self.cpe2 = ConvPosEnc(dim) if cpe and mlp_ratio > 0 else None
        self.norm1 = norm_layer(dim)
        self.mixer = mixer
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if mlp_ratio > 0:
            self.norm2 = norm_layer(dim)
            self.mlp = mlp_layer(dim, int(dim * mlp_ratio), act_layer=act_layer)
        else:
            self.norm2 = self.mlp = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cpe1 is not None:
            x = self.cpe1(x)
        if self.cpe2 is None and isinstance(self.norm2, FastLayerNorm) and self.mlp is not None:
            # the residual add and norm2 in one op (a kernel each way fewer, the float16 branch read once)
            x, h = self.norm2.add_forward(x, self._branch(self.mixer(self.norm1(x))))
            h = self.mlp(h)
            return self._add(x, h)
        x = self._add(x, self.mixer(self.norm1(x)))
        if self.mlp is not None:
            if self.cpe2 is not None:
                x = self.cpe2(x)
            x = self._add(x, self.mlp(self.norm2(x)))
        return x

    def _branch(self, branch: torch.Tensor) -> torch.Tensor:
        """drop_path(branch), without calling drop_path in eval mode, where it is the identity (a module call fewer)."""
        return self.drop_path(branch) if self.training else branch

    def _add(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """x + drop_path(branch). A method, not a local: a local would keep the mixer's output alive through the
        MLP."""
        return x + self._branch(branch)


class ConvPosEnc(nn.Module):
    """Conditional position encoding on a channels-last map: x + depthwise 3x3 conv (with bias) of x, one
    :func:`ssm_kernels.dwconv2d` call (the map read in place, the bias and the residual add fused in)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles only this branch: the op's dispatch is Python
            return x + F.conv2d(x.permute(0, 3, 1, 2), self.proj.weight, self.proj.bias, padding=1,
                                groups=x.shape[3]).permute(0, 2, 3, 1)
        # a stage's first map can be a channels-last view of a channels-first one (a downsample's output): the op
        # reads channels with stride 1, so that one is copied (a no-op on the blocks' own contiguous maps)
        return dwconv2d(x.contiguous(), self.proj.weight, self.proj.bias, residual=True)

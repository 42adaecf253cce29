"""The pre-norm residual block that visual SSMs share: token mixer, then MLP."""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import DropPath

from ssm_kernels import dwconv2d

from .linear import weights_cast_together
from .mlp import Mlp
from .norm import FastLayerNorm


class MixerBlock(nn.Module):
    """x + drop_path(mixer(norm1(x))), then x + drop_path(mlp(norm2(x))); channels last.

    The mixer is any module mapping (B, H, W, C) to itself (VMamba's SS2D, ...). ``mlp_ratio=0``
    drops the MLP half (the v0 VMamba blocks have none). ``cpe=True`` adds a conditional position
    encoding before each half, x + dwconv3x3(x) (Spatial-Mamba, VSSD). ``mlp_layer`` builds the MLP
    half from (dim, hidden, act_layer=) (e.g. :class:`~vmamba_zoo.layers.ConvFFN`).

    Each residual add whose sum a :class:`FastLayerNorm` normalises next runs in that norm's op
    (:meth:`FastLayerNorm.add_forward`: one kernel each way, not an add, a norm and, in the backward, an
    accumulation and a cast), drop path included (its per-sample scale applied in the op). Inside a stage that
    holds for the block's last add too: with ``defer_add`` set (by :class:`~vmamba_zoo.layers.Stage`, when the next
    block :meth:`takes_pending`), the block returns the list ``[x, branch, drop-path scale or None]`` and the next
    block adds them in its norm1's op. (A list, which the next block empties: a module call holds its argument until
    it returns, and the previous stream and branch would otherwise live through the whole next block.)
    """

    #: return ``[x, branch, scale]`` for the next block to add, not their sum (set by ``Stage``)
    defer_add = False

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

    def takes_pending(self) -> bool:
        """Whether a previous block's last add runs here, in norm1's op (nothing stands between them)."""
        return self.cpe1 is None and isinstance(self.norm1, FastLayerNorm)

    def forward(self, x: Union[torch.Tensor, List[Optional[torch.Tensor]]]):
        with weights_cast_together(self):  # in training under autocast: the block's matmul weights in one cast
            return self._forward(x)

    def _forward(self, x: Union[torch.Tensor, List[Optional[torch.Tensor]]]):
        if isinstance(x, list):  # [stream, branch, scale]: the previous block left its last add to norm1's op
            x, h = self.norm1.add_forward(*_take(x))
        else:
            if self.cpe1 is not None:
                x = self.cpe1(x)
            h = self.norm1(x)
        fused2 = self.mlp is not None and self.cpe2 is None and isinstance(self.norm2, FastLayerNorm)
        scales = drop_path_scales(self.drop_path, x, int(fused2) + int(self.defer_add))  # for the adds in norms' ops
        last_scale = scales[-1] if scales is not None and self.defer_add else None
        branch = self.mixer(h)
        del h  # norm1's output, freed before the next op allocates
        if self.mlp is None:
            return self._end(x, branch, last_scale)
        if fused2:
            x, h = self.norm2.add_forward(x, branch, None if scales is None else scales[0])
        else:
            x = x + self._branch(branch)
            if self.cpe2 is not None:
                x = self.cpe2(x)
            h = self.norm2(x)
        del branch  # the mixer's output, not kept alive through the MLP
        return self._end(x, self.mlp(h), last_scale)

    def _branch(self, branch: torch.Tensor) -> torch.Tensor:
        """drop_path(branch), without calling drop_path in eval mode, where it is the identity (a module call fewer)."""
        return self.drop_path(branch) if self.training else branch

    def _end(self, x: torch.Tensor, branch: torch.Tensor, scale: Optional[torch.Tensor]):
        """The block's output: x + drop_path(branch), or the parts for the next block to add (``defer_add``)."""
        if self.defer_add:
            return [x, branch, scale]
        return x + self._branch(branch)


def drop_path_scales(drop: nn.Module, x: torch.Tensor, branches: int) -> Optional[torch.Tensor]:
    """The per-sample multipliers of ``branches`` branches of x's batch under ``drop`` (a timm ``DropPath``), for adds
    in a norm's op (:meth:`FastLayerNorm.add_forward`): (branches, batch) float32, drawn as DropPath draws them
    (Bernoulli of the keep probability, divided by it) but in one draw and one division for all the branches; None
    where every sample passes unscaled (no branches, no drop path, or DropPath in eval mode, where it is the
    identity)."""
    if not branches or not isinstance(drop, DropPath) or not drop.training or drop.drop_prob == 0.0:
        return None
    keep = 1.0 - drop.drop_prob
    scales = x.new_empty((branches, x.shape[0]), dtype=torch.float32).bernoulli_(keep)
    if keep > 0.0 and drop.scale_by_keep:
        scales.div_(keep)
    return scales


def _take(parts: List[Optional[torch.Tensor]]) -> Tuple[Optional[torch.Tensor], ...]:
    """The list's items, the list emptied (its caller's module call no longer keeps them alive)."""
    items = tuple(parts)
    parts.clear()
    return items


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

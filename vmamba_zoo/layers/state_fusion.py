"""Structure-aware state fusion (Spatial-Mamba): the SSM's hidden states mixed over the 2-D map."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ssm_kernels import state_fusion, state_fusion_observe


class StateFusion(nn.Module):
    """h' = sum_i alpha_i * dwconv3x3_{dilation d_i}(h) on a (B, C, H, W) map of states, replicate padding.

    With dilations (1, 3, 5) each fused state sees a 11x11 neighbourhood of the map (the official eval
    path merges the three kernels into one 11x11 depthwise kernel, cached outside the state dict; this
    computes the same from the current parameters, always). Kernels and weights start at ones.
    """

    def __init__(self, dim: int, dilations: Sequence[int] = (1, 3, 5)):
        super().__init__()
        self.dim, self.dilations = dim, tuple(dilations)
        self.weight = nn.ParameterList([nn.Parameter(torch.ones(dim, 1, 3, 3)) for _ in self.dilations])
        self.alpha = nn.Parameter(torch.ones(len(self.dilations)))
        self._stacked = None  # (what it was made from, the stacked kernels): see kernels()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) states -> fused states, float32 (:func:`ssm_kernels.state_fusion`: one Triton kernel
        each way on GPU, plain PyTorch convolutions elsewhere)."""
        return state_fusion(h, self.kernels(), self.alpha, self.dilations)

    def kernels(self) -> torch.Tensor:
        """The K depthwise kernels as one (K, C, 3, 3) tensor. Without autograd, the stack is kept while the
        kernels' tensors and versions are those it was made from (an eager forward of a small model is bound by
        the host's op calls: four a block); any in-place update, load or cast makes it anew."""
        if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return torch.stack([w[:, 0] for w in self.weight])
        key = tuple((w.data_ptr(), w._version, w.dtype) for w in self.weight)
        if self._stacked is None or self._stacked[0] != key:
            self._stacked = key, torch.stack([w[:, 0] for w in self.weight])
        return self._stacked[1]

    def observe(self, h: torch.Tensor, C: torch.Tensor, u: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
        """The fused states observed, y = C * h' + D * u, with h' never stored
        (:func:`ssm_kernels.state_fusion_observe`): h (B, C, H, W), C (B, 1, H * W), u (B, C, H * W), D (C,) ->
        y as a channels-last (B, H, W, C) map, in the autocast dtype under autocast."""
        return state_fusion_observe(h, self.kernels(), self.alpha, C, u, D, self.dilations)

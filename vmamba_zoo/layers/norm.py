"""LayerNorms on the zoo's LayerNorm kernels (:func:`ssm_kernels.layer_norm`)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ssm_kernels import add_layer_norm, layer_norm
from ssm_kernels.ops import residual_add


class FastLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last axis (same parameters and state dict) that runs
    :func:`ssm_kernels.layer_norm`: on GPU one Triton kernel each way (PyTorch's LayerNorm gives each row a
    block, slow for the 48..768 channels of these models: it was ~20% of an eager vmamba_tiny step).

    By default the output comes in the autocast dtype, for a norm whose output goes straight into a matmul
    (the blocks' pre-norms). ``residual=True`` keeps ``nn.LayerNorm``'s dtype, float32 under autocast, for a
    norm whose output is a residual stream (a stem's, a downsample's) or the classifier's input.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, residual: bool = False, **kwargs):
        super().__init__(normalized_shape, eps=eps, **kwargs)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles only this branch: the kernels' dispatch is Python
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        if not self._on_kernels():
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return layer_norm(x, self.weight, self.bias, self.eps, residual=self.residual)

    def _on_kernels(self) -> bool:
        """Whether the kernels serve this norm: one normalised axis, with weight and bias."""
        return self.weight is not None and self.bias is not None and len(self.normalized_shape) == 1

    def add_forward(self, x: torch.Tensor, branch: torch.Tensor,
                    scale: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(s, self(s))`` with ``s = x + branch`` (each sample's branch times ``scale``, a float32 (batch,) drop-path
        multiplier, if given) in one op each way (:func:`ssm_kernels.add_layer_norm`): a pre-norm block's residual
        add and the norm of its next half."""
        if self.residual or not self._on_kernels():  # the sum as the op's reference makes it
            x = residual_add(x, branch, scale)
            return x, self(x)
        return add_layer_norm(x, branch, self.weight, self.bias, self.eps, branch_scale=scale)


class FastLayerNorm2d(FastLayerNorm):
    """:class:`FastLayerNorm` over the channels of a (B, C, H, W) map (timm's ``LayerNorm2d``, same state
    dict); the output is a channels-last map viewed as (B, C, H, W), which the convolutions after it read
    as it is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        if torch.jit.is_scripting():  # as in FastLayerNorm (TorchScript has no super() calls)
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)
        return layer_norm(x, self.weight, self.bias, self.eps, residual=self.residual).permute(0, 3, 1, 2)

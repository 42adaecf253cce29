"""LayerNorm for the norms that feed a matmul (the blocks' pre-norms)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssm_kernels import layer_norm


class FastLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (same parameters and state dict) that runs :func:`ssm_kernels.layer_norm`: on
    GPU one Triton kernel each way, its output in the autocast dtype that the next matmul reads
    (PyTorch's LayerNorm was ~20% of an eager vmamba_tiny training step: 96..768 channels are short
    rows for it). Only for a norm whose output goes straight into a matmul; elsewhere (a residual
    stream) keep ``nn.LayerNorm``'s float32 output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles only this branch: the kernels' dispatch is Python
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        if self.weight is None or self.bias is None or len(self.normalized_shape) != 1:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return layer_norm(x, self.weight, self.bias, self.eps)

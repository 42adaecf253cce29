"""A stage of a hierarchical backbone: optional downsample, a sequence of blocks, optional norm."""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn
from timm.models import checkpoint_seq


class Stage(nn.Module):
    """``downsample`` (or identity for the first stage), ``blocks``, then ``norm`` (or identity); supports grad
    checkpointing.

    A model runs a stage by calling its :meth:`layers` in turn from its own frame (see
    ``HierarchicalSSM.forward_features``) rather than calling the stage: a module call holds its argument
    until it returns, so the stage's input would live through the whole stage (at the first stage, the
    stem's float32 map: 5-13% of a zoo model's inference peak).
    """

    def __init__(self, blocks, downsample: Optional[nn.Module] = None, norm: Optional[nn.Module] = None):
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)
        self.norm = norm if norm is not None else nn.Identity()
        self.grad_checkpointing = False

    def layers(self) -> List[nn.Module]:
        """The modules to apply in turn: the stage's own, or, with grad checkpointing, the stage itself (which
        checkpoints its blocks)."""
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return [self]
        return [self.downsample, *self.blocks, self.norm]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self.norm(checkpoint_seq(self.blocks, self.downsample(x)))
        for layer in self.layers():
            x = layer(x)
        return x

"""A stage of a hierarchical backbone: optional downsample, then a sequence of blocks."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from timm.models import checkpoint_seq


class Stage(nn.Module):
    """``downsample`` (or identity for the first stage) followed by ``blocks``; supports grad checkpointing."""

    def __init__(self, blocks, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

"""A stage of a hierarchical backbone: optional downsample, a sequence of blocks, optional norm."""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn
from timm.models import checkpoint_seq


class Stage(nn.Module):
    """``downsample`` (or identity for the first stage), ``blocks``, then ``norm`` (or identity); supports grad
    checkpointing.

    Between two blocks that allow it, the stream passes as ``[x, branch, scale]``, the first block's last residual add
    left to the second's norm1 op (:class:`~vmamba_zoo.layers.MixerBlock`); the stage's own output is a tensor.

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

    @property
    def grad_checkpointing(self) -> bool:
        return self._grad_checkpointing

    @grad_checkpointing.setter
    def grad_checkpointing(self, enable: bool) -> None:
        # each block leaves its last add to the next one's norm1 where that one takes it (MixerBlock.defer_add), but
        # not under checkpointing, whose segments pass tensors; the stage's last block always returns the sum
        self._grad_checkpointing = enable
        blocks = list(self.blocks)
        for block, after in zip(blocks, blocks[1:]):
            if hasattr(block, "defer_add"):
                block.defer_add = not enable and getattr(after, "takes_pending", lambda: False)()

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

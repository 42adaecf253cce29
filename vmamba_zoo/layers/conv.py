"""The zoo's convolution module: ``nn.Conv2d`` that ``torch.compile`` keeps as one opaque op."""
from __future__ import annotations

import torch
from timm.layers import register_notrace_module
from torch import nn

from ssm_kernels import conv2d

from .linear import autocast_weights


@register_notrace_module  # one leaf of timm's FX graphs, as nn.Conv2d is
class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same arguments, parameters and state dict) whose call under ``torch.compile`` is
    :func:`ssm_kernels.conv2d`: a graph of the zoo's (B, H, W, C) maps must hold no ``aten.convolution``, or
    inductor's layout optimisation stores those maps transposed (see :mod:`ssm_kernels.conv2d`). Every
    convolution a zoo model calls is one of these; eager calls are ``nn.Conv2d``'s own, with the weights cast for
    autocast once in inference (:func:`~vmamba_zoo.layers.autocast_weights`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling() or self.padding_mode != "zeros" or self.dilation != (1, 1):
            return self._conv_forward(x, *autocast_weights(self, self.weight, self.bias))
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.groups)


def make_convs_opaque(module: nn.Module) -> nn.Module:
    """Every plain ``nn.Conv2d`` inside ``module`` (a block built by timm) made a :class:`Conv2d` in place: the same
    parameters and state dict, as the subclass adds no state. Returns ``module``."""
    for m in module.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = Conv2d
    return module

"""``conv2d``: ``F.conv2d`` that ``torch.compile`` keeps as one opaque op.

Why: inductor turns its layout optimisation on for a graph that holds an ``aten.convolution`` (a heuristic on the
convolutions' shapes) and then stores every 4-D tensor upstream of a convolution "channels last" *in that tensor's
own dimensions*. The zoo's feature maps are (B, H, W, C) tensors, so for them that layout makes H the fastest axis:
inductor wrote each saved activation of vmamba_tiny transposed, gathered it back for the matmuls and the scan, and a
compiled training step took 48.0 ms of GPU time against 44.7 eager (H200, batch 128, fp16 autocast). Behind this op
the model's convolutions leave no ``aten.convolution`` in the graph, the optimisation stays off and the maps keep
the layout they have in eager mode. Outside ``torch.compile`` (eager, ``torch.fx``, ``torch.jit.trace``, export)
the function is ``F.conv2d``, called directly.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .ops import is_exporting, public_op

__all__ = ["conv2d"]

_LIB = torch.library.Library("ssm_kernels", "FRAGMENT")


def _conv2d_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
                groups: int) -> Tensor:
    return torch.ops.aten.convolution(x, weight, bias, stride, padding, [1, 1], False, [0, 0], groups)


def _conv2d_bwd(grad: Tensor, x: Tensor, weight: Tensor, stride: List[int], padding: List[int], groups: int,
                input_grad: bool, bias_grad: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias); dx and dbias empty where not asked for."""
    dx, dw, db = torch.ops.aten.convolution_backward(
        grad, x, weight, [weight.shape[0]] if bias_grad else None, stride, padding, [1, 1], False, [0, 0], groups,
        [input_grad, True, bias_grad])
    return (dx if input_grad else x.new_empty(0)), dw, (db if bias_grad else weight.new_empty(0))


for _fn in (_conv2d_fwd, _conv2d_bwd):  # one implementation for every device; the same code runs on fake tensors
    _name = _fn.__name__.lstrip("_")
    _LIB.define(_name + torch.library.infer_schema(_fn, mutates_args=()))
    _LIB.impl(_name, _fn, "CompositeExplicitAutograd")
    torch.library.register_fake(f"ssm_kernels::{_name}", _fn, lib=_LIB)


class Conv2dFn(torch.autograd.Function):
    """apply(x, weight, bias, stride, padding, groups): the two ops above as one autograd node."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, groups):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, groups, bias is not None)
        return torch.ops.ssm_kernels.conv2d_fwd(x, weight, bias, stride, padding, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, groups, has_bias = ctx.conf
        dx, dw, db = torch.ops.ssm_kernels.conv2d_bwd(grad, x, weight, stride, padding, groups,
                                                      ctx.needs_input_grad[0], has_bias)
        return (dx if ctx.needs_input_grad[0] else None), dw, (db if has_bias else None), None, None, None


def _pair(v) -> List[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(i) for i in v]


@public_op
def conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding=0, groups: int = 1) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, groups=groups)`` (dilation 1, zero padding); under
    ``torch.compile`` one opaque op (see the module's docstring), with autocast's cast of the inputs done here as
    ``F.conv2d``'s autocast rule does it. Padding given by name ('same', 'valid') is ``F.conv2d`` everywhere."""
    if not torch.compiler.is_compiling() or is_exporting() or isinstance(padding, str):
        return F.conv2d(x, weight, bias, stride, padding, 1, groups)
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight, bias = x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)
    return Conv2dFn.apply(x, weight, bias, _pair(stride), _pair(padding), groups)

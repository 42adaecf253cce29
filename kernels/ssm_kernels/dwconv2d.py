"""Depthwise 2-D convolution of a channels-last map, with its bias, SiLU and residual add fused in.

Every channels-last visual SSM convolves its maps with small depthwise kernels: VMamba's SS2D (3x3, then
SiLU) on the in-projection's output, the conditional position encoding x + dwconv3x3(x) of Spatial-Mamba
and VSSD, the convolutional FFNs. With ``nn.Conv2d`` each such conv permutes the map to channels first
(a copy, or a slow kernel on the strided view), adds its bias and applies the activation in separate
kernels, and permutes back; on GPU this op reads the channels-last map in place (a slice of a projection's
last axis too) and does it all in one kernel each way.

Like the scan ops, the op is one autograd node (``DepthwiseConv2dFn``) whatever the backend: a FLOP counter
sees it with its inputs and counts it as fvcore counts ``nn.Conv2d`` (one multiply-add per tap and output
element; the bias, SiLU and residual add are not counted).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._recompute import recomputing_backend
from .conv2d import conv2d
from .ops import _backward, _forward, is_exporting, public_op, resolve_backend

__all__ = ["dwconv2d", "dwconv2d_ref", "DepthwiseConv2dFn"]


def dwconv2d_ref(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, silu: bool = False,
                 residual: bool = False, out_dtype: Optional[torch.dtype] = None,
                 channels_first: bool = False) -> torch.Tensor:
    """The plain-PyTorch op (the oracle): see :func:`dwconv2d` for the arguments.

    Computes in float32 (float64 stays float64) with autocast off; returns ``out_dtype`` (default x's dtype),
    contiguous (``channels_first``: a (batch, H, W, C) view of channels-first memory).
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    k = weight.shape[-1]
    with torch.autocast(x.device.type, enabled=False):
        xf = x.to(dtype)
        y = F.conv2d(xf.permute(0, 3, 1, 2), weight.to(dtype), None if bias is None else bias.to(dtype),
                     padding=k // 2, groups=weight.shape[0]).permute(0, 2, 3, 1)
        if silu:
            y = F.silu(y)
        if residual:
            y = y + xf
    y = y.to(out_dtype or x.dtype)
    return _in_channels_first_memory(y) if channels_first else y.contiguous()


def _in_channels_first_memory(y: torch.Tensor) -> torch.Tensor:
    """A (batch, H, W, C) map as a view of a contiguous (batch, C, H, W) copy (``channels_first``)."""
    return y.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)


_BACKENDS = {"reference": recomputing_backend("dwconv2d", dwconv2d_ref)}
try:
    from .triton import dwconv2d as _triton_dwconv2d
    _BACKENDS["triton"] = _triton_dwconv2d
except ImportError:  # no triton installed: the reference serves every device
    pass


class DepthwiseConv2dFn(torch.autograd.Function):
    """apply(backend, (silu, residual, out_dtype, channels_first), x, weight, bias)"""

    @staticmethod
    def forward(ctx, backend, flags, x, weight, bias):
        return _forward("dwconv2d", ctx, backend, flags, (x, weight, bias), _BACKENDS)

    @staticmethod
    def backward(ctx, *grad_outputs):
        return _backward("dwconv2d", ctx, grad_outputs, _BACKENDS)


@torch.compiler.disable  # its backward recomputes with autograd, which torch.compile cannot trace
def _reference_dwconv2d(*args):
    return DepthwiseConv2dFn.apply("reference", *args)


def _check(x, weight, bias):
    if x.dim() != 4:
        raise ValueError(f"dwconv2d: x must be a channels-last map (batch, H, W, C), got shape {tuple(x.shape)}")
    C = x.shape[3]
    if weight.dim() != 4 or weight.shape[0] != C or weight.shape[1] != 1 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"dwconv2d: weight must be (C={C}, 1, k, k) as nn.Conv2d(C, C, k, groups=C).weight, "
                         f"got {tuple(weight.shape)}")
    k = weight.shape[3]
    if k % 2 == 0:
        raise ValueError(f"dwconv2d: the kernel size must be odd (padding k // 2 keeps the map's size), got {k}")
    if bias is not None and tuple(bias.shape) != (C,):
        raise ValueError(f"dwconv2d: bias must be ({C},), got {tuple(bias.shape)}")
    if x.numel() == 0:
        raise ValueError(f"dwconv2d: empty input of shape {tuple(x.shape)}")
    if x.stride(3) != 1 and C > 1:
        raise ValueError(f"dwconv2d: x's channel axis must have stride 1 (a channels-last map or a slice of one), "
                         f"got strides {tuple(x.stride())}")
    if not (x.is_floating_point() and weight.is_floating_point() and (bias is None or bias.is_floating_point())):
        raise ValueError("dwconv2d: x, weight and bias must be floating point")


def _out_dtype(x: torch.Tensor, residual: bool) -> torch.dtype:
    """x's dtype with ``residual`` (the residual stream keeps its precision, as ``x + conv(x)`` gives), else the
    autocast dtype under autocast (what ``nn.Conv2d`` returns there; float64 is left alone by autocast)."""
    device = x.device.type
    if not residual and x.dtype != torch.float64 and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def _conv2d_silu(x, weight, bias):
    """SiLU(nn.Conv2d's depthwise conv) of the permuted map (cuDNN), returned as a channels-last view in the dtype
    nn.Conv2d gives. What the automatic backend trains with: our SiLU backward (the pre-activation recomputed,
    then the gather) measured ~3x slower than cuDNN's at VMamba-T's stage 1 on an H200 (1.47-1.62 against 0.49 ms
    forward + backward, batch 128, fp16; the forward alone is ~2x faster: 0.11 against 0.21)."""
    y = conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=weight.shape[-1] // 2, groups=weight.shape[0])
    return F.silu(y).permute(0, 2, 3, 1)


def _trains_through_cudnn(silu: bool, residual: bool, backend: Optional[str], on_cuda: bool) -> bool:
    """Whether :func:`dwconv2d` takes :func:`_conv2d_silu`: only while autograd records (also under
    ``torch.compile``), as its gain is the backward; a no-grad forward, compiled or not, keeps the Triton kernel,
    ~2x faster than cuDNN's forward."""
    return silu and not residual and backend is None and on_cuda and torch.is_grad_enabled()


@public_op
def dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, silu: bool = False,
             residual: bool = False, backend: Optional[str] = None, channels_first: bool = False) -> torch.Tensor:
    """Depthwise 2-D conv of a channels-last map: stride 1, zero padding k // 2, then bias, SiLU, residual.

    out = conv(x) + bias; then SiLU(out) if ``silu``; then out + x if ``residual`` (the conditional position
    encoding x + dwconv(x)).

    Args:
        x: (batch, H, W, C) whose channel axis has stride 1; a view (a ``chunk`` of a projection's output) is
            read in place by the Triton kernels.
        weight: (C, 1, k, k), k odd: ``nn.Conv2d(C, C, k, padding=k // 2, groups=C).weight``.
        bias: (C,) or None.
        silu: apply SiLU after the bias.
        residual: add x to the result.

    ``channels_first``: the result's memory is channels-first, a (batch, H, W, C) view of a contiguous
    (batch, C, H, W) tensor, for a consumer that reads channels-first (``.permute(0, 3, 1, 2)`` or
    ``.flatten(1, 2).transpose(1, 2)`` then need no copy): the Triton forward writes it so directly.

    Returns (batch, H, W, C), contiguous (or as ``channels_first`` says), computed in float32 (float64 on the
    reference stays float64): in x's dtype with ``residual``; otherwise in the autocast dtype under autocast (as
    ``nn.Conv2d``), else x's dtype.
    The gradients of the weight and bias come in their dtypes.

    With ``silu`` (and no ``residual``) on a CUDA tensor, while autograd records and no ``backend`` is named,
    the op trains through cuDNN (:func:`_conv2d_silu`: the same function, a channels-last view), whose backward
    is faster than ours; inference (eager or compiled) and ``backend="triton"`` run the Triton kernels.
    """
    _check(x, weight, bias)
    flags = (bool(silu), bool(residual), _out_dtype(x, bool(residual)), bool(channels_first))
    if is_exporting():  # torch.export / ONNX: the plain tensor ops
        return dwconv2d_ref(x, weight, bias, *flags)
    name = resolve_backend(x, backend)
    if name == "reference":
        return _reference_dwconv2d(flags, x, weight, bias)
    if _trains_through_cudnn(silu, residual, backend, x.is_cuda):
        y = _conv2d_silu(x, weight, bias)
        return _in_channels_first_memory(y) if channels_first else y
    if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return DepthwiseConv2dFn.apply(name, flags, x, weight, bias)
    # eager inference: no autograd node (its host time matters for small models, as in ops._apply)
    return _BACKENDS[name].dwconv2d_fwd((x, weight, bias), flags)[0][0]

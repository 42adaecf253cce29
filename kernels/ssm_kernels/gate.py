"""Merge of K directions' scan outputs and Mamba's output gate, in one op: out = (sum_k y_k) * scale * SiLU(z).

Vim's bidirectional mixer scans forward and backward in one fused scan whose output holds the two directions
side by side, y = [y_0 | y_1] (..., 2C) in float32; it sums them, halves the sum and gates it with SiLU(z)
(z: the in-projection's second half) before the out-projection. Left to autograd, that expression saves z's
float32 copy, SiLU(z) and the merged output for the backward, three float32 (..., C) tensors a block, and runs
six elementwise kernels each way. This op saves the merged output (float32) and z (a view of the
in-projection's output, which the conv saves anyway), recomputes SiLU(z) in the backward, and on the Triton
backend is one kernel each way; the backward writes the (equal) gradient of every direction's output in one
pass.

One autograd node (``MergeGateFn``) in training; eager inference calls the backend's forward (no node, nothing
kept); export runs the plain expression. Elementwise: no FLOP handle (fvcore counts no elementwise op).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .ops import is_exporting, public_op, resolve_backend

__all__ = ["merge_gate", "merge_gate_ref", "MergeGateFn"]


def _wide(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def merge_gate_ref(y: torch.Tensor, z: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The plain-PyTorch op (the oracle): see :func:`merge_gate` for the arguments."""
    ys = y.unflatten(-1, (-1, z.shape[-1])).sum(-2)
    if scale != 1.0:
        ys = ys * scale
    return (ys * F.silu(_wide(z))).to(z.dtype)


class _Reference:
    """The reference backend: torch ops, the same tensors saved as the Triton backend saves."""

    @staticmethod
    def merge_gate_fwd(y, z, scale, save):
        ys = _wide(y.unflatten(-1, (-1, z.shape[-1])).sum(-2))
        if scale != 1.0:
            ys.mul_(scale)
        return (ys * F.silu(_wide(z))).to(z.dtype), ys

    @staticmethod
    def merge_gate_bwd(ys, z, grad, scale, K, y_dtype):
        zf = _wide(z)
        dz = torch.ops.aten.silu_backward(ys * grad, zf).to(z.dtype)
        dys = F.silu(zf).mul_(grad)
        del zf
        # every direction gets the same gradient: one op scales it and writes it K times
        dy = dys.unsqueeze(-2).expand(*dys.shape[:-1], K, dys.shape[-1]).mul(scale).to(y_dtype)
        return dy.flatten(-2), dz


_BACKENDS = {"reference": _Reference}
try:
    from .triton import gate as _triton_gate
    _BACKENDS["triton"] = _triton_gate
except ImportError:  # no triton installed: the reference serves every device
    pass


class MergeGateFn(torch.autograd.Function):
    """apply(backend, scale, y, z)"""

    @staticmethod
    def forward(ctx, backend, scale, y, z):
        out, ys = _BACKENDS[backend].merge_gate_fwd(y, z, scale, True)
        ctx.backend, ctx.scale, ctx.K, ctx.y_dtype = backend, scale, y.shape[-1] // z.shape[-1], y.dtype
        ctx.save_for_backward(ys, z)
        return out

    @staticmethod
    def backward(ctx, grad):
        ys, z = ctx.saved_tensors
        dy, dz = _BACKENDS[ctx.backend].merge_gate_bwd(ys, z, grad, ctx.scale, ctx.K, ctx.y_dtype)
        return None, None, dy, dz


def _check(y, z):
    if y.dim() < 1 or z.dim() != y.dim() or tuple(y.shape[:-1]) != tuple(z.shape[:-1]):
        raise ValueError(f"merge_gate: y (..., K*C) and z (..., C) must have the same leading dimensions, got "
                         f"{tuple(y.shape)} and {tuple(z.shape)}")
    if z.shape[-1] == 0 or y.shape[-1] % z.shape[-1]:
        raise ValueError(f"merge_gate: y's last dimension ({y.shape[-1]}) must be a multiple K*C of z's ({z.shape[-1]})")
    if not y.is_floating_point() or not z.is_floating_point():
        raise ValueError("merge_gate: inputs must be floating point")


@public_op
def merge_gate(y: torch.Tensor, z: torch.Tensor, scale: float = 1.0, backend: Optional[str] = None) -> torch.Tensor:
    """(y_0 + ... + y_{K-1}) * scale * SiLU(z), computed in float32 (float64 for float64), in z's dtype.

    Args:
        y: (..., K*C), direction k's output in channels k*C .. (k+1)*C - 1 (a scan2d output over split channels,
            e.g. :data:`ssm_kernels.BIDIRECTIONAL`'s).
        z: (..., C), the gate; a view whose channels are contiguous (a slice of a projection's output) is read in
            place by the Triton kernels.
        scale: a constant factor (Vim: 0.5, the mean of its two directions).

    The gradient of y comes in y's dtype, z's in z's.
    """
    _check(y, z)
    scale = float(scale)
    if is_exporting():
        return merge_gate_ref(y, z, scale)
    name = resolve_backend(z, backend)
    if name == "reference" and (torch.compiler.is_compiling() or torch.jit.is_tracing()):
        return merge_gate_ref(y, z, scale)  # plain ops: the compiler fuses them itself
    if torch.is_grad_enabled() and (y.requires_grad or z.requires_grad) or torch.jit.is_tracing() \
            or torch.compiler.is_compiling():
        return MergeGateFn.apply(name, scale, y, z)
    return _BACKENDS[name].merge_gate_fwd(y, z, scale, False)[0]  # eager inference: no node, nothing kept

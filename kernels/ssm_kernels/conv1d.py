"""Depthwise causal conv1d over channels-last sequences (Mamba's short convolution), K directions in one op.

Mamba convolves each channel of its inner sequence with a short kernel (width 4) over the current and
the previous W - 1 positions (zero left padding), adds a bias and applies SiLU. Vim's bidirectional
mixer does this twice on the same input: once forward, once on the reversed sequence with other
weights. The reversed direction is an anti-causal conv of the input in its own order,
out[t] = b + sum_j w[j] x[t + W - 1 - j]: no reversed copy of the sequence is needed, and both
directions run in one op (one kernel on GPU) that reads the input once and writes (batch, L, K*C),
direction k in the k-th channel group, the layout :data:`ssm_kernels.BIDIRECTIONAL` scans.

Like the scan ops, the op is one autograd node (``CausalConv1dFn``) whatever the backend: a FLOP
counter sees it with its inputs and counts it as fvcore counts the official ``nn.Conv1d``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ._recompute import recomputing_backend
from .ops import _backward, _forward, is_exporting, public_op, resolve_backend

__all__ = ["causal_conv1d", "causal_conv1d_ref", "CausalConv1dFn"]


def causal_conv1d_ref(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                      reverse: Sequence[bool] = (False,), silu: bool = False) -> torch.Tensor:
    """The plain-PyTorch op (the oracle): see :func:`causal_conv1d` for the arguments.

    Computes in float32 (float64 stays float64), autocast off, and returns x's dtype.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    K, C, W = weight.shape
    with torch.autocast(x.device.type, enabled=False):
        seq = x.to(dtype).transpose(1, 2)                                       # (b, C, L)
        biases = bias.to(dtype).view(K, C) if bias is not None else [None] * K
        outs = []
        for k in range(K):
            s = seq.flip(-1) if reverse[k] else seq
            y = F.conv1d(F.pad(s, (W - 1, 0)), weight[k].to(dtype).unsqueeze(1), biases[k], groups=C)
            outs.append(y.flip(-1) if reverse[k] else y)
        y = torch.cat(outs, dim=1).transpose(1, 2).contiguous()                # (b, L, K*C)
        if silu:
            y = F.silu(y)
    return y.to(x.dtype)


_BACKENDS = {"reference": recomputing_backend("causal_conv1d", causal_conv1d_ref)}
try:
    from .triton import conv1d as _triton_conv1d
    _BACKENDS["triton"] = _triton_conv1d
except ImportError:  # no triton installed: the reference serves every device
    pass


class CausalConv1dFn(torch.autograd.Function):
    """apply(backend, (reverse, silu), x, weight, bias)"""

    @staticmethod
    def forward(ctx, backend, flags, x, weight, bias):
        return _forward("causal_conv1d", ctx, backend, flags, (x, weight, bias), _BACKENDS)

    @staticmethod
    def backward(ctx, *grad_outputs):
        return _backward("causal_conv1d", ctx, grad_outputs, _BACKENDS)


@torch.compiler.disable  # its backward recomputes with autograd, which torch.compile cannot trace
def _reference_conv1d(*args):
    return CausalConv1dFn.apply("reference", *args)


def _check(x, weight, bias, reverse):
    if x.dim() != 3:
        raise ValueError(f"causal_conv1d: x must be (batch, length, channels), got shape {tuple(x.shape)}")
    if weight.dim() != 3 or weight.shape[1] != x.shape[2]:
        raise ValueError(f"causal_conv1d: weight must be (directions, channels={x.shape[2]}, width), "
                         f"got {tuple(weight.shape)}")
    K = weight.shape[0]
    if len(reverse) != K:
        raise ValueError(f"causal_conv1d: reverse needs one flag per direction ({K}), got {tuple(reverse)}")
    if bias is not None and tuple(bias.shape) != (K * x.shape[2],):
        raise ValueError(f"causal_conv1d: bias must be ({K * x.shape[2]},) (directions x channels), "
                         f"got {tuple(bias.shape)}")
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"causal_conv1d: empty input of shape {tuple(x.shape)}")
    if not x.is_floating_point() or not weight.is_floating_point():
        raise ValueError("causal_conv1d: inputs must be floating point")


@public_op
def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                  reverse: Sequence[bool] = (False,), silu: bool = False,
                  backend: Optional[str] = None) -> torch.Tensor:
    """Depthwise causal conv1d of K directions over one channels-last sequence.

    Args:
        x: (batch, L, C); a view whose channels are contiguous (a slice of a projection's output) is
            read in place by the Triton kernels.
        weight: (K, C, W), direction k's kernel (``nn.Conv1d(C, C, W, groups=C).weight[:, 0]``).
        bias: (K*C,) or None.
        reverse: K flags; direction k convolves the reversed sequence and reverses the result back
            (an anti-causal conv, out[t] = b + sum_j w[j] x[t + W - 1 - j]).
        silu: apply SiLU to the output.

    Returns (batch, L, K*C), contiguous, in x's dtype: direction k in channels k*C .. (k+1)*C - 1. Computed in
    float32; the gradients of the weight and bias come in their dtypes.
    """
    reverse = tuple(bool(r) for r in reverse)
    _check(x, weight, bias, reverse)
    if is_exporting():  # torch.export / ONNX: the plain tensor ops
        return causal_conv1d_ref(x, weight, bias, reverse, silu)
    name = resolve_backend(x, backend)
    flags = (reverse, bool(silu))
    if name == "reference":
        return _reference_conv1d(flags, x, weight, bias)
    if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return CausalConv1dFn.apply(name, flags, x, weight, bias)
    # eager inference: no autograd node (its host time matters for small models, as in ops._apply)
    return _BACKENDS[name].causal_conv1d_fwd((x, weight, bias), flags)[0][0]

"""Triton kernels of the depthwise causal conv1d (:mod:`ssm_kernels.conv1d`), forward and backward.

A program owns a tile of (BL positions, BC channels) of one batch element, channels across the lanes
(the sequence is channels last, so each load is contiguous), and computes every direction of those
channels: the input tile is read from memory once and the K directions' taps hit the cache.
Direction k is causal (tap j reads position t - (W-1-j)) or, with bit k of ``REVERSE`` set,
anti-causal (it reads t + (W-1-j)): the reversed-sequence conv without reversing anything.

The backward recomputes the pre-activation where it needs it (W + 1 short convs a position, from the
cache) instead of saving it: the gradient of x at position p gathers the output gradients of the W
positions whose taps read p; the weight and bias gradients are summed over the tile in registers and
added to float32 accumulators with one atomic add per program and tap.

Registered as ``torch.library`` custom ops with fake implementations, as the scan ops are.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import Launcher, cdiv, next_power_of_2
from .ops import _custom_op, _empty, _fake, op_or_body


@triton.jit
def _pre(x_at, w_ptr, b_ptr, t, c, cmask, L, sx_l, C, k: tl.constexpr, REVERSE: tl.constexpr, W: tl.constexpr,
         HAS_BIAS: tl.constexpr, BL: tl.constexpr, BC: tl.constexpr):
    """Direction k's conv output before the activation at positions t (BL,), channels c (BC,), float32."""
    # +1: tap j reads a later position (anti-causal, bit k of REVERSE set); -1: an earlier one (causal)
    SIGN: tl.constexpr = 2 * ((REVERSE >> k) & 1) - 1
    acc = tl.zeros([BL, BC], tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + k * C + c, mask=cmask, other=0.0).to(tl.float32)[None, :]
    for j in tl.static_range(W):
        pos = t + SIGN * (W - 1 - j)
        m = ((pos >= 0) & (pos < L))[:, None] & cmask[None, :]
        xv = tl.load(x_at + pos[:, None] * sx_l + c[None, :], mask=m, other=0.0).to(tl.float32)
        wv = tl.load(w_ptr + (k * C + c) * W + j, mask=cmask, other=0.0).to(tl.float32)
        acc += xv * wv[None, :]
    return acc


@triton.jit
def conv1d_fwd_kernel(x_ptr, w_ptr, b_ptr, out_ptr, L, C, sx_b, sx_l, so_b, so_l,
                      K: tl.constexpr, W: tl.constexpr, REVERSE: tl.constexpr, HAS_BIAS: tl.constexpr,
                      SILU: tl.constexpr, BL: tl.constexpr, BC: tl.constexpr):
    t = tl.program_id(0) * BL + tl.arange(0, BL)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    b = tl.program_id(2).to(tl.int64)
    tmask, cmask = t < L, c < C
    x_at, out_at = x_ptr + b * sx_b, out_ptr + b * so_b
    for k in tl.static_range(K):
        y = _pre(x_at, w_ptr, b_ptr, t, c, cmask, L, sx_l, C, k, REVERSE, W, HAS_BIAS, BL, BC)
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(out_at + t[:, None] * so_l + (k * C + c)[None, :], y.to(out_ptr.dtype.element_ty),
                 mask=tmask[:, None] & cmask[None, :])


@triton.jit
def _grad_pre(x_at, w_ptr, b_ptr, dout_at, t, c, cmask, L, sx_l, so_l, C, k: tl.constexpr, REVERSE: tl.constexpr,
              W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BL: tl.constexpr, BC: tl.constexpr):
    """Gradient of direction k's pre-activation at positions t (0 outside the sequence)."""
    m = ((t >= 0) & (t < L))[:, None] & cmask[None, :]
    g = tl.load(dout_at + t[:, None] * so_l + (k * C + c)[None, :], mask=m, other=0.0).to(tl.float32)
    if SILU:
        pre = _pre(x_at, w_ptr, b_ptr, t, c, cmask, L, sx_l, C, k, REVERSE, W, HAS_BIAS, BL, BC)
        s = tl.sigmoid(pre)
        g = g * s * (1.0 + pre * (1.0 - s))
    return tl.where(m, g, 0.0)


@triton.jit
def conv1d_bwd_kernel(x_ptr, w_ptr, b_ptr, dout_ptr, dx_ptr, dw_ptr, db_ptr, L, C, sx_b, sx_l, so_b, so_l,
                      sdx_b, sdx_l, K: tl.constexpr, W: tl.constexpr, REVERSE: tl.constexpr,
                      HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BL: tl.constexpr, BC: tl.constexpr):
    t = tl.program_id(0) * BL + tl.arange(0, BL)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    b = tl.program_id(2).to(tl.int64)
    tmask, cmask = t < L, c < C
    m_tc = tmask[:, None] & cmask[None, :]
    x_at, dout_at = x_ptr + b * sx_b, dout_ptr + b * so_b
    dx = tl.zeros([BL, BC], tl.float32)
    for k in tl.static_range(K):
        sign = 2 * ((REVERSE >> k) & 1) - 1  # as in _pre (a plain name: the unrolled loop assigns it per k)
        # weight and bias: the tile's own positions t, each counted by exactly one program
        g = _grad_pre(x_at, w_ptr, b_ptr, dout_at, t, c, cmask, L, sx_l, so_l, C, k, REVERSE, W, HAS_BIAS, SILU, BL, BC)
        if HAS_BIAS:
            tl.atomic_add(db_ptr + k * C + c, tl.sum(g, axis=0), mask=cmask, sem="relaxed")
        for j in tl.static_range(W):
            pos = t + sign * (W - 1 - j)
            m = ((pos >= 0) & (pos < L))[:, None] & cmask[None, :]
            xv = tl.load(x_at + pos[:, None] * sx_l + c[None, :], mask=m, other=0.0).to(tl.float32)
            tl.atomic_add(dw_ptr + (k * C + c) * W + j, tl.sum(g * xv, axis=0), mask=cmask, sem="relaxed")
        # x at position p is read by tap j of the output at p - sign * (W-1-j)
        for j in tl.static_range(W):
            src = t - sign * (W - 1 - j)
            gj = _grad_pre(x_at, w_ptr, b_ptr, dout_at, src, c, cmask, L, sx_l, so_l, C, k, REVERSE, W, HAS_BIAS,
                           SILU, BL, BC)
            wv = tl.load(w_ptr + (k * C + c) * W + j, mask=cmask, other=0.0).to(tl.float32)
            dx += gj * wv[None, :]
    tl.store(dx_ptr + b * sdx_b + t[:, None] * sdx_l + c[None, :], dx.to(dx_ptr.dtype.element_ty), mask=m_tc)


_FWD, _BWD = Launcher(conv1d_fwd_kernel), Launcher(conv1d_bwd_kernel)


def _blocks(L: int, C: int):
    """(BL, BC, warps): 16 positions x up to 128 channels a program (a 4-byte channel per lane)."""
    BC = min(128, max(16, next_power_of_2(C)))
    return 16, BC, 4


def _check_offsets(x: Tensor) -> None:
    if (x.shape[1] - 1) * x.stride(1) + x.shape[2] >= 2 ** 31:
        raise ValueError(f"causal_conv1d: a sequence of shape {tuple(x.shape[1:])} spans more than 2**31 - 1 "
                         "elements per batch element (split the batch or the sequence)")


def _causal_conv1d_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], reverse: int, silu: bool) -> Tensor:
    """(batch, L, K*C) output in x's dtype. x: (batch, L, C) with contiguous channels; weight (K, C, W)
    contiguous; bias (K*C,) or None; bit k of ``reverse``: direction k is anti-causal."""
    batch, L, C = x.shape
    K, _, W = weight.shape
    _check_offsets(x)
    out = _empty(batch, L, K * C, like=x)
    BL, BC, warps = _blocks(L, C)
    _FWD[(cdiv(L, BL), cdiv(C, BC), batch)](
        x, weight, bias if bias is not None else weight, out, L, C, x.stride(0), x.stride(1), out.stride(0),
        out.stride(1), K=K, W=W, REVERSE=reverse, HAS_BIAS=bias is not None, SILU=silu, BL=BL, BC=BC,
        num_warps=warps)
    return out


causal_conv1d_fwd_op = _custom_op(_causal_conv1d_fwd, traced=True)


@_fake(causal_conv1d_fwd_op)
def _(x, weight, bias, reverse, silu):
    return x.new_empty((x.shape[0], x.shape[1], weight.shape[0] * x.shape[2]))


def _causal_conv1d_bwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], dout: Tensor, reverse: int,
                       silu: bool) -> Tuple[Tensor, Tensor]:
    """(dx (batch, L, C) in x's dtype, float32 gradients of the weight then the bias in one flat buffer)."""
    batch, L, C = x.shape
    K, _, W = weight.shape
    _check_offsets(x)
    dx = _empty(batch, L, C, like=x)
    flat = torch.zeros(K * C * (W + 1), dtype=torch.float32, device=x.device)
    BL, BC, warps = _blocks(L, C)
    _BWD[(cdiv(L, BL), cdiv(C, BC), batch)](
        x, weight, bias if bias is not None else weight, dout, dx, flat, flat[K * C * W:], L, C,
        x.stride(0), x.stride(1), dout.stride(0), dout.stride(1), dx.stride(0), dx.stride(1),
        K=K, W=W, REVERSE=reverse, HAS_BIAS=bias is not None, SILU=silu, BL=BL, BC=BC, num_warps=warps)
    return dx, flat


causal_conv1d_bwd_op = _custom_op(_causal_conv1d_bwd)


@_fake(causal_conv1d_bwd_op)
def _(x, weight, bias, dout, reverse, silu):
    K, C, W = weight.shape
    return x.new_empty(x.shape), x.new_empty((K * C * (W + 1),), dtype=torch.float32)


# ---- the backend protocol of ssm_kernels.conv1d ------------------------------------------------

_OPS = {"causal_conv1d_fwd": (causal_conv1d_fwd_op, _causal_conv1d_fwd),
        "causal_conv1d_bwd": (causal_conv1d_bwd_op, _causal_conv1d_bwd)}


def _op(name: str):
    """The custom op or its Python body (:func:`.ops.op_or_body`)."""
    return op_or_body(*_OPS[name])


def _readable(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _mask(reverse) -> int:
    return sum(1 << k for k, r in enumerate(reverse) if r)


def causal_conv1d_fwd(inputs, flags):
    x, weight, bias = inputs
    reverse, silu = flags
    x = _readable(x)
    out = _op("causal_conv1d_fwd")(x, weight.contiguous(), None if bias is None else bias.contiguous(),
                                   _mask(reverse), silu)
    return (out,), (x, weight, bias)


def causal_conv1d_bwd(saved, grad_outputs, flags, needs_grad):
    x, weight, bias = saved
    reverse, silu = flags
    dx, flat = _op("causal_conv1d_bwd")(x, weight.contiguous(), None if bias is None else bias.contiguous(),
                                        grad_outputs[0].contiguous(), _mask(reverse), silu)
    n = weight.numel()
    dw = flat[:n].view(weight.shape).to(weight.dtype)
    db = flat[n:].to(bias.dtype) if bias is not None else None
    return [g if need else None for g, need in zip((dx, dw, db), needs_grad)]

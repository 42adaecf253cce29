"""Triton kernels of the channels-last depthwise conv2d (:mod:`ssm_kernels.dwconv2d`), forward and backward.

A program owns a tile of BP positions (row-major over the map) of one image and a block of BC channels,
channels across the lanes: every load is a contiguous run of channels of one position (the map is channels
last, so it is read in place, also as a slice of a wider last axis), and the k*k weights of the program's
channels are loaded once per tap into registers. Each tap reads the tile shifted by its offset, masked at the
map's borders (zero padding); the k*k shifted reads of a tile hit the cache.

Backward, g = d out / d pre-activation (dout itself without SiLU):
- with SiLU, one kernel recomputes the pre-activation from x (k*k reads a position, as the forward) and writes
  g in float32. Recomputing costs a forward's reads; saving the pre-activation instead would cost a forward
  write and a float32 map kept alive between the passes.
- one kernel then gathers, per position q, dx[q] = sum over taps t of w[t] * g[q - off_t] (the correlation
  with the flipped kernel: no atomics), plus dout[q] for the residual. The same shifted reads of g give the
  weight gradient, dw[t] = sum over q of g[q - off_t] * x[q], and the centre tap's the bias gradient, summed
  over the tile in registers, then added with one float32 atomic per program, tap and channel into one of
  ``_COPIES`` accumulator copies (chosen by the program's index, so that far fewer programs contend for an
  address), which are summed after the kernel.

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

#: accumulator copies of the weight and bias gradients (a program adds into copy "program index % _COPIES")
_COPIES = 32

#: Overrides of the launch heuristic, for tools/bench_dwconv.py's sweep: "BP" (positions a program), "BC"
#: (channels a program, a power of 2), "warps".
TUNING = {}


@triton.jit
def _pre(x_at, w_ptr, b_ptr, h, w, pmask, c, cmask, H, W, sx_h, sx_w, K: tl.constexpr, HAS_BIAS: tl.constexpr,
         BP: tl.constexpr, BC: tl.constexpr):
    """The conv plus bias at positions (h, w) (BP,), channels c (BC,), in float32."""
    R: tl.constexpr = K // 2
    acc = tl.zeros([BP, BC], tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=cmask, other=0.0).to(tl.float32)[None, :]
    for i in tl.static_range(K):
        hh = h + (i - R)
        for j in tl.static_range(K):
            ww = w + (j - R)
            m = (pmask & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W))[:, None] & cmask[None, :]
            xv = tl.load(x_at + (hh * sx_h + ww * sx_w)[:, None] + c[None, :], mask=m, other=0.0).to(tl.float32)
            wv = tl.load(w_ptr + c * (K * K) + (i * K + j), mask=cmask, other=0.0).to(tl.float32)
            acc += xv * wv[None, :]
    return acc


@triton.jit
def dwconv2d_fwd_kernel(x_ptr, w_ptr, b_ptr, out_ptr, H, W, C, sx_b, sx_h, sx_w, so_p, so_c, K: tl.constexpr,
                        HAS_BIAS: tl.constexpr, SILU: tl.constexpr, RESIDUAL: tl.constexpr, BP: tl.constexpr,
                        BC: tl.constexpr):
    p = tl.program_id(0) * BP + tl.arange(0, BP)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    b = tl.program_id(2).to(tl.int64)
    pmask, cmask = p < H * W, c < C
    h, w = p // W, p % W
    x_at = x_ptr + b * sx_b
    y = _pre(x_at, w_ptr, b_ptr, h, w, pmask, c, cmask, H, W, sx_h, sx_w, K, HAS_BIAS, BP, BC)
    if SILU:
        y = y * tl.sigmoid(y)
    m = pmask[:, None] & cmask[None, :]
    if RESIDUAL:
        y += tl.load(x_at + (h * sx_h + w * sx_w)[:, None] + c[None, :], mask=m, other=0.0).to(tl.float32)
    # channels-last (so_p = C, so_c = 1) or channels-first (so_p = 1, so_c = H * W) output
    tl.store(out_ptr + b * H * W * C + p[:, None] * so_p + c[None, :] * so_c, y.to(out_ptr.dtype.element_ty),
             mask=m)


@triton.jit
def dwconv2d_bwd_silu_kernel(x_ptr, w_ptr, b_ptr, dout_ptr, g_ptr, H, W, C, sx_b, sx_h, sx_w, K: tl.constexpr,
                             HAS_BIAS: tl.constexpr, BP: tl.constexpr, BC: tl.constexpr):
    """g = dout * SiLU'(pre), the pre-activation recomputed from x; g float32, (batch, H, W, C) contiguous."""
    p = tl.program_id(0) * BP + tl.arange(0, BP)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    b = tl.program_id(2).to(tl.int64)
    pmask, cmask = p < H * W, c < C
    h, w = p // W, p % W
    pre = _pre(x_ptr + b * sx_b, w_ptr, b_ptr, h, w, pmask, c, cmask, H, W, sx_h, sx_w, K, HAS_BIAS, BP, BC)
    m = pmask[:, None] & cmask[None, :]
    at = b * H * W * C + p[:, None] * C + c[None, :]
    s = tl.sigmoid(pre)
    g = tl.load(dout_ptr + at, mask=m, other=0.0).to(tl.float32) * s * (1.0 + pre * (1.0 - s))
    tl.store(g_ptr + at, g, mask=m)


@triton.jit
def dwconv2d_bwd_kernel(x_ptr, w_ptr, g_ptr, dout_ptr, dx_ptr, dw_ptr, db_ptr, H, W, C, sx_b, sx_h, sx_w,
                        s_copy, K: tl.constexpr, COPIES: tl.constexpr, HAS_BIAS: tl.constexpr,
                        RESIDUAL: tl.constexpr, BP: tl.constexpr, BC: tl.constexpr):
    """dx, and the weight and bias gradients added into copy (program index % COPIES) of their accumulators
    (copies s_copy apart). g: the gradient of the pre-activation, (batch, H, W, C) contiguous; dout: the
    output's, the same layout."""
    R: tl.constexpr = K // 2
    q = tl.program_id(0) * BP + tl.arange(0, BP)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    b = tl.program_id(2).to(tl.int64)
    copy = (tl.program_id(2) * tl.num_programs(0) + tl.program_id(0)) % COPIES
    qmask, cmask = q < H * W, c < C
    h, w = q // W, q % W
    m = qmask[:, None] & cmask[None, :]
    g_at = g_ptr + b * H * W * C
    xq = tl.load(x_ptr + b * sx_b + (h * sx_h + w * sx_w)[:, None] + c[None, :], mask=m, other=0.0).to(tl.float32)
    dx = tl.zeros([BP, BC], tl.float32)
    for i in tl.static_range(K):
        hh = h - (i - R)  # the output position whose tap (i, j) reads q
        for j in tl.static_range(K):
            ww = w - (j - R)
            ms = (qmask & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W))[:, None] & cmask[None, :]
            gs = tl.load(g_at + (hh * W + ww)[:, None] * C + c[None, :], mask=ms, other=0.0).to(tl.float32)
            wv = tl.load(w_ptr + c * (K * K) + (i * K + j), mask=cmask, other=0.0).to(tl.float32)
            dx += gs * wv[None, :]
            tl.atomic_add(dw_ptr + copy * s_copy + c * (K * K) + (i * K + j), tl.sum(gs * xq, axis=0),
                          mask=cmask, sem="relaxed")
            if HAS_BIAS and i == R and j == R:  # the centre tap reads g at q itself
                tl.atomic_add(db_ptr + copy * s_copy + c, tl.sum(gs, axis=0), mask=cmask, sem="relaxed")
    if RESIDUAL:
        dx += tl.load(dout_ptr + b * H * W * C + q[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
    tl.store(dx_ptr + b * H * W * C + q[:, None] * C + c[None, :], dx.to(dx_ptr.dtype.element_ty), mask=m)


_FWD, _BWD_SILU, _BWD = (Launcher(dwconv2d_fwd_kernel), Launcher(dwconv2d_bwd_silu_kernel),
                         Launcher(dwconv2d_bwd_kernel))


def _blocks(C: int):
    """(BP, BC, warps): 16 positions x up to 128 channels a program (a 4-byte channel per lane), unless
    :data:`TUNING` says otherwise."""
    BC = min(128, max(16, next_power_of_2(C)))
    return TUNING.get("BP", 16), TUNING.get("BC", BC), TUNING.get("warps", 4)


def _check_offsets(x: Tensor) -> None:
    _, H, W, C = x.shape
    if max((H - 1) * x.stride(1) + (W - 1) * x.stride(2) + C, H * W * C) >= 2 ** 31:
        raise ValueError(f"dwconv2d: a map of shape {tuple(x.shape[1:])} spans more than 2**31 - 1 elements per "
                         "image (split the batch or the map)")


def _dwconv2d_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], silu: bool, residual: bool,
                  out_dtype: torch.dtype, channels_first: bool = False) -> Tensor:
    """(batch, H, W, C) output in ``out_dtype``, contiguous (``channels_first``: a view of a contiguous
    (batch, C, H, W) tensor). x: (batch, H, W, C) with contiguous channels; weight (C, 1, k, k) contiguous;
    bias (C,) or None."""
    batch, H, W, C = x.shape
    _check_offsets(x)
    if channels_first:
        out = _empty(batch, C, H, W, like=x, dtype=out_dtype).permute(0, 2, 3, 1)
        so_p, so_c = 1, H * W
    else:
        out, so_p, so_c = _empty(batch, H, W, C, like=x, dtype=out_dtype), C, 1
    BP, BC, warps = _blocks(C)
    _FWD[(cdiv(H * W, BP), cdiv(C, BC), batch)](
        x, weight, bias if bias is not None else weight, out, H, W, C, x.stride(0), x.stride(1), x.stride(2),
        so_p, so_c, K=weight.shape[-1], HAS_BIAS=bias is not None, SILU=silu, RESIDUAL=residual, BP=BP, BC=BC,
        num_warps=warps)
    return out


dwconv2d_fwd_op = _custom_op(_dwconv2d_fwd, traced=True)


@_fake(dwconv2d_fwd_op)
def _(x, weight, bias, silu, residual, out_dtype, channels_first=False):
    if channels_first:
        batch, H, W, C = x.shape
        return x.new_empty((batch, C, H, W), dtype=out_dtype).permute(0, 2, 3, 1)
    return x.new_empty(x.shape, dtype=out_dtype)


def _dwconv2d_bwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], dout: Tensor, silu: bool, residual: bool
                  ) -> Tuple[Tensor, Tensor]:
    """(dx (batch, H, W, C) in x's dtype, the float32 gradients of the weight then the bias in one flat buffer).
    dout: (batch, H, W, C) contiguous."""
    batch, H, W, C = x.shape
    K = weight.shape[-1]
    _check_offsets(x)
    BP, BC, warps = _blocks(C)
    grid = (cdiv(H * W, BP), cdiv(C, BC), batch)
    has_bias = bias is not None
    g = dout
    if silu:
        g = _empty(batch, H, W, C, like=x, dtype=torch.float32)
        _BWD_SILU[grid](x, weight, bias if has_bias else weight, dout, g, H, W, C, x.stride(0), x.stride(1),
                        x.stride(2), K=K, HAS_BIAS=has_bias, BP=BP, BC=BC, num_warps=warps)
    dx = _empty(batch, H, W, C, like=x)
    copies = torch.zeros(_COPIES, C * (K * K + 1), dtype=torch.float32, device=x.device)
    _BWD[grid](x, weight, g, dout, dx, copies, copies[:, C * K * K:], H, W, C, x.stride(0), x.stride(1), x.stride(2),
               copies.stride(0), K=K, COPIES=_COPIES, HAS_BIAS=has_bias, RESIDUAL=residual, BP=BP, BC=BC,
               num_warps=warps)
    return dx, copies.sum(0)


dwconv2d_bwd_op = _custom_op(_dwconv2d_bwd)


@_fake(dwconv2d_bwd_op)
def _(x, weight, bias, dout, silu, residual):
    C, K = x.shape[-1], weight.shape[-1]
    return x.new_empty(x.shape), x.new_empty((C * (K * K + 1),), dtype=torch.float32)


# ---- the backend protocol of ssm_kernels.dwconv2d ----------------------------------------------

_OPS = {"dwconv2d_fwd": (dwconv2d_fwd_op, _dwconv2d_fwd), "dwconv2d_bwd": (dwconv2d_bwd_op, _dwconv2d_bwd)}


def _op(name: str):
    """The custom op or its Python body (:func:`.ops.op_or_body`)."""
    return op_or_body(*_OPS[name])


def _readable(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def dwconv2d_fwd(inputs, flags):
    x, weight, bias = inputs
    silu, residual, out_dtype, channels_first = flags
    x = _readable(x)
    out = _op("dwconv2d_fwd")(x, weight.contiguous(), None if bias is None else bias.contiguous(), silu, residual,
                              out_dtype, channels_first)
    return (out,), (x, weight, bias)


def dwconv2d_bwd(saved, grad_outputs, flags, needs_grad):
    x, weight, bias = saved
    silu, residual, _, _ = flags
    dx, flat = _op("dwconv2d_bwd")(x, weight.contiguous(), None if bias is None else bias.contiguous(),
                                   grad_outputs[0].contiguous(), silu, residual)
    n = weight.numel()
    dw = flat[:n].view(weight.shape).to(weight.dtype)
    db = flat[n:].to(bias.dtype) if bias is not None else None
    return [g if need else None for g, need in zip((dx, dw, db), needs_grad)]

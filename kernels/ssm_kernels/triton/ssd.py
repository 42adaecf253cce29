"""Triton kernels of the non-causal SSD (:func:`ssm_kernels.non_causal_ssd`), forward and backward.

Per head h (x (b, L, H, P), Δ = softplus(dt + bias) (b, L, H), B, C (b, L, N) shared by the heads):

    forward   KV_h = Σ_l B_lᵀ (Δ_{l,h} a_h x_{l,h})            kv kernel: one program per (head, image, L-split)
              y_{l,h} = C_l KV_h + D_h x_{l,h}                   out kernel: one per (row block, head, image)
    backward  dKV_h = Σ_l C_lᵀ dy_{l,h}                          kv kernel again, on (C, dy) with unit weights
              dC_l = Σ_h dy_{l,h} KV_hᵀ,  dB_l = Σ_h v_{l,h} dKV_hᵀ,  dv = B_l dKV_h,
              dx = Δ a dv + D dy,  dΔ = a <dv, x>,  da_h, dD_h: sums      rows kernel: one per (row block, image),
                                                                          looping over the heads

With the LayerNorm over the H*P channels and the gate z fused (VSSD's mixer: out = LN(y)·z), the out kernel
is ``ssd_out_norm_kernel``, one program per (row block, image) looping over the heads twice (row statistics,
then the output; y is never stored), and the backward starts with ``ssd_norm_bwd_kernel`` (y recomputed the
same way), which gives dy (float32), dz and the norm's weight and bias gradients.

The scaled values Δ·a·x and the heads' copies of B and C never exist in memory: each program scales the
values it loaded in registers and reads the one B / C block. x, dt, B and C are read in place (strided
views of one projection, channels contiguous). KV and dKV, (b, H, N, P) in float32, are the only
intermediates; a split over L (for small batches: one image at a detection size has only H programs)
writes partial sums that one torch ``sum`` adds (deterministic, no atomics).
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import _INTERPRETED, Launcher, cdiv, next_power_of_2
from .ops import _custom_op, _empty, _fake, op_or_body

__all__ = ["non_causal_ssd_fwd", "non_causal_ssd_bwd", "TUNING"]

#: overrides of the launch heuristics (tests, tools/bench_ssd.py): "BL" rows per block, "splits" of L
TUNING = {}


@triton.jit
def _step(dt_ptr, bias, l, ml, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(raw step size with bias, Δ) at rows l, float32; 0 where masked."""
    raw = tl.load(dt_ptr + l, mask=ml, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += bias
    delta = raw
    if SOFTPLUS:
        delta = tl.where(raw <= 20.0, tl.log(1.0 + tl.exp(raw)), raw)
    return raw, tl.where(ml, delta, 0.0)


@triton.jit
def _dot(a, b, DOT_F32: tl.constexpr):
    """a @ b with float32 accumulation, a an input tile (exact in its dtype), b a float32 tile: in float32,
    or on tensor cores in a's dtype with b split into a high and a low part in that dtype (rounding b
    to bfloat16 once would add ~2e-3 relative error to every product; the kernels are bound by memory,
    so the second product is free)."""
    if DOT_F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        hi = b.to(a.dtype)
        return tl.dot(a, hi) + tl.dot(a, (b - hi.to(tl.float32)).to(a.dtype))


@Launcher
@triton.jit
def ssd_kv_kernel(v_ptr, dt_ptr, a_ptr, bias_ptr, k_ptr, kv_ptr, L, H, N, P, rows,
                  s_vb, s_vl, s_vh, s_db, s_dl, s_dh, s_kb, s_kl,
                  SCALED: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, DOT_F32: tl.constexpr,
                  BL: tl.constexpr, NP: tl.constexpr, PP: tl.constexpr):
    """kv[split, b, h] = Σ_{l in split} k_lᵀ (w_{l,h} v_{l,h}), (NP, PP) float32, padding zero. w = Δ a
    (SCALED: forward, k = B, v = x), or 1 (backward's dKV: k = C, v = dy)."""
    h, b, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n, p = tl.arange(0, NP), tl.arange(0, PP)
    v_base = v_ptr + b.to(tl.int64) * s_vb + h * s_vh
    k_base = k_ptr + b.to(tl.int64) * s_kb
    d_base = dt_ptr + b.to(tl.int64) * s_db + h * s_dh
    a = 1.0
    if SCALED:
        a = tl.load(a_ptr + h).to(tl.float32)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + h).to(tl.float32)
    acc = tl.zeros([NP, PP], tl.float32)
    start = split * rows
    stop = tl.minimum(start + rows, L)
    for l0 in range(start, stop, BL):
        l = l0 + tl.arange(0, BL)
        ml = l < stop
        v = tl.load(v_base + l[:, None] * s_vl + p[None, :], mask=ml[:, None] & (p < P)[None, :], other=0.0)
        k = tl.load(k_base + l[:, None] * s_kl + n[None, :], mask=ml[:, None] & (n < N)[None, :], other=0.0)
        v = v.to(tl.float32)
        if SCALED:
            _, delta = _step(d_base, bias, l * s_dl, ml, HAS_BIAS, SOFTPLUS)
            v = v * (delta * a)[:, None]
        acc += _dot(tl.trans(k), v, DOT_F32)
    out = kv_ptr + ((split * tl.num_programs(1) + b) * H + h).to(tl.int64) * NP * PP
    tl.store(out + n[:, None] * PP + p[None, :], acc)


@Launcher
@triton.jit
def ssd_out_kernel(x_ptr, c_ptr, kv_ptr, D_ptr, y_ptr, L, H, N, P,
                   s_xb, s_xl, s_xh, s_cb, s_cl,
                   HAS_D: tl.constexpr, DOT_F32: tl.constexpr, BL: tl.constexpr, NP: tl.constexpr, PP: tl.constexpr):
    """y[b, l, h] = C_l KV[b, h] + D_h x[b, l, h] for a block of rows; y (b, L, H, P) contiguous."""
    blk, h, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    l = blk * BL + tl.arange(0, BL)
    n, p = tl.arange(0, NP), tl.arange(0, PP)
    ml, mp = l < L, p < P
    c = tl.load(c_ptr + b.to(tl.int64) * s_cb + l[:, None] * s_cl + n[None, :], mask=ml[:, None] & (n < N)[None, :],
                other=0.0)
    kv = tl.load(kv_ptr + (b * H + h).to(tl.int64) * NP * PP + n[:, None] * PP + p[None, :])
    y = _dot(c, kv, DOT_F32)
    m = ml[:, None] & mp[None, :]
    if HAS_D:
        x = tl.load(x_ptr + b.to(tl.int64) * s_xb + h * s_xh + l[:, None] * s_xl + p[None, :], mask=m, other=0.0)
        y += tl.load(D_ptr + h).to(tl.float32) * x.to(tl.float32)
    out = y_ptr + b.to(tl.int64) * L * H * P + (l[:, None] * H + h) * P + p[None, :]
    tl.store(out, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _y_tile(x_ptr, c, kv_ptr, D_ptr, b64, h, l, p, n, m_lp, H, s_xb, s_xl, s_xh,
            HAS_D: tl.constexpr, DOT_F32: tl.constexpr, NP: tl.constexpr, PP: tl.constexpr):
    """Head h's y = C KV_h + D_h x on the rows l, (BL, PP) float32, 0 outside the mask."""
    kv = tl.load(kv_ptr + (b64 * H + h) * NP * PP + n[:, None] * PP + p[None, :])
    y = _dot(c, kv, DOT_F32)
    if HAS_D:
        x = tl.load(x_ptr + b64 * s_xb + h * s_xh + l[:, None] * s_xl + p[None, :], mask=m_lp, other=0.0)
        y += tl.load(D_ptr + h).to(tl.float32) * x.to(tl.float32)
    return tl.where(m_lp, y, 0.0)


@Launcher
@triton.jit
def ssd_out_norm_kernel(x_ptr, c_ptr, kv_ptr, D_ptr, z_ptr, w_ptr, nb_ptr, out_ptr, stats_ptr, L, H, N, P, eps,
                        s_xb, s_xl, s_xh, s_cb, s_cl, s_zb, s_zl, s_zh,
                        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, DOT_F32: tl.constexpr,
                        BL: tl.constexpr, NP: tl.constexpr, PP: tl.constexpr):
    """out = LayerNorm over the H*P channels of y (weight w, bias nb), times z, for a block of rows and all
    heads; y is never stored: the first pass over the heads gathers each row's mean and variance (Chan's
    combination of the heads' centred sums), the second recomputes y and writes the output. stats: (2, b*L)
    mean and 1/std, float32."""
    blk, b = tl.program_id(0), tl.program_id(1)
    b64 = b.to(tl.int64)
    l = blk * BL + tl.arange(0, BL)
    n, p = tl.arange(0, NP), tl.arange(0, PP)
    ml, mp = l < L, p < P
    m_lp = ml[:, None] & mp[None, :]
    c = tl.load(c_ptr + b64 * s_cb + l[:, None] * s_cl + n[None, :], mask=ml[:, None] & (n < N)[None, :], other=0.0)
    count = 0.0
    mean = tl.zeros([BL], tl.float32)
    m2 = tl.zeros([BL], tl.float32)
    for h in range(H):
        y = _y_tile(x_ptr, c, kv_ptr, D_ptr, b64, h, l, p, n, m_lp, H, s_xb, s_xl, s_xh, HAS_D, DOT_F32, NP, PP)
        mean_h = tl.sum(y, axis=1) / P
        d = tl.where(m_lp, y - mean_h[:, None], 0.0)
        total = count + P
        delta = mean_h - mean
        mean += delta * (P / total)
        m2 += tl.sum(d * d, axis=1) + delta * delta * (count * P / total)
        count = total
    rstd = 1.0 / tl.sqrt(m2 / count + eps)
    rows = b64 * L + l
    tl.store(stats_ptr + rows, mean, mask=ml)
    tl.store(stats_ptr + tl.num_programs(1) * L + rows, rstd, mask=ml)
    for h in range(H):
        y = _y_tile(x_ptr, c, kv_ptr, D_ptr, b64, h, l, p, n, m_lp, H, s_xb, s_xl, s_xh, HAS_D, DOT_F32, NP, PP)
        w = tl.load(w_ptr + h * P + p, mask=mp, other=0.0).to(tl.float32)
        nb = tl.load(nb_ptr + h * P + p, mask=mp, other=0.0).to(tl.float32)
        o = (y - mean[:, None]) * rstd[:, None] * w[None, :] + nb[None, :]
        if HAS_Z:
            z = tl.load(z_ptr + b64 * s_zb + h * s_zh + l[:, None] * s_zl + p[None, :], mask=m_lp, other=0.0)
            o = o * z.to(tl.float32)
        tl.store(out_ptr + (rows[:, None] * H + h) * P + p[None, :], o.to(out_ptr.dtype.element_ty), mask=m_lp)


@Launcher
@triton.jit
def ssd_norm_bwd_kernel(x_ptr, c_ptr, kv_ptr, D_ptr, z_ptr, w_ptr, nb_ptr, stats_ptr, dout_ptr, dy_ptr, dz_ptr,
                        dwb_ptr, L, H, N, P, s_xb, s_xl, s_xh, s_cb, s_cl, s_zb, s_zl, s_zh,
                        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, DOT_F32: tl.constexpr,
                        BL: tl.constexpr, NP: tl.constexpr, PP: tl.constexpr):
    """Back through out = LN(y) * z for a block of rows, y recomputed: dy (b, L, H, P) float32, dz
    (b, L, H, P) in z's, and the block's shares of the norm's weight and bias gradients (dwb: (2, b, blocks,
    H*P) float32). Two passes over the heads: the row sums of g and g * yhat, then dy."""
    blk, b = tl.program_id(0), tl.program_id(1)
    b64 = b.to(tl.int64)
    l = blk * BL + tl.arange(0, BL)
    n, p = tl.arange(0, NP), tl.arange(0, PP)
    ml, mp = l < L, p < P
    m_lp = ml[:, None] & mp[None, :]
    c = tl.load(c_ptr + b64 * s_cb + l[:, None] * s_cl + n[None, :], mask=ml[:, None] & (n < N)[None, :], other=0.0)
    rows = b64 * L + l
    mean = tl.load(stats_ptr + rows, mask=ml, other=0.0)
    rstd = tl.load(stats_ptr + tl.num_programs(1) * L + rows, mask=ml, other=0.0)
    E = H * P
    part = dwb_ptr + (b64 * tl.num_programs(0) + blk) * E                  # dwb[0, b, blk]
    part_stride = tl.num_programs(1).to(tl.int64) * tl.num_programs(0) * E  # to dwb[1, b, blk]
    sum_g = tl.zeros([BL], tl.float32)
    sum_gy = tl.zeros([BL], tl.float32)
    for h in range(H):
        y = _y_tile(x_ptr, c, kv_ptr, D_ptr, b64, h, l, p, n, m_lp, H, s_xb, s_xl, s_xh, HAS_D, DOT_F32, NP, PP)
        yhat = tl.where(m_lp, (y - mean[:, None]) * rstd[:, None], 0.0)
        w = tl.load(w_ptr + h * P + p, mask=mp, other=0.0).to(tl.float32)
        go = tl.load(dout_ptr + (rows[:, None] * H + h) * P + p[None, :], mask=m_lp, other=0.0).to(tl.float32)
        if HAS_Z:
            zp = z_ptr + b64 * s_zb + h * s_zh + l[:, None] * s_zl + p[None, :]
            z = tl.load(zp, mask=m_lp, other=0.0).to(tl.float32)
            nb = tl.load(nb_ptr + h * P + p, mask=mp, other=0.0).to(tl.float32)
            dz = go * (yhat * w[None, :] + nb[None, :])
            tl.store(dz_ptr + (rows[:, None] * H + h) * P + p[None, :], dz.to(dz_ptr.dtype.element_ty), mask=m_lp)
            go = go * z
        g = go * w[None, :]
        sum_g += tl.sum(g, axis=1)
        sum_gy += tl.sum(g * yhat, axis=1)
        tl.store(part + h * P + p, tl.sum(go * yhat, axis=0), mask=mp)
        tl.store(part + part_stride + h * P + p, tl.sum(go, axis=0), mask=mp)
    mean_g, mean_gy = sum_g / E, sum_gy / E
    for h in range(H):
        y = _y_tile(x_ptr, c, kv_ptr, D_ptr, b64, h, l, p, n, m_lp, H, s_xb, s_xl, s_xh, HAS_D, DOT_F32, NP, PP)
        yhat = (y - mean[:, None]) * rstd[:, None]
        w = tl.load(w_ptr + h * P + p, mask=mp, other=0.0).to(tl.float32)
        go = tl.load(dout_ptr + (rows[:, None] * H + h) * P + p[None, :], mask=m_lp, other=0.0).to(tl.float32)
        if HAS_Z:
            z = tl.load(z_ptr + b64 * s_zb + h * s_zh + l[:, None] * s_zl + p[None, :], mask=m_lp, other=0.0)
            go = go * z.to(tl.float32)
        dy = (go * w[None, :] - mean_g[:, None] - yhat * mean_gy[:, None]) * rstd[:, None]
        tl.store(dy_ptr + (rows[:, None] * H + h) * P + p[None, :], dy.to(dy_ptr.dtype.element_ty), mask=m_lp)


@Launcher
@triton.jit
def ssd_rows_bwd_kernel(x_ptr, dt_ptr, a_ptr, bias_ptr, b_ptr, c_ptr, D_ptr, kv_ptr, dkv_ptr, dy_ptr,
                        dx_ptr, ddt_ptr, db_ptr, dc_ptr, part_ptr, L, H, N, P,
                        s_xb, s_xl, s_xh, s_db, s_dl, s_dh, s_bb, s_bl, s_cb, s_cl,
                        HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, DOT_F32: tl.constexpr,
                        DY_SPLIT: tl.constexpr, BL: tl.constexpr, NP: tl.constexpr, PP: tl.constexpr):
    """Everything but dKV for a block of rows, over all heads: dx, the raw step size's gradient (float32,
    (b, L, H)), dB and dC (summed over the heads, (b, L, N)), and per head the block's share of da and
    dD (part: (2, b, blocks, H) float32). dx, dy: (b, L, H, P) contiguous."""
    blk, b = tl.program_id(0), tl.program_id(1)
    l = blk * BL + tl.arange(0, BL)
    n, p = tl.arange(0, NP), tl.arange(0, PP)
    ml, mn, mp = l < L, n < N, p < P
    m_ln, m_lp = ml[:, None] & mn[None, :], ml[:, None] & mp[None, :]
    b64 = b.to(tl.int64)
    kb = tl.load(b_ptr + b64 * s_bb + l[:, None] * s_bl + n[None, :], mask=m_ln, other=0.0)
    dC = tl.zeros([BL, NP], tl.float32)
    dB = tl.zeros([BL, NP], tl.float32)
    row = b64 * L * H * P + l[:, None] * H * P + p[None, :]          # dy, dx at head 0
    tile = n[:, None] * PP + p[None, :]
    n_blocks = tl.num_programs(0)
    for h in range(H):
        a = tl.load(a_ptr + h).to(tl.float32)
        bias = 0.0
        if HAS_BIAS:
            bias = tl.load(bias_ptr + h).to(tl.float32)
        raw, delta = _step(dt_ptr + b64 * s_db + h * s_dh, bias, l * s_dl, ml, HAS_BIAS, SOFTPLUS)
        s = delta * a
        x = tl.load(x_ptr + b64 * s_xb + h * s_xh + l[:, None] * s_xl + p[None, :], mask=m_lp, other=0.0)
        dy = tl.load(dy_ptr + row + h * P, mask=m_lp, other=0.0)
        kv = tl.load(kv_ptr + (b64 * H + h) * NP * PP + tile)
        dkv = tl.load(dkv_ptr + (b64 * H + h) * NP * PP + tile)
        if DY_SPLIT:  # a float32 dy (from the fused norm's backward) as a high and a low part in x's dtype
            dy_hi = dy.to(x.dtype)
            dC += _dot(dy_hi, tl.trans(kv), DOT_F32) + _dot((dy - dy_hi.to(tl.float32)).to(x.dtype), tl.trans(kv), DOT_F32)
        else:
            dC += _dot(dy, tl.trans(kv), DOT_F32)
        dv = _dot(kb, dkv, DOT_F32)                                      # (BL, PP) float32
        x32 = x.to(tl.float32)
        dB += s[:, None] * _dot(x, tl.trans(dkv), DOT_F32)               # (Δ a x) dKVᵀ, the row scale outside
        dx = s[:, None] * dv
        dy32 = dy.to(tl.float32)
        if HAS_D:
            dx += tl.load(D_ptr + h).to(tl.float32) * dy32
            tl.store(part_ptr + ((tl.num_programs(1) + b64) * n_blocks + blk) * H + h,  # part[1, b, blk, h]
                     tl.sum(tl.sum(dy32 * x32, axis=1), axis=0))
        tl.store(dx_ptr + row + h * P, dx.to(dx_ptr.dtype.element_ty), mask=m_lp)
        ds = tl.sum(dv * x32, axis=1)                                    # d(Δ a) per row
        tl.store(part_ptr + (b64 * n_blocks + blk) * H + h, tl.sum(ds * delta, axis=0))  # part[0, b, blk, h]
        ddelta = ds * a
        if SOFTPLUS:
            ddelta = ddelta * tl.where(raw <= 20.0, tl.sigmoid(raw), 1.0)
        tl.store(ddt_ptr + (b64 * L + l) * H + h, ddelta, mask=ml)
    out = b64 * L * N + l[:, None] * N + n[None, :]
    tl.store(db_ptr + out, dB.to(db_ptr.dtype.element_ty), mask=m_ln)
    tl.store(dc_ptr + out, dC.to(dc_ptr.dtype.element_ty), mask=m_ln)


# ---- launch heuristics and helpers -------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _blocks(N: int, P: int):
    """(rows per block, padded N, padded P): tl.dot's operands need 16 or more along each axis."""
    return TUNING.get("BL", 64), max(16, next_power_of_2(N)), max(16, next_power_of_2(P))


def _split_rows(L: int, programs: int, BL: int, device: torch.device) -> Tuple[int, int]:
    """(splits, rows per split) of the kv kernel's sums over L: enough programs to fill the card (four per
    SM) when batch * heads alone does not, each still summing at least 4 blocks of rows."""
    splits = TUNING.get("splits") or max(1, min(cdiv(L, 4 * BL), cdiv(4 * _sms(device), programs)))
    rows = cdiv(cdiv(L, splits), BL) * BL
    return cdiv(L, rows), rows


def _dot_in_float32(t: Tensor) -> bool:
    """float32 (and float64) inputs multiply exactly; bfloat16 under Triton's interpreter too (its tl.dot
    returns garbage for bfloat16 operands: see ops._dot_in_float32)."""
    return t.dtype in (torch.float32, torch.float64) or (_INTERPRETED and t.dtype == torch.bfloat16)


def _rowwise(t: Tensor) -> Tensor:
    """t with a contiguous last axis (the kernels' channel stride is 1): views of a projection pass as they are."""
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def _kv(v: Tensor, dt: Optional[Tensor], a: Optional[Tensor], bias: Optional[Tensor], k: Tensor,
        softplus: bool) -> Tensor:
    """Σ_l k_lᵀ (Δ a v) per (image, head) (or Σ_l k_lᵀ v without dt): (b, H, NP, PP) float32, zero padded."""
    batch, L, H, P = v.shape
    N = k.shape[2]
    BL, NP, PP = _blocks(N, P)
    splits, rows = _split_rows(L, batch * H, BL, v.device)
    kv = torch.empty(splits, batch, H, NP, PP, dtype=torch.float32, device=v.device)
    scaled = dt is not None
    d_strides = dt.stride() if scaled else (0, 0, 0)
    ssd_kv_kernel[(H, batch, splits)](
        v, dt if scaled else v, a if scaled else v, bias if bias is not None else v, k, kv, L, H, N, P, rows,
        v.stride(0), v.stride(1), v.stride(2), *d_strides, k.stride(0), k.stride(1),
        SCALED=scaled, HAS_BIAS=bias is not None, SOFTPLUS=softplus, DOT_F32=_dot_in_float32(v),
        BL=BL, NP=NP, PP=PP, num_warps=4)
    return kv[0] if splits == 1 else kv.sum(0)


# ---- custom ops --------------------------------------------------------------------------------------------

def _ssd_fwd(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
             dt_bias: Optional[Tensor], z: Optional[Tensor], norm_weight: Optional[Tensor],
             norm_bias: Optional[Tensor], norm_eps: float, dt_softplus: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(y (b, L, H, P) in x's dtype, or with ``norm_weight`` LayerNorm(y) over H*P (times z if given); KV
    (b, H, NP, PP) float32 for the backward; the norm's (2, b*L) row mean and 1/std (empty without a norm)).
    x, dt, B, C, z: channels contiguous (strided rows allowed)."""
    batch, L, H, P = x.shape
    N = B.shape[2]
    kv = _kv(x, dt, A, dt_bias, B, dt_softplus)
    BL, NP, PP = _blocks(N, P)
    y = _empty(batch, L, H, P, like=x)
    common = dict(HAS_D=D is not None, DOT_F32=_dot_in_float32(x), BL=BL, NP=NP, PP=PP, num_warps=4)
    D_arg = D if D is not None else x
    if norm_weight is None:
        ssd_out_kernel[(cdiv(L, BL), H, batch)](
            x, C, kv, D_arg, y, L, H, N, P, x.stride(0), x.stride(1), x.stride(2), C.stride(0), C.stride(1), **common)
        return y, kv, x.new_empty((0,), dtype=torch.float32)
    stats = torch.empty(2, batch * L, dtype=torch.float32, device=x.device)
    z_strides = z.stride()[:3] if z is not None else (0, 0, 0)
    ssd_out_norm_kernel[(cdiv(L, BL), batch)](
        x, C, kv, D_arg, z if z is not None else x, norm_weight, norm_bias, y, stats, L, H, N, P, norm_eps,
        x.stride(0), x.stride(1), x.stride(2), C.stride(0), C.stride(1), *z_strides, HAS_Z=z is not None, **common)
    return y, kv, stats


ssd_fwd = _custom_op(_ssd_fwd)


@_fake(ssd_fwd)
def _(x, dt, A, B, C, D, dt_bias, z, norm_weight, norm_bias, norm_eps, dt_softplus):
    _, NP, PP = _blocks(B.shape[2], x.shape[3])
    stats = (2, x.shape[0] * x.shape[1]) if norm_weight is not None else (0,)
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty((x.shape[0], x.shape[2], NP, PP), dtype=torch.float32), x.new_empty(stats, dtype=torch.float32))


def _ssd_bwd(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
             dt_bias: Optional[Tensor], z: Optional[Tensor], norm_weight: Optional[Tensor],
             norm_bias: Optional[Tensor], kv: Tensor, stats: Tensor, dout: Tensor, dt_softplus: bool
             ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dx in x's dtype, d(raw dt) (b, L, H) float32, dB, dC in B's and C's dtypes, (2, H) float32 gradients of
    A and D, dz in z's dtype (empty without z), (2, H*P) float32 gradients of the norm's weight and bias (empty
    without a norm))."""
    batch, L, H, P = x.shape
    N = B.shape[2]
    BL, NP, PP = _blocks(N, P)
    n_blocks = cdiv(L, BL)
    dz, dwb = x.new_empty((0,)), x.new_empty((0,), dtype=torch.float32)
    if norm_weight is not None:  # back through the norm (and gate) first: dy, y recomputed
        dy = _empty(batch, L, H, P, like=x, dtype=torch.float32)  # kept exact: the sums over L amplify its rounding
        dz = _empty(batch, L, H, P, like=z) if z is not None else dz
        parts = torch.empty(2, batch, n_blocks, H * P, dtype=torch.float32, device=x.device)
        z_strides = z.stride()[:3] if z is not None else (0, 0, 0)
        ssd_norm_bwd_kernel[(n_blocks, batch)](
            x, C, kv, D if D is not None else x, z if z is not None else x, norm_weight, norm_bias, stats, dout, dy,
            dz if z is not None else x, parts, L, H, N, P, x.stride(0), x.stride(1), x.stride(2), C.stride(0),
            C.stride(1), *z_strides, HAS_D=D is not None, HAS_Z=z is not None, DOT_F32=_dot_in_float32(x),
            BL=BL, NP=NP, PP=PP, num_warps=4)
        dwb = parts.sum((1, 2))
    else:
        dy = dout
    dkv = _kv(dy, None, None, None, C, False)
    dx = _empty(batch, L, H, P, like=x)
    ddt = _empty(batch, L, H, like=x, dtype=torch.float32)
    dB, dC = _empty(batch, L, N, like=B), _empty(batch, L, N, like=C)
    part = torch.zeros(2, batch, n_blocks, H, dtype=torch.float32, device=x.device)
    ssd_rows_bwd_kernel[(n_blocks, batch)](
        x, dt, A, dt_bias if dt_bias is not None else A, B, C, D if D is not None else A, kv, dkv, dy,
        dx, ddt, dB, dC, part, L, H, N, P, x.stride(0), x.stride(1), x.stride(2), *dt.stride(),
        B.stride(0), B.stride(1), C.stride(0), C.stride(1),
        HAS_D=D is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=dt_softplus, DOT_F32=_dot_in_float32(x),
        DY_SPLIT=dy.dtype == torch.float32 and not _dot_in_float32(x), BL=BL, NP=NP, PP=PP, num_warps=4)
    return dx, ddt, dB, dC, part.sum((1, 2)), dz, dwb


ssd_bwd = _custom_op(_ssd_bwd)


@_fake(ssd_bwd)
def _(x, dt, A, B, C, D, dt_bias, z, norm_weight, norm_bias, kv, stats, dout, dt_softplus):
    batch, L, H, P = x.shape
    dz = torch.empty_like(z, memory_format=torch.contiguous_format) if z is not None else x.new_empty((0,))
    dwb = x.new_empty((2, H * P) if norm_weight is not None else (0,), dtype=torch.float32)
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty((batch, L, H), dtype=torch.float32), B.new_empty(B.shape), C.new_empty(C.shape),
            x.new_empty((2, H), dtype=torch.float32), dz, dwb)


_OPS = {"ssd_fwd": (ssd_fwd, _ssd_fwd), "ssd_bwd": (ssd_bwd, _ssd_bwd)}


def _op(name: str):
    """The custom op or its Python body (:func:`.ops.op_or_body`)."""
    return op_or_body(*_OPS[name])


# ---- the backend protocol of ssm_kernels.ssd ---------------------------------------------------------------

def non_causal_ssd_fwd(inputs, flags):
    x, dt, A, B, C, D, dt_bias, z, norm_weight, norm_bias = inputs
    dt_softplus, norm_eps = flags
    x, dt, B, C = _rowwise(x), _rowwise(dt), _rowwise(B), _rowwise(C)
    z = _rowwise(z) if z is not None else None
    A = A.contiguous()
    y, kv, stats = _op("ssd_fwd")(x, dt, A, B, C, D, dt_bias, z, norm_weight, norm_bias, norm_eps, dt_softplus)
    return (y,), (x, dt, A, B, C, D, dt_bias, z, norm_weight, norm_bias, kv, stats)


def non_causal_ssd_bwd(saved, dy, flags, needs_grad):
    x, dt, A, B, C, D, dt_bias, z, norm_weight, norm_bias, kv, stats = saved
    dx, ddt, dB, dC, dAD, dz, dwb = _op("ssd_bwd")(x, dt, A, B, C, D, dt_bias, z, norm_weight, norm_bias, kv, stats,
                                                    dy.contiguous(), flags[0])
    norm = norm_weight is not None
    grads = [dx, ddt.to(dt.dtype), dAD[0].to(A.dtype), dB, dC,
             None if D is None else dAD[1].to(D.dtype),
             None if dt_bias is None else ddt.sum((0, 1)).to(dt_bias.dtype),
             dz if z is not None else None,
             dwb[0].to(norm_weight.dtype) if norm else None, dwb[1].to(norm_bias.dtype) if norm else None]
    return [g if need else None for g, need in zip(grads, needs_grad)]

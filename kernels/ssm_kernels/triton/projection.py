"""Gradients through the low-rank step-size projection, in one kernel.

The fused scan computes each direction's step sizes as delta[p, k, :] = W[k] @ low[p, k, :] (W[k]:
(Dg, R), VMamba's dt_proj) and its backward writes g = d(loss)/d(delta) as (K, rows, Dg). From g:

    d_low[p, k, r] = sum_d g[k, p, d] W[k, d, r]          d_W[k, d, r] = sum_p g[k, p, d] low[p, k, r]

Done with PyTorch this was two batched matmuls plus the copies that pad the rank to a multiple of 8
(at R = 6 cuBLAS fell back to a slow kernel) and transpose the results: ~10 launches per backward, and
0.77 ms at VMamba-T's stage 1 on an H100. Here a program takes a block of positions of one direction,
walks the channels in blocks, and does both products per block on the tensor cores (the rank padded
to 16 in registers): g is read once; d_W's partial sums go out by atomic adds.

Disjoint paths (EfficientVMamba) whose directions read one low-rank map (a stride-0 direction axis)
give g as ONE map (1, rows, Dg), each position written by the direction that visits it: then a
program takes a block of one direction's steps and finds their positions in the paths' index.
"""
from typing import Optional

import torch
import triton
import triton.language as tl

from .launch import Launcher, cdiv, next_power_of_2


@Launcher
@triton.jit
def projection_grads_kernel(g_ptr, low_ptr, w_ptr, dlow_ptr, dw_ptr, idx_ptr, rows, Dg, R, L, P,
                            sg_k, sl_p, sl_k, sdl_p, sdl_k, HAS_INDEX: tl.constexpr,
                            DOT_F32: tl.constexpr, BP: tl.constexpr, BC: tl.constexpr, RP: tl.constexpr):
    k = tl.program_id(0)
    p = (tl.program_id(1) * BP + tl.arange(0, BP)).to(tl.int64)
    pmask = p < rows
    if HAS_INDEX:  # rows are (batch, step) of direction k: their positions in the (batch, P) map
        p = (p // L) * P + tl.load(idx_ptr + k * L + p % L, mask=pmask, other=0)
    r = tl.arange(0, RP)
    m_pr = pmask[:, None] & (r < R)[None, :]
    low = tl.load(low_ptr + k * sl_k + p[:, None] * sl_p + r[None, :], mask=m_pr, other=0.0)    # (BP, RP)
    d_low = tl.zeros([BP, RP], tl.float32)
    g_at = g_ptr + k.to(tl.int64) * sg_k
    for c0 in range(0, Dg, BC):
        c = c0 + tl.arange(0, BC)
        m_cr = (c < Dg)[:, None] & (r < R)[None, :]
        g = tl.load(g_at + p[:, None] * Dg + c[None, :], mask=pmask[:, None] & (c < Dg)[None, :], other=0.0)
        w = tl.load(w_ptr + (k * Dg + c[:, None]) * R + r[None, :], mask=m_cr, other=0.0)          # (BC, RP)
        if DOT_F32:
            g32 = g.to(tl.float32)
            d_low += tl.dot(g32, w.to(tl.float32), input_precision="ieee")
            d_w = tl.dot(tl.trans(g32), low.to(tl.float32), input_precision="ieee")
        else:  # half-precision gradient and factor (autocast): products in their precision, float32 sums
            d_low += tl.dot(g, w.to(g.dtype))
            d_w = tl.dot(tl.trans(g), low.to(g.dtype))
        tl.atomic_add(dw_ptr + (k * Dg + c[:, None]) * R + r[None, :], d_w, mask=m_cr, sem="relaxed")
    tl.store(dlow_ptr + k * sdl_k + p[:, None] * sdl_p + r[None, :], d_low.to(dlow_ptr.dtype.element_ty), mask=m_pr)


def projection_grads(g: torch.Tensor, low: torch.Tensor, weight: torch.Tensor, d_weight: torch.Tensor,
                     dot_f32: bool, index: Optional[torch.Tensor] = None,
                     out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """d_low (low's shape and dtype) from g (K, rows, Dg), contiguous; low (..., K, R) with its rank
    axis contiguous (a view of a projection's output is fine); adds d_W into ``d_weight`` (K, Dg, R),
    float32, which the caller zeroes. Given the disjoint paths' ``index`` (K, L), g is one map
    (1, rows, Dg) and d_low is zero where a direction does not visit the position. ``out``: where to write
    d_low (low's shape and dtype, e.g. the slice of a whole projection's gradient), else a new tensor."""
    K, R = weight.shape[0], weight.shape[2]
    rows, Dg = g.shape[1:]
    low3 = low.reshape(rows, K, R)
    if low3.stride(2) != 1:
        low3 = low3.contiguous()
    if out is None:
        d_low = (torch.zeros if index is not None else torch.empty)(low.shape, dtype=low.dtype, device=low.device)
    else:
        d_low = out.zero_() if index is not None else out
    dl3 = d_low.view(rows, K, R)
    L, P = (index.shape[1], rows // low.shape[0]) if index is not None else (1, 1)
    programs = low.shape[0] * L if index is not None else rows  # (batch, step) of each direction, or positions
    BP, BC, RP = 128, 64, max(16, next_power_of_2(R))
    projection_grads_kernel[(K, cdiv(programs, BP))](
        g, low3, weight.contiguous(), dl3, d_weight, index if index is not None else g, programs, Dg, R, L, P,
        0 if index is not None else rows * Dg, low3.stride(0), low3.stride(1), dl3.stride(0), dl3.stride(1),
        HAS_INDEX=index is not None, DOT_F32=dot_f32, BP=BP, BC=BC, RP=RP, num_warps=4)
    return d_low

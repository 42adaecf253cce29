"""Triton kernels of Spatial-Mamba's observation, out-norm and gate (:mod:`ssm_kernels.observe`), forward and backward.

A program owns BM positions of one image and every channel, walking the channels in blocks of BE: the tile is
(BM positions, BE channels). h and u are channels-first, so their loads run along the positions (coalesced for
BM >= 32 float32s); z, the output gradient and the outputs are channels-last, loaded and stored along the channels
(Triton converts the tile's layout between the two).

Forward: a first walk over the channel blocks computes y = h * C + D * u and each position's mean and variance,
merged block by block (Chan et al.'s pairwise update: no cancellation of a large mean); a second walk recomputes y
(from the cache) and writes LayerNorm(y) * SiLU(z). With E in one block (E <= 256) there is one walk. The mean and
1/std are kept (float32) for the backward.

Backward: a first walk recomputes y, the normalised map and SiLU(z), writes dz and gathers the LayerNorm adjoint's
two row means (of g = dout * SiLU(z) * weight and of g * xhat) and the weight and bias gradients; a second walk
(the same tile, when E is one block) writes dy = rstd * (g - mean(g) - xhat * mean(g * xhat)) as dh = dy * C and
du = dy * D, sums dC = sum_E dy * h per position and dD = sum_L dy * u per channel. Per-channel sums (weight, bias,
D) go to one of up to 256 float32 rows by atomic adds (row = program id modulo the rows: less contention on the same
addresses), summed after the kernel.

Registered as ``torch.library`` custom ops with fake implementations, as the scan ops are.
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import Launcher, cdiv, next_power_of_2
from .ops import _custom_op, _empty, _fake, _poisoned, op_or_body

#: Launch overrides for tools/bench_observe.py's sweeps: "fwd" / "bwd" -> dict(BM=, BE=, warps=).
TUNING = {}


@triton.jit
def _aligned(L, sh_b, sh_e, su_b, su_e, VL: tl.constexpr, VH: tl.constexpr, VU: tl.constexpr):
    """The map size and the channels-first strides, passed divided by VL, VH, VU (:func:`_vecs`), multiplied back: so
    Triton, which by itself knows an integer argument's divisibility only by 16, knows that each of h's and u's rows
    starts aligned and loads them as vectors along the positions (at L = 196, Spatial-Mamba-T's stage 3, too)."""
    return L * VL, sh_b * VH, sh_e * VH, su_b * VU, su_e * VU


@triton.jit
def _channels(blk, lmask, E, BE: tl.constexpr):
    """Channel block ``blk``: its channels, their mask and the tile's mask. (Apart from the loads: an index returned
    by a helper that takes a pointer makes that pointer look written to ``torch.compile``; see ``kernels.py``.)"""
    e = blk * BE + tl.arange(0, BE)
    emask = e < E
    return e, emask, lmask[:, None] & emask[None, :]


@triton.jit
def _observe(h_at, u_at, d_ptr, c, l, e, emask, m, sh_e, sh_l, su_e, su_l):
    """The tile (y = h * C + D * u, h, u, D), float32, 0 outside the mask."""
    h = tl.load(h_at + e[None, :] * sh_e + l[:, None] * sh_l, mask=m, other=0.0).to(tl.float32)
    u = tl.load(u_at + e[None, :] * su_e + l[:, None] * su_l, mask=m, other=0.0).to(tl.float32)
    d = tl.load(d_ptr + e, mask=emask, other=0.0).to(tl.float32)
    return h * c[:, None] + u * d[None, :], h, u, d


@triton.jit
def _gated(y, mean, rstd, m, e, emask, z_at, l, sz_l, w_ptr, b_ptr):
    """(LayerNorm(y), xhat, SiLU(z), sigmoid(z), z, weight) on the tile, float32."""
    xhat = tl.where(m, (y - mean[:, None]) * rstd[:, None], 0.0)
    w = tl.load(w_ptr + e, mask=emask, other=0.0).to(tl.float32)
    ln = xhat * w[None, :] + tl.load(b_ptr + e, mask=emask, other=0.0).to(tl.float32)[None, :]
    zf = tl.load(z_at + l[:, None] * sz_l + e[None, :], mask=m, other=0.0).to(tl.float32)
    sg = tl.sigmoid(zf)
    return ln, xhat, zf * sg, sg, zf, w


@triton.jit
def observe_norm_gate_fwd_kernel(h_ptr, c_ptr, u_ptr, d_ptr, w_ptr, b_ptr, z_ptr, out_ptr, stats_ptr, L, E, rows,
                                 sh_b, sh_e, sh_l, sc_b, sc_l, su_b, su_e, su_l, sz_b, sz_l, eps,
                                 BM: tl.constexpr, BE: tl.constexpr, ONE_BLOCK: tl.constexpr, VL: tl.constexpr,
                                 VH: tl.constexpr, VU: tl.constexpr):
    L, sh_b, sh_e, su_b, su_e = _aligned(L, sh_b, sh_e, su_b, su_e, VL, VH, VU)
    b = tl.program_id(1).to(tl.int64)
    l = tl.program_id(0) * BM + tl.arange(0, BM)
    lmask = l < L
    h_at, u_at, z_at, out_at = h_ptr + b * sh_b, u_ptr + b * su_b, z_ptr + b * sz_b, out_ptr + b * L * E
    c = tl.load(c_ptr + b * sc_b + l * sc_l, mask=lmask, other=0.0).to(tl.float32)
    if ONE_BLOCK:  # every channel in the tile: one walk
        e, emask, m = _channels(0, lmask, E, BE)
        y, _, _, _ = _observe(h_at, u_at, d_ptr, c, l, e, emask, m, sh_e, sh_l, su_e, su_l)
        mean = tl.sum(y, axis=1) / E
        yc = tl.where(m, y - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(yc * yc, axis=1) / E + eps)
        ln, _, silu, _, _, _ = _gated(y, mean, rstd, m, e, emask, z_at, l, sz_l, w_ptr, b_ptr)
        tl.store(out_at + l[:, None] * E + e[None, :], (ln * silu).to(out_ptr.dtype.element_ty), mask=m)
    else:
        mean = tl.zeros([BM], tl.float32)
        m2 = tl.zeros([BM], tl.float32)   # sum of squared deviations from the running mean
        count = tl.zeros([BM], tl.float32)
        for blk in range(tl.cdiv(E, BE)):
            e, emask, m = _channels(blk, lmask, E, BE)
            y, _, _, _ = _observe(h_at, u_at, d_ptr, c, l, e, emask, m, sh_e, sh_l, su_e, su_l)
            n_b = tl.sum(emask.to(tl.float32), axis=0)
            mean_b = tl.sum(y, axis=1) / n_b
            yc = tl.where(m, y - mean_b[:, None], 0.0)
            delta = mean_b - mean
            total = count + n_b
            mean += delta * (n_b / total)
            m2 += tl.sum(yc * yc, axis=1) + delta * delta * (count * n_b / total)
            count = total
        rstd = 1.0 / tl.sqrt(m2 / E + eps)
        for blk in range(tl.cdiv(E, BE)):
            e, emask, m = _channels(blk, lmask, E, BE)
            y, _, _, _ = _observe(h_at, u_at, d_ptr, c, l, e, emask, m, sh_e, sh_l, su_e, su_l)
            ln, _, silu, _, _, _ = _gated(y, mean, rstd, m, e, emask, z_at, l, sz_l, w_ptr, b_ptr)
            tl.store(out_at + l[:, None] * E + e[None, :], (ln * silu).to(out_ptr.dtype.element_ty), mask=m)
    row = b * L + l
    tl.store(stats_ptr + row, mean, mask=lmask)
    tl.store(stats_ptr + rows + row, rstd, mask=lmask)


@triton.jit
def _bwd_block(h_at, u_at, d_ptr, w_ptr, b_ptr, z_at, g_at, dz_at, part_at, c, mean, rstd, l, e, emask, m, E,
               sh_e, sh_l, su_e, su_l, sz_l, FIRST: tl.constexpr):
    """A channel block's tile recomputed: (g = dout * SiLU(z) * weight, xhat, h, u, D). On the first walk over it
    (FIRST) also writes dz and adds the weight and bias gradients."""
    y, h, u, d = _observe(h_at, u_at, d_ptr, c, l, e, emask, m, sh_e, sh_l, su_e, su_l)
    ln, xhat, silu, sg, zf, w = _gated(y, mean, rstd, m, e, emask, z_at, l, sz_l, w_ptr, b_ptr)
    at = l[:, None] * E + e[None, :]
    dout = tl.load(g_at + at, mask=m, other=0.0).to(tl.float32)
    dln = dout * silu
    if FIRST:
        dz = dout * ln * (sg * (1.0 + zf * (1.0 - sg)))
        tl.store(dz_at + at, dz.to(dz_at.dtype.element_ty), mask=m)
        tl.atomic_add(part_at + e, tl.sum(dln * xhat, axis=0), mask=emask, sem="relaxed")
        tl.atomic_add(part_at + E + e, tl.sum(dln, axis=0), mask=emask, sem="relaxed")
    return dln * w[None, :], xhat, h, u, d


@triton.jit
def _bwd_inputs(g, xhat, h, u, d, c, mean_g, mean_gx, rstd, e, emask, m, l, dh_at, du_at, part_at, E,
                sdh_e, sdh_l, sdu_e, sdu_l):
    """dy through the LayerNorm adjoint on the tile; writes dh = dy * C and du = dy * D, adds dD = sum_L dy * u;
    returns the tile's part of dC = sum_E dy * h per position."""
    dy = tl.where(m, (g - mean_g[:, None] - xhat * mean_gx[:, None]) * rstd[:, None], 0.0)
    tl.store(dh_at + e[None, :] * sdh_e + l[:, None] * sdh_l, (dy * c[:, None]).to(dh_at.dtype.element_ty), mask=m)
    tl.store(du_at + e[None, :] * sdu_e + l[:, None] * sdu_l, (dy * d[None, :]).to(du_at.dtype.element_ty), mask=m)
    tl.atomic_add(part_at + 2 * E + e, tl.sum(dy * u, axis=0), mask=emask, sem="relaxed")
    return tl.sum(dy * h, axis=1)


@triton.jit
def observe_norm_gate_bwd_kernel(h_ptr, c_ptr, u_ptr, d_ptr, w_ptr, b_ptr, z_ptr, stats_ptr, g_ptr,
                                 dh_ptr, dc_ptr, du_ptr, dz_ptr, part_ptr, L, E, rows, parts,
                                 sh_b, sh_e, sh_l, sc_b, sc_l, su_b, su_e, su_l, sz_b, sz_l,
                                 sdh_b, sdh_e, sdh_l, sdu_b, sdu_e, sdu_l,
                                 BM: tl.constexpr, BE: tl.constexpr, ONE_BLOCK: tl.constexpr, VL: tl.constexpr,
                                 VH: tl.constexpr, VU: tl.constexpr):
    L, sh_b, sh_e, su_b, su_e = _aligned(L, sh_b, sh_e, su_b, su_e, VL, VH, VU)
    sdh_b, sdh_e, sdu_b, sdu_e = sdh_b * VH, sdh_e * VH, sdu_b * VU, sdu_e * VU
    b = tl.program_id(1).to(tl.int64)
    l = tl.program_id(0) * BM + tl.arange(0, BM)
    lmask = l < L
    row = b * L + l
    h_at, u_at, z_at = h_ptr + b * sh_b, u_ptr + b * su_b, z_ptr + b * sz_b
    g_at, dz_at = g_ptr + b * L * E, dz_ptr + b * L * E
    dh_at, du_at = dh_ptr + b * sdh_b, du_ptr + b * sdu_b
    part_at = part_ptr + ((tl.program_id(1) * tl.num_programs(0) + tl.program_id(0)) % parts) * 3 * E
    c = tl.load(c_ptr + b * sc_b + l * sc_l, mask=lmask, other=0.0).to(tl.float32)
    mean = tl.load(stats_ptr + row, mask=lmask, other=0.0)
    rstd = tl.load(stats_ptr + rows + row, mask=lmask, other=0.0)
    if ONE_BLOCK:  # every channel in the tile: one walk
        e, emask, m = _channels(0, lmask, E, BE)
        g, xhat, h, u, d = _bwd_block(h_at, u_at, d_ptr, w_ptr, b_ptr, z_at, g_at, dz_at, part_at, c, mean, rstd, l,
                                      e, emask, m, E, sh_e, sh_l, su_e, su_l, sz_l, True)
        dc = _bwd_inputs(g, xhat, h, u, d, c, tl.sum(g, axis=1) / E, tl.sum(g * xhat, axis=1) / E, rstd, e, emask, m,
                         l, dh_at, du_at, part_at, E, sdh_e, sdh_l, sdu_e, sdu_l)
    else:
        # walk 1: dz, the weight and bias gradients, the row means of the LayerNorm adjoint
        mean_g = tl.zeros([BM], tl.float32)
        mean_gx = tl.zeros([BM], tl.float32)
        for blk in range(tl.cdiv(E, BE)):
            e, emask, m = _channels(blk, lmask, E, BE)
            g, xhat, _, _, _ = _bwd_block(h_at, u_at, d_ptr, w_ptr, b_ptr, z_at, g_at, dz_at, part_at, c, mean, rstd,
                                          l, e, emask, m, E, sh_e, sh_l, su_e, su_l, sz_l, True)
            mean_g += tl.sum(g, axis=1)
            mean_gx += tl.sum(g * xhat, axis=1)
        mean_g = mean_g / E
        mean_gx = mean_gx / E
        # walk 2: dh, du, dC, dD
        dc = tl.zeros([BM], tl.float32)
        for blk in range(tl.cdiv(E, BE)):
            e, emask, m = _channels(blk, lmask, E, BE)
            g, xhat, h, u, d = _bwd_block(h_at, u_at, d_ptr, w_ptr, b_ptr, z_at, g_at, dz_at, part_at, c, mean, rstd,
                                          l, e, emask, m, E, sh_e, sh_l, su_e, su_l, sz_l, False)
            dc += _bwd_inputs(g, xhat, h, u, d, c, mean_g, mean_gx, rstd, e, emask, m, l, dh_at, du_at, part_at, E,
                              sdh_e, sdh_l, sdu_e, sdu_l)
    tl.store(dc_ptr + row, dc, mask=lmask)


_FWD, _BWD = Launcher(observe_norm_gate_fwd_kernel), Launcher(observe_norm_gate_bwd_kernel)


def _blocks(E: int, which: str):
    """(BM, BE, warps): blocks of all the channels up to 256 (one walk), else of 128; 32 positions (a 128-byte line of
    a float32 channels-first row) by them in the forward, 32 elements of the tile a thread; the backward, which holds
    more of the tile at once, 16 a thread (at 32, 255 registers and spills in sm_90 SASS; 160-185 at 16), with 16
    positions for 256 channels. Then TUNING[which]."""
    BE = max(16, next_power_of_2(E))
    if BE > 256:
        BE = 128
    BM = 32 if which == "fwd" or BE <= 128 else 16
    per_thread = 32 if which == "fwd" else 16
    tuned = TUNING.get(which, {})
    BM, BE = tuned.get("BM", BM), tuned.get("BE", BE)
    return BM, BE, tuned.get("warps", max(1, min(8, BM * BE // (32 * per_thread))))


def _vec(*ints: int) -> int:
    """The largest of 16, 8, 4, 2, 1 that divides every one of ``ints``."""
    return next(v for v in (16, 8, 4, 2, 1) if all(i % v == 0 for i in ints))


def _vecs(L: int, h: Tensor, u: Tensor, dh: Tensor = None, du: Tensor = None) -> dict:
    """The kernels' VL, VH, VU: what divides L, and h's (and dh's), u's (and du's) batch and channel strides with L
    (see ``_aligned``)."""
    strides = lambda *ts: [s for t in ts if t is not None for s in t.stride()[:2]]
    return dict(VL=_vec(L), VH=_vec(L, *strides(h, dh)), VU=_vec(L, *strides(u, du)))


def _div(strides, v: int):
    """(batch, channel) strides divided by v (which divides them), the position stride as it is."""
    return strides[0] // v, strides[1] // v, strides[2]


def _check_offsets(h: Tensor, u: Tensor, z: Tensor) -> None:
    for name, t in (("h", h), ("u", u), ("z", z)):
        if sum((n - 1) * abs(s) for n, s in zip(t.shape[1:], t.stride()[1:])) >= 2 ** 31:
            raise ValueError(f"observe_norm_gate: one image of {name} {tuple(t.shape)} spans 2**31 elements or more "
                             "(split the map)")


def _observe_norm_gate_fwd(h: Tensor, C: Tensor, u: Tensor, D: Tensor, weight: Tensor, bias: Tensor, z: Tensor,
                           eps: float, out_dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """(out (B, L, E) contiguous in ``out_dtype``, (2, B * L) float32 mean and 1/std). h, u (B, E, L) and C (B, 1, L)
    any strides; z (B, L, E) with contiguous channels; D, weight, bias (E,) contiguous."""
    batch, E, L = h.shape
    _check_offsets(h, u, z)
    out = _empty(batch, L, E, like=h, dtype=out_dtype)
    stats = _empty(2, batch * L, like=h, dtype=torch.float32)
    BM, BE, warps = _blocks(E, "fwd")
    v = _vecs(L, h, u)
    _FWD[(cdiv(L, BM), batch)](h, C, u, D, weight, bias, z, out, stats, L // v["VL"], E, batch * L,
                               *_div(h.stride(), v["VH"]), C.stride(0), C.stride(2), *_div(u.stride(), v["VU"]),
                               z.stride(0), z.stride(1), eps, BM=BM, BE=BE, ONE_BLOCK=BE >= E, **v, num_warps=warps)
    return out, stats


observe_norm_gate_fwd_op = _custom_op(_observe_norm_gate_fwd)


@_fake(observe_norm_gate_fwd_op)
def _(h, C, u, D, weight, bias, z, eps, out_dtype):
    batch, E, L = h.shape
    return h.new_empty((batch, L, E), dtype=out_dtype), h.new_empty((2, batch * L), dtype=torch.float32)


def _observe_norm_gate_bwd(h: Tensor, C: Tensor, u: Tensor, D: Tensor, weight: Tensor, bias: Tensor, z: Tensor,
                           stats: Tensor, grad: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dh like h, dC (B, 1, L) float32, du like u (its strides when dense), dz (B, L, E) in z's dtype, (3, E)
    float32 gradients of weight, bias and D). grad (B, L, E) contiguous."""
    batch, E, L = h.shape
    _check_offsets(h, u, z)
    dh, du = _like(h), _like(u)
    dc = _empty(batch, 1, L, like=h, dtype=torch.float32)
    dz = _empty(batch, L, E, like=z)
    BM, BE, warps = _blocks(E, "bwd")
    grid = (cdiv(L, BM), batch)
    parts = min(256, grid[0] * grid[1])
    part = torch.zeros(parts, 3, E, dtype=torch.float32, device=h.device)
    v = _vecs(L, h, u, dh, du)
    _BWD[grid](h, C, u, D, weight, bias, z, stats, grad, dh, dc, du, dz, part, L // v["VL"], E, batch * L, parts,
               *_div(h.stride(), v["VH"]), C.stride(0), C.stride(2), *_div(u.stride(), v["VU"]), z.stride(0),
               z.stride(1), *_div(dh.stride(), v["VH"]), *_div(du.stride(), v["VU"]), BM=BM, BE=BE, ONE_BLOCK=BE >= E,
               **v, num_warps=warps)
    return dh, dc, du, dz, part.sum(0)


def _like(t: Tensor) -> Tensor:
    """An output buffer shaped and strided like t (contiguous unless t is dense), NaN-filled as ``_empty``'s."""
    return _poisoned(torch.empty_like(t))


observe_norm_gate_bwd_op = _custom_op(_observe_norm_gate_bwd)


@_fake(observe_norm_gate_bwd_op)
def _(h, C, u, D, weight, bias, z, stats, grad):
    batch, E, L = h.shape
    return (torch.empty_like(h), h.new_empty((batch, 1, L), dtype=torch.float32), torch.empty_like(u),
            z.new_empty((batch, L, E)), h.new_empty((3, E), dtype=torch.float32))


# ---- the backend protocol of ssm_kernels.observe ------------------------------------------------------------

_OPS = {"fwd": (observe_norm_gate_fwd_op, _observe_norm_gate_fwd),
        "bwd": (observe_norm_gate_bwd_op, _observe_norm_gate_bwd)}


def _op(name: str):
    """The custom op or its Python body (:func:`.ops.op_or_body`)."""
    return op_or_body(*_OPS[name])


def _gate(z: Tensor, batch: int, length: int, channels: int) -> Tensor:
    """z as (B, L, E) with contiguous channels: a view of a chunk of the in-projection, else a copy."""
    z = z.reshape(batch, length, channels)
    return z if z.stride(-1) == 1 else z.contiguous()


def observe_norm_gate_fwd(inputs, flags):
    h, C, u, D, weight, bias, z = inputs
    eps, out_dtype = flags
    batch, E, L = h.shape
    out, stats = _op("fwd")(h, C, u, D.contiguous(), weight.contiguous(), bias.contiguous(), _gate(z, batch, L, E),
                            eps, out_dtype)
    return out.view(z.shape), stats


def observe_norm_gate_bwd(inputs, stats, grad, flags, needs_grad):
    h, C, u, D, weight, bias, z = inputs
    batch, E, L = h.shape
    dh, dc, du, dz, dp = _op("bwd")(h, C, u, D.contiguous(), weight.contiguous(), bias.contiguous(),
                                    _gate(z, batch, L, E), stats, grad.reshape(batch, L, E).contiguous())
    return [dh, dc, du, dp[2], dp[0], dp[1], dz.view(z.shape)]

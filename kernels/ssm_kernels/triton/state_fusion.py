"""Triton kernels of the structure-aware state fusion (see :mod:`ssm_kernels.state_fusion`), alone and with
the observation (``state_fusion_observe``: further down).

A program owns one (batch, channel) plane and a block of BLOCK positions of it. Forward: for each of
the K dilations and 9 taps, the source position clamped to the map (replicate padding without a padded
copy), out += alpha[k] * weight[k, c, tap] * h[source]; the fused map is written once, in float32.

Backward: the gradient of h is scattered: every output position adds alpha[k] * weight[k, c, tap] *
grad[q] at its tap's clamped source, with float32 atomic adds (the clamp makes the adjoint at the
borders more than a flipped stencil; the scatter is exact everywhere). The weight and alpha gradients
are per-program block sums of grad[q] * h[source] per tap, added atomically.
"""
from __future__ import annotations

import functools

from typing import List, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import Launcher, cdiv, next_power_of_2
from .ops import _custom_op, _empty, _fake, op_or_body

BLOCK = 256


@triton.jit
def _source(r, c, i, j, d, H, W):
    """Flat index of tap (i, j) of a dilation-d 3x3 stencil at (r, c), clamped to the H x W map."""
    rr = tl.minimum(tl.maximum(r + (i - 1) * d, 0), H - 1)
    cc = tl.minimum(tl.maximum(c + (j - 1) * d, 0), W - 1)
    return rr * W + cc


@triton.jit
def state_fusion_fwd_kernel(h_ptr, w_ptr, alpha_ptr, dil_ptr, out_ptr, C, H, W,
                            K: tl.constexpr, BLOCK: tl.constexpr):
    plane = tl.program_id(0).to(tl.int64)          # batch * C + channel
    channel = tl.program_id(0) % C
    q = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = q < H * W
    r, c = q // W, q % W
    base = h_ptr + plane * H * W
    acc = tl.zeros([BLOCK], tl.float32)
    for k in tl.static_range(K):
        d = tl.load(dil_ptr + k)
        scale = tl.load(alpha_ptr + k).to(tl.float32)
        for i in tl.static_range(3):
            for j in tl.static_range(3):
                w = tl.load(w_ptr + ((k * C + channel) * 3 + i) * 3 + j).to(tl.float32)
                v = tl.load(base + _source(r, c, i, j, d, H, W), mask=mask, other=0.0).to(tl.float32)
                acc += (scale * w) * v
    tl.store(out_ptr + plane * H * W + q, acc, mask=mask)


@triton.jit
def state_fusion_bwd_kernel(h_ptr, w_ptr, alpha_ptr, dil_ptr, g_ptr, dh_ptr, dw_ptr, dalpha_ptr, C, H, W,
                            K: tl.constexpr, BLOCK: tl.constexpr):
    plane = tl.program_id(0).to(tl.int64)
    channel = tl.program_id(0) % C
    q = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = q < H * W
    r, c = q // W, q % W
    base = plane * H * W
    g = tl.load(g_ptr + base + q, mask=mask, other=0.0).to(tl.float32)
    for k in tl.static_range(K):
        d = tl.load(dil_ptr + k)
        scale = tl.load(alpha_ptr + k).to(tl.float32)
        dalpha = 0.0
        for i in tl.static_range(3):
            for j in tl.static_range(3):
                w_at = ((k * C + channel) * 3 + i) * 3 + j
                w = tl.load(w_ptr + w_at).to(tl.float32)
                src = _source(r, c, i, j, d, H, W)
                tl.atomic_add(dh_ptr + base + src, (scale * w) * g, mask=mask, sem="relaxed")
                v = tl.load(h_ptr + base + src, mask=mask, other=0.0).to(tl.float32)
                s = tl.sum(g * v, axis=0)
                tl.atomic_add(dw_ptr + w_at, scale * s, sem="relaxed")
                dalpha += w * s
        tl.atomic_add(dalpha_ptr + k, dalpha, sem="relaxed")


_FWD, _BWD = Launcher(state_fusion_fwd_kernel), Launcher(state_fusion_bwd_kernel)


def _dilations(dilations: Sequence[int], device) -> Tensor:
    """The dilations as an int32 tensor on ``device``, made once: a tensor built from a list is a blocking copy
    (the host waits for the GPU to drain), once a block in Spatial-Mamba before this was cached."""
    dilations = tuple(int(d) for d in dilations)
    if torch.jit.is_tracing():  # a tensor kept from an earlier trace is unknown to this one
        return torch.tensor(dilations, dtype=torch.int32, device=device)
    return _dilations_on(dilations, torch.device(device))


@functools.lru_cache(maxsize=None)
def _dilations_on(dilations: Tuple[int, ...], device: torch.device) -> Tensor:
    return torch.tensor(dilations, dtype=torch.int32, device=device)


def _state_fusion_fwd(h: Tensor, weight: Tensor, alpha: Tensor, dilations: List[int]) -> Tensor:
    """The fused map (B, C, H, W), float32."""
    h, weight, alpha = h.contiguous(), weight.contiguous(), alpha.contiguous()
    batch, channels, height, width = map(int, h.shape)  # int(): under torch.jit.trace sizes are 0-dim tensors
    out = torch.empty(h.shape, dtype=torch.float32, device=h.device)
    _FWD[(batch * channels, cdiv(height * width, BLOCK))](
        h, weight, alpha, _dilations(dilations, h.device), out, channels, height, width,
        K=len(dilations), BLOCK=BLOCK)
    return out


state_fusion_fwd_op = _custom_op(_state_fusion_fwd)


@_fake(state_fusion_fwd_op)
def _(h, weight, alpha, dilations):
    return h.new_empty(h.shape, dtype=torch.float32)


def _state_fusion_bwd(h: Tensor, weight: Tensor, alpha: Tensor, dilations: List[int],
                      grad: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of h, weight and alpha, float32."""
    h, weight, alpha, grad = h.contiguous(), weight.contiguous(), alpha.contiguous(), grad.contiguous()
    batch, channels, height, width = map(int, h.shape)  # int(): under torch.jit.trace sizes are 0-dim tensors
    dh = torch.zeros(h.shape, dtype=torch.float32, device=h.device)
    dw = torch.zeros(weight.shape, dtype=torch.float32, device=h.device)
    dalpha = torch.zeros(alpha.shape, dtype=torch.float32, device=h.device)
    _BWD[(batch * channels, cdiv(height * width, BLOCK))](
        h, weight, alpha, _dilations(dilations, h.device), grad, dh, dw, dalpha, channels, height, width,
        K=len(dilations), BLOCK=BLOCK)
    return dh, dw, dalpha


state_fusion_bwd_op = _custom_op(_state_fusion_bwd)


@_fake(state_fusion_bwd_op)
def _(h, weight, alpha, dilations, grad):
    return tuple(t.new_empty(t.shape, dtype=torch.float32) for t in (h, weight, alpha))


# ---- fusion + observation: y = C * fused(h) + D * u, written channels-last -----------------------------
#
# A program owns one image, a block of BC channels and P * 32 positions, as a [P, BC, 32] tile: the 32 lanes
# of a warp hold 32 consecutive positions (each of the 27 gathers of h is one coalesced 128-byte read of a
# channels-first plane), the warps split the channels and each thread holds BC / warps channels at P
# positions 32 apart. So a thread holds few channels (its 27 tap weights stay in registers) and few elements
# (8 at the defaults: no register spills). Indices are clamped, not masked: a channel past E reads channel
# E - 1 and a position past L reads position L - 1, every load is in bounds and unpredicated, only the
# stores are masked; offsets inside an image are int32, the image's base int64. The grid is (channel
# blocks, position tiles, images), channel blocks fastest, so that the programs in flight share positions
# (C, and the y rows they write, stay in L2).
#
# Forward: h' = sum of the 27 clamped taps in registers, y = h' C + u D stored channels-last (Triton
# transposes the tile through shared memory for that store: one conversion per program).
#
# Backward: a first small kernel forms g = dy C channels-first in float32 (transposing dy's channels-last
# tiles through shared memory), so that every gather of the main kernel reads a coalesced channels-first
# plane. Recompute h' from the 27 taps of h it reads anyway for the kernels' gradients; dC = sum over channels
# of dy h' (one atomic add per position and channel block), du = dy D, dD, and the 27 per-channel tap sums of
# g h[source] (dweight = alpha * sums, dalpha = sum weight * sums, from one (27, E) buffer; reduced in
# registers and across the warp's lanes, one atomic add per tap and channel a program). dh is gathered, not
# scattered: a tap whose unclamped source lies inside the map is the plain stencil's adjoint, read at
# p - offset; only the taps the replicate clamp moved onto the border are scattered with atomic adds, and
# each position adds its gathered sum once, atomically (other programs' border taps land on the same border
# positions). Only positions within max(dilations) of the border need the clamps, masks and scatter: on
# maps at least a quarter interior the programs hold either such positions or interior ones (SPLIT), and
# the interior programs read every tap as a plain shift and store dh.

#: Launch parameters: positions a program (OBS_P groups of 32), channels a program, warps (forward, backward).
OBS_P, OBS_BC, OBS_WARPS = 4, 16, 8
OBS_BWD_P, OBS_BWD_BC, OBS_BWD_WARPS, OBS_BWD_TILES = 2, 16, 8, 4


@triton.jit
def _observe_tile(E, L, W, P: tl.constexpr, BC: tl.constexpr):
    """This program's image (int64), channels [1, BC, 1] and positions [P, 1, 32], the same clamped into
    the map (for loads without masks), the store mask and the clamped positions' rows and columns."""
    image = tl.program_id(2).to(tl.int64)
    ch = tl.program_id(0) * BC + tl.arange(0, BC)[None, :, None]
    q = tl.program_id(1) * (P * 32) + tl.arange(0, P)[:, None, None] * 32 + tl.arange(0, 32)[None, None, :]
    chs, qs = tl.minimum(ch, E - 1), tl.minimum(q, L - 1)
    r = qs // W
    return image, ch, q, chs, qs, (ch < E) & (q < L), r, qs - r * W


@triton.jit
def fusion_observe_fwd_kernel(h_ptr, w_ptr, alpha_ptr, dil_ptr, c_ptr, c_stride, u_ptr, d_ptr, y_ptr, E, H, W,
                              K: tl.constexpr, P: tl.constexpr, BC: tl.constexpr):
    L = H * W
    image, ch, q, chs, qs, mask, r, c = _observe_tile(E, L, W, P, BC)
    plane = chs * L                                      # [1, BC, 1] offsets of the channels' planes
    h_img = h_ptr + image * E * L
    acc = tl.zeros([P, BC, 32], tl.float32)
    for k in tl.static_range(K):
        d = tl.load(dil_ptr + k)
        scale = tl.load(alpha_ptr + k).to(tl.float32)
        for i in tl.static_range(3):
            row = plane + tl.minimum(tl.maximum(r + (i - 1) * d, 0), H - 1) * W
            for j in tl.static_range(3):
                col = tl.minimum(tl.maximum(c + (j - 1) * d, 0), W - 1)
                w = tl.load(w_ptr + (k * E + chs) * 9 + (i * 3 + j)).to(tl.float32) * scale
                acc += w * tl.load(h_img + row + col).to(tl.float32)
    cq = tl.load(c_ptr + image * c_stride + qs).to(tl.float32)
    u = tl.load(u_ptr + image * E * L + plane + qs).to(tl.float32)
    y = acc * cq + u * tl.load(d_ptr + chs).to(tl.float32)
    tl.store(y_ptr + image * L * E + q * E + ch, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _fusion_adjoint(h_img, g_img, dh_img, w_ptr, alpha_ptr, dil_ptr, taps, g, own, plane, r, c, chs, mask,
                    E, H, W, K: tl.constexpr, P: tl.constexpr, BC: tl.constexpr, NEAR: tl.constexpr):
    """h' at this tile, the gathered part of dh, and ``taps`` [32, BC, 32] with this tile's g * h[source] added
    (tap t at index t: a thread holds the whole tap axis, so the select below is resolved at compile time and
    the 27 sums are reduced across the lanes once per program, not once per tile). NEAR: the tile holds
    positions within max(dilations) of the border (clamped sources, masked inside-gathers, border scatter);
    else none is, and every tap is a plain shift."""
    fused = tl.zeros([P, BC, 32], tl.float32)
    dh = tl.zeros([P, BC, 32], tl.float32)
    h_own, g_own = h_img + own, g_img + own             # pointer + a uniform shift: one IMAD.WIDE an address
    for k in tl.static_range(K):
        d = tl.load(dil_ptr + k)
        scale = tl.load(alpha_ptr + k).to(tl.float32)
        for i in tl.static_range(3):
            ur = r + (i - 1) * d                         # the tap's unclamped source row
            row = plane + tl.minimum(tl.maximum(ur, 0), H - 1) * W
            row_in = (r >= (i - 1) * d) & (r < H + (i - 1) * d)     # p - offset's row is in the map
            for j in tl.static_range(3):
                uc = c + (j - 1) * d
                shift = ((i - 1) * W + (j - 1)) * d
                w = tl.load(w_ptr + (k * E + chs) * 9 + (i * 3 + j)).to(tl.float32) * scale
                if NEAR:
                    src = row + tl.minimum(tl.maximum(uc, 0), W - 1)
                    v = tl.load(h_img + src).to(tl.float32)
                else:
                    v = tl.load(h_own + shift).to(tl.float32)
                fused += w * v
                taps = tl.where(tl.arange(0, 32)[:, None, None] == k * 9 + i * 3 + j,
                                taps + tl.sum(g * v, axis=0)[None, :, :], taps)
                # the taps whose source is inside the map: gathered here, from p - offset (a uniform shift)
                if NEAR:
                    inside = row_in & (c >= (j - 1) * d) & (c < W + (j - 1) * d)
                    dh += w * tl.load(g_own - shift, mask=inside, other=0.0)
                    if i * 3 + j != 4:  # the centre tap is never clamped
                        # the taps whose source the clamp moved onto the border (replicate padding): scattered
                        clamped = (ur < 0) | (ur >= H) | (uc < 0) | (uc >= W)
                        tl.atomic_add(dh_img + src, w * g, mask=mask & clamped, sem="relaxed")
                else:
                    dh += w * tl.load(g_own - shift)
    return fused, dh, taps


@triton.jit
def _backward_tile(q, qs, taps, dd, h_ptr, w_ptr, alpha_ptr, dil_ptr, dy_ptr, g_ptr, u_ptr, d_ptr, dh_ptr, dc_ptr,
                   du_ptr, E, H, W, K: tl.constexpr, P: tl.constexpr, BC: tl.constexpr, NEAR: tl.constexpr):
    """The backward at positions q [P, 1, 32] (L: none) of this program's image and channels, reading at qs
    (= q, or for the padding a position of the same kind: near the border or, if not NEAR, interior, whose
    27 shifted taps stay inside the map); the tap sums and dD's partial sums [BC, 32] carried from tile to
    tile. NEAR: some position may lie within max(dilations) of the border."""
    L = H * W
    image = tl.program_id(2).to(tl.int64)
    ch = tl.program_id(0) * BC + tl.arange(0, BC)[None, :, None]
    chs = tl.minimum(ch, E - 1)
    mask = (ch < E) & (q < L)
    r = qs // W
    c = qs - r * W
    plane = chs * L
    h_img, g_img, dh_img = h_ptr + image * E * L, g_ptr + image * E * L, dh_ptr + image * E * L
    own = plane + qs
    dy = tl.load(dy_ptr + image * L * E + qs * E + chs).to(tl.float32)
    g = tl.where(mask, tl.load(g_img + own), 0.0)       # the gradient of the fused map; padding: 0
    fused, dh, taps = _fusion_adjoint(h_img, g_img, dh_img, w_ptr, alpha_ptr, dil_ptr, taps, g, own, plane, r, c,
                                      chs, mask, E, H, W, K, P, BC, NEAR)
    if NEAR:
        tl.atomic_add(dh_img + own, dh, mask=mask, sem="relaxed")  # other programs' border taps add here too
    else:
        tl.store(dh_img + own, dh, mask=mask)            # no border tap lands on an interior position
    tl.atomic_add(dc_ptr + image * L + q.reshape(P, 32), tl.sum(tl.where(mask, dy * fused, 0.0), axis=1),
                  mask=q.reshape(P, 32) < L, sem="relaxed")
    u = tl.load(u_ptr + image * E * L + own).to(tl.float32)
    tl.store(du_ptr + image * E * L + own, (dy * tl.load(d_ptr + chs).to(tl.float32)).to(du_ptr.dtype.element_ty),
             mask=mask)
    return taps, dd + tl.sum(tl.where(mask, dy * u, 0.0), axis=0)


@triton.jit
def _split_positions(tile, near, n_near, M, H, W, P: tl.constexpr):
    """Positions [P, 1, 32] of tile ``tile`` in the split order: of the n_near positions within M of the border
    (the top and bottom bands of M rows, then the M columns at each end of the rows between) if ``near``,
    else of the interior ones, row-major. Returns the positions (L for the padding) and the positions to
    read (the padding reads one of its part's)."""
    L = H * W
    t = tile * (P * 32) + tl.arange(0, P)[:, None, None] * 32 + tl.arange(0, 32)[None, None, :]
    band = M * W
    k = t - 2 * band
    cc = k % (2 * M)
    rim = (M + k // (2 * M)) * W + tl.where(cc < M, cc, cc + W - 2 * M)
    near_q = tl.where(t < band, t, tl.where(t < 2 * band, (H - M) * W + t - band, rim))
    inner = W - 2 * M
    ti = tl.minimum(t, L - n_near - 1)
    inner_q = (M + ti // inner) * W + M + ti % inner
    q = tl.where(near, tl.where(t < n_near, near_q, L), tl.where(t < L - n_near, inner_q, L))
    return q, tl.where(near, tl.minimum(q, L - 1), inner_q)


@triton.jit
def fusion_observe_bwd_kernel(h_ptr, w_ptr, alpha_ptr, dil_ptr, dy_ptr, g_ptr, u_ptr, d_ptr, near_tiles, n_near, M,
                              tiles, near_programs, TILES, dh_ptr, dc_ptr, du_ptr, dd_ptr, s_ptr, E, H, W,
                              K: tl.constexpr, P: tl.constexpr, BC: tl.constexpr, SPLIT: tl.constexpr):
    """dy_ptr: dy, channels-last (B, H, W, E); g_ptr: g = dy * C, channels-first (B, E, L), float32.
    A program runs up to TILES consecutive tiles of P * 32 positions (of ``tiles``). SPLIT: the first
    near_programs programs hold the near_tiles tiles of positions within M = max(dilations) of the border,
    the others the interior ones (see _split_positions), and the interior programs skip the clamps, the masks
    and the border scatter; else positions in row-major order, every program as near the border."""
    taps = tl.zeros([32, BC, 32], tl.float32)           # tap t's partial sums of g * h[source] at index t
    dd = tl.zeros([BC, 32], tl.float32)
    if SPLIT:
        near = tl.program_id(1) < near_programs
        first = tl.where(near, tl.program_id(1), tl.program_id(1) - near_programs) * TILES
        count = tl.minimum(TILES, tl.where(near, near_tiles, tiles - near_tiles) - first)
        if near:
            for t in range(count):
                q, qs = _split_positions(first + t, True, n_near, M, H, W, P)
                taps, dd = _backward_tile(q, qs, taps, dd, h_ptr, w_ptr, alpha_ptr, dil_ptr, dy_ptr, g_ptr, u_ptr,
                                          d_ptr, dh_ptr, dc_ptr, du_ptr, E, H, W, K, P, BC, True)
        else:
            for t in range(count):
                q, qs = _split_positions(first + t, False, n_near, M, H, W, P)
                taps, dd = _backward_tile(q, qs, taps, dd, h_ptr, w_ptr, alpha_ptr, dil_ptr, dy_ptr, g_ptr, u_ptr,
                                          d_ptr, dh_ptr, dc_ptr, du_ptr, E, H, W, K, P, BC, False)
    else:
        first = tl.program_id(1) * TILES
        for t in range(tl.minimum(TILES, tiles - first)):
            q = (first + t) * (P * 32) + tl.arange(0, P)[:, None, None] * 32 + tl.arange(0, 32)[None, None, :]
            taps, dd = _backward_tile(q, tl.minimum(q, H * W - 1), taps, dd, h_ptr, w_ptr, alpha_ptr, dil_ptr, dy_ptr,
                                      g_ptr, u_ptr, d_ptr, dh_ptr, dc_ptr, du_ptr, E, H, W, K, P, BC, True)
    ch = tl.program_id(0) * BC + tl.arange(0, BC)
    tl.atomic_add(dd_ptr + ch, tl.sum(dd, axis=1), mask=ch < E, sem="relaxed")
    tl.atomic_add(s_ptr + tl.arange(0, 32)[:, None] * E + ch[None, :], tl.sum(taps, axis=2),  # (K * 9, E) tap-major
                  mask=(tl.arange(0, 32)[:, None] < K * 9) & (ch[None, :] < E), sem="relaxed")


@triton.jit
def observe_grad_kernel(dy_ptr, c_ptr, c_stride, g_ptr, E, L, BQ: tl.constexpr, BC: tl.constexpr):
    """g = dy * C channels-first (B, E, L) in float32, from dy channels-last (B, L, E): a [BQ, BC] tile read
    along the channels, written along the positions (Triton transposes it through shared memory)."""
    image = tl.program_id(2).to(tl.int64)
    q = tl.program_id(1) * BQ + tl.arange(0, BQ)[:, None]
    ch = tl.program_id(0) * BC + tl.arange(0, BC)[None, :]
    mask = (q < L) & (ch < E)
    dy = tl.load(dy_ptr + image * L * E + q * E + ch, mask=mask, other=0.0).to(tl.float32)
    g = dy * tl.load(c_ptr + image * c_stride + q, mask=q < L, other=0.0).to(tl.float32)
    tl.store(g_ptr + image * E * L + ch * L + q, g, mask=mask)


def _split(height: int, width: int, margin: int, tile: int):
    """(split?, margin M, positions within M of the border, tiles of them, all tiles): split into near-border
    and interior programs when at least a quarter of the map is interior (Spatial-Mamba-T's 56x56 and 28x28
    maps; at 14x14 the interior is 16 positions, at 7x7 none)."""
    length = height * width
    interior = max(height - 2 * margin, 0) * max(width - 2 * margin, 0)
    if 4 * interior < length:
        return False, 0, length, cdiv(length, tile), cdiv(length, tile)
    near_tiles = cdiv(length - interior, tile)
    return True, margin, length - interior, near_tiles, near_tiles + cdiv(interior, tile)


_OBS_FWD, _OBS_BWD = Launcher(fusion_observe_fwd_kernel), Launcher(fusion_observe_bwd_kernel)
_OBS_GRAD = Launcher(observe_grad_kernel)


def _observe_grid(batch, channels, length, P, BC):
    """(grid, P): P groups of 32 positions a program, fewer on small maps (7 x 7: two)."""
    P = min(P, next_power_of_2(cdiv(length, 32)))
    return (cdiv(channels, BC), cdiv(length, 32 * P), batch), P


def _check_sizes(batch, channels, length):
    if channels * length >= 2 ** 31:  # offsets inside an image are int32
        raise ValueError(f"state_fusion_observe: E * H * W must be below 2**31, got {channels} * {length}")
    if batch > 65535 or cdiv(length, 32) > 65535:
        raise ValueError(f"state_fusion_observe: at most 65535 images and 2**21 positions, got {batch}, {length}")


def _c_view(C: Tensor) -> Tensor:
    """C (B, 1, L) as the kernels read it: positions contiguous, any batch stride."""
    return C if C.stride(2) == 1 else C.contiguous()


def _state_fusion_observe_fwd(h: Tensor, weight: Tensor, alpha: Tensor, C: Tensor, u: Tensor, D: Tensor,
                              dilations: List[int], out_dtype: torch.dtype) -> Tensor:
    """y = C * fused(h) + D * u as a (B, H, W, E) map in out_dtype."""
    h, weight, alpha, u, D, C = h.contiguous(), weight.contiguous(), alpha.contiguous(), u.contiguous(), \
        D.contiguous(), _c_view(C)
    batch, channels, height, width = map(int, h.shape)  # int(): under torch.jit.trace sizes are 0-dim tensors
    _check_sizes(batch, channels, height * width)
    y = _empty(batch, height, width, channels, like=h, dtype=out_dtype)
    grid, P = _observe_grid(batch, channels, height * width, OBS_P, OBS_BC)
    _OBS_FWD[grid](h, weight, alpha, _dilations(dilations, h.device), C, int(C.stride(0)), u, D, y, channels, height,
                   width, K=len(dilations), P=P, BC=OBS_BC, num_warps=OBS_WARPS)
    return y


state_fusion_observe_fwd_op = _custom_op(_state_fusion_observe_fwd)


@_fake(state_fusion_observe_fwd_op)
def _(h, weight, alpha, C, u, D, dilations, out_dtype):
    batch, channels, height, width = h.shape
    return h.new_empty((batch, height, width, channels), dtype=out_dtype)


def _state_fusion_observe_bwd(h: Tensor, weight: Tensor, alpha: Tensor, C: Tensor, u: Tensor, D: Tensor,
                              dilations: List[int], grad: Tensor
                              ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of h, weight, alpha, C, u, D (float32 but du, in u's dtype)."""
    h, weight, alpha, u, D, C, grad = h.contiguous(), weight.contiguous(), alpha.contiguous(), u.contiguous(), \
        D.contiguous(), _c_view(C), grad.contiguous()
    batch, channels, height, width = map(int, h.shape)
    K, length = len(dilations), height * width
    _check_sizes(batch, channels, length)
    # g = dy * C, channels-first in float32: the kernel gathers it at 27 taps, coalesced
    g = _empty(*h.shape, like=h, dtype=torch.float32)
    _OBS_GRAD[(cdiv(channels, 64), cdiv(length, 64), batch)](grad, C, int(C.stride(0)), g, channels, length, BQ=64,
                                                              BC=64)
    dh = torch.zeros(h.shape, dtype=torch.float32, device=h.device)
    dC = torch.zeros((batch, 1, length), dtype=torch.float32, device=h.device)
    du = _empty(*u.shape, like=u)
    dD = torch.zeros((channels,), dtype=torch.float32, device=h.device)
    sums = torch.zeros((K * 9, channels), dtype=torch.float32, device=h.device)
    grid, P = _observe_grid(batch, channels, length, OBS_BWD_P, OBS_BWD_BC)
    split, margin, n_near, near_tiles, tiles = _split(height, width, max(dilations), 32 * P)
    per = OBS_BWD_TILES  # tiles a program: its 27 tap sums are reduced across the lanes once for all of them
    near_programs = cdiv(near_tiles, per) if split else cdiv(tiles, per)
    programs = near_programs + cdiv(tiles - near_tiles, per) if split else near_programs
    _OBS_BWD[(grid[0], programs, grid[2])](h, weight, alpha, _dilations(dilations, h.device), grad, g, u, D,
                                           near_tiles, n_near, margin, tiles, near_programs, per, dh, dC, du, dD,
                                           sums, channels, height, width, K=K, P=P, BC=OBS_BWD_BC, SPLIT=split,
                                           num_warps=OBS_BWD_WARPS)
    # sums[k * 9 + tap, e] = sum over positions of g * h[source]: d weight = alpha_k * sums, d alpha = sum w * sums
    sums = sums.view(K, 3, 3, channels).permute(0, 3, 1, 2)
    dweight = alpha.float()[:, None, None, None] * sums
    dalpha = (weight.float() * sums).sum(dim=(1, 2, 3))
    return dh, dweight, dalpha, dC, du, dD


state_fusion_observe_bwd_op = _custom_op(_state_fusion_observe_bwd)


@_fake(state_fusion_observe_bwd_op)
def _(h, weight, alpha, C, u, D, dilations, grad):
    f32 = dict(dtype=torch.float32)
    return (h.new_empty(h.shape, **f32), weight.new_empty(weight.shape, **f32), alpha.new_empty(alpha.shape, **f32),
            C.new_empty((h.shape[0], 1, h.shape[2] * h.shape[3]), **f32), u.new_empty(u.shape),
            D.new_empty(D.shape, **f32))


# ---- the functions ssm_kernels.state_fusion calls ------------------------------------------------------------

def state_fusion_fwd(h: Tensor, weight: Tensor, alpha: Tensor, dilations: Sequence[int]) -> Tensor:
    """The fused map (B, C, H, W), float32."""
    return op_or_body(state_fusion_fwd_op, _state_fusion_fwd)(h, weight, alpha, list(dilations))


def state_fusion_bwd(h: Tensor, weight: Tensor, alpha: Tensor, dilations: Sequence[int],
                     grad: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of h, weight and alpha, float32."""
    return op_or_body(state_fusion_bwd_op, _state_fusion_bwd)(h, weight, alpha, list(dilations), grad)


def state_fusion_observe_fwd(h: Tensor, weight: Tensor, alpha: Tensor, C: Tensor, u: Tensor, D: Tensor,
                             dilations: Sequence[int], out_dtype: torch.dtype) -> Tensor:
    """y = C * fused(h) + D * u as a (B, H, W, E) map in out_dtype."""
    run = op_or_body(state_fusion_observe_fwd_op, _state_fusion_observe_fwd)
    return run(h, weight, alpha, C, u, D, list(dilations), out_dtype)


def state_fusion_observe_bwd(h: Tensor, weight: Tensor, alpha: Tensor, C: Tensor, u: Tensor, D: Tensor,
                             dilations: Sequence[int], grad: Tensor):
    """Gradients of h, weight, alpha, C, u, D (float32 but du, in u's dtype)."""
    run = op_or_body(state_fusion_observe_bwd_op, _state_fusion_observe_bwd)
    return run(h, weight, alpha, C, u, D, list(dilations), grad)

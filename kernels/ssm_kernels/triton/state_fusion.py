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

from typing import Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import Launcher, cdiv
from .ops import _empty

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
    return torch.tensor(dilations, dtype=torch.int32, device=device)


def state_fusion_fwd(h: Tensor, weight: Tensor, alpha: Tensor, dilations: Sequence[int]) -> Tensor:
    """The fused map (B, C, H, W), float32."""
    h, weight, alpha = h.contiguous(), weight.contiguous(), alpha.contiguous()
    batch, channels, height, width = map(int, h.shape)  # int(): under torch.jit.trace sizes are 0-dim tensors
    out = torch.empty(h.shape, dtype=torch.float32, device=h.device)
    _FWD[(batch * channels, cdiv(height * width, BLOCK))](
        h, weight, alpha, _dilations(dilations, h.device), out, channels, height, width,
        K=len(dilations), BLOCK=BLOCK)
    return out


def state_fusion_bwd(h: Tensor, weight: Tensor, alpha: Tensor, dilations: Sequence[int],
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


# ---- fusion + observation: y = C * fused(h) + D * u, written channels-last -----------------------------
#
# A program owns one image, a block of BC channels and TILES tiles of BQ positions, as [BC, BQ] tiles with
# the positions the fast axis: the 27 gathers of h per element read along the channels-first planes,
# coalesced; y and its gradient are channels-last (Triton converts the tile's layout for them). The fused
# map h' lives in registers only; the backward recomputes it from the 27 taps it reads anyway for the
# kernels' gradients. The backward's dh is mostly gathered, not scattered: a tap whose source lies inside
# the map is the plain stencil's adjoint, read at p - offset (27 cached reads of dy and C); only the taps
# the replicate clamp moved onto the border are scattered with atomic adds (none in the interior), and
# each position adds its gathered sum once (atomically: other programs' border taps land there too),
# instead of the 27 atomic adds per element of a pure scatter.

OBS_BQ, OBS_BC, OBS_TILES = 64, 32, 4


@triton.jit
def _channel_block(d_ptr, E, L, BC: tl.constexpr):
    """This program's image, its block of BC channels and their mask, the channels' plane offsets in a
    (B, E, L) map ([BC], int64) and their D."""
    blocks = tl.cdiv(E, BC)
    image = tl.program_id(0) // blocks
    ch = (tl.program_id(0) % blocks) * BC + tl.arange(0, BC)
    cmask = ch < E
    planes = (image * E + ch).to(tl.int64) * L
    dd = tl.load(d_ptr + ch, mask=cmask, other=0.0).to(tl.float32)
    return image, ch, cmask, planes, dd


@triton.jit
def _position_tile(t, cmask, L, W, BQ: tl.constexpr, TILES: tl.constexpr):
    """Tile t of this program's positions: q, its mask, the [BC, BQ] mask and the rows and columns."""
    q = (tl.program_id(1) * TILES + t) * BQ + tl.arange(0, BQ)
    qmask = q < L
    return q, qmask, cmask[:, None] & qmask[None, :], q // W, q % W


@triton.jit
def fusion_observe_fwd_kernel(h_ptr, w_ptr, alpha_ptr, dil_ptr, c_ptr, c_stride, u_ptr, d_ptr, y_ptr, E, H, W,
                              K: tl.constexpr, BQ: tl.constexpr, BC: tl.constexpr, TILES: tl.constexpr):
    L = H * W
    image, ch, cmask, planes, dd = _channel_block(d_ptr, E, L, BC)
    for t in range(TILES):  # a loop, not unrolled: the 27 taps are, already
        q, qmask, mask, r, c = _position_tile(t, cmask, L, W, BQ, TILES)
        acc = tl.zeros([BC, BQ], tl.float32)
        for k in tl.static_range(K):
            d = tl.load(dil_ptr + k)
            scale = tl.load(alpha_ptr + k).to(tl.float32)
            for i in tl.static_range(3):
                for j in tl.static_range(3):
                    w = tl.load(w_ptr + ((k * E + ch) * 3 + i) * 3 + j, mask=cmask, other=0.0).to(tl.float32)
                    src = _source(r, c, i, j, d, H, W)
                    v = tl.load(h_ptr + planes[:, None] + src[None, :], mask=mask, other=0.0).to(tl.float32)
                    acc += (scale * w)[:, None] * v
        cq = tl.load(c_ptr + image.to(tl.int64) * c_stride + q, mask=qmask, other=0.0).to(tl.float32)
        u = tl.load(u_ptr + planes[:, None] + q[None, :], mask=mask, other=0.0).to(tl.float32)
        y = acc * cq[None, :] + u * dd[:, None]
        rows = (image * L + q).to(tl.int64) * E
        tl.store(y_ptr + rows[None, :] + ch[:, None], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def fusion_observe_bwd_kernel(h_ptr, w_ptr, alpha_ptr, dil_ptr, c_ptr, c_stride, u_ptr, d_ptr, g_ptr,
                              dh_ptr, dc_ptr, du_ptr, dd_ptr, s_ptr, E, H, W,
                              K: tl.constexpr, BQ: tl.constexpr, BC: tl.constexpr, TILES: tl.constexpr):
    L = H * W
    image, ch, cmask, planes, dd = _channel_block(d_ptr, E, L, BC)
    dd_sum = tl.zeros([BC], tl.float32)
    taps = tl.arange(0, 32)                     # the K * 9 <= 32 taps' sums of g * h[source], per channel
    tap_sums = tl.zeros([BC, 32], tl.float32)
    for t in range(TILES):  # a loop, not unrolled: the 27 taps are, already
        q, qmask, mask, r, c = _position_tile(t, cmask, L, W, BQ, TILES)
        rows = (image * L + q).to(tl.int64) * E
        dy = tl.load(g_ptr + rows[None, :] + ch[:, None], mask=mask, other=0.0).to(tl.float32)
        cq = tl.load(c_ptr + image.to(tl.int64) * c_stride + q, mask=qmask, other=0.0).to(tl.float32)
        g = dy * cq[None, :]                    # the gradient of the fused map
        fused = tl.zeros([BC, BQ], tl.float32)
        dh = tl.zeros([BC, BQ], tl.float32)
        for k in tl.static_range(K):
            d = tl.load(dil_ptr + k)
            scale = tl.load(alpha_ptr + k).to(tl.float32)
            for i in tl.static_range(3):
                for j in tl.static_range(3):
                    w = tl.load(w_ptr + ((k * E + ch) * 3 + i) * 3 + j, mask=cmask, other=0.0).to(tl.float32)
                    coef = (scale * w)[:, None]
                    # the taps whose source is inside the map: gathered at this tile's positions, from the
                    # position p - offset whose tap lands here
                    gr, gc = r - (i - 1) * d, c - (j - 1) * d
                    inside = qmask & (gr >= 0) & (gr < H) & (gc >= 0) & (gc < W)
                    gq = gr * W + gc
                    gmask = cmask[:, None] & inside[None, :]
                    g_at = tl.load(g_ptr + ((image * L + gq).to(tl.int64) * E)[None, :] + ch[:, None], mask=gmask,
                                   other=0.0).to(tl.float32)
                    c_at = tl.load(c_ptr + image.to(tl.int64) * c_stride + gq, mask=inside, other=0.0).to(tl.float32)
                    dh += coef * (g_at * c_at[None, :])
                    # the taps whose source the clamp moved onto the border (replicate padding): scattered
                    ur, uc = r + (i - 1) * d, c + (j - 1) * d
                    clamped = (ur < 0) | (ur >= H) | (uc < 0) | (uc >= W)
                    src = _source(r, c, i, j, d, H, W)
                    at = planes[:, None] + src[None, :]
                    tl.atomic_add(dh_ptr + at, coef * g, mask=mask & clamped[None, :], sem="relaxed")
                    v = tl.load(h_ptr + at, mask=mask, other=0.0).to(tl.float32)
                    fused += coef * v
                    s = tl.sum(g * v, axis=1)
                    tap_sums += tl.where(taps[None, :] == (k * 9 + i * 3 + j), s[:, None], 0.0)
        tl.atomic_add(dh_ptr + planes[:, None] + q[None, :], dh, mask=mask, sem="relaxed")  # border taps add too
        tl.atomic_add(dc_ptr + image.to(tl.int64) * L + q, tl.sum(dy * fused, axis=0), mask=qmask, sem="relaxed")
        u = tl.load(u_ptr + planes[:, None] + q[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(du_ptr + planes[:, None] + q[None, :], (dy * dd[:, None]).to(du_ptr.dtype.element_ty), mask=mask)
        dd_sum += tl.sum(dy * u, axis=1)
    tl.atomic_add(dd_ptr + ch, dd_sum, mask=cmask, sem="relaxed")
    # s_ptr: (K * 9, E) float32, tap-major
    tl.atomic_add(s_ptr + taps[None, :] * E + ch[:, None], tap_sums, mask=cmask[:, None] & (taps[None, :] < K * 9),
                  sem="relaxed")


_OBS_FWD, _OBS_BWD = Launcher(fusion_observe_fwd_kernel), Launcher(fusion_observe_bwd_kernel)


def _observe_launch(batch, channels, length):
    """(grid, tiles a program): TILES tiles of positions a program, fewer on small maps (7 x 7: one)."""
    tiles = min(OBS_TILES, cdiv(length, OBS_BQ))
    return (batch * cdiv(channels, OBS_BC), cdiv(length, OBS_BQ * tiles)), tiles


def _c_view(C: Tensor) -> Tensor:
    """C (B, 1, L) as the kernels read it: positions contiguous, any batch stride."""
    return C if C.stride(2) == 1 else C.contiguous()


def state_fusion_observe_fwd(h: Tensor, weight: Tensor, alpha: Tensor, C: Tensor, u: Tensor, D: Tensor,
                             dilations: Sequence[int], out_dtype: torch.dtype) -> Tensor:
    """y = C * fused(h) + D * u as a (B, H, W, E) map in out_dtype."""
    h, weight, alpha, u, D, C = h.contiguous(), weight.contiguous(), alpha.contiguous(), u.contiguous(), \
        D.contiguous(), _c_view(C)
    batch, channels, height, width = map(int, h.shape)  # int(): under torch.jit.trace sizes are 0-dim tensors
    y = _empty(batch, height, width, channels, like=h, dtype=out_dtype)
    grid, tiles = _observe_launch(batch, channels, height * width)
    _OBS_FWD[grid](h, weight, alpha, _dilations(dilations, h.device), C, int(C.stride(0)), u, D, y, channels, height,
                   width, K=len(dilations), BQ=OBS_BQ, BC=OBS_BC, TILES=tiles)
    return y


def state_fusion_observe_bwd(h: Tensor, weight: Tensor, alpha: Tensor, C: Tensor, u: Tensor, D: Tensor,
                             dilations: Sequence[int], grad: Tensor):
    """Gradients of h, weight, alpha, C, u, D (float32 but du, in u's dtype)."""
    h, weight, alpha, u, D, C, grad = h.contiguous(), weight.contiguous(), alpha.contiguous(), u.contiguous(), \
        D.contiguous(), _c_view(C), grad.contiguous()
    batch, channels, height, width = map(int, h.shape)
    K, length = len(dilations), height * width
    dh = torch.zeros(h.shape, dtype=torch.float32, device=h.device)
    dC = torch.zeros((batch, 1, length), dtype=torch.float32, device=h.device)
    du = _empty(*u.shape, like=u)
    dD = torch.zeros((channels,), dtype=torch.float32, device=h.device)
    sums = torch.zeros((K * 9, channels), dtype=torch.float32, device=h.device)
    grid, tiles = _observe_launch(batch, channels, length)
    _OBS_BWD[grid](h, weight, alpha, _dilations(dilations, h.device), C, int(C.stride(0)), u, D, grad, dh, dC, du,
                   dD, sums, channels, height, width, K=K, BQ=OBS_BQ, BC=OBS_BC, TILES=tiles,
                   num_warps=8)  # five live [32, 64] float32 tiles and their pointers: 8 elements a thread
    # sums[k * 9 + tap, e] = sum over positions of g * h[source]: d weight = alpha_k * sums, d alpha = sum w * sums
    sums = sums.view(K, 3, 3, channels).permute(0, 3, 1, 2)
    dweight = alpha.float()[:, None, None, None] * sums
    dalpha = (weight.float() * sums).sum(dim=(1, 2, 3))
    return dh, dweight, dalpha, dC, du, dD

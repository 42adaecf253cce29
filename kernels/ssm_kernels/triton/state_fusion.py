"""Triton kernels of the structure-aware state fusion (see :mod:`ssm_kernels.state_fusion`).

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

"""Triton kernels of the directions' merge and output gate (:mod:`ssm_kernels.gate`), forward and backward.

Elementwise over (rows, C): a program owns a tile of (BM rows, BC channels), channels across the lanes. The
forward reads the K directions' outputs and z once and writes the gated output (z's dtype) and, in training,
the merged output (float32, kept for the backward); the backward reads the output gradient, the merged output
and z, recomputes SiLU(z), and writes z's gradient and the gradient of every direction's output (the same
values K times).

Registered as ``torch.library`` custom ops with fake implementations, as the scan ops are.
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import Launcher, cdiv, next_power_of_2
from .ops import _custom_op, _empty, _fake, op_or_body


@triton.jit
def merge_gate_fwd_kernel(y_ptr, z_ptr, out_ptr, ys_ptr, M, C, s_y, s_z, scale, K: tl.constexpr, SAVE: tl.constexpr,
                          BM: tl.constexpr, BC: tl.constexpr):
    r = (tl.program_id(0) * BM + tl.arange(0, BM)).to(tl.int64)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    m = (r < M)[:, None] & (c < C)[None, :]
    ys = tl.zeros([BM, BC], tl.float32)
    for k in tl.static_range(K):
        ys += tl.load(y_ptr + r[:, None] * s_y + (k * C + c)[None, :], mask=m, other=0.0).to(tl.float32)
    ys = ys * scale
    zf = tl.load(z_ptr + r[:, None] * s_z + c[None, :], mask=m, other=0.0).to(tl.float32)
    out = ys * (zf * tl.sigmoid(zf))
    at = r[:, None] * C + c[None, :]
    tl.store(out_ptr + at, out.to(out_ptr.dtype.element_ty), mask=m)
    if SAVE:
        tl.store(ys_ptr + at, ys, mask=m)


@triton.jit
def merge_gate_bwd_kernel(g_ptr, ys_ptr, z_ptr, dy_ptr, dz_ptr, M, C, s_z, scale, K: tl.constexpr, BM: tl.constexpr,
                          BC: tl.constexpr):
    r = (tl.program_id(0) * BM + tl.arange(0, BM)).to(tl.int64)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    m = (r < M)[:, None] & (c < C)[None, :]
    at = r[:, None] * C + c[None, :]
    g = tl.load(g_ptr + at, mask=m, other=0.0).to(tl.float32)
    ys = tl.load(ys_ptr + at, mask=m, other=0.0)
    zf = tl.load(z_ptr + r[:, None] * s_z + c[None, :], mask=m, other=0.0).to(tl.float32)
    s = tl.sigmoid(zf)
    dz = g * ys * (s * (1.0 + zf * (1.0 - s)))
    tl.store(dz_ptr + at, dz.to(dz_ptr.dtype.element_ty), mask=m)
    dys = (zf * s * g * scale).to(dy_ptr.dtype.element_ty)
    for k in tl.static_range(K):
        tl.store(dy_ptr + r[:, None] * (K * C) + (k * C + c)[None, :], dys, mask=m)


_FWD, _BWD = Launcher(merge_gate_fwd_kernel), Launcher(merge_gate_bwd_kernel)


def _blocks(C: int):
    """(BM, BC, warps): up to 128 channels (one 4-byte channel a lane) x 4096 / BC rows a program."""
    BC = min(128, max(16, next_power_of_2(C)))
    return 4096 // BC, BC, 4


def _rows(t: Tensor) -> Tensor:
    """(..., n) -> (rows, n) with contiguous channels: a view where the rows are one stride apart."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def _merge_gate_fwd(y: Tensor, z: Tensor, scale: float, save: bool) -> Tuple[Tensor, Tensor]:
    """(out (rows, C) in z's dtype, the merged output (rows, C) float32, or empty unless ``save``).
    y (rows, K*C) and z (rows, C) with contiguous channels, rows one stride apart."""
    M, C = z.shape
    K = y.shape[1] // C
    out = _empty(M, C, like=z)
    ys = _empty(M, C, like=z, dtype=torch.float32) if save else z.new_empty((0,), dtype=torch.float32)
    BM, BC, warps = _blocks(C)
    _FWD[(cdiv(M, BM), cdiv(C, BC))](y, z, out, ys if save else out, M, C, y.stride(0), z.stride(0), scale,
                                     K=K, SAVE=save, BM=BM, BC=BC, num_warps=warps)
    return out, ys


merge_gate_fwd_op = _custom_op(_merge_gate_fwd, traced=True)


@_fake(merge_gate_fwd_op)
def _(y, z, scale, save):
    return z.new_empty(z.shape), z.new_empty(z.shape if save else (0,), dtype=torch.float32)


def _merge_gate_bwd(ys: Tensor, z: Tensor, grad: Tensor, scale: float, K: int, y_dtype: torch.dtype
                    ) -> Tuple[Tensor, Tensor]:
    """(dy (rows, K*C) in ``y_dtype``, dz (rows, C) in z's dtype); ys and grad (rows, C) contiguous."""
    M, C = z.shape
    dy = _empty(M, K * C, like=ys, dtype=y_dtype)
    dz = _empty(M, C, like=z)
    BM, BC, warps = _blocks(C)
    _BWD[(cdiv(M, BM), cdiv(C, BC))](grad, ys, z, dy, dz, M, C, z.stride(0), scale, K=K, BM=BM, BC=BC,
                                     num_warps=warps)
    return dy, dz


merge_gate_bwd_op = _custom_op(_merge_gate_bwd)


@_fake(merge_gate_bwd_op)
def _(ys, z, grad, scale, K, y_dtype):
    return ys.new_empty((z.shape[0], K * z.shape[1]), dtype=y_dtype), z.new_empty(z.shape)


# ---- the backend protocol of ssm_kernels.gate ------------------------------------------------------

_OPS = {"fwd": (merge_gate_fwd_op, _merge_gate_fwd), "bwd": (merge_gate_bwd_op, _merge_gate_bwd)}


def _op(name: str):
    """The custom op or its Python body (:func:`.ops.op_or_body`)."""
    return op_or_body(*_OPS[name])


def merge_gate_fwd(y, z, scale, save):
    out, ys = _op("fwd")(_rows(y), _rows(z), scale, save)
    return out.view(z.shape), (ys.view(z.shape) if save else ys)


def merge_gate_bwd(ys, z, grad, scale, K, y_dtype):
    dy, dz = _op("bwd")(ys.reshape(-1, ys.shape[-1]), _rows(z), grad.reshape(-1, grad.shape[-1]).contiguous(),
                        scale, K, y_dtype)
    return dy.view(*z.shape[:-1], K * z.shape[-1]), dz.view(z.shape)

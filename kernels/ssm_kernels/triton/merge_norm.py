"""Merge the K directions' output slices and LayerNorm the merged map, in one pass (forward and backward);
with K = 1, a plain LayerNorm over the last axis.

VMamba's mixer sums the K directions onto the map and normalises it over channels (its ``out_norm``).
Done as three PyTorch ops (a sum over K into float32, ``layer_norm``, the cast for the next matmul)
this was 20% of an eager training step on an H100: PyTorch's LayerNorm gives one block to each row,
and the rows here are short (96..768 channels). Here a program normalises BM rows at once.

Rows are positions (batch * H * W), columns channels; the slices are (K, rows, C) in the scan's
output dtype, summed in float32. The forward writes the normalised map in the slices' dtype (what the
next matmul reads) and each row's mean and 1/std; the backward re-sums the slices (cheaper than
keeping a float32 copy of the map) and accumulates the weight and bias gradients with atomic adds.

The blocks' residual add and the LayerNorm after it (``add_norm_*``) run on the same rows: the forward reads the
stream and the branch once and writes their sum and its LayerNorm (as two ops under autocast: PyTorch's add of a
float16 branch to the float32 stream, an unvectorised casting kernel, then the norm reading the sum back); the
backward adds the norm's input gradient to the sum's and writes it once for the stream and once in the branch's
dtype (else the norm's backward, autograd's accumulation and the cast for the branch: three kernels).
"""
import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from .launch import Launcher, cdiv, next_power_of_2

#: Overrides of the forward's launch heuristic, for tools/bench_norms.py's sweep: "BM" (rows a program), "warps".
TUNING = {}


@triton.jit
def _rows(blk, rows, C, BM: tl.constexpr, BC: tl.constexpr):
    """Block ``blk``'s rows, the columns, their mask and offsets. (No pointer in, no load: an offset returned by a
    helper that takes a pointer makes that pointer look written to inductor; see ``kernels.py``.)"""
    r = blk * BM + tl.arange(0, BM)
    c = tl.arange(0, BC)
    m = (r < rows)[:, None] & (c < C)[None, :]
    off = r.to(tl.int64)[:, None] * C + c[None, :]
    return r, c, m, off


@triton.jit
def _sum_slices(x_ptr, off, m, K, s_k):
    """The K slices (s_k elements apart) summed at ``off`` (float32)."""
    x = tl.zeros(off.shape, tl.float32)
    ptr = x_ptr + off
    for _ in range(K):
        x += tl.load(ptr, mask=m, other=0.0).to(tl.float32)
        ptr += s_k
    return x


@triton.jit
def _normalise(x, m, c, C, w_ptr, b_ptr, eps):
    """(LayerNorm of the rows of x (float32, masked by m) with weight and bias, each row's mean, 1/std)."""
    mean = tl.sum(x, axis=1) / C
    xc = tl.where(m, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / C + eps)
    w = tl.load(w_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    return xc * rstd[:, None] * w[None, :] + b[None, :], mean, rstd


@triton.jit
def _input_grad(x, m, r, rows, C, w, stats_ptr, dy):
    """(d/dx of the LayerNorm of the rows of x given dy (float32) and the saved stats, the normalised rows)."""
    mean = tl.load(stats_ptr + r, mask=r < rows, other=0.0)
    rstd = tl.load(stats_ptr + rows + r, mask=r < rows, other=0.0)
    xhat = tl.where(m, (x - mean[:, None]) * rstd[:, None], 0.0)
    g = dy * w[None, :]
    # d/dx of (x - mean) * rstd applied to g: rstd * (g - mean(g) - xhat * mean(g * xhat))
    dx = (g - (tl.sum(g, axis=1) / C)[:, None] - xhat * (tl.sum(g * xhat, axis=1) / C)[:, None]) * rstd[:, None]
    return dx, xhat


@Launcher
@triton.jit
def merge_norm_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, stats_ptr, K, rows, C, s_k, eps,
                          BM: tl.constexpr, BC: tl.constexpr):
    r, c, m, off = _rows(tl.program_id(0), rows, C, BM, BC)
    x = _sum_slices(x_ptr, off, m, K, s_k)
    y, mean, rstd = _normalise(x, m, c, C, w_ptr, b_ptr, eps)
    tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=m)
    tl.store(stats_ptr + r, mean, mask=r < rows)
    tl.store(stats_ptr + rows + r, rstd, mask=r < rows)


@Launcher
@triton.jit
def merge_norm_bwd_kernel(x_ptr, w_ptr, stats_ptr, dy_ptr, ds_ptr, dx_ptr, dr_ptr, dwb_ptr, sc_ptr, K, rows, C, s_k,
                          rows_per_sample, BM: tl.constexpr, BC: tl.constexpr, SUM_GRAD: tl.constexpr,
                          BRANCH_GRAD: tl.constexpr, SCALE: tl.constexpr):
    """Each program walks every num_programs-th block of rows and adds its weight and bias gradients
    once at the end (a few hundred atomic adds per column, not one per block). ``SUM_GRAD``: the gradient ds that
    the normalised map (an add's sum) gets from its own users is added to its input gradient; ``BRANCH_GRAD``: that
    is written again into dr, in dr's dtype, times the branch's per-sample scale with ``SCALE``."""
    c = tl.arange(0, BC)
    w = tl.load(w_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    dw = tl.zeros([BC], tl.float32)
    db = tl.zeros([BC], tl.float32)
    for blk in range(tl.program_id(0), tl.cdiv(rows, BM), tl.num_programs(0)):
        r, c, m, off = _rows(blk, rows, C, BM, BC)
        x = _sum_slices(x_ptr, off, m, K, s_k)
        dy = tl.load(dy_ptr + off, mask=m, other=0.0).to(tl.float32)
        dx, xhat = _input_grad(x, m, r, rows, C, w, stats_ptr, dy)
        if SUM_GRAD:
            dx += tl.load(ds_ptr + off, mask=m, other=0.0).to(tl.float32)
        tl.store(dx_ptr + off, dx.to(dx_ptr.dtype.element_ty), mask=m)
        if BRANCH_GRAD:
            if SCALE:
                dx *= tl.load(sc_ptr + r // rows_per_sample, mask=r < rows, other=0.0)[:, None]
            tl.store(dr_ptr + off, dx.to(dr_ptr.dtype.element_ty), mask=m)
        dw += tl.sum(dy * xhat, axis=0)
        db += tl.sum(dy, axis=0)
    tl.atomic_add(dwb_ptr + c, dw, mask=c < C, sem="relaxed")
    tl.atomic_add(dwb_ptr + C + c, db, mask=c < C, sem="relaxed")


@Launcher
@triton.jit
def add_norm_fwd_kernel(x_ptr, r_ptr, w_ptr, b_ptr, s_ptr, y_ptr, stats_ptr, sc_ptr, rows, C, eps, rows_per_sample,
                        BM: tl.constexpr, BC: tl.constexpr, SCALE: tl.constexpr):
    """s = x + branch in s's dtype (the branch times its sample's scale with ``SCALE``: drop path), y = LayerNorm(s):
    the sum normalised as stored (rounded to its dtype)."""
    r, c, m, off = _rows(tl.program_id(0), rows, C, BM, BC)
    x = tl.load(x_ptr + off, mask=m, other=0.0).to(tl.float32)
    branch = tl.load(r_ptr + off, mask=m, other=0.0).to(tl.float32)
    if SCALE:
        branch *= tl.load(sc_ptr + r // rows_per_sample, mask=r < rows, other=0.0)[:, None]
    x = (x + branch).to(s_ptr.dtype.element_ty)
    tl.store(s_ptr + off, x, mask=m)
    y, mean, rstd = _normalise(x.to(tl.float32), m, c, C, w_ptr, b_ptr, eps)
    tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=m)
    tl.store(stats_ptr + r, mean, mask=r < rows)
    tl.store(stats_ptr + rows + r, rstd, mask=r < rows)


@Launcher
@triton.jit
def merge_kernel(x_ptr, y_ptr, K, n, BLOCK: tl.constexpr):
    """y = the sum of the K contiguous slices of x (n elements each), accumulated in float32."""
    off = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = off < n
    acc = tl.zeros([BLOCK], tl.float32)
    ptr = x_ptr + off
    for _ in range(K):
        acc += tl.load(ptr, mask=m, other=0.0).to(tl.float32)
        ptr += n
    tl.store(y_ptr + off, acc.to(y_ptr.dtype.element_ty), mask=m)


def merge(slices: torch.Tensor, out_dtype=None) -> torch.Tensor:
    """The sum of (K, ...) contiguous slices over K, in ``out_dtype`` (default: the slices'). PyTorch's
    sum over a leading axis of 4 ran at a third of the copy bandwidth."""
    y = torch.empty(slices.shape[1:], dtype=out_dtype or slices.dtype, device=slices.device)
    n = y.numel()
    merge_kernel[(cdiv(n, 2048),)](slices, y, slices.shape[0], n, BLOCK=2048, num_warps=4)
    return y


@functools.lru_cache(maxsize=None)
def _sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _programs(device: torch.device, blocks: int) -> int:
    """Programs of the backward, each walking several blocks of rows before it adds its weight and
    bias gradients (atomics on C addresses: one program per block measured 2.7x slower at 7x7, D=768):
    at least 4 blocks each, at most 16 programs per SM."""
    sms = _sms(device)
    return min(blocks, max(sms, min(16 * sms, cdiv(blocks, 4))))


def _block(C: int):
    """(rows per program, padded channels, warps): about 4096 elements a program."""
    BC = next_power_of_2(C)
    return max(1, 4096 // BC), BC, 4 if BC <= 512 else 8


#: programs per SM that the forward asks for before it gives a program fewer rows
FWD_PROGRAMS_PER_SM = 4


def _fwd_block(C: int, rows: int, device: torch.device):
    """The forward's (rows per program, padded channels, warps): about 2048 elements a program, in 4 warps, and
    fewer rows (down to one) where the map is small (a late stage at batch 1) until every SM has a few programs.
    tools/bench_norms.py on an H200 (kernels/NOTES.md): at 4096 elements a program (the backward's blocks) the
    merge of 4 slices at 65536 rows of 96 channels took 30 us, at 2048 20 us; VMamba-T's stage 3 at batch 1,
    512x512 (1024 rows of 384 channels) took 4.8 us in 128 programs of 8 rows, 2.5 us in 1024 of one row."""
    BC = next_power_of_2(C)
    BM = max(1, 2048 // BC)
    while BM > 1 and cdiv(rows, BM) < FWD_PROGRAMS_PER_SM * _sms(device):
        BM //= 2
    return TUNING.get("BM", BM), BC, TUNING.get("warps", 4)


def merge_norm_fwd(slices: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, out_dtype=None):
    """slices (K, ..., C), contiguous -> (LayerNorm of their sum in ``out_dtype`` (default: the slices'),
    (2, rows) float32 mean and 1/std per row). K = 1: a plain LayerNorm."""
    K, C = slices.shape[0], slices.shape[-1]
    rows = slices[0].numel() // C
    y = torch.empty(slices.shape[1:], dtype=out_dtype or slices.dtype, device=slices.device)
    stats = torch.empty(2, rows, dtype=torch.float32, device=slices.device)
    BM, BC, warps = _fwd_block(C, rows, slices.device)
    merge_norm_fwd_kernel[(cdiv(rows, BM),)](slices, weight, bias, y, stats, K, rows, C, rows * C, eps,
                                             BM=BM, BC=BC, num_warps=warps)
    return y, stats


def merge_norm_bwd(slices: torch.Tensor, weight: torch.Tensor, stats: torch.Tensor, dy: torch.Tensor,
                   dx_dtype=torch.float32, dwb: Optional[torch.Tensor] = None):
    """(d(sum of the slices) as one map in ``dx_dtype``, (2, C) float32 gradients of weight and bias, added
    into ``dwb`` when given: zeroed, contiguous)."""
    K, C = slices.shape[0], slices.shape[-1]
    rows = slices[0].numel() // C
    dx = torch.empty(slices.shape[1:], dtype=dx_dtype, device=slices.device)
    if dwb is None:
        dwb = torch.zeros(2, C, dtype=torch.float32, device=slices.device)
    BM, BC, warps = _block(C)
    grid = (_programs(dx.device, cdiv(rows, BM)),)
    merge_norm_bwd_kernel[grid](slices, weight, stats, dy.contiguous(), None, dx, None, dwb, None, K, rows, C,
                                rows * C, 1, BM=BM, BC=BC, SUM_GRAD=False, BRANCH_GRAD=False, SCALE=False,
                                num_warps=warps)
    return dx, dwb


def add_norm_fwd(x: torch.Tensor, branch: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 scale: Optional[torch.Tensor], eps: float, sum_dtype, out_dtype):
    """x, branch (batch, ..., C), contiguous, scale (batch,) float32 or None -> (x + branch * scale in ``sum_dtype``,
    its LayerNorm in ``out_dtype``, (2, rows) float32 mean and 1/std per row)."""
    C = x.shape[-1]
    rows = x.numel() // C
    s = torch.empty(x.shape, dtype=sum_dtype, device=x.device)
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    stats = torch.empty(2, rows, dtype=torch.float32, device=x.device)
    BM, BC, warps = _fwd_block(C, rows, x.device)
    add_norm_fwd_kernel[(cdiv(rows, BM),)](x, branch, weight, bias, s, y, stats, scale, rows, C, eps,
                                           rows // x.shape[0], BM=BM, BC=BC, SCALE=scale is not None, num_warps=warps)
    return s, y, stats


def add_norm_bwd(s: torch.Tensor, weight: torch.Tensor, stats: torch.Tensor, ds: torch.Tensor, dy: torch.Tensor,
                 branch_dtype=None, scale: Optional[torch.Tensor] = None):
    """(d(x + branch * scale) / dx in s's dtype, the same times the scale (if any) in ``branch_dtype`` (an empty
    tensor when None), (2, C) float32 gradients of weight and bias); ds, dy contiguous."""
    C = s.shape[-1]
    rows = s.numel() // C
    dx = torch.empty(s.shape, dtype=s.dtype, device=s.device)
    dr = torch.empty(s.shape if branch_dtype is not None else 0, dtype=branch_dtype or s.dtype, device=s.device)
    dwb = torch.zeros(2, C, dtype=torch.float32, device=s.device)
    BM, BC, warps = _block(C)
    grid = (_programs(s.device, cdiv(rows, BM)),)
    merge_norm_bwd_kernel[grid](s, weight, stats, dy, ds, dx, dr, dwb, scale, 1, rows, C, 0, rows // s.shape[0],
                                BM=BM, BC=BC, SUM_GRAD=True, BRANCH_GRAD=branch_dtype is not None,
                                SCALE=scale is not None, num_warps=warps)
    return dx, dr, dwb

"""Launchers of the Triton scan kernels, registered as ``torch.library`` custom ops.

As custom ops they are opaque to ``torch.compile`` (it calls them, it does not trace into them), and
their fake implementations give it the output shapes; those defined with ``traced=True`` are
``triton_op``s instead, which it traces once into their kernels (see :func:`_custom_op`). Every op returns
fresh tensors; an output that a call does not need is an empty tensor. Each op ``name`` is also importable
as the plain function ``_name``, which eager code calls directly (see :func:`op_or_body`).
"""
from __future__ import annotations

import functools
import math
import os
from typing import Optional, Tuple

import torch
import triton
from torch import Tensor

from .kernels import scan_bwd_kernel, scan_fwd_kernel
from .launch import _INTERPRETED, Launcher, cdiv, traced_launches
from .merge_norm import add_norm_bwd, add_norm_fwd, merge, merge_norm_bwd, merge_norm_fwd
from .projection import projection_grads

_EMPTY = (0,)
_LIB = torch.library.Library("ssm_kernels", "DEF")


def _custom_op(fn, traced: bool = False):
    """``fn`` (named ``_name``) as the op ``ssm_kernels::name``, its schema read from the annotations,
    one implementation for every device; returns the op. Defined through ``torch.library.Library``
    rather than ``torch.library.custom_op``, whose Python layers (an autograd wrapper, an aliasing
    check) cost each call tens of microseconds of host time in a compiled model: the gradients are
    ``ssm_kernels.ops``'s autograd Functions anyway.

    ``traced``: a ``torch.library.triton_op`` instead (on a GPU; under Triton's interpreter, which has no
    kernels to trace, the same Library op). ``torch.compile`` traces its body once, with fake tensors, so
    that inductor allocates the outputs and launches the kernels from its own generated code: no dispatch
    into Python and no op body on every call, which bound compiled inference by the host. The body is its
    own fake implementation (no ``_fake``): it must read no tensor's data (``data_ptr``, ``item``).
    Eager code calls ``_name`` directly either way."""
    name = fn.__name__.lstrip("_")
    if traced and not _INTERPRETED:
        op = torch.library.triton_op(f"ssm_kernels::{name}", traced_launches(fn), mutates_args=())
        _TRACED.add(op._opoverload)
        return op._opoverload
    _LIB.define(name + torch.library.infer_schema(fn, mutates_args=()))
    _LIB.impl(name, fn, "CompositeExplicitAutograd")
    return getattr(torch.ops.ssm_kernels, name).default


#: the ops defined as ``triton_op`` (their bodies are their fake implementations)
_TRACED = set()


def op_or_body(op, body):
    """The custom op under ``torch.compile`` and ``torch.jit.trace`` (they must see one op, and the launchers need
    concrete shapes); in plain eager mode its Python body, called directly: the dispatcher's round trip into Python
    costs tens of microseconds of host time per call, and an eager step of a small model is host-bound."""
    return op if torch.compiler.is_compiling() or torch.jit.is_tracing() else body


def _fake(op):
    """Decorator: the op's fake implementation (output shapes for torch.compile); none for a traced op."""
    if op in _TRACED:
        return lambda fn: fn
    return lambda fn: torch.library.register_fake(op, fn, lib=_LIB)


# wrapped here, not in kernels.py, whose plain kernels tools/kernel_sass.py compiles
_SCAN_FWD, _SCAN_BWD = Launcher(scan_fwd_kernel), Launcher(scan_bwd_kernel)


#: NaN-fill every output buffer (``SSM_KERNELS_POISON=1``, read at import: the tests and tools/check_kernels.py set
#: it first, or patch this flag), so that an element a kernel forgets to write cannot pass. Not read on every
#: call: an environment read costs the host ~2 us, and an eager step allocates ~400 buffers.
POISON = os.environ.get("SSM_KERNELS_POISON") == "1"


def _empty(*shape, like: Tensor, dtype=None) -> Tensor:
    """An output buffer the kernel must fill entirely (NaN-filled under ``POISON``)."""
    return _poisoned(torch.empty(*shape, dtype=dtype or like.dtype, device=like.device))


def _poisoned(t: Tensor) -> Tensor:
    """t, NaN-filled under ``POISON`` when it holds floating point."""
    if POISON and t.is_floating_point():
        t.fill_(float("nan"))
    return t


#: Overrides of the launch heuristics, for tools/bench_kernels.py's sweeps: "BL" (steps per chunk, shared
#: by forward and backward), and per pass ("fwd", "bwd") a dict of BD, warps, stages.
TUNING = {}


def _blocks(groups_dim: int, d_state: int, length: int, backward: bool, rank: int = 0):
    """(BD, NP, RP, BL, num_warps, stages): channels per program, padded states, padded rank of the
    step-size projection (1: none), steps per chunk, warps, software-pipelining stages.

    The kernels' tiles are (BL, NP, BD) with the lanes over channels (then states) and time inside
    each thread, so a program's BD * NP should cover its warps' lanes, and BL * NP bounds each
    thread's registers per tile. Chosen by tools/bench_kernels.py --sweep on an H100 (see
    kernels/NOTES.md), then by TUNING. BL depends on the shapes only, not on the pass, so that the
    backward's chunks are the forward's (whose end states it reads).
    """
    args = (groups_dim, d_state, length, backward, rank)
    try:  # cached for plain ints
        BD, NP, RP, BL, warps, stages = _heuristics(*args)
    except TypeError:  # symbolic sizes (torch.compile's fake tensors, dynamic shapes) are unhashable
        BD, NP, RP, BL, warps, stages = _heuristics.__wrapped__(*args)
    if not TUNING:
        return BD, NP, RP, BL, warps, stages
    override = TUNING.get("bwd" if backward else "fwd", {})
    return (override.get("BD", BD), NP, RP, TUNING.get("BL") or BL, override.get("warps", warps),
            override.get("stages", stages))


@functools.lru_cache(maxsize=None)  # every launch asks: an eager step is bound by the host
def _heuristics(groups_dim: int, d_state: int, length: int, backward: bool, rank: int):
    NP = triton.next_power_of_2(d_state)
    RP = max(16, triton.next_power_of_2(rank)) if rank else 1           # tl.dot's smallest size
    if rank:              # at least tl.dot's smallest size; at N=1 the v7 sweep preferred 32 at s1, s3 (not s4)
        BL = 32 if NP == 1 and length >= 128 else 16
    else:
        BL = min(16 if NP == 1 else 8, max(8, triton.next_power_of_2(length)))
    if NP > 1:            # lanes over 8 channels x 4 states, 4 states per thread; the backward without
        fwd, bwd = (8, 1, 3), (8, 1, 1)   # pipelining (tools/tune_scan.py, Vim-S on an H200: 7.78 -> 6.51 ms)
    elif rank:            # fused scan2d: a forward program takes 64 channels (2 per lane) up to rank 32
        fwd = (64, 1, 2) if RP <= 32 else (16, 1, 1)
        bwd = (16, 1, 2 if length >= 512 else 1)
    else:                 # lanes over 16 channels x 2 step groups
        fwd, bwd = (16, 1, 1), (16, 1, 1)
    BD, warps, stages = bwd if backward else fwd
    return min(BD, max(8, triton.next_power_of_2(groups_dim))), NP, RP, BL, warps, stages


#: With more than one state per channel, the forward saves the state entering every checkpoint segment of about
#: this many steps, not every chunk's (kernels/NOTES.md, "Training memory at d_state 16").
CKPT_STEPS = 128


def _ckpt_chunks(d_state: int, BL: int) -> int:
    """Chunks per checkpoint segment (S). The backward needs the state entering each chunk: with S = 1 it reads
    them all from the forward's saved states; with S > 1 the forward saves one per segment and the backward
    re-runs the forward over each segment (about one more forward pass), cutting the saved states S-fold.
    At d_state 1 they are small (1/16 of a bfloat16 input at 16-step chunks), so S = 1 there; at d_state 16 a
    state per 8-step chunk is four times the input (Vim-Ti: 157 MB a block at batch 128), so S * BL ~
    ``CKPT_STEPS`` (a power of two: a kernel constant, a compiled variant per value). ``TUNING['ckpt_chunks']``
    overrides (tests)."""
    return TUNING.get("ckpt_chunks") or (1 if d_state == 1 else max(1, CKPT_STEPS // BL))


def _dot_in_float32(delta: Tensor) -> bool:
    """Whether the kernels' step-size projection multiplies in float32: for a float32 factor, and under
    Triton's interpreter, whose tl.dot returns garbage for bfloat16 operands (Triton 3.8: ~1e10 errors
    on a 16x16 product; float16 and float32 are right), so CI checks that path in float32 only."""
    return delta.dtype == torch.float32 or (_INTERPRETED and delta.dtype == torch.bfloat16)


def _check_offsets(*tensors: Optional[Tensor]) -> None:
    """The kernels address each batch element (and direction) from an int64 base with int32 offsets:
    refuse tensors whose span within one batch element does not fit them."""
    for t in tensors:
        span = _span(t.shape[1:], t.stride()[1:]) if t is not None and t.dim() > 1 else 0
        if span >= 2 ** 31:
            raise ValueError(f"scan kernels: a tensor of shape {tuple(t.shape)} spans {span} elements per batch "
                             "element; the Triton kernels address at most 2**31 - 1 (split the batch or the map)")


@functools.lru_cache(maxsize=4096)
def _span(shape, strides) -> int:
    return 1 + sum((size - 1) * stride for size, stride in zip(shape, strides))


def _maybe(t: Optional[Tensor], like: Tensor) -> Tensor:
    return t if t is not None else like  # a pointer the kernel never reads


def map_strides(t: Tensor):
    """(per batch, per position, per direction, per channel) strides of a (batch, H, W, C) or
    (batch, H, W, K, C) map, or None where the kernels cannot address it: its channels must be
    contiguous and its positions one axis (row stride = W x column stride). Slices of the last axis
    qualify (VMamba's dt, B, C: views of one projection's output, read in place)."""
    st = t.stride()
    if st[-1] != 1 and t.shape[-1] > 1 or t.shape[1] > 1 and st[1] != t.shape[2] * st[2]:
        return None
    return st[0], st[2], (st[3] if t.dim() == 5 else 0), 1


def _per_direction(t: Tensor):
    """A (batch, H, W, K, C) map's strides in the kernels' order: batch, direction, channel, step."""
    strides = map_strides(t)
    if strides is None:
        raise ValueError(f"scan2d: a map of shape {tuple(t.shape)} with strides {t.stride()} cannot be read in "
                         "place (channels must be contiguous, positions one axis); pass .contiguous()")
    sb, sp, sk, sc = strides
    return sb, sk, sc, sp


class _Layout:
    """Strides (per batch, per direction, per channel, per step) of u/out, delta and B/C."""

    def __init__(self, u, delta, bc, batch, K, Dg, N, L, rank=0):
        self.u, self.delta, self.bc = u, delta, bc
        self.batch, self.K, self.Dg, self.N, self.L, self.rank = batch, K, Dg, N, L, rank

    @staticmethod
    def sequences(batch, K, Dg, N, L, bc=None):
        """selective_scan: u, delta (batch, K*Dg, L); B, C (batch, K, N, L), contiguous or with the strides
        ``bc`` (both the same, steps contiguous)."""
        ul = (K * Dg * L, Dg * L, L, 1)
        return _Layout(ul, ul, bc or (K * N * L, N * L, L, 1), batch, K, Dg, N, L)

    @staticmethod
    def maps(u, delta, B, K, Dg, L, split_channels, rank=0):
        """scan2d, from the tensors' own strides (see :func:`map_strides`): u (batch, H, W, C) read by
        all (or, split, its own group of) directions; delta (batch, H, W, K, Dg), or its low-rank factor
        (batch, H, W, K, rank); B, C (batch, H, W, K, N)."""
        ub, up, _, uc = map_strides(u)
        u_strides = (ub, Dg * uc if split_channels else 0, uc, up)
        return _Layout(u_strides, _per_direction(delta), _per_direction(B), u.shape[0], K, Dg, B.shape[-1], L, rank)

    def checkpoints(self, recompute: bool = True):
        """(chunks per checkpoint segment S, states saved per sequence: with S = 1 every chunk's end state (the
        last one unused, its store unconditional as it always was), else the state entering every segment after
        the first: none for a sequence of one segment). ``recompute=False``: S = 1 at any d_state."""
        _, NP, _, BL, *_ = _blocks(self.Dg, self.N, self.L, False, self.rank)
        n_chunks = cdiv(self.L, BL)
        S = _ckpt_chunks(self.N, BL) if recompute else 1
        return S, (n_chunks if S == 1 else cdiv(n_chunks, S) - 1)

    def ckpt_shape(self, recompute: bool = True):
        """The states the forward saves for the backward, (batch, K, saved states, NP, Dg), float32."""
        _, NP, *_ = _blocks(self.Dg, self.N, self.L, False, self.rank)
        return (self.batch, self.K, self.checkpoints(recompute)[1], NP, self.Dg)

    def grid(self, BD):
        return (self.K, cdiv(self.Dg, BD), self.batch)

    def strides(self):
        return (*self.u, *self.delta, *self.bc)


@functools.lru_cache(maxsize=None)
def _multiprocessors(device: int) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


#: The forward splits sequences into segments until the grid has about this many programs per SM ... Its programs
#: are one warp each, so at batch 1 an SM waits on few warps' loads: 8 took vmamba_tiny at batch 1 (CUDA graph,
#: H200) from 2.62 to 2.34 ms at 1024x1024 and 9.31 to 7.91 ms at 2048x2048 against 4, vim_small at 1024x1024 from
#: 14.3 to 7.8 ms; no family slower; 16 and 32 were slower than 8 (kernels/NOTES.md, v10.14).
PROGRAMS_PER_SM = 8
#: ... keeping at least this many chunks in a segment (the summary pass re-reads every segment once). 8 left VMamba-T's
#: stage 3 at batch 1, 512x512 (L = 1024, 32 chunks) with 96 programs of 256 steps on 132 SMs: no faster than at
#: 1024x1024 (384 programs), so the time per pixel rose at small maps; 2 gives it 384 programs of 64 steps.
MIN_SEGMENT_CHUNKS = 2


def _segments(programs: int, n_chunks: int, device: torch.device) -> Tuple[int, int]:
    """(segments per sequence, chunks per segment) for the forward: one segment unless the grid of
    (direction, channel block, batch element) programs is too small for the GPU (a long sequence at a
    small batch), then enough segments to give every SM a few programs. Segments are cut only where they
    at least double the grid: a grid of half the target (224x224 at batch 128) gains less than the summary
    pass costs. ``TUNING['segments']`` overrides (tests use it under the interpreter, where the GPU's size
    is unknown)."""
    wanted = TUNING.get("segments")
    if wanted is None:
        if _INTERPRETED or device.type != "cuda":
            return 1, n_chunks
        target = PROGRAMS_PER_SM * _multiprocessors(device.index if device.index is not None else 0)
        wanted = min(target // programs, n_chunks // MIN_SEGMENT_CHUNKS)
    seg_chunks = cdiv(n_chunks, max(1, min(wanted, n_chunks)))
    return cdiv(n_chunks, seg_chunks), seg_chunks


def _launch_fwd(layout: _Layout, u, delta, A, B, C, D, bias, z, index, dtw, out, s_dir, softplus,
                store_last, store_states, by_step=False, a_log=False, recompute=True):
    """Forward into ``out`` (u's layout, direction k offset by k * s_dir; with ``by_step``, (K, batch, L, Dg)
    by step); returns (last or None, states or None, ckpt). ``a_log``: A holds A_log (A = -exp(A_log))."""
    BD, NP, RP, BL, warps, stages = _blocks(layout.Dg, layout.N, layout.L, False, layout.rank)
    _check_offsets(u, delta, B, C, z)
    f32 = dict(like=u, dtype=torch.float32)
    ckpt = _empty(layout.ckpt_shape(recompute), **f32)   # padded states: never read
    n_chunks = cdiv(layout.L, BL)
    S, n_ckpt = layout.checkpoints(recompute)
    last = _empty(layout.batch, layout.K * layout.Dg, layout.N, **f32) if store_last else None
    states = _empty(layout.batch, layout.K * layout.Dg, layout.N, layout.L, **f32) if store_states else None
    K, blocks, batch = layout.grid(BD)
    n_seg, seg_chunks = _segments(K * blocks * batch, n_chunks, u.device)
    summaries = _empty(batch, K, n_seg, 2, NP, layout.Dg, **f32) if n_seg > 1 else ckpt
    for summary in ((True, False) if n_seg > 1 else (False,)):
        _SCAN_FWD[(K, blocks, batch * n_seg)](
            u, delta, A, B, C, _maybe(D, A), _maybe(bias, A), _maybe(z, u), _maybe(index, A), _maybe(dtw, A),
            out, _maybe(last, ckpt), _maybe(states, ckpt), ckpt, summaries,
            layout.L, layout.Dg, layout.N, max(layout.rank, 1), n_chunks, n_seg, seg_chunks, n_ckpt,
            *layout.strides(),
            s_dir, HAS_D=D is not None, HAS_BIAS=bias is not None, HAS_Z=z is not None, HAS_INDEX=index is not None,
            HAS_DT_PROJ=dtw is not None, SOFTPLUS=softplus, DOT_F32=_dot_in_float32(delta),
            FAST_MATH=not _INTERPRETED, STORE_STATES=store_states, STORE_LAST=store_last, SUMMARY=summary,
            BY_STEP=by_step, CKPT_CHUNKS=S, A_LOG=a_log, BD=BD, NP=NP, RP=RP, BL=BL, STAGES=stages, num_warps=warps,
        )
    return last, states, ckpt


def _aligned(n):
    return cdiv(n, 4) * 4  # float32 elements: every gradient of the buffer starts 16-byte aligned


def accumulator_shapes(A: Tensor, B: Tensor, C: Tensor, dt_weight: Optional[Tensor] = None,
                       norm_weight: Optional[Tensor] = None, packed_bc: bool = False):
    """The float32 gradients that the backward kernels accumulate with atomic adds, in their order in one
    flat buffer: dA, dD, ddelta_bias, dB, dC, the step-size projection's (empty without one), the out-norm's
    (2, C) weight and bias (empty without one). ``packed_bc``: dB and dC side by side in one (..., 2N)
    buffer in dB's place (dC's empty), to be cast into a whole projection's gradient in one copy."""
    KD = A.shape[0]
    bc = ((*B.shape[:-1], 2 * B.shape[-1]), (0,)) if packed_bc else (tuple(B.shape), tuple(C.shape))
    return (tuple(A.shape), (KD,), (KD,), *bc,
            tuple(dt_weight.shape) if dt_weight is not None else (0,),
            (2, norm_weight.shape[0]) if norm_weight is not None else (0,))


def accumulator_size(shapes) -> int:
    return sum(_aligned(math.prod(shape)) for shape in shapes)


def split_accumulators(flat: Tensor, shapes):
    """Views of the flat buffer (see :func:`accumulator_shapes`), one per shape."""
    views, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        views.append(flat[start:start + n].view(shape))
        start += _aligned(n)
    return views


def _accumulators(shapes, device):
    """One zeroed buffer for every gradient accumulated with atomic adds, and its views: one fill kernel
    a backward instead of one per gradient (an eager training step is bound by the host's launches). The
    ops return the flat buffer, not the views: a custom op's outputs must not alias each other."""
    flat = torch.zeros(accumulator_size(shapes), dtype=torch.float32, device=device)
    return flat, split_accumulators(flat, shapes)


def _launch_bwd(layout: _Layout, u, delta, A, B, C, D, bias, z, index, dtw, ckpt, dout, dlast, dstates, du, s_dir,
                softplus, acc, partial_paths=False, one_map_delta=False, by_step=False, a_log=False, d_low=None):
    """Backward, du into ``du`` like the forward's output, dA, dD, dbias, dB, dC and the projection's
    gradient added into the zeroed views ``acc`` (:func:`_accumulators`); returns (ddelta, dz or None).
    ``one_map_delta``: disjoint paths whose directions all read one low-rank step-size map; the full
    step size's gradient is then one map, each position written once. With ``by_step`` (paths that visit
    positions more than once), dout and du are (K, batch, L, Dg) by step, and the step-size gradient,
    written by step, is summed over each position's visits here. ``a_log``: A holds A_log, and dA is its gradient.
    ``d_low``: where the low-rank step size's gradient goes (a slice of the whole projection's gradient)."""
    BD, NP, RP, BL, warps, stages = _blocks(layout.Dg, layout.N, layout.L, True, layout.rank)
    n_chunks = cdiv(layout.L, BL)
    # the forward saved checkpoint segments (the backward re-runs them: fewer than one state a chunk) or every
    # chunk's end state (recompute_states=False); the chunks are the forward's (BL depends on the shapes only)
    recompute = ckpt.shape[2] != n_chunks
    assert tuple(ckpt.shape) == layout.ckpt_shape(recompute), "saved states from another chunk or checkpoint length"
    S, n_ckpt = layout.checkpoints(recompute)
    # with S > 1, every program's chunk-start states of the checkpoint segment it is in (see kernels.py)
    slots = min(S, n_chunks)
    scratch = _empty(slots, layout.batch, layout.K, NP, layout.Dg, like=u, dtype=torch.float32) if S > 1 else ckpt
    _check_offsets(u, delta, B, C, z, dout)
    # The step-size gradient: contiguous in delta's shape, or with a low-rank step size as (K, b, P, Dg)
    # for the kernel that takes it through the projection (projection.py). Positions a direction never visits (paths
    # over a sub-grid) get nothing written, hence zeros for partial paths. dB, dC: contiguous in B's
    # shape (B itself may be a view). Their strides come from the buffers.
    maps = delta.dim() == 5
    one_map = one_map_delta and dtw is not None
    positions = delta.shape[1] * delta.shape[2] if maps else 0
    shape = ((1 if one_map else layout.K), layout.batch, positions, layout.Dg) if dtw is not None else delta.shape
    if by_step:
        shape = (layout.K, layout.batch, layout.L, layout.Dg)
    partial = partial_paths and not one_map
    ddelta = torch.zeros(shape, dtype=delta.dtype, device=u.device) if partial else _empty(shape, like=delta)
    if dtw is not None or by_step:
        sk, sb, sp, sc = ddelta.stride()
        g_strides = (sb, 0 if one_map else sk, sc, sp)
    else:
        g_strides = _per_direction(ddelta) if maps else layout.delta
    dA, dD, dbias, dB, dC, ddtw = acc[:6]
    db_strides = _per_direction(dB) if maps else layout.bc
    dz = _empty(z.shape, like=z) if z is not None else None
    _SCAN_BWD[layout.grid(BD)](
        u, delta, A, B, C, _maybe(D, A), _maybe(bias, A), _maybe(z, u), _maybe(index, A), _maybe(dtw, A), ckpt,
        scratch, dout, _maybe(dlast, A), _maybe(dstates, A),
        du, ddelta, dA, dB, dC, dD, dbias, _maybe(dz, u),
        layout.L, layout.Dg, layout.N, max(layout.rank, 1), n_chunks, n_ckpt, *layout.strides(), s_dir, *g_strides,
        *db_strides,
        HAS_D=D is not None, HAS_BIAS=bias is not None, HAS_Z=z is not None, HAS_INDEX=index is not None,
        HAS_DT_PROJ=dtw is not None, SOFTPLUS=softplus, DOT_F32=_dot_in_float32(delta), FAST_MATH=not _INTERPRETED,
        HAS_DSTATES=dstates is not None, A_LOG=a_log,
        HAS_DLAST=dlast is not None, BY_STEP=by_step, CKPT_CHUNKS=S, BD=BD, NP=NP, RP=RP, BL=BL, STAGES=stages,
        num_warps=warps,
    )
    if by_step:  # (K, batch, positions, Dg), each position's visits summed
        ddelta = sum_visits(ddelta, index, positions, torch.float32, per_direction=True).to(delta.dtype)
        if dtw is None:
            ddelta = ddelta.permute(1, 2, 0, 3).reshape(delta.shape)
        shape = ddelta.shape
    if dtw is not None:  # through delta[k] = dtw[k] @ low[k]
        ddelta = projection_grads(ddelta.view(shape[0], -1, layout.Dg), delta, dtw, ddtw, _dot_in_float32(delta),
                                  index if one_map else None, out=d_low)
    return ddelta, dz


# ---- selective_scan --------------------------------------------------------------------------

def _seq_layout(u, A, B, bc=None):
    batch, channels, L = u.shape
    K = B.shape[1]
    return _Layout.sequences(batch, K, channels // K, A.shape[1], L, bc)


def _bc_readable(B: Tensor, C: Tensor) -> bool:
    """Whether the forward reads (batch, K, N, L) B and C in place: the same strides, steps contiguous (slices of
    one projection's output, or C the same tensor as B: the state-only scan)."""
    return B.stride() == C.stride() and B.stride(-1) == 1


def _selective_scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                       z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                       return_last_state: bool, return_states: bool, a_is_log: bool = False
                       ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(out, last state or empty, all states or empty, the states saved for the backward). B, C: (batch, K, N, L).
    ``a_is_log``: A holds A_log, the scan's A = -exp(A_log)."""
    out = _empty(u.shape, like=u)
    bc = tuple(B.stride()) if _bc_readable(B, C) else None
    B, C = (B, C) if bc else (B.contiguous(), C.contiguous())
    last, states, ckpt = _launch_fwd(_seq_layout(u, A, B, bc), u, delta, A, B, C, D, delta_bias, z, None, None, out,
                                     0, delta_softplus, return_last_state, return_states, a_log=a_is_log)
    last = last if last is not None else u.new_empty(_EMPTY, dtype=torch.float32)
    states = states if states is not None else u.new_empty(_EMPTY, dtype=torch.float32)
    return out, last, states, ckpt


selective_scan_fwd = _custom_op(_selective_scan_fwd)


@_fake(selective_scan_fwd)
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, return_states, a_is_log=False):
    batch, channels, L = u.shape
    N = A.shape[1]
    last = u.new_empty((batch, channels, N) if return_last_state else _EMPTY, dtype=torch.float32)
    states = u.new_empty((batch, channels, N, L) if return_states else _EMPTY, dtype=torch.float32)
    ckpt = u.new_empty(_seq_layout(u, A, B).ckpt_shape(), dtype=torch.float32)
    return torch.empty_like(u), last, states, ckpt


def _selective_scan_bwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                       z: Optional[Tensor], delta_bias: Optional[Tensor], ckpt: Tensor, dout: Tensor,
                       dlast: Optional[Tensor], dstates: Optional[Tensor], delta_softplus: bool, a_is_log: bool = False
                       ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(du, ddelta, dz or empty, the float32 gradients of A (of A_log if ``a_is_log``), D, delta_bias, B, C
    in one flat buffer: see :func:`accumulator_shapes`)."""
    du = _empty(u.shape, like=u)
    flat, acc = _accumulators(accumulator_shapes(A, B, C), u.device)
    ddelta, dz = _launch_bwd(_seq_layout(u, A, B), u, delta, A, B, C, D, delta_bias, z, None, None, ckpt, dout, dlast,
                             dstates, du, 0, delta_softplus, acc, a_log=a_is_log)
    return du, ddelta, (dz if dz is not None else u.new_empty(_EMPTY)), flat


selective_scan_bwd = _custom_op(_selective_scan_bwd)


@_fake(selective_scan_bwd)
def _(u, delta, A, B, C, D, z, delta_bias, ckpt, dout, dlast, dstates, delta_softplus, a_is_log=False):
    dz = torch.empty_like(z) if z is not None else u.new_empty(_EMPTY)
    flat = u.new_empty(accumulator_size(accumulator_shapes(A, B, C)), dtype=torch.float32)
    return torch.empty_like(u), torch.empty_like(delta), dz, flat


# ---- scan2d (fused gather + scan + merge) ----------------------------------------------------

def _direction_buffer(u, index, split_channels, disjoint=False, dtype=None):
    """Where the K directions write (output, or du): one slice each, or u's own layout when each
    direction owns a channel group or its own positions (disjoint paths: every position written once).
    Zeroed where paths leave positions unvisited. In u's dtype unless ``dtype``. Returns (buffer, s_dir)."""
    one_map = split_channels or disjoint
    partial = index.shape[1] < u.shape[1] * u.shape[2] and not disjoint
    shape = u.shape if one_map else (index.shape[0], *u.shape)
    dtype = dtype or u.dtype
    buf = torch.zeros(shape, dtype=dtype, device=u.device) if partial else _empty(shape, like=u, dtype=dtype)
    return buf, (0 if one_map else u.numel())


def sum_visits(steps: Tensor, index: Tensor, positions: int, dtype, per_direction: bool = False) -> Tensor:
    """(K, batch, L, C) rows by step -> (batch, positions, C), each position the sum of its visits by every
    direction (``per_direction``: (K, batch, positions, C), by each direction apart), accumulated in ``dtype``."""
    K, batch, L, channels = steps.shape
    first = torch.arange(K * batch if per_direction else batch, device=steps.device) * positions
    rows = first.view(-1, batch, 1) if per_direction else first.view(1, batch, 1).expand(K, batch, 1)
    rows = (rows + index.view(K, 1, L)).reshape(-1)
    out = torch.zeros(first.numel() * positions, channels, dtype=dtype, device=steps.device)
    out.index_add_(0, rows, steps.reshape(-1, channels).to(dtype))
    return out.view(K, batch, positions, channels) if per_direction else out.view(batch, positions, channels)


def _merge(buf, one_map, dtype=torch.float32):
    """The K directions' slices summed onto one map (a single map: as it is)."""
    return buf.to(dtype) if one_map else merge(buf, dtype)


def _map_layout(u, delta, B, index, split_channels, dt_weight):
    K, L = index.shape
    Dg = dt_weight.shape[1] if dt_weight is not None else delta.shape[-1]
    rank = dt_weight.shape[2] if dt_weight is not None else 0
    return _Layout.maps(u, delta, B, K, Dg, L, split_channels, rank)


def unpack_projection(delta, B, C, dt_weight, A):
    """(delta, B, C) as given or, with B and C None, the slices [..., :R], [..., R:R + N] and [..., R + N:] of
    ``delta``, then the whole x_proj output (b, H, W, K, R + 2N) (R: dt_weight's rank, N: A's states)."""
    if B is not None:
        return delta, B, C
    R, N = dt_weight.shape[2], A.shape[1]
    return delta.split([R, N, N], dim=-1)


def _scan2d_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Optional[Tensor], C: Optional[Tensor], D: Optional[Tensor],
               delta_bias: Optional[Tensor], index: Tensor, dt_weight: Optional[Tensor], norm_weight: Optional[Tensor],
               norm_bias: Optional[Tensor], norm_eps: float, delta_softplus: bool, split_channels: bool,
               disjoint: bool = False, by_step: bool = False, a_is_log: bool = False, recompute: bool = True
               ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(output, the states saved for the backward, the directions' slices, the norm's row statistics).

    u (b, H, W, C), contiguous; delta (b, H, W, K, Dg), or with ``dt_weight`` (K, Dg, R) its low-rank
    factor (b, H, W, K, R); B, C (b, H, W, K, N) with equal strides; delta, B and C may be views (see
    :func:`map_strides`); index (K, L). The output is the merged map in float32, or, given
    ``norm_weight`` and ``norm_bias``, its LayerNorm in u's dtype; then the slices (K, b, H, W, C) and
    the (2, rows) statistics are kept for the backward (else both empty). With ``disjoint`` paths (each
    position visited by one direction) the directions write one map: a single slice.

    ``by_step``: the paths visit positions more than once (not with split channels). The kernel writes its
    outputs by step, (K, b, L, C); these (with a norm: K = 1, each step normalised) are summed onto the map.
    The slices and statistics kept are then the steps' (K, b, L, C) and (2, b * L).

    ``a_is_log``: A holds A_log, the scan's A = -exp(A_log). B and C None: delta is the whole projection
    (see :func:`unpack_projection`), read in place. ``recompute=False``: at d_state > 1, save every chunk's end
    state instead of checkpoint segments (more memory, no re-run in the backward; see :func:`_ckpt_chunks`)."""
    delta, B, C = unpack_projection(delta, B, C, dt_weight, A)
    if by_step:
        return _scan2d_by_step_fwd(u, delta, A, B, C, D, delta_bias, index, dt_weight, norm_weight, norm_bias,
                                   norm_eps, delta_softplus, a_is_log, recompute)
    # one map, not normed: the kernel writes the float32 result itself (no low-precision buffer, no cast after it)
    direct = (split_channels or disjoint) and norm_weight is None
    out, s_dir = _direction_buffer(u, index, split_channels, disjoint, torch.float32 if direct else None)
    _, _, ckpt = _launch_fwd(_map_layout(u, delta, B, index, split_channels, dt_weight), u, delta, A, B, C, D,
                             delta_bias, None, index, dt_weight, out, s_dir, delta_softplus, False, False,
                             a_log=a_is_log, recompute=recompute)
    if norm_weight is None:
        return (_merge(out, split_channels or disjoint), ckpt, u.new_empty(_EMPTY),
                u.new_empty(_EMPTY, dtype=torch.float32))
    slices = out.unsqueeze(0) if split_channels or disjoint else out
    y, stats = merge_norm_fwd(slices, norm_weight, norm_bias, norm_eps)
    return y, ckpt, slices, stats


def _scan2d_by_step_fwd(u, delta, A, B, C, D, delta_bias, index, dt_weight, norm_weight, norm_bias, norm_eps,
                        delta_softplus, a_is_log=False, recompute=True):
    K, L = index.shape
    batch, positions, channels = u.shape[0], u.shape[1] * u.shape[2], u.shape[3]
    steps = _empty(K, batch, L, channels, like=u)
    _, _, ckpt = _launch_fwd(_map_layout(u, delta, B, index, False, dt_weight), u, delta, A, B, C, D, delta_bias,
                             None, index, dt_weight, steps, 0, delta_softplus, False, False, by_step=True,
                             a_log=a_is_log, recompute=recompute)
    if norm_weight is None:
        y = sum_visits(steps, index, positions, torch.float32).view(u.shape)
        return y, ckpt, u.new_empty(_EMPTY), u.new_empty(_EMPTY, dtype=torch.float32)
    normed, stats = merge_norm_fwd(steps, norm_weight, norm_bias, norm_eps)  # K = 1: each step's LayerNorm
    y = sum_visits(normed.unsqueeze(0), index, positions, torch.float32).view(u.shape).to(u.dtype)
    return y, ckpt, steps, stats


def _slices_shape(u, index, one_map, by_step=False):
    if by_step:
        return (index.shape[0], u.shape[0], index.shape[1], u.shape[3])
    return ((1 if one_map else index.shape[0]), *u.shape)


scan2d_fwd = _custom_op(_scan2d_fwd, traced=True)


@_fake(scan2d_fwd)
def _(u, delta, A, B, C, D, delta_bias, index, dt_weight, norm_weight, norm_bias, norm_eps, delta_softplus,
      split_channels, disjoint=False, by_step=False, a_is_log=False, recompute=True):
    delta, B, C = unpack_projection(delta, B, C, dt_weight, A)
    ckpt = u.new_empty(_map_layout(u, delta, B, index, split_channels, dt_weight).ckpt_shape(recompute),
                       dtype=torch.float32)
    if norm_weight is None:
        return (u.new_empty(u.shape, dtype=torch.float32), ckpt, u.new_empty(_EMPTY),
                u.new_empty(_EMPTY, dtype=torch.float32))
    rows = u.shape[0] * index.shape[1] if by_step else u.numel() // u.shape[-1]
    return (torch.empty_like(u), ckpt, u.new_empty(_slices_shape(u, index, split_channels or disjoint, by_step)),
            u.new_empty((2, rows), dtype=torch.float32))


def _scan2d_bwd(u: Tensor, delta: Tensor, A: Tensor, B: Optional[Tensor], C: Optional[Tensor], D: Optional[Tensor],
               delta_bias: Optional[Tensor], index: Tensor, dt_weight: Optional[Tensor], norm_weight: Optional[Tensor],
               ckpt: Tensor, slices: Tensor, stats: Tensor, dout: Tensor, delta_softplus: bool, split_channels: bool,
               disjoint: bool = False, by_step: bool = False, a_is_log: bool = False
               ) -> Tuple[Tensor, Tensor, Tensor]:
    """(du, ddelta, the float32 gradients of A (of A_log if ``a_is_log``), D, delta_bias, B, C, dt_weight and
    the norm's weight and bias in one flat buffer: see :func:`accumulator_shapes`); du and ddelta in u's and
    delta's dtypes. With B and C None (delta the whole projection, :func:`unpack_projection`), ddelta is the whole
    projection's gradient: the low-rank step size's written into its slice, dB and dC cast into the rest in
    one copy (no concatenation after the op), and the buffer holds dB and dC side by side."""
    packed = B is None
    proj = delta
    delta, B, C = unpack_projection(delta, B, C, dt_weight, A)
    flat, acc = _accumulators(accumulator_shapes(A, B, C, dt_weight, norm_weight, packed), u.device)
    d_proj = d_low = None
    if packed:
        R, N = dt_weight.shape[2], A.shape[1]
        dbc = acc[3]
        acc[3], acc[4] = dbc[..., :N], dbc[..., N:]
        d_proj = _empty(proj.shape, like=proj)
        d_low = d_proj[..., :R]
    if by_step:  # every step's gradient gathered from its position (with a norm: back through each step's)
        K, L = index.shape
        batch, positions, channels = u.shape[0], u.shape[1] * u.shape[2], u.shape[3]
        dsteps = dout.reshape(batch, positions, channels)[:, index.reshape(-1)]
        dsteps = dsteps.view(batch, K, L, channels).transpose(0, 1).contiguous()
        if norm_weight is not None:
            dsteps, _ = merge_norm_bwd(slices, norm_weight, stats, dsteps[0], dwb=acc[6])
        du = _empty(K, batch, L, channels, like=u)
        ddelta, _ = _launch_bwd(_map_layout(u, delta, B, index, False, dt_weight), u, delta, A, B, C, D, delta_bias,
                                None, index, dt_weight, ckpt, dsteps, None, None, du, 0, delta_softplus, acc,
                                by_step=True, a_log=a_is_log, d_low=d_low)
        if packed:
            d_proj[..., R:].copy_(dbc)
            ddelta = d_proj
        return sum_visits(du, index, positions, torch.float32).view(u.shape).to(u.dtype), ddelta, flat
    if norm_weight is not None:  # back through the norm: one gradient map for every direction
        dout, _ = merge_norm_bwd(slices, norm_weight, stats, dout, dwb=acc[6])
    du, s_dir = _direction_buffer(u, index, split_channels, disjoint)
    partial = index.shape[1] < u.shape[1] * u.shape[2]
    one_map_delta = disjoint and delta.stride(3) == 0  # every direction reads one step-size map
    ddelta, _ = _launch_bwd(_map_layout(u, delta, B, index, split_channels, dt_weight), u, delta, A, B, C, D,
                            delta_bias, None, index, dt_weight, ckpt, dout, None, None, du, s_dir, delta_softplus, acc,
                            partial, one_map_delta, a_log=a_is_log, d_low=d_low)
    if packed:
        d_proj[..., R:].copy_(dbc)
        ddelta = d_proj
    return _merge(du, split_channels or disjoint, u.dtype), ddelta, flat


scan2d_bwd = _custom_op(_scan2d_bwd)


@_fake(scan2d_bwd)
def _(u, delta, A, B, C, D, delta_bias, index, dt_weight, norm_weight, ckpt, slices, stats, dout, delta_softplus,
      split_channels, disjoint=False, by_step=False, a_is_log=False):
    packed = B is None
    _, B, C = unpack_projection(delta, B, C, dt_weight, A)
    flat = u.new_empty(accumulator_size(accumulator_shapes(A, B, C, dt_weight, norm_weight, packed)),
                       dtype=torch.float32)
    # ddelta is contiguous whatever delta's strides (a view of the projection, or a layout inductor chose)
    return torch.empty_like(u), delta.new_empty(delta.shape), flat


# ---- layer_norm (the merge-norm kernels with one slice) -------------------------------------

def _layer_norm_fwd(x: Tensor, weight: Tensor, bias: Tensor, eps: float, out_dtype: torch.dtype
                    ) -> Tuple[Tensor, Tensor]:
    """(LayerNorm of x (..., C), contiguous, over C in ``out_dtype``, (2, rows) float32 mean and 1/std)."""
    return merge_norm_fwd(x.unsqueeze(0), weight, bias, eps, out_dtype)


layer_norm_fwd = _custom_op(_layer_norm_fwd, traced=True)


@_fake(layer_norm_fwd)
def _(x, weight, bias, eps, out_dtype):
    return x.new_empty(x.shape, dtype=out_dtype), x.new_empty((2, x.numel() // x.shape[-1]), dtype=torch.float32)


def _layer_norm_bwd(x: Tensor, weight: Tensor, stats: Tensor, dy: Tensor) -> Tuple[Tensor, Tensor]:
    """(dx in x's dtype, (2, C) float32 gradients of weight and bias)."""
    return merge_norm_bwd(x.unsqueeze(0), weight, stats, dy, x.dtype)


layer_norm_bwd = _custom_op(_layer_norm_bwd)


@_fake(layer_norm_bwd)
def _(x, weight, stats, dy):
    return torch.empty_like(x), x.new_empty((2, x.shape[-1]), dtype=torch.float32)


# ---- add_layer_norm (a residual add and the LayerNorm after it) ------------------------------

def _add_layer_norm_fwd(x: Tensor, branch: Tensor, weight: Tensor, bias: Tensor, scale: Optional[Tensor], eps: float,
                        sum_dtype: torch.dtype, out_dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
    """(x + branch * scale in ``sum_dtype``, its LayerNorm over C in ``out_dtype``, (2, rows) float32 mean and
    1/std); x and branch (batch, ..., C) contiguous, of one shape; scale (batch,) float32 or None."""
    return add_norm_fwd(x, branch, weight, bias, scale, eps, sum_dtype, out_dtype)


add_layer_norm_fwd = _custom_op(_add_layer_norm_fwd, traced=True)


@_fake(add_layer_norm_fwd)
def _(x, branch, weight, bias, scale, eps, sum_dtype, out_dtype):
    return (x.new_empty(x.shape, dtype=sum_dtype), x.new_empty(x.shape, dtype=out_dtype),
            x.new_empty((2, x.numel() // x.shape[-1]), dtype=torch.float32))


def _add_layer_norm_bwd(s: Tensor, weight: Tensor, stats: Tensor, ds: Tensor, dy: Tensor,
                        branch_dtype: Optional[torch.dtype], scale: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """(the sum's gradient in its dtype, the same times the scale in ``branch_dtype`` (empty when None), (2, C)
    float32 gradients of weight and bias)."""
    return add_norm_bwd(s, weight, stats, ds, dy, branch_dtype, scale)


add_layer_norm_bwd = _custom_op(_add_layer_norm_bwd)


@_fake(add_layer_norm_bwd)
def _(s, weight, stats, ds, dy, branch_dtype, scale):
    return (torch.empty_like(s), s.new_empty(s.shape if branch_dtype is not None else _EMPTY, dtype=branch_dtype),
            s.new_empty((2, s.shape[-1]), dtype=torch.float32))

"""Triton kernels of the selective scan, forward and backward.

One pair of kernels serves both ops, told apart by how they address memory:

- ``selective_scan``: u, delta (batch, K*D, L) with B, C (batch, K, N, L); each output element is
  written by one program;
- ``scan2d`` (fused): u is a channels-last map (batch, H*W, D) read by every direction, B and C are
  (batch, H*W, K, N); step t of direction k visits position ``index[k, t]`` and writes its output
  (and, in backward, du) at that position of its own slice of a (K, batch, H*W, D) buffer, which the
  caller sums over K (plain stores: float32 atomic adds onto one map measured several times slower on
  an H100); where the paths are disjoint (each position visited by one direction) the slices are one
  map (``s_dir = 0``) and nothing is summed. The K gathered copies of the input are never made. The step size comes either as a map
  (batch, H*W, K, D) or, with ``HAS_DT_PROJ``, as its low-rank factor (batch, H*W, K, R) with the
  (K, D, R) projection applied in registers: the forward never materialises the (batch, H*W, K, D)
  step sizes. The backward writes their gradient for the caller's two batched matmuls.

A program owns (direction k, a block of BD channels, one batch element) and walks its sequence in
chunks of BL steps: load the chunk, scan it with ``tl.associative_scan`` over (decay, input) pairs,
add the state carried in from the previous chunk. The backward walks the chunks in reverse, recomputes
each chunk's states from the state entering it, and runs the adjoint recurrence s_t = g_t + a_{t+1} s_{t+1}
as a scan over the time-flipped chunk. The forward saves the state entering every checkpoint segment of
``CKPT_CHUNKS`` chunks (the first aside). With one chunk a segment (N = 1: the saved states are small) the
backward reads each chunk's start state from them; with more (N = 16, where a state per 8-step chunk was
four times the input) it first re-runs the forward over each segment from its saved state, storing the
segment's chunk-start states in a scratch, then walks the segment's chunks in reverse.

A long sequence at a small batch gives too few programs to fill the GPU (VMamba-T at 1536x1536,
batch 2: 16 programs for 132 SMs, the scan 83% of the forward). The forward can then split each
sequence into segments of whole chunks, one program each, in two launches: a summary pass that scans
every segment from a zero state and keeps only its end state and the product of its decays, then the
main pass, where each program first folds the summaries of the segments before its own into the
state entering it (h = P_j h + E_j, a few (NP, BD) loads per earlier segment) and scans as usual. The gradient through the decay
needs a_t h_{t-1}, which is h_t - x_t: no second scan of the inputs shifted by one. Memory stays
O(batch * channels * L).

Tiles are time-major, (BL, NP, BD): Triton's default layout spreads the lanes of a warp over the
last axis (channels, then states) and leaves the first axis (time) inside each thread, so the scans
over time run sequentially in registers. With time across lanes (the natural (BD, NP, BL) order) the
scans and the chunk-end extractions were shuffle trees: 15 warp shuffles per element in the N=1
forward, 46 in the backward, and they bounded the kernels' speed on an H100.
"""
import triton
import triton.language as tl


@triton.jit
def _combine(a1, x1, a2, x2):
    # (a1, x1) then (a2, x2): h -> a2 * (a1 * h + x1) + x2.
    return a1 * a2, x1 * a2 + x2


@triton.jit
def _combine_adjoint(f2, p2, g2, f1, p1, g1):
    # Reverse scan (the later segment comes first) of s_t = g_t + a_{t+1} s_{t+1} over elements
    # (f, p, g) = (a_t, 1, g_t). A segment [i..j] is (a_i, a_{i+1}..a_j, its s_i given s_{j+1} = 0): its
    # s_i = g + p * a_{j+1} s_{j+1}. Carrying the segment's first decay avoids a_{t+1}, i.e. a second
    # step-size computation at shifted positions.
    return f1, p1 * f2 * p2, g1 + p1 * f2 * g2


LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


# The transcendentals. tl.exp, tl.log and tl.sigmoid lower to range-checked sequences (libdevice's
# logf alone is ~20 instructions); on the GPU (FAST_MATH) we issue the bare special-function
# instructions, relative error ~2**-22, results below 2**-126 flushed to zero (decays, tiny steps).
# With the int32 offsets this took the s1 forward from 90 to 53 instructions per element and thread
# (sm_90 SASS, tools/kernel_sass.py; kernels/NOTES.md).
# Inline PTX cannot run under Triton's interpreter, which takes the tl functions.
@triton.jit
def _ptx(x, ASM: tl.constexpr):
    return tl.inline_asm_elementwise(ASM, "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _exp2(x, FAST_MATH: tl.constexpr):
    return _ptx(x, "ex2.approx.ftz.f32 $0, $1;") if FAST_MATH else tl.exp2(x)


@triton.jit
def _log2(x, FAST_MATH: tl.constexpr):
    return _ptx(x, "lg2.approx.ftz.f32 $0, $1;") if FAST_MATH else tl.log2(x)


@triton.jit
def _sigmoid(x, FAST_MATH: tl.constexpr):
    if FAST_MATH:
        return _ptx(1.0 + _exp2(-x * LOG2E, FAST_MATH), "rcp.approx.ftz.f32 $0, $1;")
    else:
        return tl.sigmoid(x)


@triton.jit
def _softplus(x, FAST_MATH: tl.constexpr):
    return tl.where(x <= 20.0, _log2(1.0 + _exp2(x * LOG2E, FAST_MATH), FAST_MATH) * LN2, x)


@triton.jit
def _step_size(dt_ptr, w, d, tmask, m_td, bias, pos, sd_d, sd_l, R,
               HAS_DT_PROJ: tl.constexpr, SOFTPLUS: tl.constexpr, RP: tl.constexpr, DOT_F32: tl.constexpr,
               FAST_MATH: tl.constexpr):
    """(pre-softplus step size with bias, step size (0 where masked)), both (BL, BD)."""
    if HAS_DT_PROJ:  # delta[t, d] = sum_r low[t, r] * W[d, r]: a small matrix product (BL, RP >= 16)
        r = tl.arange(0, RP)
        low = tl.load(dt_ptr + (pos[:, None] * sd_l + r[None, :] * sd_d), mask=tmask[:, None] & (r[None, :] < R),
                      other=0.0)
        if DOT_F32:
            raw = tl.dot(low.to(tl.float32), w.to(tl.float32), input_precision="ieee")
        else:  # half-precision factor (autocast): the product in its precision, accumulated in float32
            raw = tl.dot(low, w.to(low.dtype))
    else:
        raw = tl.load(dt_ptr + (pos[:, None] * sd_l + d[None, :] * sd_d), mask=m_td, other=0.0)
        raw = raw.to(tl.float32)
    raw = raw + bias[None, :]
    dt = _softplus(raw, FAST_MATH) if SOFTPLUS else raw
    return raw, tl.where(m_td, dt, 0.0)


@triton.jit
def _program(Dg, N, n_ckpt, n_seg, BD: tl.constexpr, NP: tl.constexpr):
    """This program's direction k (of K), batch element b, sequence segment, channels d and states n, their
    masks, and its row of the states saved for the backward ((batch, K, n_ckpt, NP, Dg): one contiguous row of
    channels per state)."""
    k = tl.program_id(0)
    K = tl.num_programs(0)
    b = (tl.program_id(2) // n_seg).to(tl.int64)
    segment = tl.program_id(2) % n_seg
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    n = tl.arange(0, NP)
    dmask, nmask = d < Dg, n < N
    channel = k * Dg + d
    m_nd = nmask[:, None] & dmask[None, :]
    ckpt_row = ((b * K + k) * n_ckpt * NP + n[:, None]) * Dg + d[None, :]
    return k, K, b, segment, d, n, dmask, nmask, channel, m_nd, ckpt_row


@triton.jit
def _parameters(A_ptr, D_ptr, bias_ptr, dtw_ptr, channel, n, dmask, m_nd, N, R,
                HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DT_PROJ: tl.constexpr, A_LOG: tl.constexpr,
                BD: tl.constexpr, RP: tl.constexpr):
    """The program's parameters: A (NP, BD), the step-size bias and D (BD,) and, with ``HAS_DT_PROJ``, w: its
    channels' rows of the step-size projection, (RP, BD). With ``A_LOG`` the A pointer holds A_log and
    A = -exp(A_log) (0 where masked)."""
    A = tl.load(A_ptr + channel[None, :] * N + n[:, None], mask=m_nd, other=0.0).to(tl.float32)   # (NP, BD)
    if A_LOG:
        A = tl.where(m_nd, -tl.exp(A), 0.0)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + channel, mask=dmask, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BD], tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + channel, mask=dmask, other=0.0).to(tl.float32)
    else:
        Dv = tl.zeros([BD], tl.float32)
    if HAS_DT_PROJ:
        r = tl.arange(0, RP)
        w = tl.load(dtw_ptr + channel[None, :] * R + r[:, None], mask=(r[:, None] < R) & dmask[None, :], other=0.0)
    else:
        w = Dv
    return A, bias, Dv, w


@triton.jit
def _tiles(pos, tmask, d, n, dmask, nmask, su_d, su_l, sb_n, sb_l):
    """The masks and offsets of a chunk's (step, channel) and (step, state) tiles, from its steps' positions."""
    m_td = tmask[:, None] & dmask[None, :]
    m_tn = tmask[:, None] & nmask[None, :]
    return m_td, m_tn, pos[:, None] * su_l + d[None, :] * su_d, pos[:, None] * sb_l + n[None, :] * sb_n


@triton.jit
def _chunk(pos, tmask, m_td, m_tn, u_off, bc_off, d, A, bias, w, u_at, dt_at, B_at, C_at, R, sd_d, sd_l,
           HAS_DT_PROJ: tl.constexpr, SOFTPLUS: tl.constexpr, DOT_F32: tl.constexpr, FAST_MATH: tl.constexpr,
           RP: tl.constexpr):
    """A chunk's inputs, read the same way by the forward and the backward: u, the step size before and after
    softplus, B, C, and the recurrence's decays a and inputs x, (BL, NP, BD). The pointers ``*_at`` are already at
    this program's batch element and direction; offsets within them are int32 (the host checks that they fit),
    which halves the address arithmetic.

    Its steps, their positions (``index[k, t]``: a load in the kernel itself) and the tiles' offsets come from
    the caller. A helper that takes a pointer returns loaded values only, never an index or offset that a store
    uses: ``torch.compile`` reads which arguments a user kernel writes from its Triton IR before inlining, taking
    every argument of a call as feeding every result, and an input it takes for written gets cloned before each
    launch and copied back after (``tests/test_kernel_access.py``)."""
    u = tl.load(u_at + u_off, mask=m_td, other=0.0).to(tl.float32)
    raw, dt = _step_size(dt_at, w, d, tmask, m_td, bias, pos, sd_d, sd_l, R, HAS_DT_PROJ, SOFTPLUS, RP, DOT_F32,
                         FAST_MATH)
    Bv = tl.load(B_at + bc_off, mask=m_tn, other=0.0).to(tl.float32)
    Cv = tl.load(C_at + bc_off, mask=m_tn, other=0.0).to(tl.float32)
    a = _exp2(dt[:, None, :] * (A * LOG2E)[None, :, :], FAST_MATH)
    x = Bv[:, :, None] * (dt * u)[:, None, :]
    return u, raw, dt, Bv, Cv, a, x


@triton.jit
def _segment_starts(first, end, ckpt_at, scratch_at, slot, k, d, n, dmask, nmask, m_nd, A, bias, w,
                    u_at, dt_at, B_at, C_at, idx_ptr, L, Dg, R, su_d, su_l, sd_d, sd_l, sb_n, sb_l,
                    HAS_INDEX: tl.constexpr, HAS_DT_PROJ: tl.constexpr, SOFTPLUS: tl.constexpr, DOT_F32: tl.constexpr,
                    FAST_MATH: tl.constexpr, BL: tl.constexpr, NP: tl.constexpr, RP: tl.constexpr,
                    CKPT_CHUNKS: tl.constexpr, STAGES: tl.constexpr):
    """The forward re-run over the checkpoint segment of chunks [first, end) from the state saved entering
    it: the state entering each of its chunks goes to this program's tile of scratch slot (chunk - first),
    ``slot`` elements apart, which the backward then reads walking the segment in reverse. Global memory, so
    the threads of the program synchronise around it: Triton does not tie a tile's stores and later loads to
    the same threads."""
    tl.debug_barrier()  # the previous segment's reads of the scratch are done before it is overwritten
    h = tl.load(ckpt_at + (first // CKPT_CHUNKS - 1) * NP * Dg, mask=m_nd & (first > 0), other=0.0)
    last_row = tl.arange(0, BL)[:, None, None] == BL - 1
    for c in tl.range(first, end - 1, num_stages=STAGES):  # whole chunks: only the sequence's last is partial
        tl.store(scratch_at + (c - first) * slot, h, mask=m_nd)
        t = c * BL + tl.arange(0, BL)
        tmask = t < L
        if HAS_INDEX:  # the positions loaded here, not in a helper (see _chunk)
            pos = tl.load(idx_ptr + k * L + t, mask=tmask, other=0).to(tl.int32)
        else:
            pos = t
        m_td, m_tn, u_off, bc_off = _tiles(pos, tmask, d, n, dmask, nmask, su_d, su_l, sb_n, sb_l)
        u, raw, dt, Bv, Cv, a, x = _chunk(pos, tmask, m_td, m_tn, u_off, bc_off, d, A, bias, w, u_at, dt_at, B_at,
                                          C_at, R, sd_d, sd_l, HAS_DT_PROJ, SOFTPLUS, DOT_F32, FAST_MATH, RP)
        a_cum, x_cum = tl.associative_scan((a, x), 0, _combine)
        h = tl.sum(tl.where(last_row, x_cum + a_cum * h[None, :, :], 0.0), axis=0)
    tl.store(scratch_at + (end - 1 - first) * slot, h, mask=m_nd)
    tl.debug_barrier()  # ... and written before any thread reads them


@triton.jit
def scan_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, idx_ptr, dtw_ptr,
    out_ptr, last_ptr, states_ptr, ckpt_ptr, seg_ptr,
    L, Dg, N, R, n_chunks, n_seg, seg_chunks, n_ckpt,
    su_b, su_k, su_d, su_l,
    sd_b, sd_k, sd_d, sd_l,
    sb_b, sb_k, sb_n, sb_l,
    s_dir,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, HAS_INDEX: tl.constexpr,
    HAS_DT_PROJ: tl.constexpr, SOFTPLUS: tl.constexpr, DOT_F32: tl.constexpr, FAST_MATH: tl.constexpr,
    A_LOG: tl.constexpr,
    STORE_STATES: tl.constexpr, STORE_LAST: tl.constexpr, SUMMARY: tl.constexpr, BY_STEP: tl.constexpr,
    CKPT_CHUNKS: tl.constexpr,
    BD: tl.constexpr, NP: tl.constexpr, RP: tl.constexpr, BL: tl.constexpr, STAGES: tl.constexpr,
):
    """Chunks [segment * seg_chunks, ...) of the sequence (all of it when n_seg = 1). With ``SUMMARY``
    only the segment's decay product and end state from a zero start go to ``seg_ptr`` ((batch, K, n_seg,
    2, NP, Dg), float32); otherwise the state entering the segment is folded from those summaries. The
    output has u's strides, direction k offset by ``k * s_dir``; with ``BY_STEP`` (paths that visit a
    position more than once) it is (K, batch, L, Dg), one row per step, for the caller to sum."""
    k, K, b, segment, d, n, dmask, nmask, channel, m_nd, ckpt_row = _program(Dg, N, n_ckpt, n_seg, BD, NP)
    A, bias, Dv, w = _parameters(A_ptr, D_ptr, bias_ptr, dtw_ptr, channel, n, dmask, m_nd, N, R, HAS_D, HAS_BIAS,
                                 HAS_DT_PROJ, A_LOG, BD, RP)
    u_base = b * su_b + k * su_k                          # this batch element and direction, int64
    u_at, dt_at = u_ptr + u_base, dt_ptr + (b * sd_b + k * sd_k)
    B_at, C_at = B_ptr + (b * sb_b + k * sb_k), C_ptr + (b * sb_b + k * sb_k)
    last_row = tl.arange(0, BL)[:, None, None] == BL - 1
    h = tl.zeros([NP, BD], tl.float32)
    first = segment * seg_chunks
    end = tl.minimum(first + seg_chunks, n_chunks)
    seg_row = ((b * K + k) * n_seg * 2 * NP + n[:, None]) * Dg + d[None, :]
    if SUMMARY:
        decay = tl.full([NP, BD], 1.0, tl.float32)
        for c in tl.range(first, end, num_stages=STAGES):
            t = c * BL + tl.arange(0, BL)
            tmask = t < L
            if HAS_INDEX:  # the positions loaded here, not in a helper (see _chunk)
                pos = tl.load(idx_ptr + k * L + t, mask=tmask, other=0).to(tl.int32)
            else:
                pos = t
            m_td, m_tn, u_off, bc_off = _tiles(pos, tmask, d, n, dmask, nmask, su_d, su_l, sb_n, sb_l)
            u, raw, dt, Bv, Cv, a, x = _chunk(pos, tmask, m_td, m_tn, u_off, bc_off, d, A, bias, w, u_at, dt_at, B_at,
                                              C_at, R, sd_d, sd_l, HAS_DT_PROJ, SOFTPLUS, DOT_F32, FAST_MATH, RP)
            a_cum, x_cum = tl.associative_scan((a, x), 0, _combine)
            h = tl.sum(tl.where(last_row, x_cum + a_cum * h[None, :, :], 0.0), axis=0)
            decay = decay * tl.sum(tl.where(last_row, a_cum, 0.0), axis=0)
        tl.store(seg_ptr + seg_row + 2 * segment * NP * Dg, decay, mask=m_nd)
        tl.store(seg_ptr + seg_row + (2 * segment + 1) * NP * Dg, h, mask=m_nd)
    else:
        for j in range(0, segment):  # the state entering this segment: fold the summaries before it
            decay = tl.load(seg_ptr + seg_row + 2 * j * NP * Dg, mask=m_nd, other=0.0)
            h = decay * h + tl.load(seg_ptr + seg_row + (2 * j + 1) * NP * Dg, mask=m_nd, other=0.0)
        for c in tl.range(first, end, num_stages=STAGES):
            t = c * BL + tl.arange(0, BL)
            tmask = t < L
            if HAS_INDEX:  # the positions loaded here, not in a helper (see _chunk)
                pos = tl.load(idx_ptr + k * L + t, mask=tmask, other=0).to(tl.int32)
            else:
                pos = t
            m_td, m_tn, u_off, bc_off = _tiles(pos, tmask, d, n, dmask, nmask, su_d, su_l, sb_n, sb_l)
            u, raw, dt, Bv, Cv, a, x = _chunk(pos, tmask, m_td, m_tn, u_off, bc_off, d, A, bias, w, u_at, dt_at, B_at,
                                              C_at, R, sd_d, sd_l, HAS_DT_PROJ, SOFTPLUS, DOT_F32, FAST_MATH, RP)
            a_cum, x_cum = tl.associative_scan((a, x), 0, _combine)
            hs = x_cum + a_cum * h[None, :, :]
            y = tl.sum(hs * Cv[:, :, None], axis=1)                            # (BL, BD)
            if STORE_STATES:  # (batch, K*Dg, N, L), float32
                s_off = ((b * K * Dg + channel[None, None, :]) * N + n[None, :, None]) * L + t[:, None, None]
                tl.store(states_ptr + s_off, hs, mask=tmask[:, None, None] & m_nd[None, :, :])
            h = tl.sum(tl.where(last_row, hs, 0.0), axis=0)                    # masked steps carry the state
            if CKPT_CHUNKS == 1:  # every chunk's end state (the last one's unused)
                tl.store(ckpt_ptr + ckpt_row + c * NP * Dg, h, mask=m_nd)
            else:  # where chunk c ends a checkpoint segment (not the last), the state entering the next one
                tl.store(ckpt_ptr + ckpt_row + (c // CKPT_CHUNKS) * NP * Dg, h,
                         mask=m_nd & ((c + 1) % CKPT_CHUNKS == 0) & (c < n_chunks - 1))
            if HAS_D:
                y += Dv[None, :] * u
            if HAS_Z:
                z = tl.load(z_ptr + u_base + u_off, mask=m_td, other=0.0).to(tl.float32)
                y = y * z * _sigmoid(z, FAST_MATH)
            if BY_STEP:
                step_base = (k * (tl.num_programs(2) // n_seg) + b) * L * Dg   # (K, batch, L, Dg) by step, int64
                tl.store(out_ptr + step_base + (t[:, None] * Dg + d[None, :]), y.to(out_ptr.dtype.element_ty),
                         mask=m_td)
            else:
                tl.store(out_ptr + (k.to(tl.int64) * s_dir + u_base) + u_off, y.to(out_ptr.dtype.element_ty),
                         mask=m_td)
        if STORE_LAST:  # (batch, K*Dg, N), by the last segment
            last_off = (b * K * Dg + channel[None, :]) * N + n[:, None]
            tl.store(last_ptr + last_off, h, mask=m_nd & (segment == n_seg - 1))


@triton.jit
def scan_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, idx_ptr, dtw_ptr, ckpt_ptr, scratch_ptr,
    dout_ptr, dlast_ptr, dstates_ptr,
    du_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
    L, Dg, N, R, n_chunks, n_ckpt,
    su_b, su_k, su_d, su_l,
    sd_b, sd_k, sd_d, sd_l,
    sb_b, sb_k, sb_n, sb_l,
    s_dir, sg_b, sg_k, sg_d, sg_l, sdb_b, sdb_k, sdb_n, sdb_l,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, HAS_INDEX: tl.constexpr,
    HAS_DT_PROJ: tl.constexpr, SOFTPLUS: tl.constexpr, DOT_F32: tl.constexpr, FAST_MATH: tl.constexpr,
    A_LOG: tl.constexpr,
    HAS_DSTATES: tl.constexpr, HAS_DLAST: tl.constexpr, BY_STEP: tl.constexpr, CKPT_CHUNKS: tl.constexpr,
    BD: tl.constexpr, NP: tl.constexpr, RP: tl.constexpr, BL: tl.constexpr, STAGES: tl.constexpr,
):
    """Gradients. dout, z and dz have u's strides; du too, offset by ``k * s_dir`` (one slice per
    direction where directions share a map, summed by the caller); the gradient of the full step size
    (also with a low-rank step size: the caller takes it through the projection) has strides sg_*.
    dB and dC (float32, strides sdb_*: B itself may be a strided view), dA (K*Dg, N), dD and dbias
    (K*Dg) are accumulated with atomic adds. With ``BY_STEP`` dout and du are (K, batch, L, Dg) and the
    step-size gradient is indexed by step, not position (a path may visit a position more than once: the
    caller sums the visits). With ``CKPT_CHUNKS`` > 1 the chunks' start states come from a re-run of the
    forward over each checkpoint segment into ``scratch_ptr`` ((slots, batch, K, NP, Dg), float32)."""
    k, K, b, _segment, d, n, dmask, nmask, channel, m_nd, ckpt_row = _program(Dg, N, n_ckpt, 1, BD, NP)
    A, bias, Dv, w = _parameters(A_ptr, D_ptr, bias_ptr, dtw_ptr, channel, n, dmask, m_nd, N, R, HAS_D, HAS_BIAS,
                                 HAS_DT_PROJ, A_LOG, BD, RP)
    u_base = b * su_b + k * su_k                          # this batch element and direction, int64
    u_at, dt_at = u_ptr + u_base, dt_ptr + (b * sd_b + k * sd_k)
    B_at, C_at = B_ptr + (b * sb_b + k * sb_k), C_ptr + (b * sb_b + k * sb_k)
    state_row = (b * K * Dg + channel[None, :]) * N + n[:, None]                # (NP, BD) of (batch, K*Dg, N)
    first_row = tl.arange(0, BL)[:, None, None] == 0
    last_row = tl.arange(0, BL)[:, None, None] == BL - 1
    # sigma: a_{t+1} s_{t+1} entering the chunk from the one after it
    if HAS_DLAST:
        sigma = tl.load(dlast_ptr + state_row, mask=m_nd, other=0.0).to(tl.float32)
    else:
        sigma = tl.zeros([NP, BD], tl.float32)
    ones = tl.full([BL, NP, BD], 1.0, tl.float32)
    ddt_at, du_at = ddt_ptr + (b * sg_b + k * sg_k), du_ptr + (k.to(tl.int64) * s_dir + u_base)
    step_base = (k * tl.num_programs(2) + b) * L * Dg     # (K, batch, L, Dg) rows by step, int64
    if BY_STEP:
        du_at = du_ptr + step_base
    dB_at, dC_at = dB_ptr + (b * sdb_b + k * sdb_k), dC_ptr + (b * sdb_b + k * sdb_k)
    dA_acc = tl.zeros([NP, BD], tl.float32)
    dD_acc = tl.zeros([BL, BD], tl.float32)      # summed over steps after the loop: no shuffles a chunk
    dbias_acc = tl.zeros([BL, BD], tl.float32)
    # the chunks in reverse, a checkpoint segment at a time, else all in one part (a loop of one iteration
    # with constant bounds, which the compiler removes: the code of the N = 1 scans is as it was)
    n_parts = (n_chunks + CKPT_CHUNKS - 1) // CKPT_CHUNKS if CKPT_CHUNKS > 1 else 1
    scratch_at = scratch_ptr + ((b * K + k) * NP + n[:, None]) * Dg + d[None, :]
    slot = tl.num_programs(2).to(tl.int64) * K * NP * Dg                      # scratch: (slots, batch, K, NP, Dg)
    for j in range(0, n_parts):
        if CKPT_CHUNKS > 1:
            first = (n_parts - 1 - j) * CKPT_CHUNKS
            end = tl.minimum(first + CKPT_CHUNKS, n_chunks)
            _segment_starts(first, end, ckpt_ptr + ckpt_row, scratch_at, slot, k, d, n, dmask, nmask, m_nd, A,
                            bias, w, u_at, dt_at, B_at, C_at, idx_ptr, L, Dg, R, su_d, su_l, sd_d, sd_l, sb_n, sb_l,
                            HAS_INDEX, HAS_DT_PROJ, SOFTPLUS, DOT_F32, FAST_MATH, BL, NP, RP, CKPT_CHUNKS, STAGES)
        else:
            first, end = 0, n_chunks
        for i in tl.range(0, end - first, num_stages=STAGES):
            c = end - 1 - i
            t = c * BL + tl.arange(0, BL)
            tmask = t < L
            if HAS_INDEX:  # the positions loaded here, not in a helper (see _chunk)
                pos = tl.load(idx_ptr + k * L + t, mask=tmask, other=0).to(tl.int32)
            else:
                pos = t
            m_td, m_tn, u_off, bc_off = _tiles(pos, tmask, d, n, dmask, nmask, su_d, su_l, sb_n, sb_l)
            u, raw, dt, Bv, Cv, a, x = _chunk(pos, tmask, m_td, m_tn, u_off, bc_off, d, A, bias, w, u_at, dt_at, B_at,
                                              C_at, R, sd_d, sd_l, HAS_DT_PROJ, SOFTPLUS, DOT_F32, FAST_MATH, RP)
            # this chunk's states, from the state entering it
            if CKPT_CHUNKS > 1:
                h_start = tl.load(scratch_at + (c - first) * slot, mask=m_nd, other=0.0)
            else:
                h_start = tl.load(ckpt_ptr + ckpt_row + (c - 1) * NP * Dg, mask=m_nd & (c > 0), other=0.0)
            a_cum, x_cum = tl.associative_scan((a, x), 0, _combine)
            h = x_cum + a_cum * h_start[None, :, :]

            # gradient reaching y (before the D skip and the z gate)
            if BY_STEP:
                step_off = t[:, None] * Dg + d[None, :]
                dout = tl.load(dout_ptr + step_base + step_off, mask=m_td, other=0.0).to(tl.float32)
            else:
                step_off = u_off
                dout = tl.load(dout_ptr + u_base + u_off, mask=m_td, other=0.0).to(tl.float32)
            if HAS_Z:
                z = tl.load(z_ptr + u_base + u_off, mask=m_td, other=0.0).to(tl.float32)
                sig = _sigmoid(z, FAST_MATH)
                y = tl.sum(h * Cv[:, :, None], axis=1) + Dv[None, :] * u
                dz = dout * y * sig * (1.0 + z * (1.0 - sig))
                tl.store(dz_ptr + u_base + u_off, dz.to(dz_ptr.dtype.element_ty), mask=m_td)
                dy = dout * z * sig
            else:
                dy = dout
            # dC before the adjoint scan, so that h is dead during it (N = 16: 323 -> 221 spill loads and stores)
            dC = tl.sum(h * dy[:, None, :], axis=2)
            dbc_off = pos[:, None] * sdb_l + n[None, :] * sdb_n
            tl.atomic_add(dC_at + dbc_off, dC, mask=m_tn, sem="relaxed")
            g = Cv[:, :, None] * dy[:, None, :]
            if HAS_DSTATES:
                s_off = state_row[None, :, :] * L + t[:, None, None]
                g += tl.load(dstates_ptr + s_off, mask=tmask[:, None, None] & m_nd[None, :, :],
                             other=0.0).to(tl.float32)

            # adjoint s_t = g_t + a_{t+1} s_{t+1}, reversed; masked steps past the end have a = 1, g = 0. The
            # state carried in from the next chunk joins the last step's g, so only the scan's g is needed.
            # Not associative_scan(reverse=True): Triton reverses every operand across all 32 lanes of the warp
            # and back (27 shuffles per element at N = 16, although time lies inside each thread here), while
            # tl.flip along the in-thread time axis only renames registers (kernels/NOTES.md).
            g = tl.where(last_row, g + sigma[None, :, :], g)
            _, _, s = tl.associative_scan((tl.flip(a, 0), ones, tl.flip(g, 0)), 0, _combine_adjoint)
            s = tl.flip(s, 0)
            sigma = tl.sum(tl.where(first_row, a * s, 0.0), axis=0)

            da = s * (h - x)                                                      # d/d(dt * A): a_t h_{t-1} = h_t - x_t
            sB = tl.sum(s * Bv[:, :, None], axis=1)                               # (BL, BD)
            ddt = sB * u + tl.sum(da * A[None, :, :], axis=1)
            du = sB * dt + dy * Dv[None, :]
            dA_acc += tl.sum(da * dt[:, None, :], axis=0)
            dD_acc += dy * u
            dB = tl.sum(s * (dt * u)[:, None, :], axis=2)                         # (BL, NP)
            if SOFTPLUS:
                ddt = ddt * _sigmoid(raw, FAST_MATH)
            ddt = tl.where(m_td, ddt, 0.0)
            dbias_acc += ddt
            g_off = (t if BY_STEP else pos)[:, None] * sg_l + d[None, :] * sg_d
            tl.store(ddt_at + g_off, ddt.to(ddt_ptr.dtype.element_ty), mask=m_td)
            tl.store(du_at + step_off, du.to(du_ptr.dtype.element_ty), mask=m_td)
            tl.atomic_add(dB_at + dbc_off, dB, mask=m_tn, sem="relaxed")
    if A_LOG:  # the gradient of A_log is dA * A: linear, so this program's partial sum is scaled exactly
        dA_acc = dA_acc * A
    tl.atomic_add(dA_ptr + channel[None, :] * N + n[:, None], dA_acc, mask=m_nd, sem="relaxed")
    if HAS_D:
        tl.atomic_add(dD_ptr + channel, tl.sum(dD_acc, axis=0), mask=dmask, sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + channel, tl.sum(dbias_acc, axis=0), mask=dmask, sem="relaxed")

"""Triton kernels of the selective scan, forward and backward.

One pair of kernels serves both ops, told apart by how they address memory:

- ``selective_scan``: u, delta (batch, K*D, L) with B, C (batch, K, N, L); each output element is
  written by one program;
- ``scan2d`` (fused): u is a channels-last map (batch, H*W, D) read by every direction, B and C are
  (batch, H*W, K, N); step t of direction k visits position ``index[k, t]`` and writes its output
  (and, in backward, du) at that position of its own slice of a (K, batch, H*W, D) buffer, which the
  caller sums over K (plain stores: float32 atomic adds onto one map measured several times slower on
  an H100). The K gathered copies of the input are never made. The step size comes either as a map (batch, H*W, K, D) or, with
  ``HAS_DT_PROJ``, as its low-rank factor (batch, H*W, K, R) with the (K, D, R) projection applied in
  registers: the forward never materialises the (batch, H*W, K, D) step sizes. The backward takes
  their gradient through the projection itself when a direction has few channel blocks (atomic adds
  over the blocks), and otherwise writes it for the caller's two batched matmuls (in-kernel atomics
  over many blocks contend and measured slower).

A program owns (direction k, a block of BD channels, one batch element) and walks its sequence in
chunks of BL steps: load the chunk, scan it with ``tl.associative_scan`` over (decay, input) pairs,
add the state carried in from the previous chunk. The state at the end of every chunk is saved;
the backward walks the chunks in reverse, recomputes each chunk's states from the saved one, and runs
the adjoint recurrence s_t = g_t + a_{t+1} s_{t+1} as a reverse scan (a_{t+1} from the step size at
t + 1). The gradient through the decay needs a_t h_{t-1}, which is h_t - x_t: no second scan of the
inputs shifted by one. Memory stays O(batch * channels * L).
"""
import triton
import triton.language as tl


@triton.jit
def _combine(a1, x1, a2, x2):
    # (a1, x1) then (a2, x2): h -> a2 * (a1 * h + x1) + x2. In reverse scans the suffix comes first.
    return a1 * a2, x1 * a2 + x2


@triton.jit
def _softplus(x):
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)


@triton.jit
def _positions(idx_ptr, k, t, tmask, L, HAS_INDEX: tl.constexpr):
    if HAS_INDEX:
        return tl.load(idx_ptr + k * L + t, mask=tmask, other=0).to(tl.int64)
    else:
        return t.to(tl.int64)


@triton.jit
def _step_size(dt_ptr, base_dt, d, r, W, bias, pos, m_dt, m_rt, sd_d, sd_l,
               HAS_DT_PROJ: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(pre-softplus step size with bias, step size (0 where masked), low-rank factor or zeros)."""
    if HAS_DT_PROJ:  # delta[d, t] = sum_r W[d, r] * low[r, t]
        low = tl.load(dt_ptr + base_dt + r[:, None] * sd_d + pos[None, :] * sd_l, mask=m_rt, other=0.0).to(tl.float32)
        raw = tl.sum(W[:, :, None] * low[None, :, :], axis=1)
    else:
        low = tl.zeros(m_rt.shape, tl.float32)
        raw = tl.load(dt_ptr + base_dt + d[:, None] * sd_d + pos[None, :] * sd_l, mask=m_dt, other=0.0).to(tl.float32)
    raw = raw + bias[:, None]
    dt = _softplus(raw) if SOFTPLUS else raw
    return raw, tl.where(m_dt, dt, 0.0), low


@triton.jit
def _program_setup(A_ptr, D_ptr, bias_ptr, dtw_ptr, Dg, N, R,
                   HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DT_PROJ: tl.constexpr,
                   BD: tl.constexpr, NP: tl.constexpr, RP: tl.constexpr):
    k = tl.program_id(0)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    n = tl.arange(0, NP)
    r = tl.arange(0, RP)
    dmask, nmask = d < Dg, n < N
    channel = k * Dg + d
    m_dn = dmask[:, None] & nmask[None, :]
    A = tl.load(A_ptr + channel[:, None] * N + n[None, :], mask=m_dn, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + channel, mask=dmask, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BD], tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + channel, mask=dmask, other=0.0).to(tl.float32)
    else:
        Dv = tl.zeros([BD], tl.float32)
    if HAS_DT_PROJ:
        W = tl.load(dtw_ptr + channel[:, None] * R + r[None, :], mask=dmask[:, None] & (r[None, :] < R), other=0.0)
        W = W.to(tl.float32)
    else:
        W = tl.zeros([BD, RP], tl.float32)
    return k, d, n, r, dmask, nmask, channel, m_dn, A, bias, Dv, W


@triton.jit
def scan_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, idx_ptr, dtw_ptr,
    out_ptr, last_ptr, states_ptr, ckpt_ptr,
    L, Dg, N, R, n_chunks,
    su_b, su_k, su_d, su_l,
    sd_b, sd_k, sd_d, sd_l,
    sb_b, sb_k, sb_n, sb_l,
    s_dir,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, HAS_INDEX: tl.constexpr,
    HAS_DT_PROJ: tl.constexpr, SOFTPLUS: tl.constexpr,
    STORE_STATES: tl.constexpr, STORE_LAST: tl.constexpr,
    BD: tl.constexpr, NP: tl.constexpr, RP: tl.constexpr, BL: tl.constexpr, STAGES: tl.constexpr,
):
    k, d, n, r, dmask, nmask, channel, m_dn, A, bias, Dv, W = _program_setup(
        A_ptr, D_ptr, bias_ptr, dtw_ptr, Dg, N, R, HAS_D, HAS_BIAS, HAS_DT_PROJ, BD, NP, RP)
    b = tl.program_id(2).to(tl.int64)
    base_u, base_dt, base_B = b * su_b + k * su_k, b * sd_b + k * sd_k, b * sb_b + k * sb_k
    ckpt_base = ((b * tl.num_programs(0) + k) * Dg + d[:, None]) * NP + n[None, :]   # (batch, K, Dg, NP, chunk)
    last_col = tl.arange(0, BL)[None, None, :] == BL - 1
    h = tl.zeros([BD, NP], tl.float32)
    for c in tl.range(0, n_chunks, num_stages=STAGES):
        t = c * BL + tl.arange(0, BL)
        tmask = t < L
        pos = _positions(idx_ptr, k, t, tmask, L, HAS_INDEX)
        m_dt = dmask[:, None] & tmask[None, :]
        m_nt = nmask[:, None] & tmask[None, :]
        m_rt = (r[:, None] < R) & tmask[None, :]
        u = tl.load(u_ptr + base_u + d[:, None] * su_d + pos[None, :] * su_l, mask=m_dt, other=0.0).to(tl.float32)
        _, dt, _ = _step_size(dt_ptr, base_dt, d, r, W, bias, pos, m_dt, m_rt, sd_d, sd_l, HAS_DT_PROJ, SOFTPLUS)
        bc_off = base_B + n[:, None] * sb_n + pos[None, :] * sb_l
        Bv = tl.load(B_ptr + bc_off, mask=m_nt, other=0.0).to(tl.float32)
        Cv = tl.load(C_ptr + bc_off, mask=m_nt, other=0.0).to(tl.float32)
        a = tl.exp(dt[:, None, :] * A[:, :, None])                         # (BD, NP, BL)
        x = (dt * u)[:, None, :] * Bv[None, :, :]
        a_cum, x_cum = tl.associative_scan((a, x), 2, _combine)
        hs = x_cum + a_cum * h[:, :, None]
        y = tl.sum(hs * Cv[None, :, :], axis=1)                            # (BD, BL)
        if STORE_STATES:  # (batch, K*Dg, N, L), float32
            s_off = ((b * tl.num_programs(0) * Dg + channel[:, None, None]) * N + n[None, :, None]) * L + t[None, None, :]
            tl.store(states_ptr + s_off, hs, mask=m_dn[:, :, None] & tmask[None, None, :])
        h = tl.sum(tl.where(last_col, hs, 0.0), axis=2)                    # masked steps carry the state
        tl.store(ckpt_ptr + ckpt_base * n_chunks + c, h, mask=m_dn)
        if HAS_D:
            y += Dv[:, None] * u
        u_off = base_u + d[:, None] * su_d + pos[None, :] * su_l
        if HAS_Z:
            z = tl.load(z_ptr + u_off, mask=m_dt, other=0.0).to(tl.float32)
            y = y * z * tl.sigmoid(z)
        tl.store(out_ptr + k * s_dir + u_off, y.to(out_ptr.dtype.element_ty), mask=m_dt)
    if STORE_LAST:  # (batch, K*Dg, N)
        tl.store(last_ptr + (b * tl.num_programs(0) * Dg + channel[:, None]) * N + n[None, :], h, mask=m_dn)


@triton.jit
def scan_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, idx_ptr, dtw_ptr, ckpt_ptr,
    dout_ptr, dlast_ptr, dstates_ptr,
    du_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr, ddtw_ptr,
    L, Dg, N, R, n_chunks,
    su_b, su_k, su_d, su_l,
    sd_b, sd_k, sd_d, sd_l,
    sb_b, sb_k, sb_n, sb_l,
    s_dir, sg_b, sg_k, sg_d, sg_l,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, HAS_INDEX: tl.constexpr,
    HAS_DT_PROJ: tl.constexpr, SOFTPLUS: tl.constexpr, REDUCE_DT_PROJ: tl.constexpr,
    HAS_DSTATES: tl.constexpr, HAS_DLAST: tl.constexpr,
    BD: tl.constexpr, NP: tl.constexpr, RP: tl.constexpr, BL: tl.constexpr, STAGES: tl.constexpr,
):
    """Gradients. dout, z and dz have u's strides; du too, offset by ``k * s_dir`` (one slice per
    direction where directions share a map, summed by the caller); the gradient of the full step size
    has strides sg_*; with a low-rank step size and ``REDUCE_DT_PROJ`` it is taken through the
    projection here instead (low-rank gradient with the input's strides and the projection's (K*Dg, R)
    gradient, both by float32 atomic adds), else by the caller. dB and dC (float32, B's strides),
    dA (K*Dg, N), dD and dbias (K*Dg) are accumulated with atomic adds."""
    k, d, n, r, dmask, nmask, channel, m_dn, A, bias, Dv, W = _program_setup(
        A_ptr, D_ptr, bias_ptr, dtw_ptr, Dg, N, R, HAS_D, HAS_BIAS, HAS_DT_PROJ, BD, NP, RP)
    b = tl.program_id(2).to(tl.int64)
    base_u, base_dt, base_B = b * su_b + k * su_k, b * sd_b + k * sd_k, b * sb_b + k * sb_k
    ckpt_base = ((b * tl.num_programs(0) + k) * Dg + d[:, None]) * NP + n[None, :]
    state_row = (b * tl.num_programs(0) * Dg + channel[:, None]) * N + n[None, :]       # (batch, K*Dg, N)
    first_col = tl.arange(0, BL)[None, None, :] == 0
    if HAS_DLAST:
        s_next = tl.load(dlast_ptr + state_row, mask=m_dn, other=0.0).to(tl.float32)
    else:
        s_next = tl.zeros([BD, NP], tl.float32)
    dA_acc = tl.zeros([BD, NP], tl.float32)
    dD_acc = tl.zeros([BD], tl.float32)
    dbias_acc = tl.zeros([BD], tl.float32)
    dW_acc = tl.zeros([BD, RP], tl.float32)
    for i in tl.range(0, n_chunks, num_stages=STAGES):
        c = n_chunks - 1 - i
        t = c * BL + tl.arange(0, BL)
        tmask = t < L
        m_dt = dmask[:, None] & tmask[None, :]
        m_nt = nmask[:, None] & tmask[None, :]
        m_rt = (r[:, None] < R) & tmask[None, :]
        pos = _positions(idx_ptr, k, t, tmask, L, HAS_INDEX)
        u = tl.load(u_ptr + base_u + d[:, None] * su_d + pos[None, :] * su_l, mask=m_dt, other=0.0).to(tl.float32)
        raw, dt, low = _step_size(dt_ptr, base_dt, d, r, W, bias, pos, m_dt, m_rt, sd_d, sd_l, HAS_DT_PROJ, SOFTPLUS)
        bc_off = base_B + n[:, None] * sb_n + pos[None, :] * sb_l
        Bv = tl.load(B_ptr + bc_off, mask=m_nt, other=0.0).to(tl.float32)
        Cv = tl.load(C_ptr + bc_off, mask=m_nt, other=0.0).to(tl.float32)
        a = tl.exp(dt[:, None, :] * A[:, :, None])
        x = (dt * u)[:, None, :] * Bv[None, :, :]
        # this chunk's states, from the state saved at the end of the previous chunk
        h_start = tl.load(ckpt_ptr + ckpt_base * n_chunks + (c - 1), mask=m_dn & (c > 0), other=0.0)
        a_cum, x_cum = tl.associative_scan((a, x), 2, _combine)
        h = x_cum + a_cum * h_start[:, :, None]

        # gradient reaching y (before the D skip and the z gate)
        u_off = base_u + d[:, None] * su_d + pos[None, :] * su_l
        dout = tl.load(dout_ptr + u_off, mask=m_dt, other=0.0).to(tl.float32)
        if HAS_Z:
            z = tl.load(z_ptr + u_off, mask=m_dt, other=0.0).to(tl.float32)
            sig = tl.sigmoid(z)
            y = tl.sum(h * Cv[None, :, :], axis=1) + Dv[:, None] * u
            tl.store(dz_ptr + u_off, (dout * y * sig * (1.0 + z * (1.0 - sig))).to(dz_ptr.dtype.element_ty), mask=m_dt)
            dy = dout * z * sig
        else:
            dy = dout
        g = Cv[None, :, :] * dy[:, None, :]
        if HAS_DSTATES:
            s_off = state_row[:, :, None] * L + t[None, None, :]
            g += tl.load(dstates_ptr + s_off, mask=m_dn[:, :, None] & tmask[None, None, :], other=0.0).to(tl.float32)

        # adjoint recurrence s_t = g_t + a_{t+1} s_{t+1}, reversed; a_{t+1} = 1 past the sequence end
        tn = t + 1
        mask_n = tn < L
        pos_n = _positions(idx_ptr, k, tn, mask_n, L, HAS_INDEX)
        _, dt_n, _ = _step_size(dt_ptr, base_dt, d, r, W, bias, pos_n, dmask[:, None] & mask_n[None, :],
                                (r[:, None] < R) & mask_n[None, :], sd_d, sd_l, HAS_DT_PROJ, SOFTPLUS)
        a_n = tl.exp(dt_n[:, None, :] * A[:, :, None])
        a_nc, g_c = tl.associative_scan((a_n, g), 2, _combine, reverse=True)
        s = g_c + a_nc * s_next[:, :, None]
        s_next = tl.sum(tl.where(first_col, s, 0.0), axis=2)
        s = tl.where(m_dn[:, :, None] & tmask[None, None, :], s, 0.0)

        da = s * (h - x)                                                      # d/d(dt * A): a_t h_{t-1} = h_t - x_t
        ddt = tl.sum(s * u[:, None, :] * Bv[None, :, :] + da * A[:, :, None], axis=1)
        du = tl.sum(s * Bv[None, :, :], axis=1) * dt + dy * Dv[:, None]
        dA_acc += tl.sum(da * dt[:, None, :], axis=2)
        dD_acc += tl.sum(tl.where(m_dt, dy * u, 0.0), axis=1)
        dB = tl.sum(s * (dt * u)[:, None, :], axis=0)                         # (NP, BL)
        dC = tl.sum(dy[:, None, :] * tl.where(m_dn[:, :, None], h, 0.0), axis=0)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(m_dt, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=1)
        if REDUCE_DT_PROJ:  # few channel blocks: reduce over them with atomics (R values a step each)
            d_low = tl.sum(W[:, :, None] * ddt[:, None, :], axis=0)          # (RP, BL)
            tl.atomic_add(ddt_ptr + base_dt + r[:, None] * sd_d + pos[None, :] * sd_l, d_low, mask=m_rt, sem="relaxed")
            dW_acc += tl.sum(ddt[:, None, :] * low[None, :, :], axis=2)
        else:
            g_off = b * sg_b + k * sg_k + d[:, None] * sg_d + pos[None, :] * sg_l
            tl.store(ddt_ptr + g_off, ddt.to(ddt_ptr.dtype.element_ty), mask=m_dt)
        tl.store(du_ptr + k * s_dir + u_off, du.to(du_ptr.dtype.element_ty), mask=m_dt)
        tl.atomic_add(dB_ptr + bc_off, dB, mask=m_nt, sem="relaxed")
        tl.atomic_add(dC_ptr + bc_off, dC, mask=m_nt, sem="relaxed")
    tl.atomic_add(dA_ptr + channel[:, None] * N + n[None, :], dA_acc, mask=m_dn, sem="relaxed")
    if HAS_D:
        tl.atomic_add(dD_ptr + channel, dD_acc, mask=dmask, sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + channel, dbias_acc, mask=dmask, sem="relaxed")
    if REDUCE_DT_PROJ:
        tl.atomic_add(ddtw_ptr + channel[:, None] * R + r[None, :], dW_acc, mask=dmask[:, None] & (r[None, :] < R),
                      sem="relaxed")

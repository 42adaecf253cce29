"""Plain-PyTorch implementations of the scan ops: differentiable, run anywhere, the oracle in tests.

Shapes follow the official kernels: ``u`` and ``delta`` are (batch, K*D, L); ``A`` is (K*D, N);
``B`` and ``C`` are (batch, K, N, L) with one group per scan direction (or (batch, N, L) for K = 1);
``D`` and ``delta_bias`` are (K*D,). The state is accumulated in float32 (float64 inputs stay float64).

:func:`selective_scan_ref` never loops over the L positions one at a time: the sequence is cut into
chunks, each chunk is scanned in log2(chunk) doubling steps over whole tensors, and the state is
carried from chunk to chunk. The chunk is sized so that a chunk's state tensor stays around 2 MiB:
long chunks for small states (VMamba, N = 1), short ones when batch x channels x N is large, where
the doubling steps would otherwise stream state-sized tensors through memory many times. :func:`selective_scan_naive` is the step-by-step loop, kept as the
oracle of the oracle and as the baseline of ``tools/bench_reference.py``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .paths import ScanPaths

__all__ = [
    "selective_scan_ref", "selective_scan_naive", "cross_scan_ref", "cross_merge_ref", "scan2d_ref",
    "auto_chunk_size", "a_from_log",
]

_CHUNK_ELEMENTS = 2 ** 19


def auto_chunk_size(batch: int, channels: int, d_state: int) -> int:
    """Power-of-two chunk length in [4, 256] keeping a chunk's states near 2**19 elements."""
    size = 256
    while size > 4 and batch * channels * d_state * size > _CHUNK_ELEMENTS:
        size //= 2
    return size


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


def a_from_log(A_log: torch.Tensor) -> torch.Tensor:
    """The state matrix A = -exp(A_log), in A_log's dtype or float32 if narrower: what the ops compute
    from ``A_log`` when called with ``a_is_log=True`` (Mamba's parametrisation, A < 0)."""
    return -A_log.to(_compute_dtype(A_log)).exp()


def _grouped(u, delta, A, B, C, delta_bias, delta_softplus):
    """Reshape to per-group views: u/delta (b, G, Dg, L), A (G, Dg, N), B/C (b, G, N, L)."""
    dtype = _compute_dtype(u)
    batch, channels, length = u.shape
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    groups = B.shape[1]
    u = u.to(dtype).view(batch, groups, channels // groups, length)
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    delta = delta.view(batch, groups, channels // groups, length)
    A = A.to(dtype).view(groups, channels // groups, -1)
    return u, delta, A, B.to(dtype), C.to(dtype)


def _scan_chunk(log_a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """All states h_t = a_t * h_{t-1} + x_t of one chunk (time on dim 0), by recursive doubling."""
    a = log_a.exp()
    x = torch.cat([a[:1] * h0 + x[:1], x[1:]])
    step, length = 1, x.shape[0]
    while step < length:
        x = torch.cat([x[:step], a[step:] * x[:-step] + x[step:]])
        if 2 * step < length:  # the decay products are not needed after the last step
            a = torch.cat([a[:step], a[step:] * a[:-step]])
        step *= 2
    return x


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    return_states: bool = False,
    initial_state: Optional[torch.Tensor] = None,
    chunk_size: Optional[int] = None,
):
    """Mamba-1 selective scan, y_t = C_t h_t with h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t.

    Then ``y + D * u`` and, with ``z``, ``* silu(z)``. Returns ``out`` (dtype of ``u``), followed by
    the last state (batch, K*D, N) if ``return_last_state`` and all states (batch, K*D, N, L) if
    ``return_states`` (both float32, or float64 for float64 inputs).
    """
    batch, channels, length = u.shape
    out_dtype = u.dtype
    ug, dg, Ag, Bg, Cg = _grouped(u, delta, A, B, C, delta_bias, delta_softplus)
    groups, per_group, n_state = Ag.shape
    # time first inside: every doubling step then works on large contiguous blocks
    ut, dt_all = ug.permute(3, 0, 1, 2), dg.permute(3, 0, 1, 2)              # (L, b, G, Dg)
    Bt, Ct = Bg.permute(3, 0, 1, 2).unsqueeze(3), Cg.permute(3, 0, 1, 2).unsqueeze(3)  # (L, b, G, 1, N)
    if initial_state is None:
        h = ug.new_zeros(batch, groups, per_group, n_state)
    else:
        h = initial_state.to(ug.dtype).view(batch, groups, per_group, n_state)
    chunk_size = chunk_size or auto_chunk_size(batch, channels, n_state)
    ys, states = [], []
    for start in range(0, length, chunk_size):
        sl = slice(start, min(length, start + chunk_size))
        dt = dt_all[sl].unsqueeze(-1)                                          # (t, b, G, Dg, 1)
        hs = _scan_chunk(dt * Ag, dt * ut[sl].unsqueeze(-1) * Bt[sl], h)      # (t, b, G, Dg, N)
        ys.append((hs * Ct[sl]).sum(-1))
        if return_states:
            states.append(hs)
        h = hs[-1]
    y = torch.cat(ys).permute(1, 2, 3, 0).reshape(batch, channels, length)
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * ug.reshape(batch, channels, length)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    result = (y.to(out_dtype),)
    if return_last_state:
        result += (h.reshape(batch, channels, n_state),)
    if return_states:
        result += (torch.cat(states).permute(1, 2, 3, 4, 0).reshape(batch, channels, n_state, length),)
    return result[0] if len(result) == 1 else result


def selective_scan_naive(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False, return_states=False):
    """The same function as :func:`selective_scan_ref`, one position at a time (slow; tests only)."""
    batch, channels, length = u.shape
    out_dtype = u.dtype
    ug, dg, Ag, Bg, Cg = _grouped(u, delta, A, B, C, delta_bias, delta_softplus)
    h = ug.new_zeros(batch, *Ag.shape)
    ys, states = [], []
    for t in range(length):
        dt = dg[..., t].unsqueeze(-1)                                      # (b, G, Dg, 1)
        h = torch.exp(dt * Ag) * h + dt * ug[..., t].unsqueeze(-1) * Bg[:, :, None, :, t]
        ys.append((h * Cg[:, :, None, :, t]).sum(-1))
        states.append(h)
    y = torch.stack(ys, dim=-1).reshape(batch, channels, length)
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * ug.reshape(batch, channels, length)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    result = (y.to(out_dtype),)
    if return_last_state:
        result += (h.reshape(batch, channels, -1),)
    if return_states:
        result += (torch.stack(states, dim=-1).reshape(batch, channels, -1, length),)
    return result[0] if len(result) == 1 else result


def cross_scan_ref(x: torch.Tensor, paths: ScanPaths) -> torch.Tensor:
    """Map -> K sequences: (b, H, W, C) or per-direction (b, H, W, K, C) -> (b, K, C', L).

    C' is C, or C / K for ``paths.split_channels``.
    """
    K = paths.num_directions
    index = paths.index.to(x.device)
    batch = x.shape[0]
    if x.dim() == 4 and paths.split_channels:
        x = x.unflatten(-1, (K, x.shape[-1] // K))
    if x.dim() == 5:  # direction k reads its own map x[..., k, :]
        flat = x.reshape(batch, -1, x.shape[-1])                           # (b, L*K, C)
        index = index * K + torch.arange(K, device=x.device)[:, None]
    else:
        flat = x.reshape(batch, -1, x.shape[-1])                           # (b, L, C)
    seq = flat[:, index.reshape(-1)]                                       # (b, K*Lp, C)
    return seq.view(batch, K, paths.length, -1).transpose(2, 3)


def cross_merge_ref(y: torch.Tensor, paths: ScanPaths) -> torch.Tensor:
    """K sequences -> map: (b, K, C, L) -> (b, H, W, C), summing the directions that visit a position.

    With ``paths.split_channels`` the K channel groups are concatenated instead: (b, H, W, K*C).
    """
    batch, K, channels, _ = y.shape
    index = paths.index.to(y.device)
    seq = y.transpose(2, 3).reshape(batch, -1, channels)                   # (b, K*Lp, C)
    size = paths.height * paths.width
    if paths.split_channels:
        index = index * K + torch.arange(K, device=y.device)[:, None]
        out = seq.new_zeros(batch, size * K, channels).index_add(1, index.reshape(-1), seq)
        return out.view(batch, paths.height, paths.width, K * channels)
    # each direction adds into its own copy of the map, then the copies are summed: no index repeats in
    # one scatter (ONNX Runtime's ScatterND with reduction races on repeated indices: wrong sums)
    index = index + size * torch.arange(K, device=y.device)[:, None]
    out = seq.new_zeros(batch, K * size, channels).index_add(1, index.reshape(-1), seq)
    return out.view(batch, K, paths.height, paths.width, channels).sum(1)


def scan2d_ref(u, delta, A, B, C, D, delta_bias, paths: ScanPaths, delta_softplus=True, scan_fn=None,
               dt_weight=None, visit_norm=None):
    """Gather by ``paths``, selective scan, merge back: the unfused 2-D scan.

    u: (b, H, W, C) map; delta: (b, H, W, K, C), or with ``dt_weight`` (K, C, R) its low-rank factor
    (b, H, W, K, R); B, C: (b, H, W, K, N); A: (K*C, N); D, delta_bias: (K*C,). Returns the (b, H, W, C)
    map in float32 (float64 for float64 inputs). ``scan_fn`` defaults to :func:`selective_scan_ref`.
    ``visit_norm`` (a LayerNorm over C) normalises every step's output before the merge.
    """
    scan_fn = scan_fn or selective_scan_ref
    batch = u.shape[0]
    K = paths.num_directions
    us = cross_scan_ref(u, paths).reshape(batch, -1, paths.length)
    dts = cross_scan_ref(delta, paths)
    if dt_weight is not None:  # projected on the positions each direction visits (as under autocast)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, dt_weight.to(dts.dtype))
    dts = dts.reshape(batch, -1, paths.length)
    Bs = cross_scan_ref(B, paths)
    Cs = cross_scan_ref(C, paths)
    ys = scan_fn(us, dts, A, Bs, Cs, D, None, delta_bias, delta_softplus)
    ys = ys.to(_compute_dtype(ys)).view(batch, K, -1, paths.length)
    if visit_norm is not None:
        ys = visit_norm(ys.transpose(2, 3)).transpose(2, 3)
    return cross_merge_ref(ys, paths)

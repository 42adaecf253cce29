"""The Triton kernels against the reference (CI: Triton's interpreter on CPU, small sizes).

tools/check_kernels.py runs the same comparisons at full VMamba sizes on a GPU.
"""
import os

import pytest
import torch

import ssm_kernels
from ssm_kernels import CROSS, MULTISCALE_LOW, ScanPaths, column_major, row_major, scan2d, selective_scan
from ssm_kernels.reference import selective_scan_naive
from vmamba_zoo.layers import FastLayerNorm
from vmamba_zoo.models.vmamba import VMamba

pytestmark = pytest.mark.skipif("triton" not in ssm_kernels.available_backends(), reason="triton not installed")


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def scan_inputs(batch, K, Dg, N, L, dtype, with_z=True, grouped=True):
    mk = lambda *s: torch.randn(*s).to(dtype).requires_grad_()
    bc = (batch, K, N, L) if grouped else (batch, N, L)
    return dict(u=mk(batch, K * Dg, L), delta=mk(batch, K * Dg, L),
                A=(-torch.rand(K * Dg, N) * 2 - 0.05).requires_grad_(), B=mk(*bc), C=mk(*bc), D=mk(K * Dg),
                z=mk(batch, K * Dg, L) if with_z else None, delta_bias=mk(K * Dg))


def check_selective_scan(x, tol, a_is_log=False):
    """The Triton scan against the float64 reference on the inputs ``x``: outputs, last and all states, and
    the gradient of every input (its dtype kept). ``a_is_log``: x's A is A_log. Returns the outputs."""
    exact = {k: (v.detach().double().requires_grad_() if v is not None else None) for k, v in x.items()}
    kw = dict(delta_softplus=True, return_last_state=True, return_states=True)
    got = selective_scan(**x, **kw, backend="triton", a_is_log=a_is_log)
    ref = selective_scan_naive(**dict(exact, A=-exact["A"].exp() if a_is_log else exact["A"]), **kw)
    for g, r in zip(got, ref):
        assert torch.isfinite(g).all() and rel(g, r) < tol[0]
    grads_out = [torch.randn_like(r) for r in ref]
    names = [k for k, v in x.items() if v is not None]
    g_got = torch.autograd.grad(got, [x[k] for k in names], [g.to(t.dtype) for g, t in zip(grads_out, got)])
    g_ref = torch.autograd.grad(ref, [exact[k] for k in names], grads_out)
    for name, a, b in zip(names, g_got, g_ref):
        assert a.dtype == x[name].dtype and torch.isfinite(a).all(), name
        assert rel(a, b) < tol[1], f"d{name}: {rel(a, b):.2e}"
    return got


FP32, BF16 = (torch.float32, (2e-6, 2e-5)), (torch.bfloat16, (1e-2, 1e-2))
CASES = [  # batch, K, channels per direction, N, L, z, (dtype, tolerances)
    (2, 4, 3, 1, 129, False, FP32),   # L one past a chunk boundary
    (1, 1, 33, 1, 260, True, FP32),   # two channel blocks, three chunks
    (1, 2, 3, 16, 37, True, FP32),    # N = 16 (8-step chunks)
    (1, 2, 3, 1, 1, True, FP32),      # a single step
    (1, 4, 2, 3, 70, False, FP32),    # odd N
    (2, 2, 4, 1, 131, True, BF16),
    (1, 2, 3, 16, 37, False, BF16),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}k{}d{}n{}l{}z{:d}-".format(*c[:6]) + str(c[6][0])[6:])
def test_selective_scan_matches_reference(case):
    *shape, with_z, (dtype, tol) = case
    got = check_selective_scan(scan_inputs(*shape, dtype, with_z), tol)
    assert got[0].dtype == dtype


@pytest.mark.parametrize("segments", [3, 50])
def test_forward_split_into_segments_matches_reference(segments, monkeypatch):
    """A long sequence at a small batch is split into segments scanned by separate programs (a summary
    pass, then the main pass from the folded summaries): outputs, last and all states, and the backward
    (which reads the chunk-end states the segmented forward saves) stay the reference's. 3 segments of 9
    chunks leave a short last one; 50 clamp to one chunk each."""
    from ssm_kernels.triton import ops as tops
    monkeypatch.setitem(tops.TUNING, "segments", segments)
    check_selective_scan(scan_inputs(1, 2, 3, 2, 140, torch.float32), (2e-6, 2e-5))      # BL 16: 9 chunks
    if segments == 3:  # the fused 2-D scan launches the same way
        check_scan2d(map_inputs(1, 9, 7, 4, 3, 1, torch.float32, rank=4), CROSS(9, 7), 2e-5,
                     out_norm=torch.nn.LayerNorm(3))


def test_segments_fill_the_gpu_only_when_the_grid_is_small(monkeypatch):
    from ssm_kernels.triton import ops as tops
    monkeypatch.setattr(tops, "_INTERPRETED", False)
    monkeypatch.setattr(tops, "_multiprocessors", lambda device: 132)
    cuda = torch.device("cuda", 0)
    assert tops._segments(4 * 2 * 2, 4608, cuda) == (66, 70)     # VMamba-T stage 1 at 1536x1536, batch 2
    assert tops._segments(4 * 2 * 1, 2048, cuda) == (128, 16)    # stage 1 at 1024x1024, batch 1
    assert tops._segments(4 * 2 * 128, 98, cuda) == (1, 98)      # 224x224, batch 128: enough programs
    assert tops._segments(4 * 2 * 64, 98, cuda) == (2, 49)       # batch 64: segments double the grid
    assert tops._segments(24, 32, cuda) == (16, 2)               # stage 3 at 512x512, batch 1: segments of >= 2 chunks
    assert tops._segments(16, 10, cuda) == (5, 2)
    assert tops._segments(16, 3, cuda) == (1, 3)


@pytest.mark.parametrize("S,L,segments,dtype,tol", [
    (3, 61, 1, *FP32),     # 8 chunks of 8 steps: checkpoint segments of 3, 3 and 2 chunks, the last chunk partial
    (2, 37, 1, *FP32),     # 5 chunks: 2, 2, 1 (a last segment of one partial chunk)
    (4, 45, 3, *FP32),     # 6 chunks: 4, 2, with the forward split into 3 segments besides (summary pass)
    (None, 150, 1, *FP32),  # the default rule: 19 chunks, 16 a checkpoint segment (128 steps)
    (3, 61, 1, *BF16),
])
def test_backward_recomputes_checkpoint_segments(S, L, segments, dtype, tol, monkeypatch):
    """N = 16: the forward saves the state entering every S-th chunk only; the backward re-runs the forward
    over each checkpoint segment from it into a scratch, then walks the segment's chunks in reverse. Outputs,
    last and all states, and every gradient (through dout, dlast and dstates) stay the reference's."""
    from ssm_kernels.triton import ops as tops
    monkeypatch.setitem(tops.TUNING, "ckpt_chunks", S)
    monkeypatch.setitem(tops.TUNING, "segments", segments)
    assert tops._Layout.sequences(1, 2, 3, 16, L).checkpoints()[0] == (S or 16)
    check_selective_scan(scan_inputs(1, 2, 3, 16, L, dtype), tol)


@pytest.mark.parametrize("paths,dtype,tol", [("cross", torch.float32, 2e-5), ("multiscale", torch.float32, 2e-5),
                                             ("cross", torch.bfloat16, 1e-2)])
def test_fused_scan2d_recomputes_checkpoint_segments(paths, dtype, tol, monkeypatch):
    """The fused 2-D scan at N = 16 with the low-rank step size (16-step chunks) and the out-norm, 3 chunks a
    checkpoint segment: a 7x9 map's 63 steps are 4 chunks (segments of 3 and 1); MSVMamba's path over a 4x3
    map visits every position three times (36 steps, 3 chunks: segments of 2 and 1 with S = 2)."""
    from ssm_kernels.triton import ops as tops
    if paths == "cross":
        monkeypatch.setitem(tops.TUNING, "ckpt_chunks", 3)
        x, scan = map_inputs(1, 7, 9, 4, 5, 16, dtype, rank=3), CROSS(7, 9)
    else:
        monkeypatch.setitem(tops.TUNING, "ckpt_chunks", 2)
        x, scan = map_inputs(2, 4, 3, 1, 5, 16, dtype, rank=3), MULTISCALE_LOW(4, 3)
    check_scan2d(x, scan, tol, out_norm=_norm(5))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 1e-2)])
def test_scan2d_without_recomputed_states(dtype, tol, monkeypatch):
    """``recompute_states=False`` at N = 16: the forward saves every chunk's end state (a 7x9 map's 63 steps: 4
    chunks of 16, against one segment's none with the 128-step checkpoints), the backward reads them instead of
    re-running the forward; output and every gradient as the reference's, and the Triton call with recomputed
    states (2 chunks a segment here, so that it re-runs) gives the same result."""
    from ssm_kernels.triton import ops as tops
    x, scan = map_inputs(1, 7, 9, 4, 5, 16, dtype, rank=3), CROSS(7, 9)
    layout = tops._map_layout(x["u"], x["delta"], x["B"], scan.index, False, x["dt_weight"])
    assert layout.ckpt_shape(recompute=False)[2] == 4 and layout.ckpt_shape(recompute=True)[2] == 0
    got = scan2d(**x, paths=scan, backend="triton", recompute_states=False)
    ref = scan2d(**x, paths=scan, backend="reference", recompute_states=False)
    assert rel(got, ref) < tol
    g = torch.randn_like(ref)
    leaves = list(x.values())
    grads = torch.autograd.grad(got, leaves, g)
    for name, a, b in zip(x, grads, torch.autograd.grad(ref, leaves, g)):
        assert rel(a, b) < tol, f"d{name}: {rel(a, b):.2e}"
    monkeypatch.setitem(tops.TUNING, "ckpt_chunks", 2)
    again = scan2d(**x, paths=scan, backend="triton")
    for name, a, b in zip(x, grads, torch.autograd.grad(again, leaves, g)):
        assert rel(a, b) < tol, f"d{name} against recomputed states: {rel(a, b):.2e}"


def test_saved_states_shrink_with_checkpoint_segments(monkeypatch):
    """The states saved for the backward: one entering each checkpoint segment after the first, so S-fold
    fewer than one per chunk (none for a sequence of one segment); with S = 1 every chunk's end state, as
    before."""
    from ssm_kernels.triton import ops as tops
    seq = [v.detach() if v is not None else None for v in scan_inputs(1, 2, 3, 16, 61, torch.float32).values()]
    saved = {}
    for S in (1, 3, 8):  # 8 chunks of 8 steps
        monkeypatch.setitem(tops.TUNING, "ckpt_chunks", S)
        saved[S] = tops._selective_scan_fwd(*seq, True, False, False)[3].shape
    assert saved[1] == (1, 2, 8, 16, 3) and saved[3] == (1, 2, 2, 16, 3) and saved[8] == (1, 2, 0, 16, 3)
    monkeypatch.setitem(tops.TUNING, "ckpt_chunks", 3)  # the fake (meta) kernels give torch.compile these shapes
    torch.library.opcheck(tops.selective_scan_fwd, (*seq, True, False, False))
    out, _, _, ckpt = tops.selective_scan_fwd(*seq, True, False, False)
    torch.library.opcheck(tops.selective_scan_bwd, (*seq, ckpt, torch.randn_like(out), None, None, True))
    monkeypatch.delitem(tops.TUNING, "ckpt_chunks")
    # the default rule: at N = 16 a state per 128 steps; Vim-Ti's sequences at batch 128 (both directions,
    # 384 channels each) keep 1 state instead of 25 at 197 tokens, 6 instead of 99 at 785 (8-step chunks)
    assert tops._Layout.sequences(128, 2, 384, 16, 197).ckpt_shape() == (128, 2, 1, 16, 384)
    assert tops._Layout.sequences(128, 2, 384, 16, 785).ckpt_shape() == (128, 2, 6, 16, 384)
    # N = 1 (VMamba): the saved states are small, one per chunk as before (3136 steps: 196 chunks of 16)
    assert tops._Layout.sequences(128, 4, 96, 1, 3136).checkpoints() == (1, 196)


def test_selective_scan_ungrouped_bc_without_options():
    x = scan_inputs(2, 1, 6, 4, 50, torch.float32, with_z=False, grouped=False)
    x.update(D=None, delta_bias=None)
    got = selective_scan(**x, backend="triton")
    ref = selective_scan(**x, backend="reference")
    assert rel(got, ref) < 1e-5
    g = torch.randn_like(ref)
    inputs = [x[k] for k in ("u", "delta", "A", "B", "C")]
    for a, b in zip(torch.autograd.grad(got, inputs, g), torch.autograd.grad(ref, inputs, g)):
        assert rel(a, b) < 1e-5


@pytest.mark.parametrize("states_only", [False, True])
def test_selective_scan_reads_bc_slices_of_one_projection_in_place(states_only):
    """B and C as Spatial-Mamba passes them, slices of the x projection's (batch, R + 2N, L) output: the forward
    reads them in place (no copies); output, states and every gradient as from contiguous copies."""
    from ssm_kernels import selective_scan_states
    x = scan_inputs(2, 1, 6, 1, 37, torch.float32, with_z=False, grouped=False)
    proj = torch.randn(2, 4, 37, requires_grad=True)
    B, C = proj[:, 2:3], proj[:, 3:4]
    assert not B.is_contiguous()
    leaves = [x["u"], x["delta"], x["A"], proj]
    if states_only:
        run = lambda b, c, backend: selective_scan_states(x["u"], x["delta"], x["A"], b, x["delta_bias"],
                                                          delta_softplus=True, backend=backend)
    else:
        run = lambda b, c, backend: selective_scan(**dict(x, B=b, C=c), backend=backend)
    got, ref = run(B, C, "triton"), run(B.contiguous(), C.contiguous(), "reference")
    assert rel(got, ref) < 1e-5
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(got, leaves, g), torch.autograd.grad(ref, leaves, g)):
        assert rel(a, b) < 1e-5
    with torch.no_grad():
        assert rel(run(B, C, "triton"), ref) < 1e-5


def map_inputs(batch, H, W, K, Dg, N, dtype, split=False, rank=0):
    mk = lambda *s: torch.randn(*s).to(dtype).requires_grad_()
    channels = K * Dg if split else Dg
    x = dict(u=mk(batch, H, W, channels), delta=mk(batch, H, W, K, rank or Dg),
             A=(-torch.rand(K * Dg, N) - 0.1).requires_grad_(), B=mk(batch, H, W, K, N), C=mk(batch, H, W, K, N),
             D=mk(K * Dg), delta_bias=mk(K * Dg))
    if rank:
        x["dt_weight"] = (torch.randn(K, Dg, rank) * rank ** -0.5).requires_grad_()
    return x


def check_scan2d(x, paths, tol, out_norm=None, leaves=None):
    """Fused (Triton) against unfused reference, output and the gradients of ``leaves`` (default: x)."""
    leaves = leaves or x
    got = scan2d(**x, paths=paths, backend="triton", out_norm=out_norm)
    ref = scan2d(**x, paths=paths, backend="reference", out_norm=out_norm)
    want_dtype = x["u"].dtype if out_norm is not None else torch.float32
    assert got.dtype == want_dtype and rel(got, ref) < tol
    g = torch.randn_like(ref)
    names = list(leaves) + (["norm weight", "norm bias"] if out_norm is not None else [])
    inputs = list(leaves.values()) + (list(out_norm.parameters()) if out_norm is not None else [])
    for name, a, b, t in zip(names, torch.autograd.grad(got, inputs, g.to(got.dtype)),
                             torch.autograd.grad(ref, inputs, g), inputs):
        assert a.dtype == t.dtype and rel(a, b) < tol, f"d{name}: {rel(a, b):.2e}"


@pytest.mark.parametrize("batch,H,W,Dg,N,dtype,tol", [
    (2, 5, 7, 4, 1, torch.float32, 2e-5),      # non-square map
    (1, 9, 15, 33, 1, torch.float32, 2e-5),    # 135 steps: two chunks, two channel blocks
    (1, 4, 4, 3, 16, torch.float32, 2e-5),     # N = 16
    (1, 6, 5, 8, 1, torch.bfloat16, 1e-2),
])
def test_fused_scan2d_matches_unfused_reference(batch, H, W, Dg, N, dtype, tol):
    check_scan2d(map_inputs(batch, H, W, 4, Dg, N, dtype), CROSS(H, W), tol)


@pytest.mark.parametrize("H,W,Dg,rank,dtype,tol", [
    (5, 7, 4, 6, torch.float32, 2e-5), (4, 4, 9, 48, torch.float32, 2e-5), (3, 3, 5, 3, torch.float32, 2e-5),
    (3, 3, 33, 48, torch.float32, 2e-5), (3, 5, 70, 5, torch.float32, 2e-5), (5, 4, 6, 6, torch.bfloat16, 1e-2)])
def test_fused_scan2d_with_low_rank_step_size(H, W, Dg, rank, dtype, tol):
    """The step-size projection computed inside the kernel (VMamba's dt_proj) as a small matrix
    product, ranks 6..48 and odd (padded to 16), a half-precision factor with a float32 weight as
    under autocast; its gradient by the projection kernel (70 channels: two of its channel blocks)."""
    x = map_inputs(1, H, W, 4, Dg, 1, dtype, rank=rank)
    check_scan2d(x, CROSS(H, W), tol)


def test_fused_scan2d_on_strided_subgrids_with_split_channels():
    """Atrous-style paths (each direction one stride-2 sub-grid) reading per-direction channel groups."""
    H, W = 6, 4
    grid = row_major(H, W).view(H, W)
    orders = [grid[i::2, j::2].reshape(-1) for i in (0, 1) for j in (0, 1)]
    orders[1], orders[3] = orders[1].flip(0), orders[3].flip(0)
    paths = ScanPaths.from_orders(orders, H, W, split_channels=True)
    check_scan2d(map_inputs(2, H, W, 4, 3, 2, torch.float32, split=True), paths, 2e-5)


@pytest.mark.parametrize("batch,H,W,Dg,N,rank,dtype,tol", [
    (2, 6, 10, 5, 16, 3, torch.float32, 2e-5),    # N = 16, odd channels and rank, 15 steps per direction
    (1, 4, 6, 3, 16, 0, torch.float32, 2e-5),     # a full step-size map
    (1, 2, 2, 33, 3, 6, torch.float32, 2e-5),     # one step per direction, two channel blocks
    (1, 6, 4, 6, 16, 3, torch.bfloat16, 1e-2),
])
@pytest.mark.parametrize("with_norm", [False, True])
def test_fused_scan2d_on_atrous_paths_reads_one_projected_map(batch, H, W, Dg, N, rank, dtype, tol, with_norm):
    """EfficientVMamba's scan: disjoint sub-grid paths (one output map, no slices), dt / B / C one map whose
    direction axis is a stride-0 expansion (each position projected once, by its own direction)."""
    mk = lambda *s: torch.randn(*s).to(dtype).requires_grad_()
    leaves = dict(u=mk(batch, H, W, Dg), delta=mk(batch, H, W, 1, rank or Dg), B=mk(batch, H, W, 1, N),
                  C=mk(batch, H, W, 1, N), A=(-torch.rand(4 * Dg, N) - 0.1).requires_grad_(), D=mk(4 * Dg),
                  delta_bias=mk(4 * Dg))
    if rank:
        leaves["dt_weight"] = (torch.randn(4, Dg, rank) * rank ** -0.5).requires_grad_()
    x = dict(leaves, **{k: leaves[k].expand(-1, -1, -1, 4, -1) for k in ("delta", "B", "C")})
    check_scan2d(x, ssm_kernels.ATROUS(H, W), tol, out_norm=_norm(Dg) if with_norm else None, leaves=leaves)


def _norm(channels):
    norm = torch.nn.LayerNorm(channels)
    with torch.no_grad():  # not the identity: the gradients of both must show
        norm.weight.copy_(torch.rand(channels) + 0.5)
        norm.bias.copy_(torch.randn(channels))
    return norm


@pytest.mark.parametrize("batch,H,W,Dg,dtype,tol", [
    (2, 5, 7, 4, torch.float32, 2e-5),       # 70 rows: several row blocks, the last one partial
    (1, 9, 15, 33, torch.float32, 2e-5),     # 33 channels in a block of 64
    (1, 6, 5, 8, torch.bfloat16, 1e-2),
])
def test_fused_scan2d_with_out_norm(batch, H, W, Dg, dtype, tol):
    """The merge of the K directions and the LayerNorm after it in one kernel each way; the output in
    u's dtype (float32 parameters, as under autocast), the gradients of its weight and bias too."""
    check_scan2d(map_inputs(batch, H, W, 4, Dg, 1, dtype, rank=3), CROSS(H, W), tol, out_norm=_norm(Dg))


def test_fused_scan2d_out_norm_with_split_channels():
    H, W = 6, 4
    grid = row_major(H, W).view(H, W)
    paths = ScanPaths.from_orders([grid[i::2, j::2].reshape(-1) for i in (0, 1) for j in (0, 1)], H, W,
                                  split_channels=True)
    check_scan2d(map_inputs(2, H, W, 4, 3, 2, torch.float32, split=True), paths, 2e-5, out_norm=_norm(12))


@pytest.mark.parametrize("H,W,Dg,rank,dtype,tol,norm", [
    (4, 3, 5, 3, torch.float32, 2e-5, True),     # a 7x5 map's stride-2 branch: 36 steps, three chunks
    (4, 3, 5, 3, torch.float32, 2e-5, False),
    (3, 2, 4, 0, torch.float32, 2e-5, False),    # full step-size maps
    (4, 3, 8, 3, torch.bfloat16, 1e-2, True),
])
def test_fused_scan2d_on_a_path_that_visits_every_position_three_times(H, W, Dg, rank, dtype, tol, norm):
    """MSVMamba's low-resolution path: one recurrence over three orders of the map; the kernels write by
    step and the visits are summed (with the out-norm: each visit normalised first)."""
    x = map_inputs(2, H, W, 1, Dg, 1, dtype, rank=rank)
    check_scan2d(x, MULTISCALE_LOW(H, W), tol, out_norm=_norm(Dg) if norm else None)


def test_fused_scan2d_with_repeated_visits_in_several_directions():
    H, W = 3, 4
    row, col = row_major(H, W), column_major(H, W)
    paths = ScanPaths.from_orders([torch.cat([row, row.flip(0)]), torch.cat([col, col[:6], row[6:]])], H, W)
    assert paths.repeats == 3  # uneven: some positions once more, some twice more
    check_scan2d(map_inputs(2, H, W, 2, 3, 2, torch.float32, rank=2), paths, 2e-5)


def test_fused_scan2d_reads_projection_slices_in_place():
    """dt, B and C as VMamba makes them: views of one (b, H, W, K, R + 2N) projection, read with their
    strides (no copies); their gradients reach the projection."""
    H, W, K, Dg, R, N = 5, 6, 4, 8, 3, 2
    proj = torch.randn(2, H, W, K, R + 2 * N, requires_grad=True)
    dt, B, C = proj.split([R, N, N], dim=-1)
    x = map_inputs(2, H, W, K, Dg, N, torch.float32, rank=R)
    x.update(delta=dt, B=B, C=C)
    leaves = {k: v for k, v in x.items() if k not in ("delta", "B", "C")}
    check_scan2d(x, CROSS(H, W), 2e-5, leaves=dict(leaves, proj=proj))


@pytest.mark.parametrize("pattern,K,H,W,Dg,N,R,dtype,tol", [
    (CROSS, 4, 5, 6, 8, 2, 3, torch.float32, 2e-5),
    (CROSS, 4, 4, 3, 5, 1, 6, torch.bfloat16, 1e-2),
    (MULTISCALE_LOW, 1, 4, 3, 5, 1, 3, torch.float32, 2e-5),     # by step
    (ssm_kernels.ATROUS, 4, 6, 4, 5, 2, 3, torch.float32, 2e-5),  # one projected map, expanded over K
])
def test_fused_scan2d_takes_the_whole_projection(pattern, K, H, W, Dg, N, R, dtype, tol):
    """B and C None: delta is the whole (b, H, W, K, R + 2N) projection, split inside the op, its gradient one
    tensor (no concatenation after the op): the same values as its slices passed apart, on both backends."""
    mk = lambda *s: torch.randn(*s).to(dtype).requires_grad_()
    proj = mk(2, H, W, 1 if pattern is ssm_kernels.ATROUS else K, R + 2 * N)
    whole = proj.expand(-1, -1, -1, K, -1)
    x = {k: v for k, v in map_inputs(2, H, W, K, Dg, N, dtype, rank=R).items() if k not in ("delta", "B", "C")}
    norm = _norm(Dg)
    leaves = [proj, x["u"], x["A"], x["dt_weight"]]
    got = scan2d(**x, delta=whole, B=None, C=None, paths=pattern(H, W), backend="triton", out_norm=norm)
    apart = scan2d(**x, delta=whole[..., :R], B=whole[..., R:R + N], C=whole[..., R + N:], paths=pattern(H, W),
                   backend="triton", out_norm=norm)
    ref = scan2d(**x, delta=whole, B=None, C=None, paths=pattern(H, W), backend="reference", out_norm=norm)
    assert torch.equal(got, apart) and rel(got, ref) < tol
    g = torch.randn_like(ref)
    for a, b, r in zip(*(torch.autograd.grad(y, leaves, g.to(y.dtype)) for y in (got, apart, ref))):
        assert torch.equal(a, b) and rel(a, r) < tol


def test_scan2d_rejects_half_a_projection():
    x = map_inputs(1, 3, 4, 4, 5, 2, torch.float32, rank=3)
    with pytest.raises(ValueError, match="pass B and C, or neither"):
        scan2d(**dict(x, C=None), paths=CROSS(3, 4), backend="triton")
    with pytest.raises(ValueError, match=r"delta must be \(1, 3, 4, 4, 7\)"):
        scan2d(**dict(x, B=None, C=None), paths=CROSS(3, 4), backend="triton")


@pytest.mark.parametrize("shape,dtype,autocast,tol", [
    ((2, 5, 7, 33), torch.float32, False, 2e-6),    # 70 rows, 33 channels in a block of 64
    ((3, 96), torch.float32, False, 2e-6),
    ((2, 4, 6, 48), torch.bfloat16, False, 1e-2),
    ((2, 4, 6, 48), torch.float32, True, 1e-2),     # float32 in, bfloat16 out (the next matmul's dtype)
])
def test_layer_norm_matches_reference(shape, dtype, autocast, tol):
    x = (torch.randn(*shape) * 3 + 1).to(dtype).requires_grad_()
    weight = (torch.rand(shape[-1]) + 0.5).requires_grad_()
    bias = torch.randn(shape[-1]).requires_grad_()
    exact = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        got = ssm_kernels.layer_norm(x, weight, bias, 1e-5, backend="triton")
    ref = torch.nn.functional.layer_norm(exact[0], shape[-1:], exact[1], exact[2], 1e-5)
    assert got.dtype == (torch.bfloat16 if autocast else dtype) and rel(got, ref) < tol
    g = torch.randn_like(ref)
    for name, a, b, t in zip(("x", "weight", "bias"), torch.autograd.grad(got, (x, weight, bias), g.to(got.dtype)),
                             torch.autograd.grad(ref, exact, g), (x, weight, bias)):
        assert a.dtype == t.dtype and rel(a, b) < tol, f"d{name}: {rel(a, b):.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_norm_for_a_residual_stream_keeps_float32_under_autocast(dtype):
    """residual=True: the output dtype F.layer_norm has under CUDA's autocast (float32; x's dtype without)."""
    x = (torch.randn(2, 5, 7, 40) * 3 + 1).to(dtype).requires_grad_()
    weight, bias = torch.rand(40) + 0.5, torch.randn(40)
    ref = torch.nn.functional.layer_norm(x.float(), (40,), weight, bias, 1e-5)
    for autocast in (True, False):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            got = ssm_kernels.layer_norm(x, weight, bias, 1e-5, backend="triton", residual=True)
        assert got.dtype == (torch.float32 if autocast else dtype)
        assert rel(got, ref) < (2e-6 if dtype == torch.float32 else 1e-2)
        (dx,) = torch.autograd.grad(got.sum(), x)
        assert dx.dtype == dtype


def test_fast_layer_norm_2d_matches_timm():
    from timm.layers import LayerNorm2d
    from vmamba_zoo.layers import FastLayerNorm2d
    ours, timm_norm = FastLayerNorm2d(12, eps=1e-5), LayerNorm2d(12, eps=1e-5)
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.normal_()
    timm_norm.load_state_dict(ours.state_dict())
    x = torch.randn(2, 12, 5, 7)
    torch.testing.assert_close(ours(x), timm_norm(x))
    torch.testing.assert_close(torch.jit.script(ours)(x), timm_norm(x))


def test_layer_norm_rejects_wrong_parameter_shapes():
    with pytest.raises(ValueError, match="weight and bias must be"):
        ssm_kernels.layer_norm(torch.randn(2, 8), torch.ones(7), torch.zeros(7), backend="triton")


ADD_NORM_CASES = [  # shape, stream dtype, branch dtype, autocast, tolerance
    ((2, 5, 7, 33), torch.float32, torch.float32, False, 2e-6),    # 70 rows, 33 channels in a block of 64
    ((3, 96), torch.float32, torch.float32, False, 2e-6),
    ((2, 4, 6, 48), torch.float32, torch.bfloat16, True, 1e-2),    # a float32 stream, a bfloat16 branch (blocks)
    ((2, 3, 5, 40), torch.bfloat16, torch.bfloat16, False, 1e-2),
]


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("shape,dtype,branch_dtype,autocast,tol", ADD_NORM_CASES)
def test_add_layer_norm_matches_reference(shape, dtype, branch_dtype, autocast, tol, scaled, backend):
    """(x + branch, its LayerNorm) against the float64 add and F.layer_norm, with gradients flowing into both
    outputs; every gradient in its input's dtype. ``scaled``: each sample's branch times its drop-path scale (a
    dropped sample, a kept one rescaled)."""
    x = (torch.randn(*shape) * 3 + 1).to(dtype).requires_grad_()
    branch = torch.randn(*shape).to(branch_dtype).requires_grad_()
    weight = (torch.rand(shape[-1]) + 0.5).requires_grad_()
    bias = torch.randn(shape[-1]).requires_grad_()
    scale = torch.tensor([1.25, 0.0, 1.25][:shape[0]]) if scaled else None
    leaves = (x, branch, weight, bias)
    exact = [t.detach().double().requires_grad_() for t in leaves]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        got = ssm_kernels.add_layer_norm(x, branch, weight, bias, 1e-5, backend=backend, branch_scale=scale)
    s = exact[0] + exact[1] * (1 if scale is None else scale.double().view(-1, *[1] * (len(shape) - 1)))
    ref = (s, torch.nn.functional.layer_norm(s, shape[-1:], exact[2], exact[3], 1e-5))
    assert got[0].dtype == torch.promote_types(dtype, branch_dtype)
    if backend == "triton":  # the reference's norm is F.layer_norm's: float32 under autocast
        assert got[1].dtype == (torch.bfloat16 if autocast else dtype)
    for a, b in zip(got, ref):
        assert rel(a, b) < tol
    gs = [torch.randn_like(r) for r in ref]
    g_got = torch.autograd.grad(got, leaves, [g.to(a.dtype) for g, a in zip(gs, got)])
    g_ref = torch.autograd.grad(ref, exact, gs)
    for name, a, b, t in zip(("x", "branch", "weight", "bias"), g_got, g_ref, leaves):
        assert a.dtype == t.dtype and rel(a, b) < tol, f"d{name}: {rel(a, b):.2e}"


def test_norm_forwards_give_small_maps_more_programs(monkeypatch):
    """At batch 1 a late stage's map has few rows: the forwards then give a program fewer rows (down to one), so
    that every SM gets a few programs; large maps get about 2048 elements a program."""
    from ssm_kernels.triton import merge_norm as mn
    monkeypatch.setattr(mn, "_sms", lambda device: 132)
    cuda = torch.device("cuda")
    assert mn._fwd_block(384, 32 * 32, cuda) == (1, 512, 4)       # VMamba-T stage 3 at 512x512, batch 1
    assert mn._fwd_block(96, 128 * 128, cuda) == (16, 128, 4)     # its stage 1
    assert mn._fwd_block(768, 128 * 7 * 7, cuda) == (2, 1024, 4)  # stage 4 at 224x224, batch 128
    assert mn._fwd_block(384, 128 * 14 * 14, cuda) == (4, 512, 4)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.bfloat16, 1e-2)])
def test_norm_forwards_at_one_row_a_program(dtype, tol, monkeypatch):
    """The forwards at one row a program (what a small map gets on a large GPU) match F.layer_norm."""
    from ssm_kernels.triton import merge_norm as mn
    monkeypatch.setattr(mn, "FWD_PROGRAMS_PER_SM", 10 ** 6)
    assert mn._fwd_block(33, 70, torch.device("cpu")) == (1, 64, 4)
    x, branch = (torch.randn(2, 5, 7, 33) * 3 + 1).to(dtype), torch.randn(2, 5, 7, 33).to(dtype)
    weight, bias = torch.rand(33) + 0.5, torch.randn(33)
    s, y = ssm_kernels.add_layer_norm(x, branch, weight, bias, 1e-5, backend="triton")
    exact = x.double() + branch.double()
    assert rel(s, exact) < tol
    assert rel(y, torch.nn.functional.layer_norm(exact, (33,), weight.double(), bias.double(), 1e-5)) < tol
    y = ssm_kernels.layer_norm(x, weight, bias, 1e-5, backend="triton")
    assert rel(y, torch.nn.functional.layer_norm(x.double(), (33,), weight.double(), bias.double(), 1e-5)) < tol


def test_norms_off_the_kernels_add_as_the_op_does():
    """A residual or weightless FastLayerNorm adds outside the op: its sum is the op's reference sum, bit for bit (a
    float16 branch times its float32 drop-path scale: in float32, rounded once)."""
    x, branch = torch.randn(3, 5, 16), torch.randn(3, 5, 16).half()
    scale = torch.tensor([1.25, 0.0, 1.25])
    want, _ = ssm_kernels.add_layer_norm(x, branch, torch.ones(16), torch.zeros(16), backend="reference",
                                         branch_scale=scale)
    for norm in (FastLayerNorm(16, residual=True), FastLayerNorm(16, elementwise_affine=False)):
        got, normed = norm.add_forward(x, branch, scale)
        assert torch.equal(got, want) and normed.shape == want.shape


def test_add_layer_norm_rejects_a_bad_branch_scale():
    x = torch.randn(2, 3, 8)
    for bad in (torch.ones(3), torch.ones(2, 1), torch.ones(2, dtype=torch.float16)):
        with pytest.raises(ValueError, match="branch_scale must be a float32 vector of one value per sample"):
            ssm_kernels.add_layer_norm(x, x, torch.ones(8), torch.zeros(8), branch_scale=bad, backend="triton")


def test_add_layer_norm_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="x and branch must have one shape"):
        ssm_kernels.add_layer_norm(torch.randn(2, 8), torch.randn(2, 7), torch.ones(8), torch.zeros(8), backend="triton")
    with pytest.raises(ValueError, match="weight and bias must be"):
        ssm_kernels.add_layer_norm(torch.randn(2, 8), torch.randn(2, 8), torch.ones(7), torch.zeros(7), backend="triton")


def test_launcher_keys_every_specialisation_triton_makes():
    """The launcher reuses a compiled kernel only for arguments Triton would compile the same way (the GPU
    check, tools/check_kernels.py, runs the cached launches against the reference)."""
    from ssm_kernels.triton.launch import cdiv, next_power_of_2, specialisation

    def spec(arg):
        return specialisation([arg])

    x = torch.empty(64)
    assert spec(x) != spec(x[1:]), "16-byte alignment"
    assert spec(x) != spec(x.double()) and spec(x) == spec(torch.empty(8))
    assert len({spec(v) for v in (1, 2, 16, 2 ** 31, 2 ** 63)}) == 5   # 1, plain, multiple of 16, i64, u64
    assert spec(3) == spec(5) and spec(32) == spec(48) and spec(True) != spec(1) and spec(0.5) == spec(2.0)
    assert [cdiv(n, 4) for n in (1, 4, 5)] == [1, 1, 2]
    assert [next_power_of_2(n) for n in (1, 2, 3, 96, 128)] == [1, 2, 4, 128, 128]


def test_accumulator_views_are_aligned_disjoint_and_cover_the_buffer():
    """The backward's gradients accumulated with atomic adds share one zeroed buffer: each view starts
    16-byte aligned (the kernels are compiled for aligned pointers), none overlaps another."""
    from ssm_kernels.triton import ops as tops

    A, B, C, w = torch.empty(4 * 5, 1), torch.empty(2, 3, 3, 4, 1), torch.empty(2, 3, 3, 4, 1), torch.empty(4, 5, 3)
    shapes = tops.accumulator_shapes(A, B, C, w, norm_weight=torch.empty(5))
    flat, views = tops._accumulators(shapes, "cpu")
    assert flat.numel() == tops.accumulator_size(shapes) and not flat.any()
    assert [tuple(v.shape) for v in views] == list(shapes)
    seen = torch.zeros(flat.numel(), dtype=torch.int32)
    for view in tops.split_accumulators(flat, shapes):
        assert view.data_ptr() % 16 == 0 and view.is_contiguous()
        start = (view.data_ptr() - flat.data_ptr()) // 4
        seen[start:start + view.numel()] += 1
    assert seen.max() <= 1 and int(seen.sum()) == sum(v.numel() for v in views)


def test_no_grad_calls_skip_the_autograd_node():
    """Without gradient recording (inference) the ops call the kernels without an autograd node: same
    values as with one."""
    H, W, Dg = 4, 5, 8
    x = map_inputs(2, H, W, 4, Dg, 1, torch.float32, rank=3)
    norm = _norm(Dg)
    with_node = scan2d(**x, paths=CROSS(H, W), delta_softplus=True, backend="triton", out_norm=norm)
    with torch.no_grad():
        without = scan2d(**x, paths=CROSS(H, W), delta_softplus=True, backend="triton", out_norm=norm)
        ln = ssm_kernels.layer_norm(x["u"], norm.weight, norm.bias, backend="triton")
    assert with_node.grad_fn is not None and without.grad_fn is None and ln.grad_fn is None
    assert torch.equal(with_node.detach(), without)
    assert torch.allclose(ln, torch.nn.functional.layer_norm(x["u"], (Dg,), norm.weight, norm.bias), atol=1e-5)


def test_kernels_refuse_tensors_beyond_int32_offsets():
    from ssm_kernels.triton.ops import _check_offsets
    _check_offsets(torch.empty(2, 2 ** 15, 2 ** 15, device="meta"))           # 2**30 per batch element: fine
    with pytest.raises(ValueError, match=r"spans 2147483648 elements per batch element"):
        _check_offsets(torch.empty(2, 2 ** 16, 2 ** 15, device="meta"))


def test_scan2d_rejects_an_out_norm_over_other_channels():
    x = map_inputs(1, 3, 4, 4, 5, 1, torch.float32, rank=2)
    with pytest.raises(ValueError, match="out_norm must normalise the 5 channels"):
        scan2d(**x, paths=CROSS(3, 4), backend="triton", out_norm=torch.nn.LayerNorm(6))


def test_vmamba_block_stack_matches_across_backends():
    model = VMamba(dims=(16, 32, 32, 32), depths=(1, 1, 1, 1), num_classes=5)
    x = torch.randn(2, 3, 64, 32)
    outputs, grads = {}, {}
    for backend in ("reference", "triton"):
        model.zero_grad()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SSM_KERNELS_BACKEND", backend)
            outputs[backend] = model(x)
            outputs[backend].square().sum().backward()
        grads[backend] = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert rel(outputs["triton"], outputs["reference"]) < 1e-5
    for name, g in grads["reference"].items():
        assert rel(grads["triton"][name], g) < 1e-4, name


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_blocks_leave_their_last_add_to_the_next_norm(backend, monkeypatch):
    """Inside a stage each VMamba block but the last returns [stream, branch, drop-path scale] and the next adds them
    in its norm1's op: the same output and gradients as the plain adds (every block summing its own), in training
    and eval; with drop path, the scales applied in the kernels as in the reference."""
    from timm.layers import DropPath
    from vmamba_zoo.layers import SS2D, MixerBlock, Stage

    monkeypatch.setenv("SSM_KERNELS_BACKEND", backend)
    torch.manual_seed(0)
    stage = Stage([MixerBlock(8, SS2D(8), mlp_ratio=2, norm_layer=FastLayerNorm) for _ in range(3)])
    assert [b.defer_add for b in stage.blocks] == [True, True, False]
    x = torch.randn(2, 5, 3, 8, requires_grad=True)
    results = {}
    for deferred in (True, False):
        for block in stage.blocks[:-1]:
            block.defer_add = deferred
        x.grad = None
        stage.zero_grad()
        out = stage(x)
        out.square().sum().backward()
        with torch.no_grad():
            evaluated = stage.eval()(x)
        stage.train()
        results[deferred] = out, evaluated, {"x": x.grad, **{n: p.grad for n, p in stage.named_parameters()}}
    (out, evaluated, grads), (plain, plain_eval, plain_grads) = results[True], results[False]
    assert rel(out, plain) < 1e-6 and rel(evaluated, plain_eval) < 1e-6
    for name, g in plain_grads.items():
        assert rel(grads[name], g) < 1e-5, name
    # drop path, every sample dropped: the stage passes its input through, and no gradient reaches the blocks
    for block in stage.blocks:
        block.drop_path = DropPath(1.0)
    x.grad = None
    stage.zero_grad()
    out = stage(x)
    out.square().sum().backward()
    assert torch.equal(out, x) and torch.equal(x.grad, 2 * x)
    assert all(p.grad is None or not p.grad.any() for p in stage.parameters())
    # some samples dropped, the others rescaled: the kernels scale each sample's branch as the reference's tensor ops
    # do (the same draws)
    for block in stage.blocks:
        block.drop_path = DropPath(0.5)
    for name in ("triton", "reference") if backend == "triton" else ():
        monkeypatch.setenv("SSM_KERNELS_BACKEND", name)
        x.grad = None
        stage.zero_grad()
        torch.manual_seed(1)
        out = stage(torch.cat([x, x]))  # four samples
        out.square().sum().backward()
        results[name] = out, {"x": x.grad, **{n: p.grad for n, p in stage.named_parameters()}}
    if backend == "triton":
        (out, grads), (plain, plain_grads) = results["triton"], results["reference"]
        assert rel(out, plain) < 1e-6
        for name, g in plain_grads.items():
            assert rel(grads[name], g) < 1e-5, name
        monkeypatch.setenv("SSM_KERNELS_BACKEND", backend)
    stage.grad_checkpointing = True  # checkpoint segments pass tensors: no block defers
    assert not any(b.defer_add for b in stage.blocks)
    stage.grad_checkpointing = False
    assert [b.defer_add for b in stage.blocks] == [True, True, False]
    # a block with a position encoding before norm1 takes no pending add; the one before it then sums its own
    blocks = [MixerBlock(8, torch.nn.Identity(), norm_layer=FastLayerNorm, cpe=cpe) for cpe in (False, True, False)]
    assert [b.defer_add for b in Stage(blocks).blocks] == [False, True, False]


def test_torch_compile_single_graph_matches_eager(monkeypatch):
    """The Triton ops are custom ops: torch.compile traces the whole model in one graph."""
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "triton")
    torch._dynamo.reset()
    model = VMamba(dims=(16, 32, 32, 32), depths=(1, 1, 1, 1), num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    eager = model(x)
    eager.sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    run = torch.compile(model, fullgraph=True, backend="aot_eager")
    compiled = run(x)
    compiled.sum().backward()
    assert rel(compiled, eager) < 1e-6
    for name, p in model.named_parameters():
        assert rel(p.grad, expected[name]) < 1e-5, name
    with torch._dynamo.config.patch(error_on_recompile=True):  # a second call (new data) reuses the graph
        again = run(torch.randn_like(x))
        again.sum().backward()


def test_torch_compile_graph_holds_the_triton_ops(monkeypatch):
    """The compiled graph calls the custom ops, forward and backward, not the reference's tensor ops (and holds no
    aten.convolution, which would turn inductor's layout optimisation on): also where
    dynamo answers ``torch.compiler.is_exporting()`` with True while it compiles (torch 2.11 did, and every compiled
    model ran the reference decomposed by inductor)."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    monkeypatch.setenv("SSM_KERNELS_BACKEND", "triton")

    def is_exporting_as_in_torch_2_11():
        return torch.compiler.is_compiling()

    monkeypatch.setattr(torch.compiler, "is_exporting", is_exporting_as_in_torch_2_11)
    torch._dynamo.reset()
    seen = set()

    def record(gm, _):
        seen.update(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return make_boxed_func(gm.forward)

    model = VMamba(dims=(8, 16, 16, 16), depths=(1, 1, 1, 1), num_classes=5)
    torch.compile(model, fullgraph=True, backend=aot_autograd(fw_compiler=record))(torch.randn(1, 3, 32, 32)).sum() \
        .backward()
    assert {"ssm_kernels.scan2d_fwd.default", "ssm_kernels.scan2d_bwd.default",
            "ssm_kernels.layer_norm_fwd.default", "ssm_kernels.dwconv2d_fwd.default"} <= seen, sorted(seen)
    # the stem's and the downsamples' convolutions are opaque too (ssm_kernels.conv2d: no layout optimisation)
    assert "ssm_kernels.conv2d_bwd.default" in seen and "aten.convolution.default" not in seen


_TRACED_OPS_SCRIPT = """
import os, sys, timm, torch
from torch._dynamo.backends.common import aot_autograd
import vmamba_zoo

# the kernels are Triton's compiled kind (no interpreter at import); the variable, set now, only lets the backend
# take CPU tensors: nothing launches, the forward graph is recorded and the compile stops there
os.environ["TRITON_INTERPRET"] = "1"
os.environ["SSM_KERNELS_BACKEND"] = "triton"

class Recorded(Exception):
    pass

def record(gm, _):
    raise Recorded(sorted({str(n.target) for n in gm.graph.nodes if n.op == "call_function"}))

name = sys.argv[1]
model = timm.create_model(name, **vmamba_zoo.models.tiny_kwargs(name), num_classes=5)
try:
    torch.compile(model, fullgraph=True, backend=aot_autograd(fw_compiler=record))(torch.randn(1, 3, 32, 32))
except Exception as e:
    while e is not None and not isinstance(e, Recorded):
        e = e.__cause__ or e.__context__
    print(repr(e.args[0]))
"""


@pytest.mark.parametrize("model_name", ["vmamba_tiny", "vim_tiny"])
def test_torch_compile_traces_the_forward_ops_into_their_kernels(model_name):
    """On a GPU the forward ops of VMamba and Vim (scan2d, layer_norm, dwconv2d, causal_conv1d, merge_gate) are
    ``triton_op``s: the compiled training graph's forward holds their Triton kernels (inductor launches them from its
    own code), not the ops. Checked in a process without Triton's interpreter, where the ops are defined that way;
    the graph is recorded, nothing launches."""
    import ast
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SSM_KERNELS_POISON")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, os.path.join(root, "kernels"), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", _TRACED_OPS_SCRIPT, model_name], env=env, capture_output=True,
                          text=True, timeout=600)
    seen = ast.literal_eval(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else done.stderr[-3000:]
    assert isinstance(seen, list), seen
    # the convolutions stay opaque ops (cuDNN's); every Triton op of the forward is traced into its kernels
    assert {name for name in seen if name.startswith("ssm_kernels.")} == {"ssm_kernels.conv2d_fwd.default"}, seen
    assert any("triton_kernel_wrapper" in name for name in seen), seen


@pytest.mark.parametrize("model_name", ["vmamba_tiny", "vim_tiny"])
def test_scan2d_backward_fake_strides_match_the_op_for_any_projection_layout(model_name, monkeypatch):
    """The backward op's fake outputs have the strides of its real ones, whatever the layout of the projection it
    receives: compiled code asserts them, and with the forward traced by inductor the projection saved for the
    backward need not keep the eager layout (Vim's became contiguous where eager had it direction-major)."""
    import timm
    from torch._subclasses.fake_tensor import FakeTensorMode

    import vmamba_zoo
    from ssm_kernels.triton import ops as triton_ops

    monkeypatch.setenv("SSM_KERNELS_BACKEND", "triton")
    calls = []
    body = triton_ops._scan2d_bwd
    monkeypatch.setattr(triton_ops, "_scan2d_bwd", lambda *a: calls.append(a) or body(*a))
    model = timm.create_model(model_name, **vmamba_zoo.models.tiny_kwargs(model_name), num_classes=5)
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    args = list(calls[0])
    delta = args[1]
    k = delta.dim() - 2  # the direction axis of a (b, H, W, K, R + 2N) projection
    order = [k] + [i for i in range(delta.dim()) if i != k]
    for layout in (delta.contiguous(), delta.permute(order).contiguous().permute(*torch.argsort(torch.tensor(order)))):
        args[1] = layout
        real = triton_ops.scan2d_bwd(*args)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = triton_ops.scan2d_bwd(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args])
        assert [t.stride() for t in fake] == [t.stride() for t in real], layout.stride()


def test_torch_compile_recompiles_for_a_new_input_size(monkeypatch):
    """A second input size makes torch.compile recompile with symbolic sizes; the scan paths (host-side
    data per map size) specialise on them instead of failing the trace."""
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "triton")
    torch._dynamo.reset()
    model = VMamba(dims=(8, 16, 16, 16), depths=(1, 1, 1, 1), num_classes=5).eval()
    run = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        for size in (32, 64, 96):
            x = torch.randn(1, 3, size, size)
            assert rel(run(x), model(x)) < 1e-6, size


def test_torch_compile_with_reference_backend(monkeypatch):
    """On CPU the reference scan runs eagerly between compiled graphs; results are unchanged."""
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "reference")
    torch._dynamo.reset()
    model = VMamba(dims=(16, 32, 32, 32), depths=(1, 1, 1, 1), num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(torch.compile(model, backend="aot_eager")(x), model(x))


def test_float64_runs_on_the_reference(monkeypatch):
    """The kernels compute in float32: float64 goes to the reference unless Triton is asked for by name."""
    x = torch.randn(2, 3, dtype=torch.float64)
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "triton")
    assert ssm_kernels.resolve_backend(x) == "reference"
    with pytest.raises(ValueError, match="does not take float64"):
        ssm_kernels.resolve_backend(x, "triton")


def test_triton_backend_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        ssm_kernels.resolve_backend(torch.randn(2), "triton")


def test_custom_ops_pass_opcheck():
    """Schemas, fake (meta) kernels and strides of the four custom ops agree with the real kernels."""
    from ssm_kernels.triton import ops as tops

    torch.manual_seed(0)
    seq = scan_inputs(1, 2, 3, 2, 20, torch.float32)
    seq = [v.detach() if v is not None else None for v in seq.values()]
    torch.library.opcheck(tops.selective_scan_fwd, (*seq, True, True, False))
    out, last, _, ckpt = tops.selective_scan_fwd(*seq, True, True, False)
    torch.library.opcheck(tops.selective_scan_bwd, (*seq, ckpt, torch.randn_like(out), torch.randn_like(last), None, True))
    for Dg, rank, norm in [(4, 6, False), (33, 48, True), (4, 0, False)]:  # with/without projection, norm
        x = {k: v.detach() for k, v in map_inputs(1, 3, 4, 4, Dg, 1, torch.float32, rank=rank).items()}
        nw, nb = (torch.rand(Dg) + 0.5, torch.randn(Dg)) if norm else (None, None)
        args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["delta_bias"], CROSS(3, 4).index,
                x.get("dt_weight"), nw, nb, 1e-5)
        torch.library.opcheck(tops.scan2d_fwd, (*args, True, False))
        out, ckpt, slices, stats = tops.scan2d_fwd(*args, True, False)
        torch.library.opcheck(tops.scan2d_bwd, (*args[:10], ckpt, slices, stats, torch.randn_like(out), True, False))
    x = {k: v.detach() for k, v in map_inputs(1, 3, 4, 4, 4, 2, torch.float32, rank=3).items()}
    proj = torch.randn(1, 3, 4, 4, 3 + 2 * 2)  # the whole projection: B and C None
    args = (x["u"], proj, x["A"], None, None, x["D"], x["delta_bias"], CROSS(3, 4).index, x["dt_weight"], None,
            None, 1e-5)
    torch.library.opcheck(tops.scan2d_fwd, (*args, True, False))
    out, ckpt, slices, stats = tops.scan2d_fwd(*args, True, False)
    torch.library.opcheck(tops.scan2d_bwd, (*args[:10], ckpt, slices, stats, torch.randn_like(out), True, False))
    x, w, b = torch.randn(3, 5, 12), torch.rand(12) + 0.5, torch.randn(12)
    torch.library.opcheck(tops.layer_norm_fwd, (x, w, b, 1e-5, torch.bfloat16))
    y, stats = tops.layer_norm_fwd(x, w, b, 1e-5, torch.bfloat16)
    torch.library.opcheck(tops.layer_norm_bwd, (x, w, stats, torch.randn_like(y)))


def test_launcher_uses_tritons_runner_while_a_launch_hook_is_set(monkeypatch):
    """With no launch hook (an empty hook chain) the Launcher calls the compiled kernel directly; a hook
    (a profiler's) sends every launch through Triton's runner, which calls it."""
    from ssm_kernels.triton import launch
    if launch._RUNTIME is None:
        pytest.skip("this Triton has no knobs: the Launcher always takes the runner")
    monkeypatch.setattr(launch._RUNTIME, "launch_enter_hook", None)
    monkeypatch.setattr(launch._RUNTIME, "launch_exit_hook", None)
    assert not launch._hooked()
    monkeypatch.setattr(launch._RUNTIME, "launch_enter_hook", lambda metadata: None)
    assert launch._hooked()

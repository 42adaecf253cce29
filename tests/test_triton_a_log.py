"""The ops called with Mamba's parameter A_log (``a_is_log=True``): A = -exp(A_log) computed inside the
kernels and the gradient taken to A_log, against the reference (CI: Triton's interpreter, small sizes).

tools/check_kernels.py runs the fused 2-D scan this way at full VMamba sizes on a GPU.
"""
import pytest
import torch

import ssm_kernels
from ssm_kernels import ATROUS, CROSS, MULTISCALE_LOW, scan2d, selective_scan, selective_scan_states
from ssm_kernels.reference import a_from_log
from test_triton_kernels import check_selective_scan, scan_inputs

pytestmark = pytest.mark.skipif("triton" not in ssm_kernels.available_backends(), reason="triton not installed")


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def a_log(channels, d_state):
    """Random A_log around Mamba's initialisation log(1..N): decays from fast to slow."""
    return (torch.rand(channels, d_state) * 3 - 0.5).requires_grad_()


FP32, BF16 = (torch.float32, (2e-6, 2e-5)), (torch.bfloat16, (1e-2, 1e-2))


@pytest.mark.parametrize("batch,K,Dg,N,L,with_z,dtype_tol", [
    (2, 4, 3, 1, 129, False, FP32),   # L one past a chunk boundary
    (1, 2, 33, 3, 37, True, FP32),    # two channel blocks, odd N
    (1, 2, 3, 16, 37, True, FP32),    # N = 16
    (2, 2, 4, 1, 131, True, BF16),
    (1, 2, 3, 16, 37, False, BF16),
])
def test_selective_scan_with_a_log_matches_reference(batch, K, Dg, N, L, with_z, dtype_tol):
    dtype, tol = dtype_tol
    x = scan_inputs(batch, K, Dg, N, L, dtype, with_z)
    x["A"] = a_log(K * Dg, N)                     # float32, as the parameter: its gradient comes in float32
    check_selective_scan(x, tol, a_is_log=True)


def test_selective_scan_states_with_a_log():
    mk = lambda *s: torch.randn(*s).requires_grad_()
    u, delta, B, bias = mk(2, 6, 23), mk(2, 6, 23), mk(2, 3, 23), mk(6)
    A_log = a_log(6, 3)
    got = selective_scan_states(u, delta, A_log, B, bias, delta_softplus=True, backend="triton", a_is_log=True)
    ref = selective_scan_states(u, delta, a_from_log(A_log), B, bias, delta_softplus=True, backend="reference")
    assert rel(got, ref) < 2e-6
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(got, [u, delta, A_log, B, bias], g),
                    torch.autograd.grad(ref, [u, delta, A_log, B, bias], g)):
        assert rel(a, b) < 2e-5


def map_inputs(batch, H, W, K, Dg, N, rank, dtype, one_map=False):
    mk = lambda *s: torch.randn(*s).to(dtype).requires_grad_()
    Km = 1 if one_map else K
    x = dict(u=mk(batch, H, W, Dg), delta=mk(batch, H, W, Km, rank), B=mk(batch, H, W, Km, N),
             C=mk(batch, H, W, Km, N), A=a_log(K * Dg, N), D=mk(K * Dg), delta_bias=mk(K * Dg),
             dt_weight=(torch.randn(K, Dg, rank) * rank ** -0.5).requires_grad_())
    return x


def _norm(channels):
    norm = torch.nn.LayerNorm(channels)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(channels) + 0.5)
        norm.bias.copy_(torch.randn(channels))
    return norm


@pytest.mark.parametrize("pattern,K,batch,H,W,Dg,N,rank,dtype,tol,norm", [
    (CROSS, 4, 2, 5, 7, 4, 1, 6, torch.float32, 2e-5, True),        # VMamba's block, odd map
    (CROSS, 4, 1, 4, 4, 33, 3, 5, torch.float32, 2e-5, False),      # two channel blocks, odd N
    (CROSS, 4, 1, 4, 3, 3, 16, 3, torch.float32, 2e-5, False),      # N = 16
    (CROSS, 4, 1, 6, 5, 8, 1, 3, torch.bfloat16, 1e-2, True),
    (ATROUS, 4, 1, 6, 4, 5, 2, 3, torch.float32, 2e-5, True),       # EfficientVMamba: one projected map
    (MULTISCALE_LOW, 1, 2, 4, 3, 5, 1, 3, torch.float32, 2e-5, True),   # MSVMamba: positions visited 3 times
    (MULTISCALE_LOW, 1, 1, 4, 3, 8, 1, 3, torch.bfloat16, 2e-2, True),   # three bfloat16 visits summed
])
def test_fused_scan2d_with_a_log_matches_reference(pattern, K, batch, H, W, Dg, N, rank, dtype, tol, norm):
    """Forward and every gradient, A_log's included, against the reference called the same way."""
    leaves = map_inputs(batch, H, W, K, Dg, N, rank, dtype, one_map=pattern is ATROUS)
    x = dict(leaves)
    if pattern is ATROUS:
        x.update({k: leaves[k].expand(-1, -1, -1, 4, -1) for k in ("delta", "B", "C")})
    out_norm = _norm(Dg) if norm else None
    kw = dict(paths=pattern(H, W), out_norm=out_norm, a_is_log=True)
    got = scan2d(**x, backend="triton", **kw)
    ref = scan2d(**x, backend="reference", **kw)
    assert torch.isfinite(got).all() and rel(got, ref) < tol
    g = torch.randn_like(ref)
    names = list(leaves) + (["norm weight", "norm bias"] if norm else [])
    inputs = list(leaves.values()) + (list(out_norm.parameters()) if norm else [])
    for name, a, b, t in zip(names, torch.autograd.grad(got, inputs, g.to(got.dtype)),
                             torch.autograd.grad(ref, inputs, g), inputs):
        assert a.dtype == t.dtype and torch.isfinite(a).all() and rel(a, b) < tol, f"d{name}: {rel(a, b):.2e}"


def test_reference_with_a_log_is_the_reference_with_a():
    """The oracle's convention: a_is_log=True is exactly A = -exp(A_log) passed as A, values and gradients."""
    x = map_inputs(1, 3, 4, 4, 5, 2, 3, torch.float32)
    A_log = x.pop("A")
    got = scan2d(**x, A=A_log, paths=CROSS(3, 4), backend="reference", a_is_log=True)
    ref = scan2d(**x, A=-A_log.exp(), paths=CROSS(3, 4), backend="reference")
    assert torch.equal(got, ref)
    g = torch.randn_like(ref)
    assert torch.equal(*(torch.autograd.grad(y, A_log, g)[0] for y in (got, ref)))


def test_forward_in_segments_with_a_log(monkeypatch):
    """The segmented forward's summary pass decays with the same A."""
    from ssm_kernels.triton import ops as tops
    monkeypatch.setitem(tops.TUNING, "segments", 3)
    mk = lambda *s: torch.randn(*s).requires_grad_()
    u, delta, B, C = mk(1, 4, 140), mk(1, 4, 140), mk(1, 2, 2, 140), mk(1, 2, 2, 140)
    A_log = a_log(4, 2)
    got = selective_scan(u, delta, A_log, B, C, delta_softplus=True, backend="triton", a_is_log=True)
    ref = selective_scan(u, delta, a_from_log(A_log), B, C, delta_softplus=True, backend="reference")
    assert rel(got, ref) < 2e-6
    g = torch.randn_like(ref)
    assert rel(torch.autograd.grad(got, A_log, g)[0], torch.autograd.grad(ref, A_log, g)[0]) < 2e-5


def test_custom_ops_with_a_log_pass_opcheck():
    from ssm_kernels.triton import ops as tops
    x = {k: v.detach() for k, v in map_inputs(1, 3, 4, 4, 4, 1, 6, torch.float32).items()}
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["delta_bias"], CROSS(3, 4).index,
            x["dt_weight"], None, None, 1e-5)
    torch.library.opcheck(tops.scan2d_fwd, (*args, True, False, False, False, True))
    out, ckpt, slices, stats = tops.scan2d_fwd(*args, True, False, False, False, True)
    torch.library.opcheck(tops.scan2d_bwd, (*args[:10], ckpt, slices, stats, torch.randn_like(out), True, False,
                                            False, False, True))

"""The state-fusion op (``ssm_kernels.state_fusion``) on both backends against the plain-PyTorch formula in
float64: random inputs, odd and tiny maps (smaller than the dilation), forward and every input's gradient."""
import pytest
import torch

import ssm_kernels
from ssm_kernels.state_fusion import state_fusion, state_fusion_ref

BACKENDS = [b for b in ("reference", "triton") if b in ssm_kernels.available_backends()]


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,dtype,tol", [
    ((2, 3, 7, 7), torch.float32, 1e-5),
    ((1, 5, 3, 5), torch.float32, 1e-5),
    ((1, 2, 1, 4), torch.float32, 1e-5),
    ((1, 3, 17, 9), torch.float32, 1e-5),  # more than one block of positions
    ((2, 3, 6, 5), torch.bfloat16, 1e-2),
])
def test_state_fusion_matches_the_formula(backend, shape, dtype, tol):
    channels = shape[1]
    h = torch.randn(shape).to(dtype).requires_grad_()
    weight = torch.randn(3, channels, 3, 3).requires_grad_()
    alpha = torch.randn(3).requires_grad_()
    out = state_fusion(h, weight, alpha, (1, 3, 5), backend=backend)
    exact = [t.detach().double().requires_grad_() for t in (h, weight, alpha)]
    ref = state_fusion_ref(*exact, (1, 3, 5))
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert rel(out, ref) < tol
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, [h, weight, alpha], g.float())
    want = torch.autograd.grad(ref, exact, g)
    for name, a, b, t in zip(("h", "weight", "alpha"), got, want, (h, weight, alpha)):
        assert a.dtype == t.dtype and torch.isfinite(a).all(), name
        assert rel(a, b) < tol, f"d{name}: {rel(a, b):.2e}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_fusion_without_grad_and_other_dilations(backend):
    h, weight, alpha = torch.randn(1, 2, 9, 8), torch.randn(2, 2, 3, 3), torch.randn(2)
    with torch.no_grad():
        out = state_fusion(h, weight, alpha, (2, 4), backend=backend)
    torch.testing.assert_close(out, state_fusion_ref(h, weight, alpha, (2, 4)), rtol=1e-5, atol=1e-5)


def test_state_fusion_rejects_bad_shapes():
    h = torch.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match="weight must be"):
        state_fusion(h, torch.randn(3, 4, 1, 3, 3), torch.randn(3))
    with pytest.raises(ValueError, match="alpha must be"):
        state_fusion(h, torch.randn(3, 4, 3, 3), torch.randn(2))
    with pytest.raises(ValueError, match=r"\(batch, C, H, W\)"):
        state_fusion(h[0], torch.randn(3, 4, 3, 3), torch.randn(3))


# ---- the fusion and the observation in one op (state_fusion_observe) --------------------------------------

from ssm_kernels.state_fusion import state_fusion_observe, state_fusion_observe_ref  # noqa: E402


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,dtype,tol", [
    ((2, 3, 7, 6), torch.float32, 1e-5),     # H, W < 11: the replicate clamp hits both edges
    ((1, 5, 3, 5), torch.float32, 1e-5),
    ((1, 2, 1, 4), torch.float32, 1e-5),
    ((1, 37, 13, 11), torch.float32, 1e-5),  # more than one block of channels and of positions
    ((1, 3, 23, 19), torch.float32, 1e-5),   # several tiles of positions, interior and near-border ones
    ((2, 3, 6, 5), torch.bfloat16, 1e-2),
    ((1, 34, 9, 7), torch.bfloat16, 1e-2),
    ((1, 10, 26, 19), torch.bfloat16, 1e-2),  # the backward's interior programs (no clamps) beside near-border ones
])
def test_state_fusion_observe_matches_the_formula(backend, shape, dtype, tol):
    batch, channels, height, width = shape
    L = height * width
    h = torch.randn(shape).requires_grad_()  # the scan's states: float32
    weight = torch.randn(3, channels, 3, 3).requires_grad_()
    alpha = torch.randn(3).requires_grad_()
    proj = torch.randn(batch, 3, L).to(dtype).requires_grad_()
    C = proj[:, 2:]  # a strided view, as the model's projection gives it
    u = torch.randn(batch, channels, L).to(dtype).requires_grad_()
    D = torch.randn(channels).requires_grad_()
    out = state_fusion_observe(h, weight, alpha, C, u, D, (1, 3, 5), backend=backend)
    leaves = (h, weight, alpha, proj, u, D)
    exact = [t.detach().double().requires_grad_() for t in leaves]
    ref = state_fusion_observe_ref(exact[0], exact[1], exact[2], exact[3][:, 2:], *exact[4:], (1, 3, 5))
    assert out.dtype == dtype and out.shape == (batch, height, width, channels)  # u's dtype
    assert out.is_contiguous()
    assert rel(out, ref) < tol
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, leaves, g.to(out.dtype))
    want = torch.autograd.grad(ref, exact, g)
    for name, a, b, t in zip(("h", "weight", "alpha", "C", "u", "D"), got, want, leaves):
        assert a.dtype == t.dtype and torch.isfinite(a).all(), name
        assert rel(a, b) < tol, f"d{name}: {rel(a, b):.2e}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_fusion_observe_writes_the_autocast_dtype(backend):
    h, weight, alpha = torch.randn(1, 4, 5, 6), torch.randn(3, 4, 3, 3), torch.randn(3)
    C, u, D = torch.randn(1, 1, 30).bfloat16(), torch.randn(1, 4, 30).bfloat16(), torch.randn(4)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        out = state_fusion_observe(h, weight, alpha, C, u, D, backend=backend)
    assert out.dtype == torch.bfloat16
    want = state_fusion_observe_ref(h, weight, alpha, C.float(), u.float(), D, (1, 3, 5))
    torch.testing.assert_close(out.float(), want, rtol=1e-2, atol=1e-2)


def test_state_fusion_observe_rejects_bad_shapes():
    h, w, a, D = torch.randn(1, 4, 5, 5), torch.randn(3, 4, 3, 3), torch.randn(3), torch.randn(4)
    C, u = torch.randn(1, 1, 25), torch.randn(1, 4, 25)
    with pytest.raises(ValueError, match="C must be"):
        state_fusion_observe(h, w, a, torch.randn(1, 2, 25), u, D)
    with pytest.raises(ValueError, match="u must be"):
        state_fusion_observe(h, w, a, C, torch.randn(1, 4, 24), D)
    with pytest.raises(ValueError, match="D must be"):
        state_fusion_observe(h, w, a, C, u, torch.randn(5))
    with pytest.raises(ValueError, match="weight must be"):
        state_fusion_observe(h, torch.randn(3, 4, 3), a, C, u, D)


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_fusion_observe_other_dilations(backend):
    h, weight, alpha = torch.randn(1, 3, 9, 8), torch.randn(2, 3, 3, 3), torch.randn(2)
    C, u, D = torch.randn(1, 1, 72), torch.randn(1, 3, 72), torch.randn(3)
    with torch.no_grad():
        out = state_fusion_observe(h, weight, alpha, C, u, D, (2, 4), backend=backend)
    torch.testing.assert_close(out, state_fusion_observe_ref(h, weight, alpha, C, u, D, (2, 4)), rtol=1e-5, atol=1e-5)
    if backend == "triton":
        with pytest.raises(ValueError, match="at most 3 dilations"):
            state_fusion_observe(h, torch.randn(4, 3, 3, 3), torch.randn(4), C, u, D, (1, 2, 3, 4), backend=backend)

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

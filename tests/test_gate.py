"""The directions' merge and output gate op (Vim's (y_0 + y_1) / 2 * SiLU(z)): the reference against autograd of
the plain expression, the Triton kernels against the reference (CI: Triton's interpreter on CPU, small sizes),
and what the op keeps for the backward."""
import pytest
import torch
import torch.nn.functional as F

import ssm_kernels
from ssm_kernels import merge_gate, merge_gate_ref

needs_triton = pytest.mark.skipif("triton" not in ssm_kernels.available_backends(), reason="triton not installed")


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def explicit(y, z, scale):
    """Direction by direction, in float64."""
    C = z.shape[-1]
    ys = sum(y[..., k * C:(k + 1) * C].double() for k in range(y.shape[-1] // C))
    return ys * scale * F.silu(z.double())


def _inputs(shape, K, C, dtype, y_dtype=torch.float32):
    """y (..., K*C) in y_dtype; z as the mixer passes it: the second half of a wider projection, read in place."""
    y = torch.randn(*shape, K * C, dtype=y_dtype, requires_grad=True)
    xz = (torch.randn(*shape, 2 * C) * 2).to(dtype).requires_grad_()
    return y, xz


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_reference_backend_is_the_plain_expression(dtype, scale):
    """The reference node's values and gradients are autograd's of the plain expression, bit for bit."""
    y, xz = _inputs((2, 7), 2, 5, dtype, torch.float64 if dtype == torch.float64 else torch.float32)
    grad = torch.randn(2, 7, 5, dtype=dtype)
    out = merge_gate(y, xz[..., 5:], scale, backend="reference")
    expected = merge_gate_ref(y, xz[..., 5:], scale)
    assert out.dtype == dtype and out.grad_fn.name() == "MergeGateFnBackward"
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(expected.double(), explicit(y, xz[..., 5:], scale).to(dtype).double())
    for got, want in zip(torch.autograd.grad(out, (y, xz), grad), torch.autograd.grad(expected, (y, xz), grad)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


CASES = [  # shape, K, C, dtype, tol
    ((2, 11), 2, 24, torch.float32, 1e-6),
    ((3, 5), 2, 130, torch.float32, 1e-6),     # C above a tile: two channel blocks, the second partial
    ((1, 300), 1, 7, torch.float32, 1e-6),     # K = 1 (Mamba's plain gate), rows beyond a tile
    ((2, 9), 3, 10, torch.bfloat16, 1e-2),
    ((2, 13), 2, 17, torch.float16, 2e-3),
]


@needs_triton
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-K{c[1]}-C{c[2]}-{str(c[3])[6:]}")
@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_triton_matches_reference(case, scale, monkeypatch):
    monkeypatch.setattr("ssm_kernels.triton.ops.POISON", True)  # an element a kernel forgets to write is NaN
    shape, K, C, dtype, tol = case
    y, xz = _inputs(shape, K, C, dtype)
    z = xz[..., C:]
    got = merge_gate(y, z, scale, backend="triton")
    assert got.dtype == dtype and got.shape == (*shape, C)
    yd, xzd = y.detach().double().requires_grad_(), xz.detach().double().requires_grad_()
    ref = explicit(yd, xzd[..., C:], scale)
    assert rel(got, ref) < tol
    seed = torch.randn_like(ref)
    g_got = torch.autograd.grad(got, (y, xz), seed.to(dtype))
    g_ref = torch.autograd.grad(ref, (yd, xzd), seed)
    for name, a, r in zip(("y", "z"), g_got, g_ref):
        assert rel(a, r) < tol, name
    assert [g.dtype for g in g_got] == [torch.float32, dtype]
    with torch.no_grad():
        fast = merge_gate(y, z, scale, backend="triton")
    assert fast.grad_fn is None
    torch.testing.assert_close(fast, got.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["reference", pytest.param("triton", marks=needs_triton)])
def test_keeps_only_the_merged_output_and_z(backend):
    """Saved for the backward: the merged output (float32, half of y) and z, a view of the projection (no copy)."""
    y, xz = _inputs((2, 6), 2, 8, torch.bfloat16)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        merge_gate(y, xz[..., 8:], 0.5, backend=backend)
    assert [(t.dtype, tuple(t.shape)) for t in saved] == [(torch.float32, (2, 6, 8)), (torch.bfloat16, (2, 6, 8))]
    assert saved[1].untyped_storage().data_ptr() == xz.untyped_storage().data_ptr()


@needs_triton
def test_custom_ops_pass_opcheck():
    from ssm_kernels.triton import gate as tgate
    y, z = torch.randn(10, 12), torch.randn(10, 6)
    torch.library.opcheck(tgate.merge_gate_fwd_op, (y, z, 0.5, True))
    torch.library.opcheck(tgate.merge_gate_fwd_op, (y, z, 1.0, False))
    torch.library.opcheck(tgate.merge_gate_bwd_op, (torch.randn(10, 6), z, torch.randn(10, 6), 0.5, 2, torch.float32))


@pytest.mark.parametrize("y,z,message", [
    ((2, 5, 12), (2, 4, 6), "same leading dimensions"),
    ((2, 5, 12), (2, 5, 5), "multiple K"),
    ((2, 5, 12), (5, 6), "same leading dimensions"),
])
def test_bad_arguments_raise_clear_errors(y, z, message):
    with pytest.raises(ValueError, match=message):
        merge_gate(torch.randn(*y), torch.randn(*z))

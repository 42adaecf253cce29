"""Spatial-Mamba's observation + out-norm + gate op, LayerNorm_E(h * C + D * u) * SiLU(z): the reference against the
formula in float64, the Triton kernels against the formula (CI: Triton's interpreter on CPU, small sizes), every
gradient, strided inputs as the mixer passes them, the output dtype under autocast, and the error messages."""
import pytest
import torch

import ssm_kernels
from ssm_kernels import observe_norm_gate

needs_triton = pytest.mark.skipif("triton" not in ssm_kernels.available_backends(), reason="triton not installed")

NAMES = ("h", "C", "u", "D", "weight", "bias", "z")


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def formula(h, C, u, D, weight, bias, z, eps=1e-5):
    """Written out in float64: LayerNorm over E by its definition, the gate, a (B, L, E) map."""
    h, C, u, D, weight, bias, z = (t.double() for t in (h, C, u, D, weight, bias, z))
    y = (h * C + D[:, None] * u).transpose(1, 2)
    mean = y.mean(-1, keepdim=True)
    var = (y - mean).square().mean(-1, keepdim=True)
    return ((y - mean) / (var + eps).sqrt() * weight + bias) * z.reshape(y.shape) * torch.sigmoid(z.reshape(y.shape))


def make(batch, E, height, width, dtype, u_channels_last=False, z_map=True):
    """Leaves and the op's arguments as the mixer passes them: h (B, E, L) float32 (float64 for float64); C row 1 of a
    (B, 3, L) projection; u (B, E, L) in ``dtype``, or a transposed view of a channels-last (B, L, E) map; z the second
    half of a (B, H, W, 2E) in-projection (or its (B, L, 2E) form); D, weight and bias parameters (h's dtype)."""
    L = height * width
    wide = torch.promote_types(dtype, torch.float32)
    h = (torch.randn(batch, E, L) * 2 + 0.5).to(wide)
    xc = torch.randn(batch, 3, L).to(dtype)
    u = (torch.randn(batch, L, E) if u_channels_last else torch.randn(batch, E, L)).to(dtype)
    D, weight, bias = (t.to(wide) for t in (torch.randn(E), 1 + 0.5 * torch.randn(E), 0.5 * torch.randn(E)))
    xz = (torch.randn(batch, height, width, 2 * E) * 2).to(dtype)
    if not z_map:
        xz = xz.reshape(batch, L, 2 * E)
    leaves = [t.requires_grad_() for t in (h, xc, u, D, weight, bias, xz)]

    def args():
        return (h, xc[:, 1:2], u.transpose(1, 2) if u_channels_last else u, D, weight, bias, xz[..., E:])

    return leaves, args


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_is_the_formula(dtype):
    leaves, args = make(2, 24, 5, 7, dtype)
    out = observe_norm_gate(*args(), backend="reference")
    assert out.shape == (2, 5, 7, 24) and out.dtype == dtype and out.is_contiguous()
    assert out.grad_fn.name() == "ObserveNormGateFnBackward"
    want = formula(*args())
    assert rel(out, want.view(out.shape)) < (1e-12 if dtype == torch.float64 else 1e-6)


def test_reference_gradients_pass_gradcheck():
    """float64 gradcheck of the whole op on the reference (its backward recomputes with autograd)."""
    leaves, _ = make(1, 6, 2, 3, torch.float64)
    assert torch.autograd.gradcheck(
        lambda h, xc, u, D, w, b, xz: observe_norm_gate(h, xc[:, 1:2], u, D, w, b, xz[..., 6:]), leaves)


CASES = [  # (batch, E, H, W), dtype, u channels-last, z a (B, H, W, E) map, tolerance
    ((2, 24, 5, 7), torch.float32, False, True, 2e-6),
    ((2, 40, 5, 7), torch.float32, True, False, 2e-6),
    ((2, 24, 4, 6), torch.float32, False, True, 2e-6),     # L = 24: rows passed as multiples of 8 (VL = VH = VU = 8)
    ((2, 20, 2, 7), torch.bfloat16, False, True, 1e-2),    # L = 14: multiples of 2
    ((1, 300, 3, 5), torch.float32, True, True, 2e-6),     # E beyond one block: two walks, Chan-merged statistics
    ((2, 24, 5, 7), torch.bfloat16, True, True, 1e-2),
    ((2, 40, 5, 7), torch.bfloat16, False, True, 1e-2),
]


@needs_triton
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{str(c[1])[6:]}-{'uT' if c[2] else 'u'}")
def test_triton_matches_the_formula(case, monkeypatch):
    monkeypatch.setattr("ssm_kernels.triton.ops.POISON", True)  # an element a kernel forgets to write is NaN
    (batch, E, height, width), dtype, u_last, z_map, tol = case
    leaves, args = make(batch, E, height, width, dtype, u_last, z_map)
    out = observe_norm_gate(*args(), backend="triton")
    want = formula(*args())
    assert out.dtype == dtype and out.shape == args()[-1].shape and out.is_contiguous()
    assert rel(out, want.view(out.shape)) < tol
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    h, xc, u, D, w, b, xz = ref_leaves
    want = formula(h, xc[:, 1:2], u.transpose(1, 2) if u_last else u, D, w, b, xz[..., E:])
    seed = torch.randn_like(want)
    got = torch.autograd.grad(out, leaves, seed.view(out.shape).to(dtype))
    ref = torch.autograd.grad(want, ref_leaves, seed)
    for name, g, r, leaf in zip(NAMES, got, ref, leaves):
        assert g.dtype == leaf.dtype and g.shape == leaf.shape, name
        assert rel(g, r) < tol, name
    with torch.no_grad():  # eager inference: no node, the same values
        fast = observe_norm_gate(*args(), backend="triton")
    assert fast.grad_fn is None
    torch.testing.assert_close(fast, out.detach(), rtol=0, atol=0)


@needs_triton
def test_triton_statistics_of_a_large_mean():
    """y = 1000 + N(0.5, 2) over two channel blocks: the statistics merged block by block (deviations from each
    block's mean) keep the variance that E[y^2] - E[y]^2 in float32 would lose (~6e-2 of it here)."""
    _, args = make(1, 300, 2, 3, torch.float32)
    h, C, u, D, w, b, z = (t.detach() for t in args())
    h, C, D = h + 1000.0, torch.ones_like(C), torch.zeros_like(D)
    out = observe_norm_gate(h, C, u, D, w, b, z, backend="triton")
    assert rel(out, formula(h, C, u, D, w, b, z).view(out.shape)) < 1e-3


@pytest.mark.parametrize("backend", ["reference", pytest.param("triton", marks=needs_triton)])
def test_writes_the_autocast_dtype(backend):
    _, args = make(2, 24, 5, 7, torch.bfloat16)
    with torch.autocast("cpu", torch.bfloat16):
        out = observe_norm_gate(*args(), backend=backend)
    assert out.dtype == torch.bfloat16
    _, args = make(2, 24, 5, 7, torch.float32)
    with torch.autocast("cpu", torch.bfloat16):
        out = observe_norm_gate(*args(), backend=backend)
    assert out.dtype == torch.bfloat16
    assert rel(out, formula(*args()).view(out.shape)) < 1e-2


@pytest.mark.parametrize("backend", ["reference", pytest.param("triton", marks=needs_triton)])
def test_keeps_the_inputs_in_place(backend):
    """Saved for the backward: the inputs themselves (z and C views of the projections, no copies) and, on Triton,
    the (2, B * L) float32 statistics; never y or the normalised map."""
    leaves, args = make(2, 16, 3, 4, torch.bfloat16)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        observe_norm_gate(*args(), backend=backend)
    storages = {t.untyped_storage().data_ptr() for t in leaves}
    assert all(t.untyped_storage().data_ptr() in storages for t in saved[:7])
    assert [tuple(t.shape) for t in saved[7:]] == ([(2, 24)] if backend == "triton" else [])


@needs_triton
def test_custom_ops_pass_opcheck():
    from ssm_kernels.triton import observe as tobs
    _, args = make(2, 8, 2, 3, torch.float32)
    h, C, u, D, w, b, z = (t.detach() for t in args())
    z = z.reshape(2, 6, 8)
    torch.library.opcheck(tobs.observe_norm_gate_fwd_op, (h, C, u, D, w, b, z, 1e-5, torch.float32))
    _, stats = tobs.observe_norm_gate_fwd_op(h, C, u, D, w, b, z, 1e-5, torch.float32)
    torch.library.opcheck(tobs.observe_norm_gate_bwd_op, (h, C, u, D, w, b, z, stats, torch.randn(2, 6, 8)))


@needs_triton
def test_torch_compile_single_graph_matches_eager(monkeypatch):
    """The Triton kernels are custom ops with fake implementations: one graph, forward and backward."""
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "triton")
    torch._dynamo.reset()
    leaves, args = make(2, 16, 3, 4, torch.float32, u_channels_last=True)
    out = observe_norm_gate(*args())
    eager = torch.autograd.grad(out, leaves, torch.ones_like(out))
    compiled = torch.compile(lambda *a: observe_norm_gate(*a), fullgraph=True, backend="aot_eager")(*args())
    torch.testing.assert_close(compiled, out)
    for a, b in zip(torch.autograd.grad(compiled, leaves, torch.ones_like(out)), eager):
        torch.testing.assert_close(a, b)


def test_flops_count_the_layer_norm():
    """fvcore sees one node, counted as the LayerNorm it holds (5 per element), as the separate ops were."""
    from vmamba_zoo.profiling import flop_analysis

    class Mixer(torch.nn.Module):
        def forward(self, h, C, u, D, w, b, z):
            return observe_norm_gate(h, C, u, D, w, b, z)

    _, args = make(1, 8, 2, 3, torch.float32)
    with torch.no_grad():
        assert flop_analysis(Mixer(), tuple(t.detach() for t in args())).total() == 5 * 8 * 6


@pytest.mark.parametrize("change,message", [
    (dict(h=(2, 8, 6, 1)), "h must be"),
    (dict(C=(2, 2, 6)), "C must be"),
    (dict(u=(2, 8, 5)), "u must be"),
    (dict(D=(7,)), "D must be"),
    (dict(weight=(8, 1)), "weight must be"),
    (dict(bias=(9,)), "bias must be"),
    (dict(z=(2, 6, 7)), "z must be"),
    (dict(z=(2, 2, 2, 8)), "z must be"),
])
def test_bad_arguments_raise_clear_errors(change, message):
    shapes = dict(h=(2, 8, 6), C=(2, 1, 6), u=(2, 8, 6), D=(8,), weight=(8,), bias=(8,), z=(2, 2, 3, 8))
    shapes.update(change)
    with pytest.raises(ValueError, match=message):
        observe_norm_gate(*(torch.randn(*shapes[n]) for n in NAMES))
    with pytest.raises(ValueError, match="floating point"):
        observe_norm_gate(*(torch.randn(2, 8, 6), torch.randn(2, 1, 6), torch.ones(2, 8, 6, dtype=torch.long),
                            torch.randn(8), torch.randn(8), torch.randn(8), torch.randn(2, 6, 8)))

"""The non-causal SSD op: the reference against the equations, the Triton kernels (under the interpreter)
against the reference, forward and every input's gradient, float32 and bfloat16, odd sizes."""
import pytest
import torch
import torch.nn.functional as F

from ssm_kernels import non_causal_ssd, non_causal_ssd_ref
from ssm_kernels.ssd import NonCausalSSDFn

triton_ssd = pytest.importorskip("ssm_kernels.triton.ssd")


def make_inputs(batch=2, length=37, heads=3, head_dim=16, d_state=48, dtype=torch.float32, with_D=True,
                with_bias=True, seed=0):
    """Random inputs as VSSD passes them: x, B, C slices of one (b, L, E + 2N) map, dt a slice of a projection."""
    g = torch.Generator().manual_seed(seed)
    E = heads * head_dim
    xbc = torch.randn(batch, length, E + 2 * d_state, generator=g)
    proj = torch.randn(batch, length, heads + 5, generator=g)
    x = xbc[..., :E].unflatten(-1, (heads, head_dim)).to(dtype)
    B, C = xbc[..., E:E + d_state].to(dtype), xbc[..., E + d_state:].to(dtype)
    dt = proj[..., 2:2 + heads].to(dtype)
    A = torch.rand(heads, generator=g) * 3 + 0.5
    D = torch.randn(heads, generator=g) if with_D else None
    bias = torch.randn(heads, generator=g) - 2 if with_bias else None
    return x, dt, A, B, C, D, bias


def test_reference_follows_the_equations():
    x, dt, A, B, C, D, bias = (t.double() if t is not None else None for t in make_inputs(length=9, d_state=5))
    y = non_causal_ssd_ref(x, dt, A, B, C, D, bias, dt_softplus=True)
    delta = F.softplus(dt + bias)
    for b in range(x.shape[0]):
        for h in range(x.shape[2]):
            kv = sum(torch.outer(B[b, l], delta[b, l, h] * A[h] * x[b, l, h]) for l in range(x.shape[1]))
            want = C[b] @ kv + D[h] * x[b, :, h]
            torch.testing.assert_close(y[b, :, h], want)


def test_one_traced_node_and_reference_gradients():
    inputs = [t.double().requires_grad_() if t is not None else None for t in make_inputs(length=6, d_state=4,
                                                                                          head_dim=3, heads=2)]
    assert torch.autograd.gradcheck(lambda *a: non_causal_ssd(*a, dt_softplus=True, backend="reference"), inputs)
    rest = [t.detach() for t in inputs[1:]]
    graph = torch.jit.trace(lambda x: non_causal_ssd(x, *rest, dt_softplus=True), inputs[0].detach(),
                            check_trace=False).graph
    kinds = [n.kind() for n in graph.nodes()]
    assert kinds.count("prim::PythonOp") == 1
    assert [n.pyname() for n in graph.nodes() if n.kind() == "prim::PythonOp"] == [NonCausalSSDFn.__name__]


@pytest.mark.parametrize("bad,message", [
    (dict(x=torch.randn(2, 5, 6)), "x must be"),
    (dict(dt=torch.randn(2, 5, 4)), "dt must be"),
    (dict(B=torch.randn(2, 4, 8)), "B must be"),
    (dict(C=torch.randn(2, 5, 7)), "C must have B's shape"),
    (dict(A=torch.randn(2)), "A must be"),
    (dict(D=torch.randn(3, 1)), "D must be"),
    (dict(x=torch.zeros(2, 5, 3, 4, dtype=torch.int64)), "floating point"),
    (dict(z=torch.randn(2, 5, 3, 4)), "gate z comes after the norm"),
    (dict(norm_weight=torch.ones(12)), "both norm_weight and norm_bias"),
    (dict(norm_weight=torch.ones(8), norm_bias=torch.ones(8)), "heads \\* head_dim = 12"),
])
def test_bad_arguments_raise_a_clear_error(bad, message):
    args = dict(x=torch.randn(2, 5, 3, 4), dt=torch.randn(2, 5, 3), A=torch.rand(3), B=torch.randn(2, 5, 8),
                C=torch.randn(2, 5, 8), D=torch.ones(3))
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        non_causal_ssd(**args)


def _run(backend, inputs, softplus, dy, fused=()):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in list(inputs) + list(fused)]
    y = non_causal_ssd(*leaves[:7], dt_softplus=softplus, backend=backend,
                       **dict(zip(("norm_weight", "norm_bias", "z"), leaves[7:])))
    y.backward(dy)
    return y, [t.grad if t is not None else None for t in leaves]


def fused_inputs(kind, x, seed=1):
    """The norm's weight and bias (and the gate z) for ``kind`` '', 'norm' or 'gate'."""
    if not kind:
        return ()
    g = torch.Generator().manual_seed(seed)
    E = x.shape[2] * x.shape[3]
    norm = (torch.rand(E, generator=g) + 0.5, torch.randn(E, generator=g))
    return norm + ((torch.randn(x.shape, generator=g).to(x.dtype),) if kind == "gate" else ())


CASES = [  # (batch, L, heads, P, N, splits, with D and bias, softplus, then norm / gate)
    (2, 37, 3, 16, 48, 1, True, True, ""),        # L not a multiple of the block, N = 48 padded to 64
    (1, 50, 2, 64, 64, 3, True, True, "gate"),    # VSSD's P and N, its norm and gate; L split over 3 programs
    (2, 20, 2, 5, 64, 2, False, False, "norm"),   # an odd small P, no D, no bias, raw step sizes, norm alone
    (2, 21, 3, 5, 48, 1, True, True, "gate"),     # odd P with the norm and gate
]


# float16 runs the tensor-core path (under the interpreter bfloat16 multiplies in float32, see triton/ssd.py)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("batch,length,heads,head_dim,d_state,splits,extras,softplus,fused", CASES)
def test_triton_matches_reference(monkeypatch, dtype, batch, length, heads, head_dim, d_state, splits, extras,
                                  softplus, fused):
    monkeypatch.setattr("ssm_kernels.triton.ops.POISON", True)  # an element not written stays NaN
    monkeypatch.setattr(triton_ssd, "TUNING", dict(BL=16, splits=splits))
    inputs = make_inputs(batch, length, heads, head_dim, d_state, dtype, with_D=extras, with_bias=extras)
    extra = fused_inputs(fused, inputs[0])
    dy = torch.randn(batch, length, heads, head_dim).to(dtype)
    y_ref, g_ref = _run("reference", inputs, softplus, dy, extra)
    y, g = _run("triton", inputs, softplus, dy, extra)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    scale = y_ref.float().abs().max()
    torch.testing.assert_close(y.float() / scale, y_ref.float() / scale, **tol)
    names = ("x", "dt", "A", "B", "C", "D", "dt_bias", "norm_weight", "norm_bias", "z")
    for name, a, b in zip(names, g, g_ref):
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape, name
            s = b.float().abs().max()
            torch.testing.assert_close(a.float() / s, b.float() / s, **tol, msg=lambda m: f"d{name}: {m}")


def test_torch_compile_single_graph_matches_eager(monkeypatch):
    """The Triton kernels are custom ops with fake implementations: one graph, forward and backward."""
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "triton")
    torch._dynamo.reset()
    inputs = make_inputs(batch=1, length=20, heads=2, head_dim=16, d_state=16)
    dy = torch.randn(1, 20, 2, 16)

    def fn(*args):
        return non_causal_ssd(*args, dt_softplus=True)

    y_eager, g_eager = _run("triton", inputs, True, dy)
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    y = torch.compile(fn, fullgraph=True, backend="aot_eager")(*leaves)
    y.backward(dy)
    torch.testing.assert_close(y, y_eager)
    for a, b in zip(leaves, g_eager):
        torch.testing.assert_close(a.grad, b)

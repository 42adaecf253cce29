"""The state-only selective scan (``ssm_kernels.selective_scan_states``, Spatial-Mamba's state equation).

Both backends against the step-by-step oracle in float64: random inputs, float32 and bfloat16, odd
sizes, the forward and the gradient of every input, the gradient flowing in through the states.
tools/check_kernels.py runs the same comparison at Spatial-Mamba's full sizes on a GPU.
"""
import pytest
import torch

import ssm_kernels
from ssm_kernels import selective_scan_states
from ssm_kernels.reference import selective_scan_naive

BACKENDS = [b for b in ("reference", "triton") if b in ssm_kernels.available_backends()]


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def state_inputs(batch, channels, N, L, dtype, groups=0, bias=True):
    mk = lambda *s: torch.randn(*s).to(dtype).requires_grad_()
    return dict(u=mk(batch, channels, L), delta=mk(batch, channels, L),
                A=(-torch.rand(channels, N) * 2 - 0.05).requires_grad_(),
                B=mk(batch, groups, N, L) if groups else mk(batch, N, L),
                delta_bias=mk(channels) if bias else None)


def oracle_states(x):
    exact = {k: v.detach().double().requires_grad_() if v is not None else None for k, v in x.items()}
    _, states = selective_scan_naive(exact["u"], exact["delta"], exact["A"], exact["B"], exact["B"].detach(),
                                     delta_bias=exact["delta_bias"], delta_softplus=True, return_states=True)
    return exact, states


FP32, BF16 = (torch.float32, (2e-6, 2e-5)), (torch.bfloat16, (1e-2, 1e-2))
CASES = [  # batch, channels, N, L, groups of B, bias, (dtype, tolerances)
    (2, 5, 1, 35, 0, True, FP32),     # Spatial-Mamba's N = 1, a 5x7 map, odd everything
    (1, 33, 1, 129, 0, False, FP32),  # two channel blocks, one step past a chunk, no bias
    (1, 6, 3, 20, 2, True, FP32),     # grouped B, odd N
    (1, 3, 1, 1, 0, True, FP32),      # a single step
    (2, 5, 1, 35, 0, True, BF16),
    (1, 6, 3, 20, 2, False, BF16),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}d{}n{}l{}g{}bias{:d}-".format(*c[:6]) + str(c[6][0])[6:])
def test_state_scan_matches_naive_scan(case, backend):
    *shape, groups, bias, (dtype, tol) = case
    x = state_inputs(*shape, dtype, groups, bias)
    states = selective_scan_states(**x, delta_softplus=True, backend=backend)
    exact, ref = oracle_states(x)
    assert states.dtype == torch.float32 and states.shape == ref.shape and torch.isfinite(states).all()
    assert rel(states, ref) < tol[0]
    g_states = torch.randn_like(ref)
    names = [k for k, v in x.items() if v is not None]
    got = torch.autograd.grad(states, [x[k] for k in names], g_states.float())
    want = torch.autograd.grad(ref, [exact[k] for k in names], g_states)
    for name, a, b in zip(names, got, want):
        assert a.dtype == x[name].dtype and a.shape == x[name].shape and torch.isfinite(a).all(), name
        assert rel(a, b) < tol[1], f"d{name}: {rel(a, b):.2e}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_scan_without_grad_and_partial_grads(backend):
    x = state_inputs(1, 4, 1, 12, torch.float32)
    with torch.no_grad():
        plain = selective_scan_states(**x, delta_softplus=True, backend=backend)
    _, ref = oracle_states(x)
    assert rel(plain, ref) < 2e-6
    x["A"].requires_grad_(False)
    states = selective_scan_states(**x, delta_softplus=True, backend=backend)
    (du,) = torch.autograd.grad(states.sum(), [x["u"]])
    assert torch.isfinite(du).all()


def test_state_scan_rejects_bad_shapes():
    x = state_inputs(1, 4, 1, 12, torch.float32)
    with pytest.raises(ValueError, match="B must be"):
        selective_scan_states(x["u"], x["delta"], x["A"], x["B"][..., :5])
    with pytest.raises(ValueError, match="delta_bias"):
        selective_scan_states(x["u"], x["delta"], x["A"], x["B"], delta_bias=x["delta_bias"][:3])

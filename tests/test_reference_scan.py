"""The reference selective scan against a naive float64 step-by-step recurrence."""
import pytest
import torch

from ssm_kernels import selective_scan
from ssm_kernels.reference import auto_chunk_size, selective_scan_naive, selective_scan_ref


def make_inputs(batch, groups, per_group, d_state, length, dtype=torch.float64, grouped_bc=True, with_z=True):
    channels = groups * per_group
    mk = lambda *s: torch.randn(*s, dtype=dtype).requires_grad_()
    bc_shape = (batch, groups, d_state, length) if grouped_bc else (batch, d_state, length)
    return dict(
        u=mk(batch, channels, length), delta=mk(batch, channels, length),
        A=(-torch.rand(channels, d_state, dtype=dtype) * 2 - 0.05).requires_grad_(),
        B=mk(*bc_shape), C=mk(*bc_shape), D=mk(channels),
        z=mk(batch, channels, length) if with_z else None, delta_bias=mk(channels),
    )


SHAPES = [  # batch, groups (directions), channels per group, d_state, length
    (2, 4, 3, 1, 1),
    (1, 4, 5, 1, 37),
    (2, 2, 3, 16, 255),
    (1, 4, 2, 1, 257),     # just past one recompute block
    (2, 1, 3, 5, 601),     # odd length, several blocks, odd N
    (1, 2, 3, 1, 3136),    # VMamba stage-1 length
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}k{}d{}n{}l{}".format(*s))
def test_forward_and_gradients_match_naive(shape):
    x = make_inputs(*shape)
    names = list(x)
    grads_out = None
    results = {}
    for impl in ("naive", "public"):
        fn = selective_scan_naive if impl == "naive" else selective_scan
        out, last, states = fn(**x, delta_softplus=True, return_last_state=True, return_states=True)
        if grads_out is None:
            grads_out = [torch.randn_like(t) for t in (out, last, states)]
        inputs = [x[n] for n in names if x[n] is not None]
        grads = torch.autograd.grad([out, last, states], inputs, grads_out)
        results[impl] = (out, last, states, grads)
    ref, got = results["naive"], results["public"]
    for a, b in zip(ref[:3], got[:3]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
    for a, b in zip(ref[3], got[3]):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("chunk", [1, 3, 4, 64])
def test_chunk_size_does_not_change_result(chunk):
    x = make_inputs(2, 2, 3, 2, 101)
    ref = selective_scan_naive(**x, delta_softplus=True)
    torch.testing.assert_close(selective_scan_ref(**x, delta_softplus=True, chunk_size=chunk), ref)


def test_ungrouped_bc_and_no_optional_inputs():
    x = make_inputs(2, 1, 6, 4, 50, grouped_bc=False, with_z=False)
    x.update(D=None, delta_bias=None)
    ref = selective_scan_naive(**x)
    out = selective_scan(**x)
    torch.testing.assert_close(out, ref)
    inputs = [x[k] for k in ("u", "delta", "A", "B", "C")]
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(ref, inputs, g), torch.autograd.grad(out, inputs, g)):
        torch.testing.assert_close(b, a)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_low_precision_inputs_against_float64(dtype, tol):
    x64 = make_inputs(2, 4, 8, 1, 300)
    ref = selective_scan_naive(**x64, delta_softplus=True)
    low = {k: (v.detach().to(dtype) if v is not None and k != "A" else v) for k, v in x64.items()}
    out = selective_scan(**low, delta_softplus=True)
    assert out.dtype == dtype
    err = (out.double() - ref).norm() / ref.norm()
    assert err < tol, f"relative error {err:.2e}"


def test_initial_state_continues_a_sequence():
    x = make_inputs(1, 2, 3, 4, 40, with_z=False)
    full, _ = selective_scan_ref(**x, return_last_state=True)
    cut = lambda t, sl: t[..., sl]
    first = {k: (cut(v, slice(0, 15)) if k in "u delta B C" and v is not None else v) for k, v in x.items()}
    second = {k: (cut(v, slice(15, 40)) if k in "u delta B C" and v is not None else v) for k, v in x.items()}
    _, h = selective_scan_ref(**first, return_last_state=True)
    rest, _ = selective_scan_ref(**second, return_last_state=True, initial_state=h)
    torch.testing.assert_close(rest, full[..., 15:])


def test_memory_bounded_at_vmamba_length():
    """Autograd keeps the inputs and one state per 256 positions, not the scan's intermediates."""
    x = make_inputs(2, 4, 24, 1, 3136, dtype=torch.float32)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        selective_scan(**x, delta_softplus=True)
    input_elements = sum(v.numel() for v in x.values() if v is not None)
    assert sum(saved) < 1.1 * input_elements


def test_auto_chunk_size_bounds():
    assert auto_chunk_size(1, 384, 1) == 256
    assert auto_chunk_size(8, 768, 16) == 4
    assert 4 <= auto_chunk_size(64, 384, 1) <= 256


@pytest.mark.parametrize("change,message", [
    (dict(u=torch.randn(2, 8)), "u must be"),
    (dict(delta=torch.randn(2, 8, 11)), "delta must have"),
    (dict(A=torch.randn(7, 2)), "A must be"),
    (dict(B=torch.randn(2, 2, 3, 10)), "B must be"),
    (dict(C=torch.randn(2, 2, 2, 10)), "B and C must have the same shape"),
    (dict(B=torch.randn(2, 3, 2, 10), C=torch.randn(2, 3, 2, 10)), "do not split into 3 groups"),
    (dict(D=torch.randn(4)), "D must be"),
    (dict(z=torch.randn(2, 8, 9)), "z must have"),
])
def test_bad_arguments_raise_clear_errors(change, message):
    args = dict(u=torch.randn(2, 8, 10), delta=torch.randn(2, 8, 10), A=-torch.rand(8, 2),
                B=torch.randn(2, 4, 2, 10), C=torch.randn(2, 4, 2, 10))
    args.update(change)
    with pytest.raises(ValueError, match=message):
        selective_scan(**args)


def test_unknown_backend():
    x = make_inputs(1, 1, 2, 1, 5)
    with pytest.raises(ValueError, match="unknown scan backend"):
        selective_scan(**x, backend="cuda")

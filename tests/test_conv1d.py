"""The causal depthwise conv1d op: the reference against an explicit construction, the Triton kernels
against the reference (CI: Triton's interpreter on CPU, small sizes; tools/check_kernels.py runs Vim's
full sizes on a GPU)."""
import pytest
import torch
import torch.nn.functional as F

import ssm_kernels
from ssm_kernels import causal_conv1d
from ssm_kernels.conv1d import causal_conv1d_ref

needs_triton = pytest.mark.skipif("triton" not in ssm_kernels.available_backends(), reason="triton not installed")


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def explicit(x, weight, bias, reverse, silu):
    """Direction k position by position: causal taps x[t - (W-1) + j], or on the reversed sequence."""
    batch, L, C = x.shape
    K, _, W = weight.shape
    out = torch.zeros(batch, L, K, C, dtype=torch.float64)
    x = x.double()
    for k in range(K):
        seq = x.flip(1) if reverse[k] else x
        y = torch.zeros(batch, L, C, dtype=torch.float64)
        for t in range(L):
            for j in range(W):
                s = t - (W - 1) + j
                if s >= 0:
                    y[:, t] += weight[k, :, j].double() * seq[:, s]
        if bias is not None:
            y += bias.view(K, C)[k].double()
        out[:, :, k] = y.flip(1) if reverse[k] else y
    out = out.flatten(2)
    return F.silu(out) if silu else out


def test_reference_is_the_causal_conv_of_each_direction():
    x, w, b = torch.randn(2, 9, 5), torch.randn(2, 5, 4), torch.randn(10)
    for reverse in [(False, True), (True, False)]:
        for silu in (False, True):
            expected = explicit(x, w, b, reverse, silu).float()
            torch.testing.assert_close(causal_conv1d_ref(x, w, b, reverse, silu), expected)
    # one direction, no bias, the official layer's own arithmetic
    conv = torch.nn.Conv1d(5, 5, 4, groups=5, padding=3, bias=False)
    expected = conv(x.transpose(1, 2))[..., :9].transpose(1, 2)
    torch.testing.assert_close(causal_conv1d(x, conv.weight[:, 0][None], None), expected)


CASES = [  # batch, L, C, W, reverse, silu, bias, dtype, tolerances (forward, grads)
    (2, 37, 5, 4, (False, True), True, True, torch.float32, 1e-6),
    (1, 3, 20, 4, (False, True), True, False, torch.float32, 1e-6),   # L shorter than the kernel
    (1, 19, 130, 4, (True,), False, True, torch.float32, 1e-6),        # two channel blocks, one direction
    (2, 33, 7, 3, (False, False), True, True, torch.float32, 1e-6),    # odd width, two causal directions
    (2, 37, 5, 4, (False, True), True, True, torch.bfloat16, 1e-2),
    (1, 17, 24, 4, (True, False), False, True, torch.bfloat16, 1e-2),
]


@needs_triton
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}l{}c{}w{}-{}-silu{:d}-bias{:d}-".format(
    *c[:4], "".join("r" if r else "f" for r in c[4]), c[5], c[6]) + str(c[7])[6:])
def test_triton_matches_reference(case):
    batch, L, C, W, reverse, silu, with_bias, dtype, tol = case
    K = len(reverse)
    # x as the mixer passes it: a slice of a wider projection, read in place
    xz = torch.randn(batch, L, 2 * C).to(dtype)
    x = xz[..., :C].detach().requires_grad_()
    w = (torch.randn(K, C, W) * 0.5).requires_grad_()
    b = torch.randn(K * C).requires_grad_() if with_bias else None
    got = causal_conv1d(x, w, b, reverse, silu, backend="triton")
    assert got.dtype == dtype and got.shape == (batch, L, K * C)
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b) if t is not None]
    ref = causal_conv1d_ref(leaves[0], leaves[1], leaves[2] if with_bias else None, reverse, silu)
    assert rel(got, ref) < tol
    seed = torch.randn_like(ref)
    inputs = [t for t in (x, w, b) if t is not None]
    g_got = torch.autograd.grad(got, inputs, seed.to(dtype))
    g_ref = torch.autograd.grad(ref, leaves, seed)
    for name, a, r in zip("xwb", g_got, g_ref):
        assert rel(a, r) < tol, name
    assert [g.dtype for g in g_got] == [t.dtype for t in inputs]


@needs_triton
def test_reference_backend_gradients_and_no_grad_path():
    x, w, b = torch.randn(2, 11, 6, requires_grad=True), torch.randn(2, 6, 4, requires_grad=True), torch.randn(12)
    y = causal_conv1d(x, w, b, (False, True), True)
    gx, gw = torch.autograd.grad(y.square().sum(), (x, w))
    xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ex, ew = torch.autograd.grad(explicit(xd, wd, b, (False, True), True).square().sum(), (xd, wd))
    torch.testing.assert_close(gx, ex.float())
    torch.testing.assert_close(gw, ew.float())
    with torch.no_grad():
        fast = causal_conv1d(x, w, b, (False, True), True, backend="triton")
    assert fast.grad_fn is None
    torch.testing.assert_close(fast, y.detach(), atol=1e-6, rtol=1e-6)


@needs_triton
def test_custom_ops_pass_opcheck():
    from ssm_kernels.triton import conv1d as tconv
    x, w, b = torch.randn(2, 9, 6), torch.randn(2, 6, 4), torch.randn(12)
    torch.library.opcheck(tconv.causal_conv1d_fwd_op, (x, w, b, 2, True))
    torch.library.opcheck(tconv.causal_conv1d_bwd_op, (x, w, b, torch.randn(2, 9, 12), 2, True))
    torch.library.opcheck(tconv.causal_conv1d_fwd_op, (x, w, None, 0, False))


def test_one_graph_node_counted_like_the_official_conv1d():
    from vmamba_zoo.profiling import count_flops

    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(2, 6, 4))

        def forward(self, x):
            return causal_conv1d(x, self.weight, None, (False, True))

    assert count_flops(Conv(), inputs=(torch.randn(1, 11, 6),)) == 2 * 11 * 6 * 4


@pytest.mark.parametrize("args,message", [
    (((2, 9), (1, 9, 4), None, (False,)), "x must be"),
    (((2, 9, 6), (1, 5, 4), None, (False,)), "weight must be"),
    (((2, 9, 6), (2, 6, 4), None, (False,)), "one flag per direction"),
    (((2, 9, 6), (2, 6, 4), (6,), (False, True)), r"bias must be \(12,\)"),
])
def test_bad_arguments_raise_clear_errors(args, message):
    x, w, b, reverse = args
    with pytest.raises(ValueError, match=message):
        causal_conv1d(torch.randn(*x), torch.randn(*w), None if b is None else torch.randn(*b), reverse)

"""The channels-last depthwise conv2d op: the reference against nn.Conv2d, the Triton kernels against the reference
(CI: Triton's interpreter on CPU, small maps; tools/check_kernels.py runs VMamba-T's and Spatial-Mamba-T's stage
shapes on a GPU)."""
import pytest
import torch
import torch.nn.functional as F

import ssm_kernels
from ssm_kernels import dwconv2d
from ssm_kernels.dwconv2d import dwconv2d_ref

needs_triton = pytest.mark.skipif("triton" not in ssm_kernels.available_backends(), reason="triton not installed")


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def test_reference_is_the_official_layer_on_the_permuted_map():
    x = torch.randn(2, 5, 7, 6)
    for k, silu, residual in [(3, True, False), (5, False, True), (1, False, False), (7, True, True)]:
        conv = torch.nn.Conv2d(6, 6, k, padding=k // 2, groups=6)
        y = conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = F.silu(y) if silu else y
        y = x + y if residual else y
        got = dwconv2d(x, conv.weight, conv.bias, silu=silu, residual=residual)
        assert got.is_contiguous()
        torch.testing.assert_close(got, y)


CASES = [  # batch, H, W, C, k, bias, silu, residual, dtype, tolerance (forward and gradients)
    (2, 5, 7, 6, 3, True, True, False, torch.float32, 1e-6),     # SS2D: conv + SiLU
    (1, 5, 7, 5, 3, True, False, True, torch.float32, 1e-6),     # the position encoding: x + conv(x)
    (2, 7, 5, 3, 5, False, True, True, torch.float32, 1e-6),
    (1, 3, 4, 20, 1, True, False, False, torch.float32, 1e-6),   # 1x1: a per-channel scale
    (1, 2, 3, 7, 5, True, True, False, torch.float32, 1e-6),     # kernel larger than the map
    (1, 5, 7, 130, 3, False, False, False, torch.float32, 1e-6),  # two channel blocks
    (2, 5, 7, 6, 3, True, True, False, torch.bfloat16, 1e-2),
    (1, 7, 5, 9, 3, True, False, True, torch.bfloat16, 1e-2),
]


@needs_triton
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}h{}w{}c{}k{}-bias{:d}-silu{:d}-res{:d}-".format(*c[:8])
                         + str(c[8])[6:])
def test_triton_matches_reference(case):
    batch, H, W, C, k, with_bias, silu, residual, dtype, tol = case
    # x as SS2D passes it: a slice of a wider projection's last axis, read in place
    xz = torch.randn(batch, H, W, 2 * C).to(dtype)
    x = xz[..., C:].detach().requires_grad_()
    assert not x.is_contiguous()
    w = (torch.randn(C, 1, k, k) * 0.5).requires_grad_()
    b = torch.randn(C).requires_grad_() if with_bias else None
    got = dwconv2d(x, w, b, silu=silu, residual=residual, backend="triton")
    assert got.dtype == dtype and got.shape == (batch, H, W, C) and got.is_contiguous()
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b) if t is not None]
    ref = dwconv2d_ref(leaves[0], leaves[1], leaves[2] if with_bias else None, silu, residual)
    assert rel(got, ref) < tol
    seed = torch.randn_like(ref)
    inputs = [t for t in (x, w, b) if t is not None]
    g_got = torch.autograd.grad(got, inputs, seed.to(dtype))
    g_ref = torch.autograd.grad(ref, leaves, seed)
    for name, a, r in zip("xwb", g_got, g_ref):
        assert rel(a, r) < tol, name
    assert [g.dtype for g in g_got] == [t.dtype for t in inputs]


@needs_triton
@pytest.mark.parametrize("tuning", [dict(BP=32, BC=16, warps=2), dict(BP=8, BC=32, warps=1)])
def test_other_launch_parameters_give_the_same_result(tuning, monkeypatch):
    """tools/bench_dwconv.py --sweep's overrides: channel blocks narrower than C, tiles longer than the map."""
    from ssm_kernels.triton import dwconv2d as tdw
    x, w, b = torch.randn(2, 5, 7, 20, requires_grad=True), torch.randn(20, 1, 3, 3), torch.randn(20)
    dy = torch.randn(2, 5, 7, 20)
    monkeypatch.setattr(tdw, "TUNING", tuning)
    y = dwconv2d(x, w, b, silu=True, residual=True, backend="triton")
    (gx,) = torch.autograd.grad(y, x, dy)
    xr = x.detach().requires_grad_()
    ref = dwconv2d_ref(xr, w, b, True, True)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(gx, torch.autograd.grad(ref, xr, dy)[0])


@needs_triton
def test_eager_inference_has_no_graph_node_and_matches(monkeypatch):
    monkeypatch.setattr("ssm_kernels.triton.ops.POISON", True)  # an element the kernel forgets to write is NaN
    x, w, b = torch.randn(1, 5, 7, 6, requires_grad=True), torch.randn(6, 1, 3, 3), torch.randn(6)
    y = dwconv2d(x, w, b, silu=True, backend="triton")
    assert y.grad_fn is not None and "DepthwiseConv2dFn" in type(y.grad_fn).__name__
    with torch.no_grad():
        fast = dwconv2d(x, w, b, silu=True, backend="triton")
    assert fast.grad_fn is None
    torch.testing.assert_close(fast, y.detach(), atol=0, rtol=0)
    torch.testing.assert_close(fast, dwconv2d_ref(x, w, b, True), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", ["reference", pytest.param("triton", marks=needs_triton)])
def test_output_dtype_under_autocast(backend):
    """As nn.Conv2d under autocast: the autocast dtype; with the residual add the residual stream's dtype."""
    x, w, b = torch.randn(1, 5, 7, 4), torch.randn(4, 1, 3, 3), torch.randn(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = dwconv2d(x, w, b, silu=True, backend=backend)
        res = dwconv2d(x, w, b, residual=True, backend=backend)
        official = x + torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), w, b, padding=1, groups=4).permute(0, 2, 3, 1)
    assert plain.dtype == torch.bfloat16 and res.dtype == official.dtype == torch.float32
    torch.testing.assert_close(plain.float(), dwconv2d_ref(x, w, b, True), atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(res, dwconv2d_ref(x, w, b, False, True))
    assert dwconv2d(x.bfloat16(), w, b, backend=backend).dtype == torch.bfloat16  # no autocast: x's dtype


@pytest.mark.parametrize("backend", ["reference", pytest.param("triton", marks=needs_triton)])
def test_channels_first_output_is_the_same_map_in_channels_first_memory(backend):
    """Spatial-Mamba's scan reads the conv's output channels-first: written so, the (B, H, W, C) result is a view
    whose permute to (B, C, H, W) needs no copy; values and gradients are those of the default layout."""
    x = torch.randn(2, 5, 7, 12)[..., 6:].requires_grad_()
    w, b = torch.randn(6, 1, 3, 3).requires_grad_(), torch.randn(6).requires_grad_()
    plain = dwconv2d(x, w, b, silu=True, backend=backend)
    first = dwconv2d(x, w, b, silu=True, backend=backend, channels_first=True)
    assert first.shape == plain.shape and first.permute(0, 3, 1, 2).is_contiguous()
    torch.testing.assert_close(first, plain, atol=0, rtol=0)
    seed = torch.randn_like(plain)
    grads = [torch.autograd.grad(y.flatten(1, 2).transpose(1, 2), (x, w, b), seed.flatten(1, 2).transpose(1, 2))
             for y in (plain, first)]
    for a, c in zip(*grads):
        torch.testing.assert_close(a, c, atol=0, rtol=0)
    with torch.no_grad():  # eager inference: the Triton forward called directly
        torch.testing.assert_close(dwconv2d(x, w, b, silu=True, backend=backend, channels_first=True), plain)
        assert dwconv2d(x, w, b, silu=True, backend=backend, channels_first=True).permute(0, 3, 1, 2).is_contiguous()


def test_float64_runs_on_the_reference_in_float64():
    x, w, b = (torch.randn(1, 5, 7, 3, dtype=torch.float64, requires_grad=True),
               torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True), torch.randn(3, dtype=torch.float64))
    y = dwconv2d(x, w, b, silu=True, residual=True)
    assert y.dtype == torch.float64
    assert torch.autograd.gradcheck(lambda x, w: dwconv2d(x, w, b, silu=True, residual=True), (x[:, :3, :4], w))


@needs_triton
def test_custom_ops_pass_opcheck():
    from ssm_kernels.triton import dwconv2d as tdw
    x, w, b = torch.randn(2, 4, 5, 6), torch.randn(6, 1, 3, 3), torch.randn(6)
    torch.library.opcheck(tdw.dwconv2d_fwd_op, (x, w, b, True, False, torch.float32))
    torch.library.opcheck(tdw.dwconv2d_fwd_op, (x, w, None, False, True, torch.bfloat16))
    torch.library.opcheck(tdw.dwconv2d_fwd_op, (x, w, b, True, False, torch.float32, True))
    torch.library.opcheck(tdw.dwconv2d_bwd_op, (x, w, b, torch.randn(2, 4, 5, 6), True, True))


@needs_triton
def test_torch_compile_single_graph_matches_eager(monkeypatch):
    """The Triton kernels are custom ops with fake implementations: one graph, forward and backward (also under
    autocast, whose output dtype the op decides before the graph's custom op)."""
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "triton")
    torch._dynamo.reset()
    xz, w, b = torch.randn(2, 5, 7, 12), torch.randn(6, 1, 3, 3), torch.randn(6)
    dy = torch.randn(2, 5, 7, 6)

    def fn(xz, w, b):
        return dwconv2d(xz[..., 6:], w, b, silu=True) + dwconv2d(xz[..., :6], w, b, residual=True)

    leaves = [t.clone().requires_grad_() for t in (xz, w, b)]
    eager = fn(*leaves)
    expected = torch.autograd.grad(eager, leaves, dy)
    leaves = [t.clone().requires_grad_() for t in (xz, w, b)]
    y = torch.compile(fn, fullgraph=True, backend="aot_eager")(*leaves)
    torch.testing.assert_close(y, eager)
    for got, want in zip(torch.autograd.grad(y, leaves, dy), expected):
        torch.testing.assert_close(got, want)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        compiled = torch.compile(lambda x: dwconv2d(x, w, b, silu=True), fullgraph=True, backend="aot_eager")
        silu_only = compiled(xz[..., :6])
    assert silu_only.dtype == torch.bfloat16


def test_one_graph_node_counted_like_nn_conv2d():
    from fvcore.nn import FlopCountAnalysis

    from vmamba_zoo.profiling import count_flops

    conv = torch.nn.Conv2d(6, 6, 5, padding=2, groups=6)

    class Fused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return dwconv2d(x, self.conv.weight, self.conv.bias, silu=True, residual=True)

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return x + F.silu(self.conv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)

    x = torch.randn(1, 7, 9, 6)
    fvcore = int(FlopCountAnalysis(Plain(), (x,)).unsupported_ops_warnings(False).total())
    assert count_flops(Fused(), inputs=(x,)) == fvcore == ssm_kernels.dwconv2d_flops(1, 7, 9, 6, 5) == 7 * 9 * 6 * 25


@pytest.mark.parametrize("shapes,message", [
    (((5, 7, 6), (6, 1, 3, 3), None), r"x must be a channels-last map"),
    (((1, 5, 7, 6), (6, 3, 3), None), r"weight must be \(C=6, 1, k, k\)"),
    (((1, 5, 7, 6), (4, 1, 3, 3), None), r"weight must be \(C=6, 1, k, k\)"),
    (((1, 5, 7, 6), (6, 1, 3, 5), None), r"weight must be"),
    (((1, 5, 7, 6), (6, 1, 4, 4), None), r"kernel size must be odd"),
    (((1, 5, 7, 6), (6, 1, 3, 3), (5,)), r"bias must be \(6,\)"),
])
def test_bad_arguments_raise_clear_errors(shapes, message):
    x, w, b = shapes
    with pytest.raises(ValueError, match=message):
        dwconv2d(torch.randn(*x), torch.randn(*w), None if b is None else torch.randn(*b))


def test_channels_first_views_and_integers_are_refused():
    w = torch.randn(6, 1, 3, 3)
    with pytest.raises(ValueError, match="channel axis must have stride 1"):
        dwconv2d(torch.randn(1, 6, 5, 7).permute(0, 2, 3, 1), w)
    with pytest.raises(ValueError, match="floating point"):
        dwconv2d(torch.ones(1, 5, 7, 6, dtype=torch.int64), w)


def test_the_cudnn_training_path_computes_the_same_function():
    """dwconv2d(silu=True) trains through nn.Conv2d's conv on CUDA (its backward is faster there): the same result
    and gradients as the op's own reference."""
    from ssm_kernels.dwconv2d import _conv2d_silu
    x, w, b = (torch.randn(2, 5, 7, 20, requires_grad=True), torch.randn(20, 1, 3, 3, requires_grad=True),
               torch.randn(20, requires_grad=True))
    dy = torch.randn(2, 5, 7, 20)
    got = _conv2d_silu(x, w, b)
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    ref = dwconv2d_ref(*leaves, True, False)
    torch.testing.assert_close(got, ref)
    for a, r in zip(torch.autograd.grad(got, (x, w, b), dy), torch.autograd.grad(ref, leaves, dy)):
        torch.testing.assert_close(a, r)


def test_only_a_recording_forward_takes_the_cudnn_path():
    """The cuDNN path's gain is its backward: a no-grad forward on CUDA, compiled or not, keeps the Triton kernel
    (compiled inference took cuDNN's ~2x slower forward while the choice also keyed on is_compiling)."""
    from ssm_kernels.dwconv2d import _trains_through_cudnn
    assert _trains_through_cudnn(True, False, None, True)
    with torch.no_grad():
        assert not _trains_through_cudnn(True, False, None, True)
    assert not _trains_through_cudnn(True, False, None, False)
    assert not _trains_through_cudnn(True, True, None, True)
    assert not _trains_through_cudnn(True, False, "triton", True)
    assert not _trains_through_cudnn(False, False, None, True)

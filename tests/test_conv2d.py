"""``ssm_kernels.conv2d`` and the zoo's ``Conv2d`` module: ``F.conv2d`` everywhere, one opaque op under
``torch.compile`` (so that inductor's layout optimisation, which stores the zoo's (B, H, W, C) maps transposed, never
turns on for a zoo model's graph)."""
import pytest
import torch
import torch.nn.functional as F
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from ssm_kernels import conv2d
from vmamba_zoo.layers import Conv2d


def recording_backend(seen: set):
    def record(gm, _):
        seen.update(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return make_boxed_func(gm.forward)
    return aot_autograd(fw_compiler=record)


@pytest.mark.parametrize("stride, padding, groups, bias, channels_last_view", [
    (1, 1, 1, True, False), (2, 1, 1, False, True), (2, 3, 6, True, True), (4, 0, 1, True, False)])
def test_compiled_op_matches_f_conv2d(stride, padding, groups, bias, channels_last_view):
    torch._dynamo.reset()
    x = torch.randn(2, 9, 11, 6)  # a channels-last map, read through its channels-first view as the layers do
    x = x.permute(0, 3, 1, 2) if channels_last_view else x.permute(0, 3, 1, 2).contiguous()
    w, b = torch.randn(12, 6 // groups, 3 if padding < 3 else 7, 3 if padding < 3 else 7), torch.randn(12)
    b = b if bias else None
    dy = torch.randn_like(F.conv2d(x, w, b, stride, padding, 1, groups))
    leaves = [t.clone().requires_grad_() for t in (x, w, b) if t is not None]
    want = F.conv2d(*leaves[:2], leaves[2] if bias else None, stride, padding, 1, groups)
    want_grads = torch.autograd.grad(want, leaves, dy)
    seen = set()
    fn = torch.compile(lambda x, w, b: conv2d(x, w, b, stride, padding, groups), fullgraph=True,
                       backend=recording_backend(seen))
    leaves = [t.clone().requires_grad_() for t in (x, w, b) if t is not None]
    got = fn(*leaves[:2], leaves[2] if bias else None)
    torch.testing.assert_close(got, want)
    assert got.stride() == want.stride()
    for g, w_ in zip(torch.autograd.grad(got, leaves, dy), want_grads):
        torch.testing.assert_close(g, w_)
    assert "ssm_kernels.conv2d_fwd.default" in seen and "ssm_kernels.conv2d_bwd.default" in seen
    assert not {"aten.convolution.default", "aten.convolution_backward.default"} & seen


def test_compiled_op_under_autocast_gives_f_conv2d_dtype():
    torch._dynamo.reset()
    x, w, b = torch.randn(1, 4, 8, 8), torch.randn(4, 4, 3, 3), torch.randn(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = F.conv2d(x, w, b, 1, 1)
        got = torch.compile(lambda x: conv2d(x, w, b, 1, 1), fullgraph=True, backend="aot_eager")(x)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want)


def test_module_is_nn_conv2d_outside_compile():
    conv = Conv2d(3, 8, 3, stride=2, padding=1)
    assert isinstance(conv, torch.nn.Conv2d)
    plain = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 10, 10)
    torch.testing.assert_close(conv(x), plain(x))
    assert torch.jit.trace(conv, x).graph.findNode("aten::_convolution") is not None  # FLOP counters see a conv


def test_padding_by_name_is_f_conv2d_compiled_too():
    """'same' padding (no numbers for the opaque op) stays F.conv2d under torch.compile, with F.conv2d's result."""
    torch._dynamo.reset()
    x, w = torch.randn(1, 4, 9, 7), torch.randn(4, 1, 3, 3)
    want = F.conv2d(x, w, None, 1, "same", 1, 4)
    got = torch.compile(lambda x: conv2d(x, w, None, 1, "same", 4), fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(got, want)

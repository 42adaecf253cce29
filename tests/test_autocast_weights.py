"""Weights cast for autocast once in inference (vmamba_zoo.layers.autocast_weights): same outputs, dropped when they
would be stale, never used where a graph is recorded."""
import contextlib

import pytest
import timm
import torch
from torch import nn

import vmamba_zoo
from vmamba_zoo.layers import Linear, autocast_weights
from vmamba_zoo.layers import linear as linear_module
from vmamba_zoo.models import tiny_kwargs

from test_interop import ONE_PER_FAMILY, image


def _autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _linear():
    torch.manual_seed(0)
    layer = nn.Linear(8, 12)
    layer.__class__ = Linear
    return layer, torch.randn(3, 8)


def test_linear_keeps_its_casts_in_inference_and_matches_autocast():
    layer, x = _linear()
    with _autocast():
        expected = nn.functional.linear(x, layer.weight, layer.bias)  # autocast's own casts
        with torch.no_grad():
            first, second = layer(x), layer(x)
    kept = linear_module._CASTS[layer][3]
    assert [t.dtype for t in kept] == [torch.bfloat16, torch.bfloat16]
    for out in (first, second):
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    with _autocast(), torch.no_grad():
        layer(x)
    assert linear_module._CASTS[layer][3][0] is kept[0]  # not cast again


def test_changed_weights_are_cast_again():
    layer, x = _linear()
    with _autocast(), torch.no_grad():
        layer(x)
        layer.weight.mul_(2)  # in place (an optimizer, load_state_dict): the version counter moves
        out = layer(x)
        expected = nn.functional.linear(x, layer.weight.to(torch.bfloat16), layer.bias.to(torch.bfloat16))
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        layer.weight = nn.Parameter(torch.randn(12, 8))  # replaced
        torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight, layer.bias), rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.float16), torch.no_grad():  # another autocast dtype
        assert layer(x).dtype == torch.float16


def test_no_casts_kept_with_gradients_or_without_autocast():
    layer, x = _linear()
    with _autocast(), torch.no_grad():
        layer(x)
    assert layer in linear_module._CASTS
    with _autocast():
        out = layer(x)  # gradients on: autocast's casts, and every kept cast dropped
    assert not linear_module._CASTS
    out.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.dtype == torch.float32
    with torch.no_grad():
        assert layer(x).dtype == torch.float32  # no autocast: no cast
    assert not linear_module._CASTS


def test_a_trace_records_the_casts_not_the_kept_copies():
    """torch.jit.trace must not bake the kept half-precision weights into the graph as constants."""
    layer, x = _linear()
    with _autocast(), torch.no_grad():
        layer(x)
    # (tracing under autocast needs autocast's own cache off, with any module: PyTorch's rule)
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False), torch.no_grad():
        traced = torch.jit.trace(layer, x)
        layer.weight.mul_(3)
        torch.testing.assert_close(traced(x), layer(x), rtol=0, atol=0)


def test_none_and_float64_pass_through():
    layer = nn.Module()
    a, b = torch.randn(2, 2, dtype=torch.float64), torch.randn(2, 2)
    with _autocast(), torch.no_grad():
        out = autocast_weights(layer, b, None, a)
    assert out[0].dtype == torch.bfloat16 and out[1] is None and out[2] is a


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_every_family_keeps_its_matmul_weights_cast_with_the_same_output(name):
    """Every linear layer of a zoo model is a Linear; the inference output under autocast with the kept casts
    equals the output with autocast's own casts (gradients on), bit for bit."""
    model = timm.create_model(name, **tiny_kwargs(name)).eval()
    assert not [n for n, m in model.named_modules() if type(m) is nn.Linear]
    x = image(name)
    with _autocast():
        expected = model(x)
        with torch.no_grad():
            model(x)
            out = model(x)
    assert linear_module._CASTS
    torch.testing.assert_close(out, expected.detach(), rtol=0, atol=0)
    linear_module._CASTS.clear()


def test_nothing_kept_under_a_fake_tensor_mode():
    """A fake run (tools/peak_memory.py) of a real module must not keep fake casts for its real weights."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    layer, x = _linear()
    with FakeTensorMode(allow_non_fake_inputs=True) as mode, _autocast(), torch.no_grad():
        layer(mode.from_tensor(x))
    assert layer not in linear_module._CASTS
    with _autocast(), torch.no_grad():
        torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight, layer.bias), rtol=0, atol=0)


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_training_casts_each_blocks_weights_together_with_the_same_output_and_gradients(name, monkeypatch):
    """In training under autocast a block's linear weights are cast in one op each way (weights_cast_together):
    the output and every gradient equal those of autocast's own casts, bit for bit."""
    from vmamba_zoo.layers import block as block_module

    model = timm.create_model(name, **tiny_kwargs(name)).train()
    x = image(name)
    calls = []
    apply = linear_module._CastTogether.apply
    monkeypatch.setattr(linear_module._CastTogether, "apply", lambda *a: calls.append(1) or apply(*a))
    results = []
    for together in (True, False):
        if not together:  # every weight cast by autocast as it is used
            monkeypatch.setattr(block_module, "weights_cast_together", lambda block: contextlib.nullcontext())
        torch.manual_seed(0)  # the same drop path, if any
        model.zero_grad()
        with _autocast():
            out = model(x)
        out.float().square().sum().backward()
        results.append((out.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    assert calls and not linear_module._TOGETHER
    (out, grads), (expected, expected_grads) = results
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert grads.keys() == expected_grads.keys()
    for n, g in expected_grads.items():
        assert grads[n].dtype == g.dtype, n
        torch.testing.assert_close(grads[n], g, rtol=0, atol=0, msg=n)


def test_cast_together_leaves_low_precision_and_frozen_weights_alone():
    """Weights already in half precision pass as they are; a frozen weight gets no gradient."""
    from vmamba_zoo.layers import weights_cast_together

    block = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8, bias=False))
    for m in block:
        m.__class__ = Linear
    block[1].weight.requires_grad_(False)
    with _autocast(), weights_cast_together(block):
        first, second = linear_module._TOGETHER[block[0]], linear_module._TOGETHER[block[1]]
        assert [t.dtype for t in first] == [torch.bfloat16] * 2 and second[1] is None
        out = block(torch.randn(2, 8))
    assert not linear_module._TOGETHER
    out.float().sum().backward()
    assert block[0].weight.grad.dtype == torch.float32 and block[1].weight.grad is None
    block.half()
    with _autocast(), weights_cast_together(block):
        assert not linear_module._TOGETHER

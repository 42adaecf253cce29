"""Weights cast for autocast once, not on every inference forward.

Under ``torch.autocast`` every matmul casts its float32 weight (and bias) to the autocast dtype, and the cast is
forgotten when the autocast region closes: an inference loop that enters autocast per batch re-casts every weight
of the model on every forward, one kernel and one dispatch each (110 of vmamba_tiny's 321 kernels a forward on
a GPU; eager inference of these models is bound by the host's launches). :func:`autocast_weights` keeps the casts
of a module's weights between no-grad forwards while the weights are unchanged (same tensors, same version
counters, same storage), so each is cast once. The cast is the same ``Tensor.to`` autocast makes: outputs are
bit-identical.

Only eager no-grad code under autocast uses the kept casts. With gradients, under ``torch.jit.trace`` / FX /
``torch.compile`` / export, or without autocast, the weights pass unchanged (autocast casts them as usual), and the
first call with gradients drops every kept cast, so training holds no extra copies. The memory kept in inference is
one half-precision copy of the matmul weights.

In eager training under autocast the weights change every step, so each forward casts them anew: one kernel for
each weight forward and one for its gradient backward. :class:`weights_cast_together` casts every :class:`Linear`
weight (and bias) of a block in one op instead, one multi-tensor kernel each way (the same rounding as
``Tensor.to``: bit-identical outputs and gradients).
"""
from __future__ import annotations

import weakref
from typing import List, Optional, Tuple

import torch
import torch.fx
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

#: module -> (the weights' (version, address) keys, the autocast dtype, the weights, their casts)
_CASTS: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()
#: module -> its weights cast together for this forward (weights_cast_together; training under autocast)
_TOGETHER: "dict[nn.Module, tuple]" = {}
#: the dtypes autocast casts to a lower precision (float64 stays as it is)
_CASTABLE = (torch.float32, torch.float16, torch.bfloat16)


#: plain tensors only: not fake tensors (``tools/peak_memory.py``), DTensors or other subclasses
_PLAIN = (torch.Tensor, nn.Parameter)


def _tracing(weight) -> bool:
    """A trace or a tensor mode (``FakeTensorMode``...): the weights pass unchanged, nothing is kept."""
    return torch.jit.is_tracing() or weight.__class__ not in _PLAIN or _get_current_dispatch_mode() is not None


def autocast_weights(owner: nn.Module, *weights: Optional[torch.Tensor]) -> Tuple[Optional[torch.Tensor], ...]:
    """``weights`` (tensors or None) as the autocast dtype of their device, kept for ``owner`` between eager no-grad
    calls under autocast while they are unchanged; otherwise ``weights`` as given (see the module docstring)."""
    if torch.compiler.is_compiling():  # first: dynamo folds it, and never sees the cache below
        return weights
    if torch.is_grad_enabled():  # training's path: the fewest checks
        if _CASTS:
            _CASTS.clear()
        return _TOGETHER.get(owner, weights)
    if _tracing(weights[0]):
        return weights
    device = weights[0].device.type
    if not torch.is_autocast_enabled(device):
        return weights
    dtype = torch.get_autocast_dtype(device)
    keys = tuple(None if w is None else (w._version, w.data_ptr()) for w in weights)
    kept = _CASTS.get(owner)
    if kept is not None and kept[0] == keys and kept[1] == dtype and all(a is b for a, b in zip(kept[2], weights)):
        return kept[3]
    casts = tuple(w.to(dtype) if w is not None and w.dtype in _CASTABLE else w for w in weights)
    _CASTS[owner] = (keys, dtype, weights, casts)
    return casts


@register_notrace_module  # one leaf of timm's FX graphs, as nn.Linear is
class Linear(nn.Linear):
    """``nn.Linear`` (same arguments, parameters and state dict) whose weight and bias are cast for autocast once
    in eager inference (:func:`autocast_weights`); every other call is ``nn.Linear``'s own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return F.linear(x, self.weight, self.bias)
        weight, bias = autocast_weights(self, self.weight, self.bias)
        return F.linear(x, weight, bias)


#: torch.fx's symbolic trace (``is_fx_tracing`` also answers under export, with a warning, in recent torch)
_fx_tracing = getattr(torch.fx._symbolic_trace, "is_fx_symbolic_tracing", torch.fx._symbolic_trace.is_fx_tracing)


class _CastTogether(torch.autograd.Function):
    """apply(dtype, *weights) -> the weights in ``dtype``, one multi-tensor copy each way (the gradients come back in
    the weights' dtypes)."""

    @staticmethod
    def forward(ctx, dtype, *weights):
        ctx.set_materialize_grads(False)
        ctx.dtypes = [w.dtype for w in weights]
        casts = [torch.empty_like(w, dtype=dtype) for w in weights]
        torch._foreach_copy_(casts, weights)
        return tuple(casts)

    @staticmethod
    def backward(ctx, *grads):
        present = [i for i, g in enumerate(grads) if g is not None]
        out: List[Optional[torch.Tensor]] = [None] * len(grads)
        for i in present:
            out[i] = torch.empty_like(grads[i], dtype=ctx.dtypes[i])
        if present:
            torch._foreach_copy_([out[i] for i in present], [grads[i] for i in present])
        return (None, *out)


class weights_cast_together:
    """``with weights_cast_together(block): ...``: in eager training under autocast, every :class:`Linear` of
    ``block`` (weight and bias) is cast to the autocast dtype in one op on entry, and its calls inside use those casts
    (:func:`autocast_weights`). Anywhere else (inference, traces, ``torch.compile``, no autocast, weights already in
    a low precision or not plain tensors) it does nothing. The block's list of linear layers is found once."""

    def __init__(self, block: nn.Module):
        self.owners = ()
        if not torch.is_grad_enabled() or torch.compiler.is_compiling() or _fx_tracing():
            return
        linears = block.__dict__.get("_linears")
        if linears is None:
            linears = tuple(m for m in block.modules() if isinstance(m, Linear))
            block.__dict__["_linears"] = linears  # a plain attribute, not a submodule list
        if not linears or _tracing(linears[0].weight):
            return
        device = linears[0].weight.device.type
        if not torch.is_autocast_enabled(device):
            return
        dtype = torch.get_autocast_dtype(device)
        owners, weights = [], []
        for m in linears:
            params = (m.weight,) if m.bias is None else (m.weight, m.bias)
            if all(p.dtype == torch.float32 and p.__class__ in _PLAIN for p in params):
                owners.append((m, len(params)))
                weights.extend(params)
        if not owners:
            return
        casts = iter(_CastTogether.apply(dtype, *weights))
        for m, n in owners:
            _TOGETHER[m] = tuple(next(casts) for _ in range(n)) + ((None,) if n == 1 else ())
        self.owners = owners

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for m, _ in self.owners:
            _TOGETHER.pop(m, None)
        return False


def cast_weights_once(module: nn.Module) -> nn.Module:
    """Every plain ``nn.Linear`` inside ``module`` made a :class:`Linear` in place (the subclass adds no state: same
    parameters and state dict). Returns ``module``."""
    for m in module.modules():
        if type(m) is nn.Linear:
            m.__class__ = Linear
    return module

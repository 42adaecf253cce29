"""The reference backend of an op with one output: its plain-PyTorch function run forward without a graph, and
backward by recomputing the forward under autograd (the protocol of the Triton backends: ``<op>_fwd(inputs,
flags) -> (outputs, saved)`` and ``<op>_bwd(saved, grad_outputs, flags, needs_grad) -> grads``)."""
from __future__ import annotations

import torch


def recomputing_backend(op: str, function):
    """A backend object for ``op`` whose forward is ``function(*inputs, *flags)``."""

    def forward(inputs, flags):
        with torch.no_grad():
            y = function(*inputs, *flags)
        return (y,), inputs

    def backward(saved, grad_outputs, flags, needs_grad):
        wanted = [i for i, t in enumerate(saved) if t is not None and needs_grad[i]]
        leaves = [t.detach().requires_grad_(i in wanted) if t is not None else None for i, t in enumerate(saved)]
        with torch.enable_grad():
            y = function(*leaves, *flags)
        got = torch.autograd.grad(y, [leaves[i] for i in wanted], grad_outputs[0])
        grads = [None] * len(saved)
        for i, g in zip(wanted, got):
            grads[i] = g
        return grads

    return type("Reference", (), {f"{op}_fwd": staticmethod(forward), f"{op}_bwd": staticmethod(backward)})

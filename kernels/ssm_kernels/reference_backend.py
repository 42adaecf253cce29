"""The reference backend: the plain-PyTorch scan with memory bounded for long sequences.

Autograd straight through :func:`selective_scan_ref` would keep every doubling step of every chunk
alive until backward (tens of state-sized tensors). Instead the forward runs without a graph and keeps
only the state at every RECOMPUTE_BLOCK-th position; the backward walks these blocks in reverse,
recomputes one block with autograd from its saved boundary state and passes the state gradient on to
the previous block. Peak memory is the inputs, the boundary states and one block's graph.

Inputs are always the tuple (u, delta, A, B, C, D, z, delta_bias); flags are
(delta_softplus, return_last_state, return_states, a_is_log); with ``a_is_log`` the A slot holds A_log
and the scan's A = -exp(A_log) is computed inside (in backward too, so that the gradient is A_log's).

:func:`selective_scan` is the plain function behind the same protocol (no recompute, no autograd
node): what ``torch.export`` and ONNX export record (see :mod:`ssm_kernels.ops`).
"""
from __future__ import annotations

import torch

from ._tracing import tracing_paused
from .reference import a_from_log, selective_scan_ref

#: positions recomputed together in backward (the scan inside picks its own chunk size)
RECOMPUTE_BLOCK = 256
_SEQUENCE_INPUTS = (0, 1, 3, 4, 6)  # u, delta, B, C, z: cut along L; A, D, delta_bias are shared


def _slices(length):
    return [slice(s, min(length, s + RECOMPUTE_BLOCK)) for s in range(0, length, RECOMPUTE_BLOCK)]


def _with_a(inputs, flags):
    """The inputs with A itself in its slot (-exp(A_log) when the flags say the slot holds A_log)."""
    if not flags[3]:
        return inputs
    return (*inputs[:2], a_from_log(inputs[2]), *inputs[3:])


def _run(inputs, h0, flags):
    delta_softplus, _, return_states, _ = flags
    return selective_scan_ref(*_with_a(inputs, flags), delta_softplus=delta_softplus, return_last_state=True,
                              return_states=return_states, initial_state=h0)


def _cut(inputs, sl):
    return [t[..., sl] if i in _SEQUENCE_INPUTS and t is not None else t for i, t in enumerate(inputs)]


#: under export a sequence is scanned in chunks of up to this many state elements: fewer, larger ops
#: than an eager run's 2**19 (a VMamba-T graph a fifth the size, which the exporters translate that
#: much faster), at a few MiB a tensor for one image
EXPORT_CHUNK_ELEMENTS = 2 ** 23


def _export_chunk_size(batch: int, channels: int, d_state: int, length: int) -> int:
    size = 1 << max(length - 1, 1).bit_length()  # one chunk if it fits
    while size > 4 and batch * channels * d_state * size > EXPORT_CHUNK_ELEMENTS:
        size //= 2
    return size


def selective_scan(inputs, flags):
    """The outputs of the scan as plain differentiable tensor ops (out, or the tuple with the states)."""
    delta_softplus, return_last_state, return_states, _ = flags
    u, A = inputs[0], inputs[2]
    chunk = _export_chunk_size(u.shape[0], u.shape[1], A.shape[1], u.shape[2])
    return selective_scan_ref(*_with_a(inputs, flags), delta_softplus=delta_softplus,
                              return_last_state=return_last_state, return_states=return_states, chunk_size=chunk)


def selective_scan_fwd(inputs, flags):
    """Returns (outputs, tensors to save for :func:`selective_scan_bwd`)."""
    _, return_last_state, return_states, _ = flags
    h, boundaries, outs, states = None, [], [], []
    # torch.jit.trace (fvcore's FLOP count) records the op as one node, counted by its handle: recording the
    # thousands of small ops of a long scan inside it too only costs time
    with torch.no_grad(), tracing_paused():
        for sl in _slices(inputs[0].shape[-1]):
            boundaries.append(h)
            out, h, *st = _run(_cut(inputs, sl), h, flags)
            outs.append(out)
            states += st
    outputs = (torch.cat(outs, dim=-1),)
    if return_last_state:
        outputs += (h,)
    if return_states:
        outputs += (torch.cat(states, dim=-1),)
    boundaries[0] = torch.zeros_like(h)
    return outputs, tuple(inputs) + (torch.stack(boundaries),)


def selective_scan_bwd(saved, grad_outputs, flags, needs_grad):
    """Gradients of the 8 inputs (None where not needed) from the gradients of the outputs."""
    *inputs, boundaries = saved
    _, return_last_state, return_states, _ = flags
    grad_outputs = list(grad_outputs)
    d_out = grad_outputs.pop(0)
    d_last = grad_outputs.pop(0) if return_last_state else None
    d_states = grad_outputs.pop(0) if return_states else None

    wanted = [i for i, t in enumerate(inputs) if t is not None and needs_grad[i]]
    shared = {i: inputs[i].detach().requires_grad_() for i in wanted if i not in _SEQUENCE_INPUTS}
    grads = [None] * len(inputs)
    pieces = {i: [] for i in wanted if i in _SEQUENCE_INPUTS}
    d_h = d_last
    slices = _slices(inputs[0].shape[-1])
    for k in reversed(range(len(slices))):
        sl = slices[k]
        chunk = [t.detach() if t is not None else None for t in _cut(inputs, sl)]
        for i in wanted:
            chunk[i] = shared[i] if i in shared else chunk[i].requires_grad_()
        h0 = boundaries[k].detach().requires_grad_() if k > 0 else None
        with torch.enable_grad():
            out, last, *st = _run(chunk, h0, flags)
        outs, gouts = [out], [d_out[..., sl]]
        if d_h is not None:
            outs.append(last)
            gouts.append(d_h)
        if d_states is not None:
            outs.append(st[0])
            gouts.append(d_states[..., sl])
        targets = [chunk[i] for i in wanted] + ([h0] if h0 is not None else [])
        got = torch.autograd.grad(outs, targets, gouts, allow_unused=True)
        for i, g in zip(wanted, got):
            if g is None:
                g = torch.zeros_like(chunk[i])
            if i in pieces:
                pieces[i].append(g)
            else:
                grads[i] = g if grads[i] is None else grads[i] + g
        d_h = got[-1] if h0 is not None else None
    for i, parts in pieces.items():
        grads[i] = torch.cat(parts[::-1], dim=-1)
    return grads

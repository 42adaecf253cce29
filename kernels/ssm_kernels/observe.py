"""Spatial-Mamba's observation, output norm and gate in one op: out = LayerNorm_E(h * C + D * u) * SiLU(z).

After the state fusion, Spatial-Mamba's mixer observes its fused states with N = 1, y = C . h' + D * u, normalises y
over the channels (its ``out_norm``) and gates it with SiLU(z) before the out-projection. In PyTorch that is about
seven elementwise kernels between a channels-first float32 map (the states) and a channels-last map in the autocast
dtype (what ``out_proj`` reads): ~40 bytes of traffic per state element. This op reads h, C, u and z once and writes
the gated output once, channels-last; it keeps each position's mean and 1/std (float32) for the backward, which
recomputes y and the normalised map instead of storing them.

One autograd node (``ObserveNormGateFn``) in training and under tracing (fvcore counts it as the LayerNorm it
contains, 5 FLOPs an element; the products and the gate are elementwise, which fvcore does not count); eager
inference calls the backend's forward (no node, nothing kept); export runs the plain expression.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .ops import is_exporting, public_op, resolve_backend

__all__ = ["observe_norm_gate", "observe_norm_gate_ref", "ObserveNormGateFn"]


def observe_norm_gate_ref(h: torch.Tensor, C: torch.Tensor, u: torch.Tensor, D: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor, z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The plain-PyTorch op (differentiable, in the inputs' dtypes): see :func:`observe_norm_gate`. Returns a
    (B, L, E) channels-last map."""
    y = (h * C + u * D[:, None]).transpose(1, 2)                                      # (B, L, E)
    y = F.layer_norm(y, (y.shape[-1],), weight, bias, eps)
    return y * F.silu(z.reshape(y.shape))


def _compute_dtype(h: torch.Tensor, u: torch.Tensor) -> torch.dtype:
    return torch.promote_types(torch.promote_types(h.dtype, u.dtype), torch.float32)


def _reference(h, C, u, D, weight, bias, z, eps, out_dtype):
    """The op in the compute dtype (float32, float64 for float64 inputs), autocast off, as a map shaped like z."""
    dtype = _compute_dtype(h, u)
    with torch.autocast(h.device.type, enabled=False):
        out = observe_norm_gate_ref(*(t.to(dtype) for t in (h, C, u, D, weight, bias, z)), eps)
    return out.to(out_dtype).reshape(z.shape)


class _Reference:
    """The reference backend: forward without a graph, backward by recomputing it with autograd."""

    @staticmethod
    def observe_norm_gate_fwd(inputs, flags):
        with torch.no_grad():
            return _reference(*inputs, *flags), None

    @staticmethod
    def observe_norm_gate_bwd(inputs, stats, grad, flags, needs_grad):
        leaves = [t.detach().requires_grad_(need) for t, need in zip(inputs, needs_grad)]
        with torch.enable_grad():
            out = _reference(*leaves, *flags)
        wanted = [t for t in leaves if t.requires_grad]
        got = iter(torch.autograd.grad(out, wanted, grad)) if wanted else iter(())
        return [next(got) if t.requires_grad else None for t in leaves]


_BACKENDS = {"reference": _Reference}
try:
    from .triton import observe as _triton_observe
    _BACKENDS["triton"] = _triton_observe
except ImportError:  # no triton installed: the reference serves every device
    pass


class ObserveNormGateFn(torch.autograd.Function):
    """apply(backend, (eps, out_dtype), h, C, u, D, weight, bias, z) -> out shaped like z, in out_dtype"""

    @staticmethod
    def forward(ctx, backend, flags, h, C, u, D, weight, bias, z):
        out, stats = _BACKENDS[backend].observe_norm_gate_fwd((h, C, u, D, weight, bias, z), flags)
        ctx.backend, ctx.flags = backend, flags
        ctx.save_for_backward(h, C, u, D, weight, bias, z, stats)
        return out

    @staticmethod
    def backward(ctx, grad):
        *inputs, stats = ctx.saved_tensors
        needs = ctx.needs_input_grad[2:]
        grads = _BACKENDS[ctx.backend].observe_norm_gate_bwd(inputs, stats, grad, ctx.flags, needs)
        grads = [g.to(t.dtype) if g is not None and need else None for g, t, need in zip(grads, inputs, needs)]
        return (None, None, *grads)


@torch.compiler.disable  # the reference backward recomputes with autograd, which torch.compile cannot trace
def _reference_node(*args):
    return ObserveNormGateFn.apply("reference", *args)


def _check(h, C, u, D, weight, bias, z):
    if h.dim() != 3:
        raise ValueError(f"observe_norm_gate: h must be (batch, E, L), got shape {tuple(h.shape)}")
    batch, channels, length = h.shape
    if tuple(C.shape) != (batch, 1, length):
        raise ValueError(f"observe_norm_gate: C must be (batch={batch}, 1, L={length}) (N = 1), got {tuple(C.shape)}")
    if tuple(u.shape) != (batch, channels, length):
        raise ValueError(f"observe_norm_gate: u must be (batch={batch}, E={channels}, L={length}), "
                         f"got {tuple(u.shape)}")
    for name, t in (("D", D), ("weight", weight), ("bias", bias)):
        if tuple(t.shape) != (channels,):
            raise ValueError(f"observe_norm_gate: {name} must be (E={channels},), got {tuple(t.shape)}")
    spatial = tuple(z.shape[1:-1])
    if z.dim() not in (3, 4) or z.shape[0] != batch or z.shape[-1] != channels or \
            (len(spatial) == 1 and spatial[0] != length) or (len(spatial) == 2 and spatial[0] * spatial[1] != length):
        raise ValueError(f"observe_norm_gate: z must be (batch={batch}, L={length}, E={channels}) or (batch, H, W, E) "
                         f"with H * W = L, got {tuple(z.shape)}")
    if channels == 0 or length == 0:
        raise ValueError(f"observe_norm_gate: empty input, h of shape {tuple(h.shape)}")
    if not all(t.is_floating_point() for t in (h, C, u, D, weight, bias, z)):
        raise ValueError("observe_norm_gate: inputs must be floating point")


@public_op
def observe_norm_gate(h: torch.Tensor, C: torch.Tensor, u: torch.Tensor, D: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor, z: torch.Tensor, eps: float = 1e-5,
                      backend: Optional[str] = None) -> torch.Tensor:
    """LayerNorm_E(h * C + D * u) * SiLU(z): Spatial-Mamba's observation (N = 1), out-norm and gate in one op.

    Args:
        h: (batch, E, L) fused states (``state_fusion``'s output, flattened), channels-first.
        C: (batch, 1, L), the observation (a slice of the x_proj output: read in place, any strides).
        u: (batch, E, L), the scan's input, any strides (channels-first, or a transposed channels-last map).
        D: (E,), the skip.
        weight, bias: (E,), the LayerNorm's affine parameters; ``eps`` its epsilon.
        z: (batch, L, E) or (batch, H, W, E), the channels-last gate (a ``chunk`` of the in-projection's output
            whose channels are contiguous is read in place).

    Returns the gated map shaped like z (channels-last, contiguous), in the autocast dtype under autocast (what the
    out-projection reads), else in u's dtype; computed and normalised in float32 (float64 for float64 inputs). The
    gradients come in the inputs' dtypes.
    """
    _check(h, C, u, D, weight, bias, z)
    device = h.device.type
    if torch.is_autocast_enabled(device) and _compute_dtype(h, u) != torch.float64:
        out_dtype = torch.get_autocast_dtype(device)
    else:
        out_dtype = u.dtype
    flags = (float(eps), out_dtype)
    if is_exporting():  # torch.export / ONNX: the plain tensor ops
        return _reference(h, C, u, D, weight, bias, z, *flags)
    name = resolve_backend(h if h.dtype == torch.float64 else u, backend)
    if name == "reference":
        return _reference_node(flags, h, C, u, D, weight, bias, z)
    if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return ObserveNormGateFn.apply(name, flags, h, C, u, D, weight, bias, z)
    # eager inference: no autograd node (its host time matters, as in ops._apply)
    return _BACKENDS[name].observe_norm_gate_fwd((h, C, u, D, weight, bias, z), flags)[0]

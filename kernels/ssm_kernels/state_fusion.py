"""Structure-aware state fusion (Spatial-Mamba): the scan's states mixed over the 2-D map.

    out = sum_k alpha[k] * dwconv3x3(h, weight[k], dilation=dilations[k]),  replicate padding,

on a (batch, C, H, W) map of states. One op, one traced node (``StateFusionFn``, counted as the K 3x3
depthwise convolutions it is: 9 * K multiply-adds per element), on two backends:

- reference: plain PyTorch (one replicate pad by the largest dilation, K dilated depthwise convolutions
  on windows of it), float32; its backward recomputes the forward with autograd, so that it keeps only
  ``h`` for backward instead of the padded map and the K convolution outputs;
- triton: one kernel each way, reading ``h`` with the indices clamped to the map (replicate padding, no
  padded copy) and writing the fused map once (see ``triton/state_fusion.py``).

``state_fusion_observe`` (``StateFusionObserveFn``, what Spatial-Mamba's mixer runs) adds the observation
y = C * fused(h) + D * u in the same op and writes y channels-last in the dtype the out-norm reads, never
storing the fused map (counted as the same K convolutions: the observation is elementwise).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .ops import _reference_apply, is_exporting, public_op, resolve_backend

__all__ = ["state_fusion", "state_fusion_ref", "StateFusionFn", "state_fusion_observe", "state_fusion_observe_ref",
           "StateFusionObserveFn"]


def state_fusion_ref(h: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor,
                     dilations: Sequence[int]) -> torch.Tensor:
    """The fusion in plain PyTorch (differentiable). h: (B, C, H, W); weight: (K, C, 3, 3); alpha: (K,)."""
    channels, height, width = h.shape[1:]
    pad = max(dilations)
    padded = F.pad(h, (pad, pad, pad, pad), mode="replicate")
    out = 0
    for k, d in enumerate(dilations):
        window = padded[..., pad - d:pad + height + d, pad - d:pad + width + d]  # = replicate padding by d
        out = out + alpha[k] * F.conv2d(window, weight[k].unsqueeze(1), dilation=d, groups=channels)
    return out


def _compute_dtype(h):
    return torch.promote_types(h.dtype, torch.float32)


def _reference_fwd(h, weight, alpha, dilations):
    dtype = _compute_dtype(h)
    with torch.autocast(h.device.type, enabled=False):
        return state_fusion_ref(h.to(dtype), weight.to(dtype), alpha.to(dtype), dilations)


def _recomputed_grads(forward, inputs, needs, grad):
    """The gradients of ``inputs`` (None where not needed) through ``forward(*inputs)``, recomputed with
    autograd: the reference backward keeps only the inputs."""
    leaves = [t.detach().requires_grad_(need) for t, need in zip(inputs, needs)]
    with torch.enable_grad():
        out = forward(*leaves)
    wanted = [t for t in leaves if t.requires_grad]
    got = iter(torch.autograd.grad(out, wanted, grad)) if wanted else iter(())
    return [next(got) if t.requires_grad else None for t in leaves]


def _check_fusion(op, h, weight, alpha, dilations, letter="C"):
    """The fusion's arguments checked (h 4-D; weight (K, channels, 3, 3); alpha (K,)); the dilations as ints."""
    dilations = tuple(int(d) for d in dilations)
    if h.dim() != 4:
        raise ValueError(f"{op}: h must be (batch, {letter}, H, W), got shape {tuple(h.shape)}")
    K, channels = len(dilations), h.shape[1]
    if K == 0 or min(dilations) < 1:
        raise ValueError(f"{op}: dilations must be positive, got {dilations}")
    if tuple(weight.shape) != (K, channels, 3, 3):
        raise ValueError(f"{op}: weight must be (K={K}, {letter}={channels}, 3, 3), got {tuple(weight.shape)}")
    if tuple(alpha.shape) != (K,):
        raise ValueError(f"{op}: alpha must be ({K},), got {tuple(alpha.shape)}")
    return dilations


class StateFusionFn(torch.autograd.Function):
    """apply(backend, dilations, h, weight, alpha) -> the fused map (B, C, H, W), float32"""

    @staticmethod
    def forward(ctx, backend, dilations, h, weight, alpha):
        ctx.backend, ctx.dilations = backend, dilations
        ctx.save_for_backward(h, weight, alpha)
        if backend == "reference":
            return _reference_fwd(h, weight, alpha, dilations)
        from .triton.state_fusion import state_fusion_fwd
        return state_fusion_fwd(h, weight, alpha, dilations)

    @staticmethod
    def backward(ctx, grad):
        h, weight, alpha = ctx.saved_tensors
        needs = ctx.needs_input_grad[2:]
        if ctx.backend == "reference":
            grads = _recomputed_grads(lambda *t: _reference_fwd(*t, ctx.dilations), (h, weight, alpha), needs, grad)
            grads = [g.to(t.dtype) if g is not None else None for g, t in zip(grads, (h, weight, alpha))]
        else:
            from .triton.state_fusion import state_fusion_bwd
            dh, dw, da = state_fusion_bwd(h, weight, alpha, ctx.dilations, grad)
            grads = [dh.to(h.dtype), dw.to(weight.dtype), da.to(alpha.dtype)]
        return (None, None, *[g if need else None for g, need in zip(grads, needs)])


def _node(fn, backend, flags, *tensors):
    """``fn.apply(backend, flags, *tensors)``: the reference's node runs eagerly, outside torch.compile's graphs
    (``ops._reference_apply``); the Triton backend's kernels are custom ops, which the graph keeps."""
    if backend == "reference":
        return _reference_apply(fn, flags, *tensors)
    return fn.apply(backend, flags, *tensors)


@public_op
def state_fusion(h: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor, dilations: Sequence[int] = (1, 3, 5),
                 backend: Optional[str] = None) -> torch.Tensor:
    """sum_k alpha[k] * depthwise 3x3 convolution of h with weight[k] at dilation dilations[k], replicate padding.

    h: (batch, C, H, W); weight: (K, C, 3, 3); alpha: (K,). Returns (batch, C, H, W) in float32 (float64
    for float64 inputs), whatever the autocast state.
    """
    dilations = _check_fusion("state_fusion", h, weight, alpha, dilations)
    if is_exporting():  # torch.export / ONNX: the plain tensor ops
        return state_fusion_ref(h.to(_compute_dtype(h)), weight.to(_compute_dtype(h)), alpha.to(_compute_dtype(h)),
                                dilations)
    name = resolve_backend(h, backend)
    if name == "reference" or torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return _node(StateFusionFn, name, dilations, h, weight, alpha)
    from .triton.state_fusion import state_fusion_fwd
    return state_fusion_fwd(h, weight, alpha, dilations)  # eager inference: no autograd node


# ---- the fusion and the observation in one op ------------------------------------------------------------

def state_fusion_observe_ref(h: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor, C: torch.Tensor,
                             u: torch.Tensor, D: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """y = C * fused(h) + D * u in plain PyTorch (differentiable), channels-last (B, H, W, E).

    h: (B, E, H, W); C: (B, 1, H * W); u: (B, E, H * W); D: (E,)."""
    fused = state_fusion_ref(h, weight, alpha, dilations).flatten(2)
    y = fused * C + u * D[:, None]
    return y.transpose(1, 2).reshape(h.shape[0], h.shape[2], h.shape[3], h.shape[1])


def _observe_reference_fwd(h, weight, alpha, C, u, D, dilations, out_dtype):
    dtype = torch.promote_types(_compute_dtype(h), u.dtype)
    with torch.autocast(h.device.type, enabled=False):
        y = state_fusion_observe_ref(*(t.to(dtype) for t in (h, weight, alpha, C, u, D)), dilations)
    return y.to(out_dtype).contiguous()


class StateFusionObserveFn(torch.autograd.Function):
    """apply(backend, (dilations, out_dtype), h, weight, alpha, C, u, D) -> y (B, H, W, E) in out_dtype"""

    @staticmethod
    def forward(ctx, backend, flags, h, weight, alpha, C, u, D):
        ctx.backend, ctx.flags = backend, flags
        ctx.save_for_backward(h, weight, alpha, C, u, D)
        if backend == "reference":
            return _observe_reference_fwd(h, weight, alpha, C, u, D, *flags)
        from .triton.state_fusion import state_fusion_observe_fwd
        return state_fusion_observe_fwd(h, weight, alpha, C, u, D, *flags)

    @staticmethod
    def backward(ctx, grad):
        inputs = ctx.saved_tensors
        needs = ctx.needs_input_grad[2:]
        if ctx.backend == "reference":
            grads = _recomputed_grads(lambda *t: _observe_reference_fwd(*t, *ctx.flags), inputs, needs, grad)
        else:
            from .triton.state_fusion import state_fusion_observe_bwd
            grads = state_fusion_observe_bwd(*inputs, ctx.flags[0], grad)
        grads = [None if g is None or not need else g.to(t.dtype) for g, t, need in zip(grads, inputs, needs)]
        return (None, None, *grads)


@public_op
def state_fusion_observe(h: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor, C: torch.Tensor,
                         u: torch.Tensor, D: torch.Tensor, dilations: Sequence[int] = (1, 3, 5),
                         backend: Optional[str] = None) -> torch.Tensor:
    """Spatial-Mamba's state fusion and observation in one op: y = C * state_fusion(h) + D * u, channels-last.

    h: (batch, E, H, W) states (N = 1); weight: (K, E, 3, 3); alpha: (K,); C: (batch, 1, H * W) (a strided
    view is fine); u: (batch, E, H * W); D: (E,). Returns y as a (batch, H, W, E) map, the layout the
    LayerNorm after it reads, in the autocast dtype under autocast, else in u's dtype (computed in
    float32 or wider). The fused map h' is never stored: the Triton kernels compute it per tile (again in the
    backward). One traced node, ``StateFusionObserveFn``, counted as the fusion's K depthwise convolutions
    (the observation is elementwise, which the family's fvcore count does not count).
    """
    dilations = _check_fusion("state_fusion_observe", h, weight, alpha, dilations, letter="E")
    batch, channels, height, width = h.shape
    K = len(dilations)
    if tuple(C.shape) != (batch, 1, height * width):
        raise ValueError(f"state_fusion_observe: C must be (batch={batch}, 1, H*W={height * width}) (N = 1), "
                         f"got {tuple(C.shape)}")
    if tuple(u.shape) != (batch, channels, height * width):
        raise ValueError(f"state_fusion_observe: u must be (batch={batch}, E={channels}, H*W={height * width}), "
                         f"got {tuple(u.shape)}")
    if tuple(D.shape) != (channels,):
        raise ValueError(f"state_fusion_observe: D must be ({channels},), got {tuple(D.shape)}")
    device = h.device.type
    dtype = torch.promote_types(_compute_dtype(h), u.dtype)  # what the reference computes in
    if torch.is_autocast_enabled(device) and dtype != torch.float64:
        out_dtype = torch.get_autocast_dtype(device)
    else:
        out_dtype = u.dtype  # the activations' dtype (the states are float32 whatever the model's dtype)
    if is_exporting():  # torch.export / ONNX: the plain tensor ops
        return state_fusion_observe_ref(*(t.to(dtype) for t in (h, weight, alpha, C, u, D)), dilations).to(out_dtype)
    name = resolve_backend(h, backend)
    if name == "triton" and K > 3:
        raise ValueError(f"state_fusion_observe: the Triton kernels take at most 3 dilations, got {dilations}")
    flags = (dilations, out_dtype)
    if name == "reference" or torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return _node(StateFusionObserveFn, name, flags, h, weight, alpha, C, u, D)
    from .triton.state_fusion import state_fusion_observe_fwd
    return state_fusion_observe_fwd(h, weight, alpha, C, u, D, *flags)  # eager inference: no autograd node

"""The non-causal state-space duality (NC-SSD) of VSSD, in its closed form.

Mamba-2's SSD with one scalar decay per head, made non-causal (every token sees every token) and
without the decay (VSSD's "linear attention duality"), is a linear attention with keys B, values
Δ·a·x and queries C, per head h over all L tokens:

    KV_h    = Σ_l B_l (Δ_{l,h} a_h x_{l,h})ᵀ        (N x P)
    y_{l,h} = C_lᵀ KV_h + D_h x_{l,h}

with B, C (N states) shared by all heads. No scan, no mask, no order: two small matmuls per head.

:func:`non_causal_ssd` checks its arguments and runs one autograd node (``NonCausalSSDFn``: one traced
node, that a FLOP handle counts in closed form) on the reference (plain PyTorch, here) or the Triton
backend (:mod:`ssm_kernels.triton.ssd`), chosen as for the scan ops (:func:`ssm_kernels.resolve_backend`).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .ops import is_exporting, public_op, resolve_backend

__all__ = ["non_causal_ssd", "non_causal_ssd_ref", "NonCausalSSDFn", "non_causal_ssd_flops"]


def non_causal_ssd_ref(x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, z=None, norm_weight=None,
                       norm_bias=None, norm_eps=1e-5):
    """The reference: x (b, L, H, P), dt (b, L, H), A (H,), B, C (b, L, N), D, dt_bias (H,) -> y like x; with
    ``norm_weight``, ``norm_bias`` (H*P,): LayerNorm(y) over the H*P channels, times z (b, L, H, P) if given.

    Computes in float32 (float64 for float64 inputs); returns x's dtype."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    delta = dt.to(dtype) if dt_bias is None else dt.to(dtype) + dt_bias.to(dtype)
    if dt_softplus:
        delta = F.softplus(delta)
    x32 = x.to(dtype)
    v = x32 * (delta * A.to(dtype)).unsqueeze(-1)                            # Δ·a·x
    kv = torch.einsum("bln,blhp->bhnp", B.to(dtype), v)                      # KV_h = Σ_l B_l v_lᵀ
    y = torch.einsum("bln,bhnp->blhp", C.to(dtype), kv)                      # C_lᵀ KV_h
    if D is not None:
        y = y + D.to(dtype)[:, None] * x32
    if norm_weight is not None:
        y = F.layer_norm(y.flatten(2), (y.shape[2] * y.shape[3],), norm_weight.to(dtype), norm_bias.to(dtype),
                         norm_eps).view(y.shape)
        if z is not None:
            y = y * z.to(dtype)
    return y.to(x.dtype)


def non_causal_ssd_flops(batch: int, length: int, heads: int, d_state: int, head_dim: int) -> int:
    """Multiply-adds of the two matmuls (KV and C·KV) over all heads; the scaling and skip are not counted."""
    return 2 * batch * length * heads * d_state * head_dim


# ---- backends: fwd(inputs, flags) -> (outputs, saved); bwd(saved, dy, flags, needs_grad) -> grads ---------

def _reference(inputs, flags):
    x, dt, A, B, C, D, dt_bias, z, norm_weight, norm_bias = inputs
    return non_causal_ssd_ref(x, dt, A, B, C, D, dt_bias, flags[0], z, norm_weight, norm_bias, flags[1])


def _reference_fwd(inputs, flags):
    with torch.no_grad():
        y = _reference(inputs, flags)
    return (y,), inputs


def _reference_bwd(saved, dy, flags, needs_grad):
    inputs = [t.detach().requires_grad_(need) if t is not None else None for t, need in zip(saved, needs_grad)]
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    with torch.enable_grad():
        y = _reference(inputs, flags)
    got = iter(torch.autograd.grad(y, wanted, dy)) if wanted else iter(())
    return [next(got) if t is not None and t.requires_grad else None for t in inputs]


def _backend(name):
    if name == "reference":
        return _reference_fwd, _reference_bwd
    from .triton import ssd as triton_ssd  # only where triton is installed
    return triton_ssd.non_causal_ssd_fwd, triton_ssd.non_causal_ssd_bwd


class NonCausalSSDFn(torch.autograd.Function):
    """apply(backend, (dt_softplus, norm_eps), x, dt, A, B, C, D, dt_bias, z, norm_weight, norm_bias)"""

    @staticmethod
    def forward(ctx, backend, flags, x, dt, A, B, C, D, dt_bias, z, norm_weight, norm_bias):
        outputs, saved = _backend(backend)[0]((x, dt, A, B, C, D, dt_bias, z, norm_weight, norm_bias), flags)
        ctx.backend, ctx.flags = backend, flags
        ctx.save_for_backward(*saved)
        return outputs[0]

    @staticmethod
    def backward(ctx, dy):
        grads = _backend(ctx.backend)[1](ctx.saved_tensors, dy, ctx.flags, ctx.needs_input_grad[2:])
        return (None, None, *grads)


@torch.compiler.disable  # its backward recomputes with autograd, which torch.compile cannot trace
def _reference_apply(*args):
    return NonCausalSSDFn.apply("reference", *args)


def _shape(t):
    return tuple(t.shape)


def _check(x, dt, A, B, C, D, dt_bias, z, norm_weight, norm_bias):
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"non_causal_ssd: x must be (batch, length, heads, head_dim), got "
                         f"{_shape(x) if isinstance(x, torch.Tensor) else type(x).__name__}")
    batch, length, heads, head_dim = x.shape
    if 0 in x.shape:
        raise ValueError(f"non_causal_ssd: empty input x of shape {_shape(x)}")
    if _shape(dt) != (batch, length, heads):
        raise ValueError(f"non_causal_ssd: dt must be (batch, length, heads) = {(batch, length, heads)}, "
                         f"got {_shape(dt)}")
    if B.dim() != 3 or _shape(B)[:2] != (batch, length) or B.shape[2] == 0:
        raise ValueError(f"non_causal_ssd: B must be (batch={batch}, length={length}, d_state), got {_shape(B)}")
    if _shape(C) != _shape(B):
        raise ValueError(f"non_causal_ssd: C must have B's shape {_shape(B)}, got {_shape(C)}")
    for name, t in (("A", A), ("D", D), ("dt_bias", dt_bias)):
        if t is not None and _shape(t) != (heads,):
            raise ValueError(f"non_causal_ssd: {name} must be (heads={heads},), got {_shape(t)}")
    if (norm_weight is None) != (norm_bias is None):
        raise ValueError("non_causal_ssd: give both norm_weight and norm_bias, or neither")
    if norm_weight is not None and (_shape(norm_weight) != (heads * head_dim,) or _shape(norm_bias) != (heads * head_dim,)):
        raise ValueError(f"non_causal_ssd: norm_weight and norm_bias must be (heads * head_dim = {heads * head_dim},), "
                         f"got {_shape(norm_weight)} and {_shape(norm_bias)}")
    if z is not None and norm_weight is None:
        raise ValueError("non_causal_ssd: the gate z comes after the norm: give norm_weight and norm_bias with it")
    if z is not None and _shape(z) != _shape(x):
        raise ValueError(f"non_causal_ssd: z must have x's shape {_shape(x)}, got {_shape(z)}")
    for name, t in (("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("dt_bias", dt_bias), ("z", z),
                    ("norm_weight", norm_weight), ("norm_bias", norm_bias)):
        if t is not None and not t.is_floating_point():
            raise ValueError(f"non_causal_ssd: {name} must be floating point, got {t.dtype}")
        if t is not None and t.device != x.device:
            raise ValueError(f"non_causal_ssd: {name} is on {t.device}, x on {x.device}")


@public_op
def non_causal_ssd(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: Optional[torch.Tensor] = None, dt_bias: Optional[torch.Tensor] = None,
                   dt_softplus: bool = False, backend: Optional[str] = None, z: Optional[torch.Tensor] = None,
                   norm_weight: Optional[torch.Tensor] = None, norm_bias: Optional[torch.Tensor] = None,
                   norm_eps: float = 1e-5) -> torch.Tensor:
    """VSSD's non-causal SSD: ``y[b, l, h] = C[b, l] @ KV[b, h] + D[h] * x[b, l, h]`` with
    ``KV[b, h] = Σ_l outer(B[b, l], Δ[b, l, h] * A[h] * x[b, l, h])``; optionally followed by a LayerNorm
    over the heads' H*P channels and a gate: ``LayerNorm(y) * z`` (VSSD's mixer), fused on the Triton backend
    (y itself is then never stored).

    Args:
        x: values (batch, L, heads, head_dim).
        dt: step sizes (batch, L, heads); Δ = dt (+ ``dt_bias``), then softplus if ``dt_softplus``.
        A: per-head weight of the values (heads,) (VSSD passes exp(A_log) > 0).
        B, C: keys and queries (batch, L, d_state), shared by all heads.
        D: per-head skip (heads,) or None; dt_bias: (heads,) or None.
        backend: 'reference' or 'triton' (default: Triton for CUDA tensors, see ``resolve_backend``).
        z: gate (batch, L, heads, head_dim), applied after the norm; needs the norm.
        norm_weight, norm_bias: (heads * head_dim,) LayerNorm over each position's channels; norm_eps its eps.

    Inputs may be strided views (e.g. slices of one projection) as long as their last axis is
    contiguous for the Triton backend (otherwise they are copied). Returns (batch, L, heads, head_dim) in
    x's dtype, contiguous.
    """
    _check(x, dt, A, B, C, D, dt_bias, z, norm_weight, norm_bias)
    flags = (bool(dt_softplus), float(norm_eps))
    tensors = (x, dt, A, B, C, D, dt_bias, z, norm_weight, norm_bias)
    if is_exporting():  # torch.export / ONNX: the plain tensor ops
        return _reference(tensors, flags)
    name = resolve_backend(x, backend)
    if name == "reference":
        return _reference_apply(flags, *tensors)
    if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return NonCausalSSDFn.apply(name, flags, *tensors)
    # eager inference: no autograd node (host time per call, see ops._apply)
    return _backend(name)[0](tensors, flags)[0][0]

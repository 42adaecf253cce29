"""The Triton backend: selective scan, fused 2-D scan and LayerNorm, forward and backward.

Implements the backend protocol of :mod:`ssm_kernels.ops` (``selective_scan_fwd/bwd``,
``scan2d_fwd/bwd``, ``layer_norm_fwd/bwd``, ``add_layer_norm_fwd/bwd``) on the custom ops of :mod:`.ops`. Runs on
CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (set before importing this package), which is how
CI tests it.
"""
from __future__ import annotations

from . import ops as _ops  # registers the torch.library custom ops

__all__ = ["selective_scan_fwd", "selective_scan_bwd", "scan2d_fwd", "scan2d_bwd", "layer_norm_fwd",
           "layer_norm_bwd", "add_layer_norm_fwd", "add_layer_norm_bwd"]


def _c(t):
    return None if t is None else t.contiguous()


def op(name: str):
    """The custom op ``name`` or its body (:func:`.ops.op_or_body`)."""
    return _ops.op_or_body(getattr(_ops, name), getattr(_ops, "_" + name))


def _in_place(*maps):
    """The maps as the kernels can read them: as they are when :func:`ops.map_strides` can address
    them with one set of strides (VMamba's dt, B, C: slices of one projection), else contiguous."""
    readable = all(_ops.map_strides(t) is not None for t in maps)
    if readable and len({t.stride() for t in maps}) == 1:
        return maps
    return tuple(t.contiguous() for t in maps)


def selective_scan_fwd(inputs, flags):
    u, delta, A, B, C, D, z, bias = inputs
    delta_softplus, return_last_state, return_states, a_is_log = flags
    B4, C4 = (B, C) if B.dim() == 4 else (B.unsqueeze(1), C.unsqueeze(1))
    out, last, states, ckpt = op("selective_scan_fwd")(  # B, C as they are: the op reads slices in place
        u.contiguous(), delta.contiguous(), A.contiguous(), B4, C4, _c(D), _c(z), _c(bias),
        delta_softplus, return_last_state, return_states, a_is_log)
    outputs = (out,) + ((last,) if return_last_state else ()) + ((states,) if return_states else ())
    return outputs, (u, delta, A, B, C, D, z, bias, ckpt)


def selective_scan_bwd(saved, grad_outputs, flags, needs_grad):
    u, delta, A, B, C, D, z, bias, ckpt = saved
    delta_softplus, return_last_state, return_states, a_is_log = flags
    grad_outputs = list(grad_outputs)
    dout = grad_outputs.pop(0)
    dlast = grad_outputs.pop(0) if return_last_state else None
    dstates = grad_outputs.pop(0) if return_states else None
    B4, C4 = (B, C) if B.dim() == 4 else (B.unsqueeze(1), C.unsqueeze(1))
    B4, C4 = B4.contiguous(), C4.contiguous()
    du, ddelta, dz, acc = op("selective_scan_bwd")(
        u.contiguous(), delta.contiguous(), A.contiguous(), B4, C4, _c(D), _c(z), _c(bias),
        ckpt, dout.contiguous(), _c(dlast), _c(dstates), delta_softplus, a_is_log)
    dA, dD, dbias, dB, dC = _ops.split_accumulators(acc, _ops.accumulator_shapes(A, B4, C4))[:5]
    grads = [du, ddelta, dA.to(A.dtype), dB.view(B.shape).to(B.dtype), dC.view(C.shape).to(C.dtype),
             None if D is None else dD.to(D.dtype), None if z is None else dz,
             None if bias is None else dbias.to(bias.dtype)]
    return [g if need else None for g, need in zip(grads, needs_grad)]


def scan2d_fwd(inputs, flags):
    u, delta, A, B, C, D, bias, index, dt_weight, norm_weight, norm_bias = inputs
    delta_softplus, split_channels, norm_eps, disjoint, by_step, a_is_log, recompute = flags
    (delta,) = _in_place(delta)
    if B is not None:  # else delta is the whole projection, B and C its slices (see ops.unpack_projection)
        B, C = _in_place(B, C)
    out, ckpt, slices, stats = op("scan2d_fwd")(
        u.contiguous(), delta, A.contiguous(), B, C, _c(D), _c(bias), index, _c(dt_weight), _c(norm_weight),
        _c(norm_bias), norm_eps, delta_softplus, split_channels, disjoint, by_step, a_is_log, recompute)
    return (out,), (u, delta, A, B, C, D, bias, index, dt_weight, norm_weight, ckpt, slices, stats)


def scan2d_bwd(saved, grad_outputs, flags, needs_grad):
    u, delta, A, B, C, D, bias, index, dt_weight, norm_weight, ckpt, slices, stats = saved
    delta_softplus, split_channels, _, disjoint, by_step, a_is_log, _ = flags
    du, ddelta, acc = op("scan2d_bwd")(
        u.contiguous(), delta, A.contiguous(), B, C, _c(D), _c(bias), index, _c(dt_weight), _c(norm_weight), ckpt,
        slices, stats, grad_outputs[0].contiguous(), delta_softplus, split_channels, disjoint, by_step, a_is_log)
    packed = B is None  # ddelta: the whole projection's gradient, dB and dC in it
    _, B_, C_ = _ops.unpack_projection(delta, B, C, dt_weight, A)
    dA, dD, dbias, dB, dC, ddtw, dnorm = _ops.split_accumulators(
        acc, _ops.accumulator_shapes(A, B_, C_, dt_weight, norm_weight, packed))
    dnorm = dnorm.to(norm_weight.dtype) if norm_weight is not None else None
    grads = [du, ddelta, dA.to(A.dtype), None if packed else dB.to(B.dtype), None if packed else dC.to(C.dtype),
             None if D is None else dD.to(D.dtype), None if bias is None else dbias.to(bias.dtype), None,
             None if dt_weight is None else ddtw.to(dt_weight.dtype),
             None if dnorm is None else dnorm[0], None if dnorm is None else dnorm[1]]
    return [g if need else None for g, need in zip(grads, needs_grad)]


def layer_norm_fwd(inputs, flags):
    x, weight, bias = inputs
    eps, out_dtype = flags
    x = x.contiguous()
    y, stats = op("layer_norm_fwd")(x, weight.contiguous(), bias.contiguous(), eps, out_dtype)
    return (y,), (x, weight, stats)


def layer_norm_bwd(saved, grad_outputs, flags, needs_grad):
    x, weight, stats = saved
    dx, dwb = op("layer_norm_bwd")(x, weight.contiguous(), stats, grad_outputs[0].contiguous())
    dwb = dwb.to(weight.dtype)
    return [g if need else None for g, need in zip((dx, dwb[0], dwb[1]), needs_grad)]


def add_layer_norm_fwd(inputs, flags):
    x, branch, weight, bias, scale = inputs
    eps, sum_dtype, out_dtype, _ = flags
    s, y, stats = op("add_layer_norm_fwd")(x.contiguous(), branch.contiguous(), weight.contiguous(),
                                           bias.contiguous(), scale, eps, sum_dtype, out_dtype)
    return (s, y), (s, weight, stats, scale)


def add_layer_norm_bwd(saved, grad_outputs, flags, needs_grad):
    """x's gradient is the sum's; the branch's, in its own dtype, comes from the kernel when that differs (autograd
    would cast it otherwise) or the branch has a scale, else it is the same tensor (as autograd's own add gives)."""
    s, weight, stats, scale = saved
    branch_dtype = flags[3]
    cast = needs_grad[1] and (branch_dtype != s.dtype or scale is not None)
    dx, dr, dwb = op("add_layer_norm_bwd")(s, weight.contiguous(), stats, grad_outputs[0].contiguous(),
                                           grad_outputs[1].contiguous(), branch_dtype if cast else None, scale)
    dwb = dwb.to(weight.dtype)
    grads = (dx, dr if cast else dx, dwb[0], dwb[1], None)
    return [g if need else None for g, need in zip(grads, needs_grad)]

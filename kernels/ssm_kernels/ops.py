"""Public scan ops (and ``layer_norm``, on the kernels of the scan's fused output norm): argument checks,
backend choice, and one autograd node per op.

Each op runs as a single ``torch.autograd.Function`` whatever the backend, so that a traced graph
(fvcore's FLOP counter, ``torch.jit.trace``) sees one node per scan (``SelectiveScanFn``) with its
inputs, and a FLOP handle can count it in closed form.

Backend choice: the ``backend=`` argument, else the ``SSM_KERNELS_BACKEND`` environment variable
(``reference`` or ``triton``), else Triton for CUDA tensors when it is available, else the reference.

Under ``torch.compile`` the Triton kernels are custom ops (one graph, no breaks); the forward ops of VMamba
and Vim (``scan2d``, ``layer_norm``, ``dwconv2d``, ``causal_conv1d``, the merge-gate) are ``triton_op``s on a
GPU, whose kernels inductor launches itself (``triton/ops.py: _custom_op``). The reference scan runs eagerly
between graphs (its backward recomputes with autograd, which the compiler cannot trace).

Tracing and export, one rule each for every op:

- ``torch.fx``: every public op is decorated with :func:`public_op`, which makes each call one leaf
  node of an FX graph (``torch.fx.symbolic_trace``, timm's FX feature extraction, torchvision's
  ``create_feature_extractor``) and lists the op in ``PUBLIC_OPS``, which ``vmamba_zoo`` registers with
  timm (``register_notrace_function``). A leaf may take a :class:`~ssm_kernels.paths.ScanPattern` (FX
  records it by name), the paths a pattern builds for a traced size (built when the graph runs) and
  an ``nn.Module`` (recorded as an attribute), but no other Python object.
- ``torch.export`` / ``torch.onnx.export`` (:func:`is_exporting`): every op runs on the reference
  backend, and ``_apply`` calls the reference backend's plain function ``reference_backend.<op>(inputs,
  flags)`` instead of the autograd node, so that the exported graph holds only standard tensor ops
  (the exporter cannot see into an ``autograd.Function`` or a ``torch.compiler.disable`` boundary).
- ``torch.jit.trace`` (fvcore's FLOP counter) keeps the one autograd node per op.

A new op: decorate the public function with ``@public_op``, run it through ``_apply(<Fn>, "<op>", ...)``
(or plain PyTorch on the reference backend), and give ``reference_backend`` the plain function ``<op>``.
"""
from __future__ import annotations

import functools
import os
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.fx

from . import reference_backend
from .paths import ScanPaths, ScanPattern
from .reference import cross_merge_ref, cross_scan_ref, scan2d_ref

__all__ = ["selective_scan", "selective_scan_states", "cross_scan", "cross_merge", "scan2d", "layer_norm",
           "add_layer_norm", "residual_add", "resolve_backend", "BACKEND_ENV", "SelectiveScanFn",
           "SelectiveScanStatesFn", "Scan2dFn", "LayerNormFn", "AddLayerNormFn",
           "PUBLIC_OPS", "public_op", "is_exporting"]

BACKEND_ENV = "SSM_KERNELS_BACKEND"
_BACKENDS = {"reference": reference_backend}
try:
    from . import triton as triton_backend
    _BACKENDS["triton"] = triton_backend
except ImportError:  # no triton installed: the reference serves every device
    pass


#: every public op of the package, in definition order (the leaves of an FX graph; see the module docstring)
PUBLIC_OPS = []


def public_op(fn):
    """Make ``fn`` a public op: a leaf of every ``torch.fx`` trace (called with a proxy among its
    arguments it records itself as one node, as ``torch.fx.wrap`` does, however it is referenced), and
    listed in ``PUBLIC_OPS``, which ``vmamba_zoo`` registers with timm's FX machinery as well."""

    @functools.wraps(fn)
    def op(*args, **kwargs):
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, torch.fx.Proxy):
                return arg.tracer.create_proxy("call_function", op, args, kwargs)
        return fn(*args, **kwargs)

    PUBLIC_OPS.append(op)
    return op


def is_exporting() -> bool:
    """True inside ``torch.export`` and ``torch.onnx.export``, where ops decompose into plain tensor ops. (ONNX's
    TorchScript exporter traces with ``torch.jit``, its dynamo exporter runs ``torch.export``: the ONNX flag, ~1 us
    a read, is read only under a trace.)

    The flag that ``torch.export`` sets is read, not ``torch.compiler.is_exporting()``: while ``torch.compile``
    traces, dynamo of torch 2.11 answers that call with True (later versions read the flag), which sent every
    compiled model to the reference."""
    return _EXPORTING() or (torch._C._get_tracing_state() is not None and torch.onnx.is_in_onnx_export())


def _exporting_flag() -> bool:
    return torch.compiler._is_exporting_flag


_EXPORTING = _exporting_flag if hasattr(torch.compiler, "_is_exporting_flag") else torch.compiler.is_exporting


def available_backends() -> Sequence[str]:
    return tuple(_BACKENDS)


def resolve_backend(tensor: torch.Tensor, backend: Optional[str] = None) -> str:
    """The backend that runs an op on ``tensor``: argument, then environment, then by device and dtype
    (the reference, always, under export).

    float64 runs on the reference (the Triton kernels compute in float32): chosen automatically, and
    asking for Triton explicitly with float64 inputs is an error that says so.
    """
    if is_exporting():
        return "reference"
    double = tensor.dtype == torch.float64
    name = (backend or os.environ.get(BACKEND_ENV)
            or ("triton" if tensor.is_cuda and not double and "triton" in _BACKENDS else "reference"))
    if name not in ("reference", "triton"):
        raise ValueError(f"unknown scan backend {name!r}: use 'reference' or 'triton' (argument or ${BACKEND_ENV})")
    if name not in _BACKENDS:
        raise RuntimeError(f"the {name!r} scan backend is not available here (is triton installed?)")
    if name == "triton" and double:
        if backend is None:  # only the environment asked for Triton: float64 still runs, on the reference
            return "reference"
        raise ValueError("the triton scan backend computes in float32 and does not take float64 inputs; use "
                         "backend='reference' (the default for float64) or cast the inputs to float32")
    if name == "triton" and not tensor.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("the triton scan backend runs on CUDA tensors (or on CPU with TRITON_INTERPRET=1 "
                           "set before import); use backend='reference' for CPU tensors")
    return name


def _forward(op, ctx, backend, flags, inputs, backends=None):
    """An autograd Function's forward by the convention below: the backend's ``<op>_fwd(inputs, flags)`` gives
    (outputs, tensors to save). ``backends``: the op's table of backends (default: the scan ops' ``_BACKENDS``)."""
    outputs, saved = getattr((backends or _BACKENDS)[backend], op + "_fwd")(inputs, flags)
    ctx.backend, ctx.flags = backend, flags
    ctx.save_for_backward(*saved)
    return outputs if len(outputs) > 1 else outputs[0]


def _apply(fn, op, backend, flags, *tensors):
    """``fn.apply(backend, flags, *tensors)``; in plain eager code that records no gradient (inference),
    the backend's forward called directly: an autograd node costs tens of microseconds of host time a
    call, and eager inference of a small model is bound by the host's launches. Traced and compiled
    code always gets the node (FLOP counters find the ops by it). Under export, the reference's plain
    function; the reference's node always runs eagerly (outside ``torch.compile``'s graphs)."""
    if is_exporting():
        return getattr(reference_backend, op)(tensors, flags)
    if backend == "reference":
        return _reference_apply(fn, flags, *tensors)
    if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return fn.apply(backend, flags, *tensors)
    outputs, _ = getattr(_BACKENDS[backend], op + "_fwd")(tensors, flags)
    return outputs if len(outputs) > 1 else outputs[0]


def _backward(op, ctx, grad_outputs, backends=None):
    """The matching backward: ``<op>_bwd(saved, grad_outputs, flags, needs_grad)`` gives the tensors' gradients."""
    impl = getattr((backends or _BACKENDS)[ctx.backend], op + "_bwd")
    return (None, None, *impl(ctx.saved_tensors, grad_outputs, ctx.flags, ctx.needs_input_grad[2:]))


# One graph node per op call: apply(backend, flags, *tensors). The backend's <op>_fwd returns
# (outputs, tensors to save) and its <op>_bwd the gradients of the tensors.

class SelectiveScanFn(torch.autograd.Function):
    """apply(backend, (delta_softplus, return_last_state, return_states, a_is_log), u, delta, A, B, C, D, z,
    delta_bias); ``a_is_log``: the A slot holds A_log (A = -exp(A_log)) and its gradient is A_log's."""

    @staticmethod
    def forward(ctx, backend, flags, u, delta, A, B, C, D, z, delta_bias):
        return _forward("selective_scan", ctx, backend, flags, (u, delta, A, B, C, D, z, delta_bias))

    @staticmethod
    def backward(ctx, *grad_outputs):
        return _backward("selective_scan", ctx, grad_outputs)


def _states_fwd(backend, flags, u, delta, A, B, delta_bias):
    """The state-only scan on a backend's selective scan: C is B, and the output y it computes is dropped."""
    outputs, saved = _BACKENDS[backend].selective_scan_fwd((u, delta, A, B, B, None, None, delta_bias),
                                                           (flags[0], False, True, flags[1]))
    return outputs[1], saved


class SelectiveScanStatesFn(torch.autograd.Function):
    """apply(backend, (delta_softplus, a_is_log), u, delta, A, B, delta_bias) -> every state (batch, D, N, L)"""

    @staticmethod
    def forward(ctx, backend, flags, u, delta, A, B, delta_bias):
        states, saved = _states_fwd(backend, flags, u, delta, A, B, delta_bias)
        ctx.backend, ctx.flags = backend, flags
        ctx.save_for_backward(*saved)
        return states

    @staticmethod
    def backward(ctx, d_states):
        saved = ctx.saved_tensors
        need_u, need_delta, need_A, need_B, need_bias = ctx.needs_input_grad[2:]
        needs = (need_u, need_delta, need_A, need_B, False, False, False, need_bias)
        grads = _BACKENDS[ctx.backend].selective_scan_bwd(
            saved, (torch.zeros_like(saved[0]), d_states), (ctx.flags[0], False, True, ctx.flags[1]), needs)
        return None, None, grads[0], grads[1], grads[2], grads[3], grads[7]


class Scan2dFn(torch.autograd.Function):
    """apply(backend, (delta_softplus, split_channels, norm_eps, disjoint, by_step, a_is_log, recompute_states), u,
    delta, A, B, C, D, delta_bias, index, dt_weight, norm_weight, norm_bias); ``by_step``: the paths visit positions
    more than once; ``a_is_log``: the A slot holds A_log."""

    @staticmethod
    def forward(ctx, backend, flags, u, delta, A, B, C, D, delta_bias, index, dt_weight, norm_weight, norm_bias):
        return _forward("scan2d", ctx, backend, flags,
                        (u, delta, A, B, C, D, delta_bias, index, dt_weight, norm_weight, norm_bias))

    @staticmethod
    def backward(ctx, *grad_outputs):
        return _backward("scan2d", ctx, grad_outputs)


class LayerNormFn(torch.autograd.Function):
    """apply(backend, (eps, out_dtype), x, weight, bias)"""

    @staticmethod
    def forward(ctx, backend, flags, x, weight, bias):
        return _forward("layer_norm", ctx, backend, flags, (x, weight, bias))

    @staticmethod
    def backward(ctx, *grad_outputs):
        return _backward("layer_norm", ctx, grad_outputs)


class AddLayerNormFn(torch.autograd.Function):
    """apply(backend, (eps, sum_dtype, out_dtype, branch_dtype), x, branch, weight, bias, scale) -> (x + branch *
    scale, its norm)"""

    @staticmethod
    def forward(ctx, backend, flags, x, branch, weight, bias, scale):
        return _forward("add_layer_norm", ctx, backend, flags, (x, branch, weight, bias, scale))

    @staticmethod
    def backward(ctx, *grad_outputs):
        return _backward("add_layer_norm", ctx, grad_outputs)


@torch.compiler.disable  # its backward recomputes with autograd, which torch.compile cannot trace
def _reference_apply(fn, flags, *tensors):
    return fn.apply("reference", flags, *tensors)


@torch.compiler.disable  # as _reference_selective_scan
def _reference_selective_scan_states(*args):
    return SelectiveScanStatesFn.apply("reference", *args)


def _shape(t):
    return tuple(t.shape)


def _check_selective_scan(u, delta, A, B, C, D, z, delta_bias):
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, channels, length), got shape {_shape(u)}")
    batch, channels, length = u.shape
    if length == 0 or channels == 0:
        raise ValueError(f"selective_scan: empty input of shape {_shape(u)}")
    if _shape(delta) != _shape(u):
        raise ValueError(f"selective_scan: delta must have u's shape {_shape(u)}, got {_shape(delta)}")
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"selective_scan: A must be (channels={channels}, d_state), got {_shape(A)}")
    n_state = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        ok = (t.dim() == 3 and _shape(t) == (batch, n_state, length)) or (
            t.dim() == 4 and t.shape[0] == batch and t.shape[2:] == (n_state, length))
        if not ok:
            raise ValueError(f"selective_scan: {name} must be (batch={batch}, groups, d_state={n_state}, "
                             f"length={length}) or (batch, d_state, length), got {_shape(t)}")
    if _shape(B) != _shape(C):
        raise ValueError(f"selective_scan: B and C must have the same shape, got {_shape(B)} and {_shape(C)}")
    groups = B.shape[1] if B.dim() == 4 else 1
    if channels % groups:
        raise ValueError(f"selective_scan: {channels} channels do not split into {groups} groups of B/C")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and _shape(t) != (channels,):
            raise ValueError(f"selective_scan: {name} must be ({channels},), got {_shape(t)}")
    if z is not None and _shape(z) != _shape(u):
        raise ValueError(f"selective_scan: z must have u's shape {_shape(u)}, got {_shape(z)}")
    if not A.is_floating_point() or not u.is_floating_point():
        raise ValueError("selective_scan: inputs must be floating point")


@public_op
def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    return_states: bool = False,
    backend: Optional[str] = None,
    a_is_log: bool = False,
):
    """Mamba-1 selective scan over (batch, K*D, L) with B/C per direction group.

    h_t = exp(delta_t * A) h_{t-1} + delta_t * B_t * u_t,  y_t = C_t . h_t + D * u_t,  out = y * silu(z).
    ``delta`` gets ``delta_bias`` added and then softplus if ``delta_softplus``. Returns ``out`` (dtype
    of u), then the last state (batch, K*D, N) if ``return_last_state``, then all states
    (batch, K*D, N, L) if ``return_states``; states are float32.

    ``a_is_log=True``: pass Mamba's parameter ``A_log`` in A's place; the scan uses A = -exp(A_log)
    (:func:`ssm_kernels.reference.a_from_log`, in at least float32) and A_log gets the gradient. The
    kernels compute A as they load it: no separate exp and negation, forward or backward.
    """
    _check_selective_scan(u, delta, A, B, C, D, z, delta_bias)
    name = resolve_backend(u, backend)
    flags = (bool(delta_softplus), bool(return_last_state), bool(return_states), bool(a_is_log))
    return _apply(SelectiveScanFn, "selective_scan", name, flags, u, delta, A, B, C, D, z, delta_bias)


@public_op
def selective_scan_states(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    backend: Optional[str] = None,
    a_is_log: bool = False,
) -> torch.Tensor:
    """The state equation alone: every state h_t = exp(delta_t * A) h_{t-1} + delta_t * B_t * u_t.

    u, delta: (batch, D, L); A: (D, N); B: (batch, N, L) or (batch, groups, N, L); delta_bias: (D,).
    Returns all states (batch, D, N, L) in float32 (float64 for float64 inputs), the gradient flowing
    back through them; no output contraction C, no skip D (Spatial-Mamba fuses the states over the
    map before its observation y = C . h' + D * u). One traced node, ``SelectiveScanStatesFn``, counted
    as 7 FLOPs per element and state. The backends run their selective scan with its output dropped.
    ``a_is_log``: A holds A_log, as in :func:`selective_scan`.
    """
    _check_selective_scan(u, delta, A, B, B, None, None, delta_bias)
    if is_exporting():  # torch.export / ONNX: the plain tensor ops (C = B: an output computed and dropped)
        return reference_backend.selective_scan((u, delta, A, B, B, None, None, delta_bias),
                                                (bool(delta_softplus), False, True, bool(a_is_log)))[1]
    name = resolve_backend(u, backend)
    flags = (bool(delta_softplus), bool(a_is_log))
    if name == "reference":
        return _reference_selective_scan_states(flags, u, delta, A, B, delta_bias)
    if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return SelectiveScanStatesFn.apply(name, flags, u, delta, A, B, delta_bias)
    return _states_fwd(name, flags, u, delta, A, B, delta_bias)[0]  # eager inference: no node (see _apply)


def _check_map(x: torch.Tensor, paths: ScanPaths, what: str, per_direction_ok: bool):
    dims = (4, 5) if per_direction_ok else (4,)
    if x.dim() not in dims or _shape(x)[1:3] != (paths.height, paths.width):
        want = "(batch, H, W, C)" + (" or (batch, H, W, K, C)" if per_direction_ok else "")
        raise ValueError(f"{what}: expected a {want} map with H x W = {paths.height} x {paths.width} "
                         f"(the scan paths' map), got shape {_shape(x)}")
    if x.dim() == 5 and x.shape[3] != paths.num_directions:
        raise ValueError(f"{what}: a per-direction map needs K = {paths.num_directions} maps, got {x.shape[3]}")
    if x.dim() == 4 and paths.split_channels and x.shape[-1] % paths.num_directions:
        raise ValueError(f"{what}: {x.shape[-1]} channels do not split into {paths.num_directions} groups")


@public_op
def cross_scan(x: torch.Tensor, paths: ScanPaths) -> torch.Tensor:
    """Map -> K sequences: (b, H, W, C), or one map per direction (b, H, W, K, C), -> (b, K, C', L)."""
    _check_map(x, paths, "cross_scan", per_direction_ok=True)
    return cross_scan_ref(x, paths)


@public_op
def cross_merge(y: torch.Tensor, paths: ScanPaths) -> torch.Tensor:
    """K sequences -> map: (b, K, C, L) -> (b, H, W, C), summing directions (concatenating if split)."""
    if y.dim() != 4 or y.shape[1] != paths.num_directions or y.shape[3] != paths.length:
        raise ValueError(f"cross_merge: expected (batch, K={paths.num_directions}, C, L={paths.length}), "
                         f"got shape {_shape(y)}")
    return cross_merge_ref(y, paths)


@public_op
def scan2d(u, delta, A, B, C, D, delta_bias, paths: Union[ScanPaths, ScanPattern], delta_softplus: bool = True,
           backend: Optional[str] = None, dt_weight: Optional[torch.Tensor] = None,
           out_norm: Optional[torch.nn.LayerNorm] = None, a_is_log: bool = False,
           recompute_states: bool = True) -> torch.Tensor:
    """Gather a map along ``paths``, run the selective scan per direction, merge back onto the map.

    u: (b, H, W, C) map; delta: (b, H, W, K, C), one map per direction (C/K channels each with
    ``paths.split_channels``), or, with ``dt_weight`` (K, C, R), the low-rank step sizes
    (b, H, W, K, R) with delta[..., k, :] = dt_weight[k] @ delta_low[..., k, :]; B, C: (b, H, W, K, N);
    A: (K*C, N); D, delta_bias: (K*C,) or None. Returns the (b, H, W, C) map in float32 (the K
    directions are summed in float32; float64 for float64 inputs, on the reference backend), or
    ``out_norm(map)`` given a LayerNorm over channels. Where the paths are ``disjoint`` the K directions
    write one map (each position once), not K summed slices. delta, B and C may be stride-0 expansions
    over K of one map (b, H, W, 1, .): with disjoint paths, a per-direction projection computed once per
    position, at the position's own direction.

    With the Triton backend the projection, the gather, the K scans and the merge are one kernel (one
    more for backward): neither the K gathered copies nor the full step-size map ever exist in
    memory; ``out_norm`` then runs fused with the merge (one more kernel each way) and returns the
    normalised map in u's dtype, the dtype the matmul after it reads under autocast.

    Paths that visit a position more than once (``paths.repeats > 1``, e.g. :data:`MULTISCALE_LOW`) sum
    the visits on merge; with ``out_norm`` (then K = 1) each visit's output is normalised before the
    visits are summed (MSVMamba's order).

    ``paths`` may be a :class:`ScanPattern`, built for u's map size (what a layer passes: the caller
    then never reads u's shape, which keeps it traceable by ``torch.fx``).

    ``a_is_log=True``: A's place holds Mamba's parameter ``A_log`` (K*C, N), and the scan uses
    A = -exp(A_log), computed inside the kernels (see :func:`selective_scan`).

    B and C None (with ``dt_weight``): ``delta`` is the whole per-direction projection (b, H, W, K, R + 2N),
    the x_proj output before its split into the step-size factor, B and C (the last axis in that order;
    R from dt_weight, N from A). The kernels read the slices in place and the backward returns the
    projection's gradient as one tensor: no split and concatenation around the op, and dB and dC cast to
    its dtype in one copy.

    ``recompute_states`` (Triton, d_state > 1): the forward saves the scan's state once per checkpoint segment
    (~128 steps) and the backward re-runs the scan's forward over each segment (the default: the least memory);
    False saves every chunk's end state (8-16 steps: about twice the size of u more per call) and the backward
    reads them (faster training where memory allows). At d_state 1 both are the same.
    """
    packed = B is None or C is None
    if packed and (B is not None or C is not None or dt_weight is None):
        raise ValueError("scan2d: pass B and C, or neither (then delta is the whole projection (b, H, W, K, R + 2N) "
                         "and dt_weight gives R)")
    if isinstance(paths, ScanPattern):
        paths = paths(u.shape[1], u.shape[2], u.device)
    _check_map(u, paths, "scan2d(u)", per_direction_ok=False)
    K = paths.num_directions
    batch, height, width, channels = u.shape
    per_direction = channels // K if paths.split_channels else channels
    if dt_weight is not None:
        if dt_weight.dim() != 3 or _shape(dt_weight)[:2] != (K, per_direction):
            raise ValueError(f"scan2d: dt_weight must be (K={K}, {per_direction}, rank), got {_shape(dt_weight)}")
        want = (batch, height, width, K, dt_weight.shape[2])
    else:
        want = (batch, height, width, K, per_direction)
    if packed:  # the whole projection
        want = (*want[:4], want[4] + 2 * A.shape[-1])
    if _shape(delta) != want:
        raise ValueError(f"scan2d: delta must be {want}, got {_shape(delta)}")
    for name, t in (("B", B), ("C", C)):
        if t is not None and (t.dim() != 5 or _shape(t)[:4] != (batch, height, width, K)):
            raise ValueError(f"scan2d: {name} must be (batch, H, W, K={K}, d_state), got {_shape(t)}")
    if out_norm is not None and tuple(out_norm.normalized_shape) != (channels,):
        raise ValueError(f"scan2d: out_norm must normalise the {channels} channels, got {out_norm}")
    by_step = paths.repeats > 1
    if by_step and paths.split_channels:
        raise ValueError("scan2d: paths that visit positions more than once cannot split the channels")
    if by_step and out_norm is not None and (K != 1 or out_norm.weight is None or out_norm.bias is None):
        raise ValueError("scan2d: an out_norm after paths that visit positions more than once needs one direction "
                         "(K = 1) and a LayerNorm with weight and bias (each visit is normalised, then summed)")
    name = resolve_backend(u, backend)
    if hasattr(_BACKENDS[name], "scan2d_fwd"):
        index = paths.index.to(u.device)  # a no-op for paths built on u's device (as layers build them)
        fused = out_norm is not None and out_norm.weight is not None and out_norm.bias is not None
        norm_args = (out_norm.weight, out_norm.bias) if fused else (None, None)
        flags = (bool(delta_softplus), paths.split_channels, float(out_norm.eps) if fused else 0.0, paths.disjoint,
                 by_step, bool(a_is_log), bool(recompute_states))
        y = _apply(Scan2dFn, "scan2d", name, flags, u, delta, A, B, C, D, delta_bias, index, dt_weight, *norm_args)
        return y if fused or out_norm is None else out_norm(y)
    if packed:  # the unfused path reads views
        delta, B, C = delta.split([dt_weight.shape[-1], A.shape[-1], A.shape[-1]], dim=-1)
    def scan_fn(*args):
        return selective_scan(*args, backend=name, a_is_log=a_is_log)

    visit_norm = out_norm if by_step else None
    y = scan2d_ref(u, delta, A, B, C, D, delta_bias, paths, delta_softplus, scan_fn=scan_fn, dt_weight=dt_weight,
                   visit_norm=visit_norm)
    return y if out_norm is None or by_step else out_norm(y)


@public_op
def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5,
               backend: Optional[str] = None, residual: bool = False) -> torch.Tensor:
    """LayerNorm over the last axis.

    The reference is ``F.layer_norm``. The Triton kernels normalise many short rows per program
    (PyTorch's kernel gives each row a block: slow for 48..768 channels) and write the output in the
    dtype the matmul after it reads: the autocast dtype under autocast (where ``F.layer_norm`` runs
    in float32 and the matmul casts its input), else x's dtype. ``residual=True`` (a norm whose output
    is a residual stream: a stem's or a downsample's) keeps ``F.layer_norm``'s dtype instead: float32
    under autocast. The gradient of x comes in x's dtype.
    """
    _check_norm_params("layer_norm", x, weight, bias)
    name = resolve_backend(x, backend)
    if not hasattr(_BACKENDS[name], "layer_norm_fwd"):
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps)
    return _apply(LayerNormFn, "layer_norm", name, (float(eps), _norm_dtype(x, residual)), x, weight, bias)


def _check_norm_params(op: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
    if weight.dim() != 1 or x.shape[-1] != weight.shape[0] or bias.shape != weight.shape:
        raise ValueError(f"{op}: weight and bias must be ({x.shape[-1]},) for an input of shape {_shape(x)}, "
                         f"got {_shape(weight)} and {_shape(bias)}")


def _norm_dtype(x: torch.Tensor, residual: bool) -> torch.dtype:
    """The dtype of a LayerNorm's output: x's outside autocast; under it, the autocast dtype (the next matmul's
    input), or with ``residual`` F.layer_norm's (float32)."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return x.dtype
    return torch.promote_types(x.dtype, torch.float32) if residual else torch.get_autocast_dtype(device)


def residual_add(x: torch.Tensor, branch: torch.Tensor, branch_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x + branch`` in their promoted dtype, each sample's branch times ``branch_scale`` (float32, (batch,); no
    gradient) if given: then computed in float32 at least and rounded once, as the kernels do. The sum of
    :func:`add_layer_norm`'s reference, and of any residual add that stands for it."""
    if branch_scale is None:
        return x + branch
    wide = torch.promote_types(torch.promote_types(x.dtype, branch.dtype), torch.float32)
    scale = branch_scale.detach().view(-1, *[1] * (x.dim() - 1)).to(wide)
    return (x.to(wide) + branch.to(wide) * scale).to(torch.promote_types(x.dtype, branch.dtype))


@public_op
def add_layer_norm(x: torch.Tensor, branch: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   eps: float = 1e-5, backend: Optional[str] = None,
                   branch_scale: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(s, layer_norm(s, weight, bias, eps))`` with ``s = x + branch``: a pre-norm block's residual add and the
    norm of its next half, in one kernel each way on the Triton backend.

    ``s`` comes in the promoted dtype of x and branch (float32 for a float32 stream and a float16 branch under
    autocast), the norm in :func:`layer_norm`'s dtype. ``branch_scale``, a float32 (batch,) vector, multiplies
    each sample's branch (drop path's kept-and-rescaled mask: ``s = x + branch * branch_scale[b]``); it gets no
    gradient. The reference is the add and ``F.layer_norm``."""
    if x.shape != branch.shape:
        raise ValueError(f"add_layer_norm: x and branch must have one shape, got {_shape(x)} and {_shape(branch)}")
    _check_norm_params("add_layer_norm", x, weight, bias)
    if branch_scale is not None and (x.dim() < 2 or _shape(branch_scale) != (x.shape[0],)
                                     or branch_scale.dtype != torch.float32):
        raise ValueError(f"add_layer_norm: branch_scale must be a float32 vector of one value per sample "
                         f"({x.shape[0] if x.dim() else 0},) for x of shape {_shape(x)}, got {branch_scale.dtype} "
                         f"{_shape(branch_scale)}")
    name = resolve_backend(x, backend)
    if not hasattr(_BACKENDS[name], "add_layer_norm_fwd"):
        s = residual_add(x, branch, branch_scale)
        return s, torch.nn.functional.layer_norm(s, (s.shape[-1],), weight, bias, eps)
    flags = (float(eps), torch.promote_types(x.dtype, branch.dtype), _norm_dtype(x, False), branch.dtype)
    scale = None if branch_scale is None else branch_scale.detach().contiguous()
    return _apply(AddLayerNormFn, "add_layer_norm", name, flags, x, branch, weight, bias, scale)

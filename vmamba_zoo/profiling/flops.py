"""FLOPs and parameters with fvcore, counting the scan ops as the visual-SSM papers do.

fvcore traces the model and counts each multiply-add of convolutions, linear layers, matmuls and
einsums once, and LayerNorm as 5 per element; it cannot see inside a scan, so each scan op of
``ssm_kernels`` is one traced node with a closed-form count (:func:`ssm_kernels.selective_scan_flops`).
With these rules our GFLOPs equal what the official repositories' own fvcore setups print.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, Sequence, Tuple

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import einsum_flop_jit, get_shape
from torch import nn

from ssm_kernels import (causal_conv1d_flops, dwconv2d_flops, non_causal_ssd_flops, selective_scan_flops,
                         selective_scan_states_flops, state_fusion_flops)

__all__ = ["flop_analysis", "count_flops", "count_params", "FLOP_HANDLES", "numpy_einsum_macs", "scan_inputs"]

_SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
_SSD_ARGS = ("x", "dt", "A", "B", "C", "D", "dt_bias", "z", "norm_weight", "norm_bias")
_STATES_ARGS = ("u", "delta", "A", "B", "delta_bias")
_SCAN2D_ARGS = ("u", "delta", "A", "B", "C", "D", "delta_bias", "index", "dt_weight", "norm_weight", "norm_bias")


def _present_inputs(inputs, outputs, names: Sequence[str], skip: int) -> Dict[str, object]:
    """Map a traced autograd node's tensor inputs to argument names (None arguments are absent).

    The node's calling convention has one letter per ``apply`` argument: 'd' for a tensor (one of
    ``inputs``, in order), 'c' for a constant; the first ``skip`` arguments are the op's settings.
    """
    kinds = outputs[0].node().cconv()[skip:]
    tensors = iter(inputs)
    return {name: next(tensors) for name, kind in zip(names, kinds) if kind == "d"}


def _numel(sizes) -> int:
    count = 1
    for size in sizes:
        count *= int(size)
    return count


def selective_scan_flop_jit(inputs, outputs) -> int:
    args = _present_inputs(inputs, outputs, _SCAN_ARGS, skip=2)
    batch, channels, length = get_shape(args["u"])
    d_state = get_shape(args["A"])[1]
    return selective_scan_flops(batch, length, channels, d_state, with_D="D" in args, with_z="z" in args)


def selective_scan_states_flop_jit(inputs, outputs) -> int:
    args = _present_inputs(inputs, outputs, _STATES_ARGS, skip=2)
    batch, channels, length = get_shape(args["u"])
    return selective_scan_states_flops(batch, length, channels, get_shape(args["A"])[1])


def state_fusion_flop_jit(inputs, outputs) -> int:
    """The fused state fusion, as the dilated depthwise convolutions it replaces (inputs: h, weight, alpha, ...;
    with the observation fused in, the same: its products are elementwise, which fvcore does not count)."""
    batch, channels, height, width = get_shape(inputs[0])
    return state_fusion_flops(batch, channels, height, width, get_shape(inputs[1])[0])


def scan_inputs(inputs, outputs, fused: bool) -> Dict[str, object]:
    """A traced scan node's tensor inputs by argument name (of ``scan2d`` if ``fused``, else of
    ``selective_scan``), for the families' own FLOP handles."""
    return _present_inputs(inputs, outputs, _SCAN2D_ARGS if fused else _SCAN_ARGS, skip=2)


def numpy_einsum_macs(macs: int) -> int:
    """What fvcore's own einsum handle reports for a two-operand contraction of ``macs`` multiply-adds:
    numpy's printed estimate of 2 * macs (4 significant digits), halved. For the families whose official
    count used that handle (see :func:`scan2d_flop_jit`'s ``einsum_macs``)."""
    return math.floor(float(f"{2 * macs:.3e}") / 2)


def scan2d_flop_jit(inputs, outputs, einsum_macs=int) -> int:
    """The fused 2-D scan counts as the K selective scans it performs (gather and merge are free),
    plus, with a low-rank step size, its projection's multiply-adds (as ``einsum_macs`` counts the
    official einsum), and with a fused output norm, the norm's 5 FLOPs per element (both as fvcore
    counts separate layers): per position, or per step of paths that visit positions more than once
    (the norm then runs on every visit)."""
    args = _present_inputs(inputs, outputs, _SCAN2D_ARGS, skip=2)
    channels, d_state = get_shape(args["A"])
    batch, length = get_shape(args["u"])[0], get_shape(args["index"])[1]
    flops = selective_scan_flops(batch, length, channels, d_state, with_D="D" in args)
    if "dt_weight" in args:
        flops += einsum_macs(batch * length * _numel(get_shape(args["dt_weight"])))
    if "norm_weight" in args:
        by_step = outputs[0].node().scalar_args()[1][4]  # Scan2dFn's flags: see ssm_kernels.ops
        flops += 5 * (batch * length * get_shape(args["u"])[-1] if by_step else _numel(get_shape(args["u"])))
    return flops


def causal_conv1d_flop_jit(inputs, outputs) -> int:
    """The conv1d node (all its directions), as fvcore counts each direction's ``nn.Conv1d``: one multiply-add
    per tap and output element."""
    batch, length, _ = get_shape(inputs[0])
    directions, channels, width = get_shape(inputs[1])
    return causal_conv1d_flops(batch, length, directions * channels, width)


def dwconv2d_flop_jit(inputs, outputs) -> int:
    """The channels-last depthwise conv2d node, as fvcore counts ``nn.Conv2d``: one multiply-add per tap and
    output element (its fused bias, SiLU and residual add are elementwise, which fvcore does not count)."""
    batch, height, width, channels = get_shape(inputs[0])
    return dwconv2d_flops(batch, height, width, channels, get_shape(inputs[1])[-1])


def non_causal_ssd_flop_jit(inputs, outputs, all_heads: bool = True) -> int:
    """The non-causal SSD's two matmuls over every head (``all_heads=False``: over one head, VSSD's official
    rule), plus, with the LayerNorm fused in, its 5 FLOPs per element as fvcore counts the layer (the gate
    and the scaling, elementwise, are not counted)."""
    args = _present_inputs(inputs, outputs, _SSD_ARGS, skip=2)
    batch, length, heads, head_dim = get_shape(args["x"])
    flops = non_causal_ssd_flops(batch, length, heads if all_heads else 1, get_shape(args["B"])[2], head_dim)
    if "norm_weight" in args:
        flops += 5 * batch * length * heads * head_dim
    return flops


def layer_norm_flop_jit(inputs, outputs) -> int:
    """The Triton LayerNorm node, as fvcore counts ``aten::layer_norm`` with its affine parameters."""
    return 5 * _numel(get_shape(inputs[0]))


def observe_norm_gate_flop_jit(inputs, outputs) -> int:
    """The observation, out-norm and gate node (inputs: h (B, E, L), ...), as the LayerNorm it contains: 5 FLOPs per
    element as fvcore counts ``aten::layer_norm`` (the products and the gate are elementwise, not counted)."""
    return 5 * _numel(get_shape(inputs[0]))


def global_mean_flop_jit(inputs, outputs) -> int:
    """A mean used as global pooling: one FLOP per input element, as fvcore counts adaptive_avg_pool2d."""
    return _numel(get_shape(inputs[0]))


def exact_einsum_flop_jit(inputs, outputs) -> int:
    """Multiply-adds of a two-operand einsum: the product of the sizes of all its indices.

    fvcore's own handle reads numpy's printed (rounded) estimate, which is off in the 4th digit.
    """
    equation = inputs[0].toIValue().replace(" ", "")
    operands = [get_shape(v) for v in inputs[1].node().inputs()]
    terms = equation.split("->")[0].split(",")
    if len(terms) != 2 or "." in equation:
        return einsum_flop_jit(inputs, outputs)
    sizes = {}
    for term, shape in zip(terms, operands):
        sizes.update(zip(term, shape))
    return _numel(sizes.values())


FLOP_HANDLES = {
    "prim::PythonOp.SelectiveScanFn": selective_scan_flop_jit,
    "prim::PythonOp.SelectiveScanStatesFn": selective_scan_states_flop_jit,
    "prim::PythonOp.StateFusionFn": state_fusion_flop_jit,
    "prim::PythonOp.StateFusionObserveFn": state_fusion_flop_jit,  # + the observation: elementwise, not counted
    "prim::PythonOp.Scan2dFn": scan2d_flop_jit,
    "prim::PythonOp.LayerNormFn": layer_norm_flop_jit,
    "prim::PythonOp.AddLayerNormFn": layer_norm_flop_jit,  # + the residual add, which fvcore does not count
    "prim::PythonOp.ObserveNormGateFn": observe_norm_gate_flop_jit,
    "prim::PythonOp.CausalConv1dFn": causal_conv1d_flop_jit,
    "prim::PythonOp.DepthwiseConv2dFn": dwconv2d_flop_jit,
    "prim::PythonOp.NonCausalSSDFn": non_causal_ssd_flop_jit,
    "aten::mean": global_mean_flop_jit,
    "aten::einsum": exact_einsum_flop_jit,
}


def _example_input(model: nn.Module, input_size: Tuple[int, int, int]) -> torch.Tensor:
    param = next(model.parameters())
    return torch.randn(1, *input_size, device=param.device, dtype=param.dtype)


def flop_analysis(model: nn.Module, inputs=None, input_size: Tuple[int, int, int] = (3, 224, 224)) -> FlopCountAnalysis:
    """fvcore's ``FlopCountAnalysis`` with the zoo's handles (use ``.by_module()``, tables, ...).

    A model whose family counts some operator its own way carries the handles in ``flop_handles``
    (a dict of fvcore handles by operator name, or None to leave an operator uncounted): they
    override the defaults, so that each family is counted by the rule its official code uses; a model
    holding such a model (a detector's backbone) is counted by the same handles.
    """
    if inputs is None:
        inputs = (_example_input(model, input_size),)
    handles = dict(FLOP_HANDLES)
    for module in reversed(list(model.modules())):  # a detector counted by its zoo backbone's rule too
        handles.update(getattr(module, "flop_handles", {}))
    analysis = FlopCountAnalysis(model, inputs).set_op_handle(**handles)
    for name in [name for name, handle in handles.items() if handle is None]:
        analysis._op_handles.pop(name, None)  # fvcore ignores an op set to None only if it has no handle yet
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis


def count_flops(model: nn.Module, input_size: Tuple[int, int, int] = (3, 224, 224), inputs=None) -> int:
    """Total FLOPs of one forward pass of a single image (batch 1), in eval mode, or in train mode for a
    family whose official count runs the model in train mode (``flops_in_train_mode = True``: it
    changes how batch norm is counted)."""
    was_training = model.training
    model.train(bool(getattr(model, "flops_in_train_mode", False)))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.*")  # fvcore traces with torch.jit
            return int(flop_analysis(model, inputs, input_size).total())
    finally:
        model.train(was_training)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

"""Closed-form FLOP counts of the scan ops (the convention the visual-SSM papers report).

The selective scan is counted as the VMamba paper counts it (the rule Albert Gu gives in
state-spaces/mamba#110): 9 FLOPs per element per state (discretisation, state update, output
contraction), plus one per element for the D skip and one for the z gate. Multiply-adds elsewhere
in a model are counted once by fvcore, so these numbers add up with fvcore's.
"""
from __future__ import annotations


def selective_scan_flops(batch: int, length: int, channels: int, d_state: int,
                         with_D: bool = True, with_z: bool = False) -> int:
    """FLOPs of one selective scan over (batch, channels, length) with ``d_state`` states."""
    flops = 9 * batch * length * channels * d_state
    if with_D:
        flops += batch * channels * length
    if with_z:
        flops += batch * channels * length
    return flops


def causal_conv1d_flops(batch: int, length: int, channels: int, width: int) -> int:
    """FLOPs of a depthwise conv1d producing (batch, length, channels) with kernels of ``width`` taps:
    one multiply-add per tap and output element, as fvcore counts ``nn.Conv1d`` (bias not counted)."""
    return batch * length * channels * width


def dwconv2d_flops(batch: int, height: int, width: int, channels: int, kernel_size: int) -> int:
    """FLOPs of a depthwise k x k conv2d producing (batch, height, width, channels) (:func:`ssm_kernels.dwconv2d`):
    one multiply-add per tap and output element, as fvcore counts ``nn.Conv2d`` (bias, activation and residual
    add not counted)."""
    return batch * height * width * channels * kernel_size * kernel_size


def selective_scan_states_flops(batch: int, length: int, channels: int, d_state: int) -> int:
    """FLOPs of the state equation alone (:func:`ssm_kernels.selective_scan_states`): 7 per element and
    state, the 9 of the full scan less the output contraction (Spatial-Mamba's official handle)."""
    return 7 * batch * length * channels * d_state


def state_fusion_flops(batch: int, channels: int, height: int, width: int, n_dilations: int) -> int:
    """Multiply-adds of the state fusion (:func:`ssm_kernels.state_fusion`): one 3x3 depthwise convolution per
    dilation, as fvcore counts the convolutions (Spatial-Mamba's official count)."""
    return 9 * n_dilations * batch * channels * height * width

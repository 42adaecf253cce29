"""ssm_kernels: the scan kernels shared by the visual state-space models of vmamba_zoo.

Every visual SSM gathers a 2-D map into K sequences along scan paths, runs a selective scan over
each, and merges the results back onto the map. This package holds those pieces, with a plain-PyTorch
reference (the oracle, runs anywhere) behind the same functions as the fast GPU kernels.

    from ssm_kernels import ScanPaths, cross_scan, cross_merge, selective_scan, scan2d, causal_conv1d, non_causal_ssd
"""
from .conv1d import CausalConv1dFn, causal_conv1d
from .conv2d import Conv2dFn, conv2d
from .dwconv2d import DepthwiseConv2dFn, dwconv2d
from .gate import MergeGateFn, merge_gate, merge_gate_ref
from .observe import ObserveNormGateFn, observe_norm_gate, observe_norm_gate_ref
from .flops import (causal_conv1d_flops, dwconv2d_flops, selective_scan_flops, selective_scan_states_flops,
                    state_fusion_flops)
from .ops import (BACKEND_ENV, PUBLIC_OPS, AddLayerNormFn, LayerNormFn, Scan2dFn, SelectiveScanFn,
                  SelectiveScanStatesFn, add_layer_norm, available_backends, cross_merge, cross_scan, is_exporting,
                  layer_norm, public_op, resolve_backend, scan2d, selective_scan, selective_scan_states)
from .paths import (ATROUS, BIDIRECTIONAL, CROSS, CROSS_SPLIT, MULTISCALE_LOW, ROW, ScanPaths, ScanPattern, column_major,
                    row_major, scan_pattern)
from .ssd import NonCausalSSDFn, non_causal_ssd, non_causal_ssd_flops, non_causal_ssd_ref
from .state_fusion import StateFusionFn, StateFusionObserveFn, state_fusion, state_fusion_observe

__version__ = "0.1.0"

__all__ = [
    "ScanPaths", "ScanPattern", "CROSS", "CROSS_SPLIT", "ATROUS", "row_major", "column_major", "cross_scan",
    "cross_merge", "selective_scan", "scan2d",
    "ROW", "MULTISCALE_LOW",
    "selective_scan_states", "SelectiveScanStatesFn", "selective_scan_states_flops", "state_fusion", "StateFusionFn",
    "state_fusion_observe", "StateFusionObserveFn",
    "state_fusion_flops",
    "layer_norm", "add_layer_norm", "AddLayerNormFn", "selective_scan_flops", "resolve_backend", "available_backends",
    "BACKEND_ENV", "SelectiveScanFn",
    "Scan2dFn", "LayerNormFn", "BIDIRECTIONAL", "causal_conv1d", "CausalConv1dFn", "causal_conv1d_flops",
    "non_causal_ssd", "non_causal_ssd_ref", "non_causal_ssd_flops", "NonCausalSSDFn",
    "merge_gate", "merge_gate_ref", "MergeGateFn",
    "observe_norm_gate", "observe_norm_gate_ref", "ObserveNormGateFn",
    "dwconv2d", "DepthwiseConv2dFn", "dwconv2d_flops", "conv2d", "Conv2dFn",
    "PUBLIC_OPS", "public_op", "is_exporting", "scan_pattern",
]

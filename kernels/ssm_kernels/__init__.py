"""ssm_kernels: the scan kernels shared by the visual state-space models of vmamba_zoo.

Every visual SSM gathers a 2-D map into K sequences along scan paths, runs a selective scan over
each, and merges the results back onto the map. This package holds those pieces, with a plain-PyTorch
reference (the oracle, runs anywhere) behind the same functions as the fast GPU kernels.

    from ssm_kernels import ScanPaths, cross_scan, cross_merge, selective_scan, scan2d
"""
from .flops import selective_scan_flops, selective_scan_states_flops, state_fusion_flops
from .ops import (BACKEND_ENV, LayerNormFn, Scan2dFn, SelectiveScanFn, available_backends, cross_merge, cross_scan,
                  layer_norm, resolve_backend, scan2d, selective_scan,
                  selective_scan_states, SelectiveScanStatesFn)
from .paths import CROSS, ScanPaths, ScanPattern, column_major, row_major
from .state_fusion import StateFusionFn, state_fusion

__version__ = "0.1.0"

__all__ = [
    "ScanPaths", "ScanPattern", "CROSS", "row_major", "column_major", "cross_scan", "cross_merge", "selective_scan",
    "selective_scan_states", "SelectiveScanStatesFn", "selective_scan_states_flops", "state_fusion", "StateFusionFn",
    "state_fusion_flops", "scan2d",
    "layer_norm", "selective_scan_flops", "resolve_backend", "available_backends", "BACKEND_ENV", "SelectiveScanFn",
    "Scan2dFn", "LayerNormFn",
]

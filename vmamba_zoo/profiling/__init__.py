"""Profiling: FLOPs by the papers' conventions (fvcore + scan handles) and speed measurement."""
from .flops import FLOP_HANDLES, count_flops, count_params, flop_analysis
from .speed import measure_latency

__all__ = ["FLOP_HANDLES", "count_flops", "count_params", "flop_analysis", "measure_latency"]

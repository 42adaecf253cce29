"""Profiling: FLOPs by the papers' conventions (fvcore + scan handles) and speed measurement.

The FLOP counter needs fvcore; it is imported on first use, so that timing works without it.
"""
from .speed import Throughput, largest_batch, measure_latency, measure_throughput

__all__ = ["FLOP_HANDLES", "Throughput", "count_flops", "count_params", "flop_analysis", "largest_batch", "measure_latency",
           "measure_throughput"]


def __getattr__(name):
    if name in ("FLOP_HANDLES", "count_flops", "count_params", "flop_analysis"):
        from . import flops
        return getattr(flops, name)
    raise AttributeError(name)

"""Initial values of the SSM parameters, as Mamba (and every visual SSM after it) sets them."""
from __future__ import annotations

import math

import torch


def dt_bias_init(shape, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4) -> torch.Tensor:
    """Bias of the step size: softplus(bias) is log-uniform in [dt_min, dt_max] (floored at dt_floor)."""
    dt = torch.exp(torch.rand(shape) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus


def a_log_init(channels: int, d_state: int) -> torch.Tensor:
    """log of the S4D-real diagonal, A = -[1, 2, ..., N] for every channel."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(channels, 1)

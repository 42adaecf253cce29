"""Timing of forward passes: CPU latency for the zoo table, GPU throughput for benchmarks."""
from __future__ import annotations

import statistics
import time
from typing import Tuple

import torch
from torch import nn


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_latency(model: nn.Module, input_size: Tuple[int, int, int] = (3, 224, 224), batch_size: int = 1,
                    warmup: int = 2, repeats: int = 5) -> float:
    """Median wall time of one eval-mode forward pass, in milliseconds, on the model's device."""
    param = next(model.parameters())
    x = torch.randn(batch_size, *input_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(repeats):
            _sync(param.device)
            start = time.perf_counter()
            model(x)
            _sync(param.device)
            times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return 1000 * statistics.median(times)

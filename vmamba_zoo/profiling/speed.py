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


def measure_throughput(model: nn.Module, batch_size: int = 128, img_size: int = 224, train: bool = False,
                       amp_dtype: torch.dtype = torch.float16, warmup: int = 10, steps: int = 30,
                       channels_last: bool = False) -> Tuple[float, float]:
    """(images per second, peak GiB) on CUDA under autocast; ``train`` adds backward and an SGD step."""
    device = next(model.parameters()).device
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (batch_size,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9) if train else None
    model.train(train)

    def step():
        with torch.autocast(device.type, dtype=amp_dtype):
            if not train:
                with torch.no_grad():
                    return model(x)
            loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - start
    return batch_size * steps / seconds, torch.cuda.max_memory_allocated(device) / 2 ** 30

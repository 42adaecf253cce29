"""Timing of forward passes: CPU latency for quick checks, throughput (images/s, ms/img, peak memory) for
the benchmarks, on CUDA or CPU."""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import NamedTuple, Optional, Tuple

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


class Throughput(NamedTuple):
    """One measurement: images per second, milliseconds per image, peak memory (GiB; None on CPU) and the
    host's milliseconds per step (``host_ms``: the wall time for Python to issue one step on an idle GPU; a step
    whose ``host_ms`` is about its whole time, batch / img_s, is bound by the host, not the GPU)."""
    img_s: float
    ms_per_img: float
    peak_gib: Optional[float]
    host_ms: Optional[float] = None


class _Timer:
    """Elapsed seconds between start() and stop(): CUDA events on a GPU (no host sync inside the timed
    steps), the wall clock on CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self):
        if self.device.type == "cuda":
            self._events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self._events[0].record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> float:
        if self.device.type == "cuda":
            self._events[1].record()
            self._events[1].synchronize()
            return self._events[0].elapsed_time(self._events[1]) / 1000
        return time.perf_counter() - self._t0


def make_step(model: nn.Module, x: torch.Tensor, train: bool, amp_dtype: Optional[torch.dtype] = None):
    """One benchmark step as a closure: a no-grad forward, or forward + cross-entropy + backward + SGD step.

    ``amp_dtype`` runs the forward under autocast in that dtype (None: the model's own dtype).
    """
    device = x.device
    target = torch.randint(0, getattr(model, "num_classes", 1000) or 1, (x.shape[0],), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9) if train else None
    model.train(train)

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    def step():
        with autocast():
            if not train:
                with torch.no_grad():
                    return model(x)
            out = model(x)
            if isinstance(out, (tuple, list)):  # models that return (class, distillation) logits in training
                out = out[0]
            loss = nn.functional.cross_entropy(out, target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure_throughput(model: nn.Module, batch_size: int = 128, img_size=224, train: bool = False,
                       amp_dtype: Optional[torch.dtype] = torch.float16, warmup: int = 10, steps: int = 30,
                       channels_last: bool = False, host_repeats: int = 3) -> Throughput:
    """Throughput of ``model`` on its own device (CUDA or CPU) at a fixed batch of random images.

    ``warmup`` untimed steps (compilation, autotuning, cudnn's choice), then ``steps`` timed ones; on
    CUDA timed with events and the peak memory counted from the first timed step. ``train`` adds
    backward and an SGD step; ``amp_dtype`` None runs without autocast. ``img_size``: N or (H, W).
    ``host_repeats`` more steps, each issued on a drained device, give ``host_ms`` (0: not measured, None).
    """
    device = next(model.parameters()).device
    height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    x = torch.randn(batch_size, 3, height, width, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    step = make_step(model, x, train, amp_dtype)
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timer = _Timer(device)
    timer.start()
    for _ in range(steps):
        step()
    seconds = timer.stop()
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    images = batch_size * steps
    host = _host_ms(step, device, host_repeats) if host_repeats else None
    return Throughput(images / seconds, 1000 * seconds / images, peak, host)


def _host_ms(step, device: torch.device, repeats: int) -> float:
    """Median wall time of issuing one step after the GPU has drained (no sync inside: the GPU runs behind)."""
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    _sync(device)
    return 1000 * statistics.median(times)


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is the GPU running out of memory (what a batch search backs off from)."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err)


def largest_batch(model: nn.Module, img_size, train: bool = False, amp_dtype: Optional[torch.dtype] = None,
                  channels_last: bool = False, limit: int = 256) -> int:
    """The largest power-of-two batch (up to ``limit``) whose step runs without running out of memory."""
    device = next(model.parameters()).device
    best, batch = 0, 1
    while batch <= limit:
        try:
            measure_throughput(model, batch, img_size, train, amp_dtype, warmup=1, steps=1,
                               channels_last=channels_last, host_repeats=0)
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        best, batch = batch, batch * 2
    if best == 0:
        raise RuntimeError(f"not even a batch of 1 fits at {img_size}")
    return best

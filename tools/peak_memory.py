"""Predict a zoo model's peak GPU memory in no-grad inference on a machine without a GPU, and show what
is live at the peak.

The model runs on fake CUDA tensors (``FakeTensorMode``: shapes, dtypes and strides, no data) under CUDA
autocast, whose op lists decide every dtype as on the GPU; the Triton launchers run and allocate their
buffers as they would there, but launch nothing. Every op output's storage is counted from its creation
until the last tensor on it dies (the caching allocator's 512-byte rounding included); the tool prints
the peak of that sum, the tensors live at the peak (size, dtype, shape, the op and the module that made
them) and the largest per-module peaks. The predicted peak is what ``tools/benchmark.py`` reports
(``torch.cuda.max_memory_allocated`` over a step): parameters, buffers and the input, plus that peak.

Not counted: cuDNN and cuBLAS workspaces and the allocator's block rounding: the peaks tools/benchmark.py
measured on an H200 (results/benchmark.csv) were 0.03-0.07 GiB above this prediction. Inference only: the
autograd engine needs a CUDA device for a backward on CUDA tensors, fake or not.

    python tools/peak_memory.py --model groupmamba_tiny --batch-size 128 --amp-dtype float16
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import types
import weakref
from unittest import mock

import torch
import triton
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode

import ssm_kernels.paths
import vmamba_zoo  # noqa: F401  (registers the models with timm)
from ssm_kernels.triton.launch import Launcher

MiB = 2 ** 20
_BUILD_PATHS = ssm_kernels.paths._paths_for


def _blocks(nbytes: int) -> int:
    return (nbytes + 511) // 512 * 512  # the CUDA caching allocator's rounding


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of every storage an op creates, until the last tensor on it dies; records the
    peak, what is live then, and each module's peak (the modules on the call stack at each new high)."""

    def __init__(self, model: torch.nn.Module, known=()):
        super().__init__()
        self.names = {m: name or type(model).__name__ for name, m in model.named_modules()}
        self.known = {t.untyped_storage()._cdata for t in known}  # storages that exist before: not counted
        self.stack, self.live, self.module_peak = [], {}, {}
        self.total = self.peak = 0
        self.at_peak = []

    def __enter__(self):
        self._hooks = [register_module_forward_pre_hook(self._enter_module),
                       register_module_forward_hook(self._leave_module)]
        return super().__enter__()

    def _enter_module(self, module, args):
        self.stack.append(self.names.get(module, type(module).__name__))

    def _leave_module(self, module, args, output):
        self.stack.pop()

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()
        return super().__exit__(*exc)

    def _release(self, key):
        entry = self.live[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.total -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if not isinstance(t, torch.Tensor):
                continue
            key = t.untyped_storage()._cdata
            if key in self.known:
                continue
            entry = self.live.get(key)
            if entry is None:
                where = self.stack[-1] if self.stack else "-"
                entry = self.live[key] = [_blocks(t.untyped_storage().nbytes()), 0,
                                          (where, func.overloadpacket.__name__, t.dtype, tuple(t.shape))]
                self.total += entry[0]
                for name in self.stack:
                    self.module_peak[name] = max(self.module_peak.get(name, 0), self.total)
                if self.total > self.peak:
                    self.peak = self.total
                    self.at_peak = [(e[0], e[2]) for e in self.live.values()]
            entry[1] += 1
            weakref.finalize(t, self._release, key)
        return out


@contextlib.contextmanager
def _no_gpu_needed(fake_mode: FakeTensorMode, sms: int):
    """Within: launch nothing, answer the launchers' device queries, and build scan paths on the host (they
    are built outside any tensor mode, then made fake: a small index tensor that the real run caches too)."""
    cache = {}

    def paths_for(name, height, width, device):
        if (name, height, width) not in cache:
            paths = copy.copy(_BUILD_PATHS(name, height, width, "cpu"))
            object.__setattr__(paths, "index", fake_mode.from_tensor(paths.index).to("cuda"))
            cache[name, height, width] = paths
        return cache[name, height, width]

    properties = types.SimpleNamespace(multi_processor_count=sms)
    with contextlib.ExitStack() as stack:
        for owner, name, value in (
                (Launcher, "_launch", lambda self, grid, args, meta: None),
                (triton.runtime.jit.JITFunction, "__getitem__", lambda self, grid: lambda *args, **kwargs: None),
                (torch.cuda, "get_device_properties", lambda device=None: properties),
                (torch.cuda, "current_device", lambda: 0),
                (ssm_kernels.paths, "_paths_for", paths_for)):
            stack.enter_context(mock.patch.object(owner, name, value))
        yield


@contextlib.contextmanager
def on_fake_cuda(model: torch.nn.Module, sms: int = 132):
    """Within: ``model`` (yielded) moved onto fake CUDA tensors, nothing launched (see :func:`_no_gpu_needed`),
    and ``torch.cuda.is_available()`` true, patched only after the move, which would then look for a driver
    (``torch.autocast("cuda")`` refuses without it)."""
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    with fake_mode, _no_gpu_needed(fake_mode, sms):
        model = model.to("cuda")
        with mock.patch.object(torch.cuda, "is_available", lambda: True):
            yield model


def measure(model_name: str, batch: int, size: int, amp_dtype, sms: int = 132, **kwargs):
    """(tracker, parameter and buffer bytes, input bytes) for a no-grad forward of ``model_name`` on fake
    CUDA tensors; ``sms``: the GPU's multiprocessors (the launchers' grids depend on it: 132 on an H100/H200)."""
    import timm
    with on_fake_cuda(timm.create_model(model_name, **kwargs).eval(), sms) as model:
        x = torch.randn(batch, 3, size, size, device="cuda")
        state = list(model.parameters()) + list(model.buffers())
        persistent = sum(t.untyped_storage().nbytes() for t in state)
        tracker = LiveBytes(model, known=state + [x])
        with tracker:
            with torch.autocast("cuda", dtype=amp_dtype, enabled=amp_dtype is not None), torch.no_grad():
                out = model(x)
            del out
    return tracker, persistent, x.untyped_storage().nbytes()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a zoo (or timm) model name")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--amp-dtype", default="float16", help="autocast dtype, or 'none' (float32)")
    parser.add_argument("--top", type=int, default=15, help="rows of the live-at-peak and module tables")
    args = parser.parse_args(argv)
    amp = None if args.amp_dtype == "none" else getattr(torch, args.amp_dtype)
    tracker, persistent, inputs = measure(args.model, args.batch_size, args.img_size, amp)
    print(f"{args.model}, no-grad inference, batch {args.batch_size}, {args.img_size}x{args.img_size}, "
          f"{args.amp_dtype} autocast: predicted peak {(persistent + inputs + tracker.peak) / 2 ** 30:.3f} GiB")
    print(f"  parameters + buffers {persistent / MiB:.1f} MiB, input {inputs / MiB:.1f} MiB, "
          f"activations at the peak {tracker.peak / MiB:.1f} MiB ({tracker.peak / args.batch_size / MiB:.3f} MiB "
          f"an image)")
    print("live at the peak (largest first):")
    for nbytes, (where, op, dtype, shape) in sorted(tracker.at_peak, key=lambda r: -r[0])[:args.top]:
        print(f"  {nbytes / MiB:9.2f} MiB  {str(dtype).replace('torch.', ''):8s} {str(shape):26s} {op:22s} {where}")
    rest = sorted(tracker.at_peak, key=lambda r: -r[0])[args.top:]
    if rest:
        print(f"  {sum(r[0] for r in rest) / MiB:9.2f} MiB  in {len(rest)} more tensors")
    print("module peaks (activations):")
    for name, nbytes in sorted(tracker.module_peak.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {nbytes / MiB:9.1f} MiB  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

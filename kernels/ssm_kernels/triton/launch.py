"""Launching the Triton kernels with less host time.

An eager VMamba step is bound by the host on an H100: it launches ~140 of our kernels a training step,
and Triton's own launch path (``kernel[grid](...)``) binds and specialises every argument and formats a
string cache key on each call, for the scan kernels' 40-odd arguments. :class:`Launcher` keeps, after the
first launch of a specialisation, Triton's compiled kernel under a key of what Triton specialises on,
and launches that compiled kernel the way Triton does after its own lookup (``CompiledKernel.run`` with
the grid, the current stream and the arguments), leaving out the launch hooks' metadata when no hook is
set (profilers such as proton set them; then every launch goes through Triton's runner, which calls
them). Under Triton's interpreter there is no compiled kernel: every call takes Triton's path.

Inside :func:`traced_launches` (the body of an op that ``torch.compile`` traces, see ``ops._custom_op``) every
launch goes through ``torch.library.wrap_triton``: traced with fake tensors it records the kernel in the graph,
and inductor launches it from its own generated code; called with real tensors it is Triton's plain launch.
"""
from __future__ import annotations

import functools
import inspect
import os
import threading
import typing

import torch

try:
    from triton import knobs as _knobs
    _RUNTIME = _knobs.runtime
except ImportError:  # a Triton without knobs: always launch through its runner
    _RUNTIME = None

#: Triton reads this when it decorates the kernels, i.e. at import: so do we.
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


# triton.cdiv and triton.next_power_of_2 are constexpr functions: ~5 us a call from Python
def cdiv(a, b):
    return (a + b - 1) // b


def next_power_of_2(n: int) -> int:
    return 1 << (n - 1).bit_length()


_TENSOR = torch.Tensor  # a module global: read once a launch per argument


class _Tracing(threading.local):
    active = False  # set around a traced op's body, in the thread that runs it


_TRACING = _Tracing()


def traced_launches(fn):
    """``fn`` with its launches made traceable (``wrap_triton``): the body of a ``torch.library.triton_op``, which
    reads its schema from the signature (the annotations evaluated in ``fn``'s module: they may be strings)."""

    @functools.wraps(fn)
    def body(*args, **kwargs):
        before, _TRACING.active = _TRACING.active, True
        try:
            return fn(*args, **kwargs)
        finally:
            _TRACING.active = before

    body.__signature__ = inspect.signature(fn, eval_str=True)
    body.__annotations__ = typing.get_type_hints(fn)
    del body.__wrapped__
    return body


def specialisation(args) -> tuple:
    """What Triton compiles a kernel for, given these arguments (as fine as Triton's own key, or finer):
    a tensor's dtype and whether its address is 16-byte aligned; an int's width (32-bit, 64-bit or
    unsigned), whether it is 1 and whether it is a multiple of 16; a float as the type; any other value
    as it is (bools, None, meta-parameters). One comprehension, no call per argument: every launch asks, and
    the scan kernels take 40-odd arguments (10 -> 7 us a launch on a CPU where a Python call costs ~60 ns)."""
    return tuple([(a.dtype, not a.data_ptr() & 15) if isinstance(a, _TENSOR)
                  else (a == 1, not a & 15, -0x80000000 <= a < 0x80000000, a < 0x8000000000000000)
                  if a.__class__ is int else float if a.__class__ is float else a for a in args])


def _hooked() -> bool:
    """Whether a launch hook is set (a hook chain counts only when something is on it)."""
    if _RUNTIME is None:
        return True
    return any(hook is not None and getattr(hook, "calls", True)
               for hook in (_RUNTIME.launch_enter_hook, _RUNTIME.launch_exit_hook))


class Launcher:
    """``Launcher(kernel)[grid](*arguments, **meta)`` launches like ``kernel[grid](*arguments, **meta)``,
    a ``triton.jit`` kernel: positional arguments first, every remaining parameter (the constexprs) by
    name in ``meta`` with the launch options (``num_warps``, ...)."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.compiled = {}

    def __getitem__(self, grid):
        grid = (*grid, 1, 1)[:3]
        return lambda *args, **meta: self._launch(grid, args, meta)

    def _launch(self, grid, args, meta):
        if _INTERPRETED:
            self.kernel[grid](*args, **meta)
            return
        if _TRACING.active:
            torch.library.wrap_triton(self.kernel)[grid](*args, **meta)
            return
        device = torch.cuda.current_device()
        key = (device, specialisation(args), tuple(meta.items()))
        hit = self.compiled.get(key)
        if hit is not None:
            compiled, names = hit
            constexprs = [meta[name] for name in names]
            if _hooked():
                compiled[grid](*args, *constexprs)
            else:
                compiled.run(*grid, torch._C._cuda_getCurrentRawStream(device), compiled.function,
                             compiled.packed_metadata, None, None, None, *args, *constexprs)
            return
        compiled = self.kernel[grid](*args, **meta)
        names = self.kernel.arg_names[len(args):]
        if all(hasattr(compiled, a) for a in ("run", "function", "packed_metadata")) and all(
                name in meta for name in names):
            self.compiled[key] = compiled, names

#!/usr/bin/env python
"""Where the host's time goes in an eager step: Python's own profiler (cProfile) over a few steps.

    python tools/host_profile.py --model spatialmamba_tiny -b 128 --amp
    python tools/host_profile.py --model vmamba_tiny -b 1 --img-size 1024 --amp --mode train --top 40

An eager model whose GPU finishes each kernel before the host has issued the next one runs at the host's
speed, whatever its kernels cost (``tools/benchmark.py`` prints ``host`` ms/step beside each step's whole
time). This runs ``--steps`` steps of ``--mode`` (a no-grad forward, or forward + cross entropy + backward +
SGD step, as the benchmark) after two untimed ones, the GPU drained before each, and prints the host's wall
time a step, then the functions by their own time (``tottime``: the time inside a function less its callees;
a C function such as ``torch._C._nn.linear`` holds the dispatcher, the autocast casts and the launch) and, with
``--cumulative``, by their time with callees (a module's ``forward``, an op's Python wrapper). The backward's
kernels are issued by the autograd engine's own thread, which cProfile does not see: in training the
``run_backward`` line holds that thread's whole time.

``--no-kernels`` (CPU, no GPU needed) measures the host's Python of the zoo's ops as the GPU runs them: the Triton
backend's path with every Triton kernel launch skipped, the kernels' outputs left unwritten (the numbers are no model
output). Its own cost (a skipped launch) is the only part not counted; PyTorch's ops run on the CPU for real, so
keep the batch and size small. A tool for making the ops' host side cheaper without a GPU at hand.

    python tools/host_profile.py --model spatialmamba_small -b 1 --img-size 64 --device cpu --no-kernels
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import sys
import time

if "--no-kernels" in sys.argv:  # Triton reads it when it decorates the kernels, i.e. at import
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch
import timm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _cli import ParseKwargs  # noqa: E402

import vmamba_zoo  # noqa: E402,F401  (registers the zoo's models)
from ssm_kernels.ops import BACKEND_ENV  # noqa: E402
from vmamba_zoo.profiling.speed import _sync, make_step  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["vmamba_tiny"], metavar="NAME", help="zoo or timm models")
    parser.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs, metavar="KEY=VALUE",
                        help="passed to timm.create_model, values as Python literals")
    parser.add_argument("--batch-size", "-b", type=int, default=128)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--mode", choices=["inference", "train"], default="inference")
    parser.add_argument("--amp", action="store_true", help="float16 autocast (else float32)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=30, help="functions listed")
    parser.add_argument("--cumulative", action="store_true", help="also list functions by time with callees")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-kernels", action="store_true",
                        help="CPU: the Triton backend's Python with every kernel launch skipped (see above)")
    return parser.parse_args(argv)


def profile_model(name: str, args) -> str:
    device = torch.device(args.device)
    model = timm.create_model(name, **args.model_kwargs).to(device)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    step = make_step(model, x, args.mode == "train", torch.float16 if args.amp else None)
    for _ in range(2):
        step()
    profiler, host = cProfile.Profile(), 0.0
    for _ in range(args.steps):
        _sync(device)
        start = time.perf_counter()
        profiler.enable()
        step()
        profiler.disable()
        host += time.perf_counter() - start
    _sync(device)
    out = io.StringIO()
    out.write(f"{name} {args.mode} batch {args.batch_size} {args.img_size}x{args.img_size}: "
              f"host {1000 * host / args.steps:.2f} ms a step (under cProfile, which adds its own)\n")
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(args.top)
    if args.cumulative:
        stats.sort_stats("cumulative").print_stats(args.top)
    return out.getvalue()


@contextlib.contextmanager
def kernels_skipped():
    """The Triton backend chosen for CPU tensors, and every Triton launch a no-op (interpreted or through our
    launcher), while the block runs."""
    from triton.runtime.interpreter import InterpretedFunction

    from ssm_kernels.triton import launch
    saved = os.environ.get(BACKEND_ENV), launch.Launcher._launch, InterpretedFunction.run
    os.environ[BACKEND_ENV] = "triton"
    launch.Launcher._launch = lambda self, grid, args, meta: None
    InterpretedFunction.run = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        launch.Launcher._launch, InterpretedFunction.run = saved[1:]
        if saved[0] is None:
            os.environ.pop(BACKEND_ENV, None)
        else:
            os.environ[BACKEND_ENV] = saved[0]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.no_kernels and (args.device != "cpu" or os.environ.get("TRITON_INTERPRET") != "1"):
        print("--no-kernels runs on CPU (--device cpu) with TRITON_INTERPRET=1 set before Triton is imported "
              "(the tool sets it when started with the flag)", file=sys.stderr)
        return 2
    with kernels_skipped() if args.no_kernels else contextlib.nullcontext():
        for name in args.model:
            print(profile_model(name, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

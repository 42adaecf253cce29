#!/usr/bin/env python
"""A model's inference forward captured in one CUDA graph: its GPU time without the host, in seconds a size.

``benchmark.py --torchcompile reduce-overhead`` gives the numbers users see, but compiles for a minute a size. This
captures the eager model (fp16 autocast, no grad) with ``torch.cuda.graph`` instead, which is what an A/B of a
kernel launch rule needs: ``--set`` gives a module constant of ``ssm_kernels.triton`` each of its values in turn,
``--repeats`` times over, so that a difference can be told from the card's drift. The segment rule of the scan's
forward (``ops.PROGRAMS_PER_SM``, kernels/NOTES.md v10.14) was chosen this way:

    python tools/bench_graph.py --model vmamba_tiny vim_small --sizes 512 1024 2048 --set ops.PROGRAMS_PER_SM=4,8

Prints one row a model, size and value: ms a forward (the median of 5 timings of ``--replays`` replays each, one
a repeat) and ns a pixel. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import importlib

import timm
import torch

import vmamba_zoo  # noqa: F401  (registers the zoo's models)
from tune_scan import timed


def parse_setting(text: str):
    """``module.NAME=V1,V2`` -> (module, NAME, [V1, V2]): an int constant of ``ssm_kernels.triton.<module>``."""
    target, _, values = text.partition("=")
    module_name, _, name = target.rpartition(".")
    try:
        module = importlib.import_module(f"ssm_kernels.triton.{module_name}")
    except ImportError:
        raise ValueError(f"--set {text}: no module ssm_kernels.triton.{module_name}") from None
    if not isinstance(getattr(module, name, None), int):
        raise ValueError(f"--set {text}: ssm_kernels.triton.{module_name} has no int constant {name!r}")
    try:
        return module, name, [int(v) for v in values.split(",")]
    except ValueError:
        raise ValueError(f"--set {text}: the values must be integers, comma-separated") from None


def create(name: str, size: int) -> torch.nn.Module:
    try:  # models with a fixed input size (Vim's position embedding) take it at creation
        model = timm.create_model(name, img_size=size)
    except TypeError:
        model = timm.create_model(name)
    return model.cuda().eval()


def capture(fn, dtype) -> torch.cuda.CUDAGraph:
    """``fn()`` in a graph under autocast without grad, after warm-up calls on a side stream (Triton compiles, cuBLAS
    picks its kernels)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad(), torch.autocast("cuda", dtype):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad(), torch.autocast("cuda", dtype):
        fn()
    return graph


def time_graph(graph, replays: int) -> float:
    """ms a replay: the median of 5 timings of ``replays`` replays each (tune_scan's CUDA-event timer)."""
    def run():
        for _ in range(replays):
            graph.replay()
    return timed(run, reps=5) / replays


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["vmamba_tiny"], metavar="NAME")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], metavar="N")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16", help="autocast's dtype")
    parser.add_argument("--set", metavar="MODULE.NAME=V1,V2",
                        help="give a constant of ssm_kernels.triton.MODULE each value in turn (e.g. ops.PROGRAMS_PER_SM)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the --set values")
    parser.add_argument("--replays", type=int, default=30, help="replays a timing")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (the forward is timed as a CUDA graph)")
    if args.batch < 1 or args.repeats < 1 or args.replays < 1:
        parser.error("--batch, --repeats and --replays must be at least 1")
    try:
        module, name, values = parse_setting(args.set) if args.set else (None, None, [None])
    except ValueError as err:
        parser.error(str(err))
    default = getattr(module, name) if module else None
    dtype = getattr(torch, args.dtype)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}, {args.dtype} autocast")
    print(f"| model | size | {name or 'setting'} | ms a forward | ns a pixel |\n|---|---:|---:|---|---:|")
    try:
        for model_name in args.model:
            for size in args.sizes:
                model = create(model_name, size)
                x = torch.randn(args.batch, 3, size, size, device="cuda")
                times = {value: [] for value in values}
                for _ in range(args.repeats):
                    for value in values:
                        if module:
                            setattr(module, name, value)
                        graph = capture(lambda: model(x), dtype)
                        times[value].append(time_graph(graph, args.replays))
                        del graph
                for value, ms in times.items():
                    per_pixel = min(ms) * 1e6 / (args.batch * size * size)
                    print(f"| {model_name} | {size} | {'default' if value is None else value} | "
                          f"{' / '.join(f'{t:.3f}' for t in ms)} | {per_pixel:.2f} |", flush=True)
                del model, x
                torch.cuda.empty_cache()
    finally:
        if module:
            setattr(module, name, default)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""GPU benchmark of the channels-last depthwise conv2d: ``ssm_kernels.dwconv2d`` against ``nn.Conv2d`` on the
permuted map, as the models ran it before.

Under fp16 autocast (batch 128, 224x224, eager), at the stage shapes of:

- VMamba-T's SS2D (C = dim, no bias): the conv of a slice of the (B, H, W, C) in-projection, then SiLU:
  ``silu(conv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)`` against ``dwconv2d(x, w, silu=True)``;
- Spatial-Mamba-T's position encoding (C = dim, with bias), on the float32 residual stream:
  ``x + conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)`` against ``dwconv2d(x, w, b, residual=True)``;

forward (no grad) and forward + backward (the gradients of x, weight and bias), the two paths checked to
agree first. Times are medians of ``triton.testing.do_bench`` (CUDA events), in milliseconds; "host" is the
median wall time of one eager forward call measured on the host with the GPU synchronised before (the
launch cost that bounds an eager small model).

    python tools/bench_dwconv.py [--batch 128] [--size 224]
    python tools/bench_dwconv.py --sweep       # then ours at other launch parameters (BP, BC, warps), stage 1

The op is worth it where "ours" beats "conv2d" forward and forward + backward at stage 1 (most of the
elements), and its host time is below the conv path's.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
import triton

from ssm_kernels import dwconv2d
from ssm_kernels.triton import dwconv2d as tdw

#: (BP, BC, warps) tried by --sweep
SWEEP = [(16, 128, 4), (32, 128, 4), (64, 128, 8), (16, 64, 2), (32, 64, 4), (64, 64, 4), (32, 32, 2), (128, 32, 4)]

#: (model, what, dims of the four stages, bias, silu, residual)
SHAPES = [("VMamba-T", "SS2D conv + SiLU", (96, 192, 384, 768), False, True, False),
          ("Spatial-Mamba-T", "x + dwconv(x)", (64, 128, 256, 512), True, False, True)]


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def host_us(fn, reps: int = 200) -> float:
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    torch.cuda.synchronize()
    return statistics.median(times) * 1e6


def official(x, conv, silu, residual):
    y = conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    y = F.silu(y) if silu else y
    return x + y if residual else y


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--sweep", action="store_true", help="also ours at the launch parameters of SWEEP, stage 1")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU here")
        return 2
    device = torch.device("cuda")
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}, {args.size}x{args.size}, "
          "fp16 autocast; ms (medians of CUDA-event timings), host us per eager forward call")
    print("| model | what | stage | map | fwd conv2d | fwd ours | fwd+bwd conv2d | fwd+bwd ours | host conv2d | "
          "host ours |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for model, what, dims, bias, silu, residual in SHAPES:
        for stage, C in enumerate(dims):
            side = args.size // (4 * 2 ** stage)
            conv = torch.nn.Conv2d(C, C, 3, padding=1, groups=C, bias=bias, device=device)
            if residual:  # the float32 residual stream
                x = torch.randn(args.batch, side, side, C, device=device)
            else:  # a slice of the fp16 in-projection's output
                x = torch.randn(args.batch, side, side, 2 * C, device=device, dtype=torch.float16)[..., :C]
            x.requires_grad_()
            dy = torch.randn(args.batch, side, side, C, device=device, dtype=x.dtype if residual else torch.float16)

            def ours():
                return dwconv2d(x, conv.weight, conv.bias, silu=silu, residual=residual)

            def theirs():
                return official(x, conv, silu, residual)

            with torch.autocast("cuda", dtype=torch.float16):
                a, b = ours(), theirs()
                assert a.dtype == b.dtype, (a.dtype, b.dtype)
                err = ((a.float() - b.float()).norm() / b.float().norm()).item()
                assert err < 1e-2, f"{model} s{stage + 1}: the paths differ (rel err {err:.1e})"
                row = []
                for fn in (theirs, ours):
                    with torch.no_grad():
                        row.append(bench(fn))
                for fn in (theirs, ours):
                    row.append(bench(lambda: torch.autograd.grad(fn(), (x, *conv.parameters()), dy)))
                with torch.no_grad():
                    row += [host_us(theirs), host_us(ours)]
            print(f"| {model} | {what} | s{stage + 1} | {side}x{side}x{C} | " + " | ".join(
                f"{t:.3f}" for t in row[:4]) + " | " + " | ".join(f"{t:.0f}" for t in row[4:]) + " |", flush=True)
            if args.sweep and stage == 0:
                sweep(ours, x, conv, dy)
    return 0


def sweep(ours, x, conv, dy):
    """Ours at each launch parameter set of SWEEP: forward and forward + backward, ms."""
    print("|  |  | BP, BC, warps | fwd | fwd+bwd |\n|---|---|---|---:|---:|")
    try:
        for BP, BC, warps in SWEEP:
            tdw.TUNING.update(BP=BP, BC=BC, warps=warps)
            with torch.autocast("cuda", dtype=torch.float16):
                with torch.no_grad():
                    fwd = bench(ours)
                both = bench(lambda: torch.autograd.grad(ours(), (x, *conv.parameters()), dy))
            print(f"|  |  | {BP}, {BC}, {warps} | {fwd:.3f} | {both:.3f} |", flush=True)
    finally:
        tdw.TUNING.clear()


if __name__ == "__main__":
    raise SystemExit(main())

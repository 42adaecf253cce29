#!/usr/bin/env python
"""GPU benchmark of the row-norm kernels' forwards (``ssm_kernels.triton.merge_norm``) at a model's stage shapes.

At batch 1 the late stages' maps are small (VMamba-T at 512x512: 1024 rows of 384 channels in stage 3), and a
launch there is bound by its programs' latency, not by bandwidth: this times, per stage, the blocks' residual add
with its LayerNorm (``add_norm``: float32 stream + fp16 branch) and the merge of K = 4 direction slices with the
out-norm (``merge_norm``), at the launch heuristic's parameters and, with ``--sweep``, at every (rows a program,
warps) of SWEEP. Times are microseconds a launch inside a CUDA graph (``triton.testing.do_bench_cudagraph``:
no launch cost), medians; "copy" is a plain device copy of the stage's float32 stream, the floor.

    python tools/bench_norms.py [--batch 1] [--size 512] [--dims 96 192 384 768] [--sweep]
"""
from __future__ import annotations

import argparse

import torch
import triton

from ssm_kernels.triton import merge_norm as mn
from ssm_kernels.triton.launch import next_power_of_2

#: (rows a program, warps) tried by --sweep
SWEEP = [(1, 1), (1, 2), (1, 4), (2, 2), (2, 4), (4, 4), (8, 4), (16, 4), (32, 4)]


def bench(fn) -> float:
    return triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median") * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--dims", type=int, nargs="+", default=[96, 192, 384, 768], help="channels of each stage")
    parser.add_argument("--sweep", action="store_true", help="also every (rows a program, warps) of SWEEP")
    args = parser.parse_args(argv)
    smallest = 4 * 2 ** (len(args.dims) - 1)
    if args.batch < 1 or args.size < smallest:
        parser.error(f"--batch must be >= 1 and --size >= {smallest} (the last stage's map is size / {smallest} "
                     f"a side); got --batch {args.batch} --size {args.size}")
    if not torch.cuda.is_available():
        print("no CUDA GPU here")
        return 2
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}, {args.size}x{args.size}; "
          "us a launch in a CUDA graph (medians)")
    print("| stage | rows x C | copy | BM, warps | add_norm | merge_norm |\n|---|---|---:|---|---:|---:|")
    for stage, C in enumerate(args.dims):
        side = args.size // (4 * 2 ** stage)
        rows = args.batch * side * side
        x = torch.randn(rows, C, device="cuda")
        branch = torch.randn(rows, C, device="cuda", dtype=torch.float16)
        slices = torch.randn(4, rows, C, device="cuda", dtype=torch.float16)
        w, b = torch.randn(C, device="cuda"), torch.randn(C, device="cuda")
        copy = bench(lambda: x.clone())
        chosen = mn._fwd_block(C, rows, x.device)
        settings = [None] + (SWEEP if args.sweep else [])
        for setting in settings:  # TUNING is empty here: each setting's is cleared after it
            if setting is not None:
                if setting[0] * next_power_of_2(C) > 16384:  # a tile too large for a program's registers
                    continue
                mn.TUNING.update(BM=setting[0], warps=setting[1])
            try:
                add = bench(lambda: mn.add_norm_fwd(x, branch, w, b, None, 1e-5, torch.float32, torch.float16))
                merge = bench(lambda: mn.merge_norm_fwd(slices, w, b, 1e-5))
            finally:
                mn.TUNING.clear()
            label = f"{chosen[0]}, {chosen[2]} (heuristic)" if setting is None else f"{setting[0]}, {setting[1]}"
            print(f"| s{stage + 1} | {rows} x {C} | {copy:.2f} | {label} | {add:.2f} | {merge:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Would one kernel for a block's position-wise ops make batch 1 at small maps cheaper? Its floor against today's chain.

After a VSS block's scan, every op up to the next scan input works on each position alone: the out-projection,
the residual add and norm2, fc1, GELU, fc2. One kernel over tiles of positions could run them all, and
batch 1's time at small maps is mostly a count of kernels (kernels/NOTES.md v10.13). But each program of such a
kernel needs every weight of the block, read from L2 once per program, and that read is a floor no tiling avoids:
its time is the weights' bytes at what one program can read (``GB/s a program``), however few positions it holds.

For each stage of ``--model`` at ``--batch`` and each ``--sizes``, this times in CUDA graphs:

- ``chain``: today's kernels for those ops (out_proj, the add-norm, fc1, GELU, fc2; fp16, no grad);
- ``floor BM=16`` / ``BM=64``: ``read_kernel``, one program per tile of 16 (the smallest matmul tile) or 64
  positions, each reading the stage's out_proj, fc1 and fc2 weights (fp16) once and doing nothing else (the
  fastest of ``READ_CONFIGS``: up to 64 KB a load in flight a program).

    python tools/bench_fusion_floor.py --sizes 512 1024

A fused kernel pays where its floor is far below the chain. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import math

import timm
import torch
import triton
import triton.language as tl

import vmamba_zoo  # noqa: F401  (registers the zoo's models)
from bench_graph import capture, time_graph

#: tile heights of the fused kernel's programs: the smallest tl.dot tile, and a common one
TILES = (16, 64)
#: the read kernel's (elements a load, warps): the floor is the fastest of them (more bytes in flight a program)
READ_CONFIGS = ((4096, 4), (16384, 8), (32768, 8))


@triton.jit
def read_kernel(w_ptr, out_ptr, numel, BLOCK: tl.constexpr):
    """Each program reads all ``numel`` weights once (as a fused block kernel's program would) and writes their sum,
    so that the reads are not optimised away."""
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, numel, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(w_ptr + offs, mask=offs < numel, other=0.0).to(tl.float32)
    tl.store(out_ptr + tl.program_id(0), tl.sum(acc, axis=0))


def read_weights(weights: torch.Tensor, programs: int, block: int = 4096, warps: int = 4) -> torch.Tensor:
    """``programs`` sums of the flat ``weights``, each read by its own program, ``block`` elements a load."""
    out = torch.empty(programs, device=weights.device, dtype=torch.float32)
    read_kernel[(programs,)](weights, out, weights.numel(), BLOCK=block, num_warps=warps)
    return out


def stage_shapes(model, size: int, batch: int):
    """Per stage: (index, positions, dim, the position-wise weights' element count, the stage's first block)."""
    rows = []
    for index, stage in enumerate(model.stages):
        block = stage.blocks[0]
        reduction = model.feature_info[index]["reduction"]
        positions = batch * math.ceil(size / reduction) ** 2
        linears = (block.mixer.out_proj, block.mlp.fc1, block.mlp.fc2)
        rows.append((index, positions, block.norm2.normalized_shape[0], sum(m.weight.numel() for m in linears),
                     block))
    return rows


def chain_graph(block, positions: int):
    """Today's kernels from the scan's merged output to the block's output, on random inputs."""
    dim, inner = block.mixer.out_proj.out_features, block.mixer.out_proj.in_features
    y = torch.randn(positions, inner, device="cuda", dtype=torch.float16)
    x = torch.randn(positions, dim, device="cuda", dtype=torch.float16)

    def chain():
        _, h = block.norm2.add_forward(x, block.mixer.out_proj(y))
        return block.mlp(h)  # (its residual add runs in the next block's norm1)
    return capture(chain, torch.float16)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vmamba_tiny")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], metavar="N")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--replays", type=int, default=50, help="replays a timing")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.replays < 1:
        parser.error("--batch and --replays must be at least 1")
    model = timm.create_model(args.model)
    stride = model.feature_info[-1]["reduction"]
    if min(args.sizes) < stride:
        parser.error(f"--sizes must be at least {stride}, {args.model}'s last stage's stride (got {min(args.sizes)})")
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (the kernels are timed as CUDA graphs)")
    model = model.cuda().eval().half()  # fp16 weights: no casts in the chain
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.model}, batch {args.batch}; us a call")
    print("| size | stage | positions | dim | weights KB | chain | " + " | ".join(f"floor BM={t}" for t in TILES)
          + " | GB/s a program |\n|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(TILES) + 1))
    for size in args.sizes:
        for index, positions, dim, numel, block in stage_shapes(model, size, args.batch):
            weights = torch.randn(numel, device="cuda", dtype=torch.float16)
            floors = []
            for tile in TILES:
                programs = math.ceil(positions / tile)
                floors.append(min(time_graph(capture(lambda: read_weights(weights, programs, elements, warps),
                                                     torch.float16), args.replays) * 1e3
                                  for elements, warps in READ_CONFIGS))
            chain = time_graph(chain_graph(block, positions), args.replays) * 1e3
            print(f"| {size} | {index + 1} | {positions} | {dim} | {numel * 2 / 1024:.0f} | {chain:.1f} | "
                  + " | ".join(f"{t:.1f}" for t in floors) + f" | {numel * 2 / min(floors) / 1e3:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

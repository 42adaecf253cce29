#!/usr/bin/env python
"""GPU benchmark of Spatial-Mamba's observation + out-norm + gate: the PyTorch chain against ``observe_norm_gate``.

At Spatial-Mamba-T's four stage shapes (224x224: E = 128 / 256 / 512 / 1024 channels on 56 / 28 / 14 / 7 maps),
batch 128, fp16 autocast (the throughput benchmark's setting), times forward (no grad) and forward + backward of
what the mixer runs after ``state_fusion``:

- chain: y = h' * C + u * D (float32), transposed to channels-last, ``FastLayerNorm`` (``ssm_kernels.layer_norm``,
  which copies the strided y to contiguous first), times SiLU(z): the model before the op;
- op: ``observe_norm_gate`` (one kernel each way).

Inputs as the model gives them: the fused states float32 (B, E, L), C a strided view of the (B, R + 2, L)
projection, u (B, E, L) in fp16, z the second half of the (B, H, W, 2E) in-projection (fp16), D and the norm's
parameters float32. Also prints the op's forward bandwidth (h 4 B + u, z and out 2 B an element: 10 B) and the
largest difference between the two paths. Times are medians of ``triton.testing.do_bench`` (CUDA events), in ms.

    python tools/bench_observe.py [--batch 128] [--dtype float16]
    python tools/bench_observe.py --sweep      # also the op at other launch blocks (BM, BE, warps)
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
import triton

from ssm_kernels import layer_norm, observe_norm_gate
from ssm_kernels.triton import observe as tobs

#: Spatial-Mamba-T's four stages at 224x224: (E = 2 * dim, map side)
STAGES = [(128, 56), (256, 28), (512, 14), (1024, 7)]
#: (BM, BE, warps) tried by --sweep, forward and backward
SWEEP = [(32, 128, 4), (32, 128, 8), (16, 128, 4), (16, 128, 8), (32, 64, 4), (16, 256, 8), (32, 256, 8), (64, 128, 8)]


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def inputs(batch, E, side, dtype, device):
    L, R = side * side, math.ceil(E / 2 / 16)
    h = torch.randn(batch, E, L, device=device).requires_grad_()
    proj = torch.randn(batch, R + 2, L, device=device, dtype=dtype).requires_grad_()
    u = torch.randn(batch, E, L, device=device, dtype=dtype).requires_grad_()
    xz = torch.randn(batch, side, side, 2 * E, device=device, dtype=dtype).requires_grad_()
    D, weight, bias = (torch.randn(E, device=device).requires_grad_() for _ in range(3))
    return h, proj, u, D, weight, bias, xz


def chain(h, proj, u, D, weight, bias, xz):
    batch, E, L = h.shape
    side = xz.shape[1]
    y = (h * proj[:, -1:] + u * D[:, None]).transpose(1, 2).view(batch, side, side, E)
    return layer_norm(y, weight, bias) * F.silu(xz[..., E:])


def op(h, proj, u, D, weight, bias, xz):
    return observe_norm_gate(h, proj[:, -1:], u, D, weight, bias, xz[..., h.shape[1]:])


def timings(fn, x, grad, dtype):
    def fwd():
        with torch.no_grad(), torch.autocast("cuda", dtype):
            fn(*x)

    def fwd_bwd():
        with torch.autocast("cuda", dtype):
            out = fn(*x)
        torch.autograd.backward(out, grad)

    return bench(fwd), bench(fwd_bwd)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    parser.add_argument("--sweep", action="store_true", help="also time the op at other launch blocks")
    args = parser.parse_args(argv)
    device, dtype = torch.device("cuda"), getattr(torch, args.dtype)
    print(f"{torch.cuda.get_device_name()}, batch {args.batch}, {args.dtype} autocast; median ms")
    print("| stage | path | fwd ms | fwd+bwd ms | note |")
    print("|---|---|---:|---:|---|")
    for stage, (E, side) in enumerate(STAGES):
        x = inputs(args.batch, E, side, dtype, device)
        grad = torch.randn(args.batch, side, side, E, device=device, dtype=dtype)
        with torch.no_grad(), torch.autocast("cuda", dtype):
            want, got = chain(*x).float(), op(*x).float()
        diff = ((got - want).abs().max() / want.abs().max()).item()
        label = f"s{stage + 1} {side}x{side} E={E}"
        elements = args.batch * E * side * side
        for name, fn in (("chain", chain), ("op", op)):
            f, fb = timings(fn, x, grad, dtype)
            note = f"{10 * elements / f / 1e6:.0f} GB/s fwd" if name == "op" else ""
            print(f"| {label} | {name} | {f:.3f} | {fb:.3f} | {note} |", flush=True)
        print(f"| {label} | max abs(op - chain) / max abs(chain) | | | {diff:.1e} |", flush=True)
        if args.sweep:
            saved = dict(tobs.TUNING)
            for BM, BE, warps in SWEEP:
                tobs.TUNING.update(fwd=dict(BM=BM, BE=BE, warps=warps), bwd=dict(BM=BM, BE=BE, warps=warps))
                f, fb = timings(op, x, grad, dtype)
                print(f"| {label} | op BM={BM} BE={BE} warps={warps} | {f:.3f} | {fb:.3f} | |", flush=True)
            tobs.TUNING.clear()
            tobs.TUNING.update(saved)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

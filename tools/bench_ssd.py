#!/usr/bin/env python
"""The non-causal SSD's Triton kernels against the plain matmul form (the official VSSD code's), on a GPU.

At VSSD's NC-SSD stage shapes (224x224, batch 128, inputs as the model passes them: x, B, C views of
one map, dt and z views of the projection), both under autocast, forward and forward + backward
(gradients of every input), times in ms (medians of triton.testing.do_bench), and the largest relative
difference of the outputs as a sanity check. Two rows per shape: the SSD alone, and the mixer's tail
(the SSD, the LayerNorm over the heads' channels and the gate: fused in the Triton op).

    python tools/bench_ssd.py [--batch 128] [--dtype bfloat16|float16] [--models tiny micro base]
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from ssm_kernels import non_causal_ssd

SHAPES = {  # model: (stage dims, heads, d_state); head dim = 2 * dim / heads
    "micro": ((48, 96, 192), (2, 4, 8), 48),
    "tiny": ((64, 128, 256), (2, 4, 8), 64),
    "base": ((96, 192, 384), (3, 6, 12), 64),
}


def matmul_form(x, dt, A, B, C, D, dt_bias):
    """The official code's form: Δ·a·x materialised, B and C broadcast over the heads by matmul."""
    batch, length, heads, _ = x.shape
    delta = F.softplus(dt + dt_bias)
    v = (x * (delta * A).unsqueeze(-1)).transpose(1, 2)               # (b, H, L, P)
    kv = B.unsqueeze(1).transpose(-2, -1) @ v                          # (b, H, N, P)
    y = C.unsqueeze(1) @ kv + x.transpose(1, 2) * D.view(1, -1, 1, 1)
    return y.transpose(1, 2).contiguous()


def triton_form(x, dt, A, B, C, D, dt_bias):
    return non_causal_ssd(x, dt, A, B, C, D, dt_bias, dt_softplus=True, backend="triton")


def matmul_tail(x, dt, A, B, C, D, dt_bias, z, weight, bias):
    """The official mixer's tail: the matmul form, nn.LayerNorm over the heads' channels, times z."""
    y = matmul_form(x, dt, A, B, C, D, dt_bias).flatten(2)
    return F.layer_norm(y, (y.shape[-1],), weight, bias) * z.flatten(2)


def triton_tail(x, dt, A, B, C, D, dt_bias, z, weight, bias):
    return non_causal_ssd(x, dt, A, B, C, D, dt_bias, dt_softplus=True, backend="triton", z=z, norm_weight=weight,
                          norm_bias=bias)


def make(batch, length, heads, P, N, dtype):
    xbc = torch.randn(batch, length, heads * P + 2 * N, device="cuda", dtype=dtype, requires_grad=True)
    proj = (torch.randn(batch, length, heads * P + 2 * N + heads, device="cuda", dtype=dtype) * 0.5).requires_grad_()
    params = [torch.rand(heads, device="cuda") * 15 + 1, torch.randn(heads, device="cuda"),
              torch.randn(heads, device="cuda") - 3, torch.rand(heads * P, device="cuda") + 0.5,
              torch.randn(heads * P, device="cuda")]
    for p in params:
        p.requires_grad_()
    return xbc, proj, params


def views(xbc, proj, params, heads, P, N, tail):
    """The op's arguments as the mixer passes them (with the gate z and the norm's weight and bias if tail)."""
    E = heads * P
    x = xbc[..., :E].unflatten(-1, (heads, P))
    B, C = xbc[..., E:E + N], xbc[..., E + N:]
    dt = proj[..., -heads:]
    A, D, bias, weight, norm_bias = params
    z = proj[..., :E].unflatten(-1, (heads, P))
    return (x, dt, A, B, C, D, bias) + ((z, weight, norm_bias) if tail else ())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--models", nargs="+", default=["micro", "tiny", "base"], choices=list(SHAPES))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_ssd needs a CUDA GPU", file=sys.stderr)
        return 2
    from triton.testing import do_bench
    dtype = getattr(torch, args.dtype)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}, {args.dtype} autocast")
    print("| op | shape (L, heads, P, N) | fwd matmul | fwd triton | speed-up | fwd+bwd matmul | fwd+bwd triton "
          "| speed-up | max rel diff |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for model in args.models:
        dims, heads_per_stage, N = SHAPES[model]
        for stage, (dim, heads) in enumerate(zip(dims, heads_per_stage)):
            side = args.size // (4 * 2 ** stage)
            L, P = side * side, 2 * dim // heads
            xbc, proj, params = make(args.batch, L, heads, P, N, dtype)
            dy = torch.randn(args.batch, L, heads, P, device="cuda", dtype=dtype)
            leaves = [xbc, proj, *params]
            for op, forms, tail in (("ssd", (matmul_form, triton_form), False),
                                    ("ssd+norm+gate", (matmul_tail, triton_tail), True)):
                times, outs = {}, {}
                for name, fn in zip(("matmul", "triton"), forms):
                    def fwd():
                        with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
                            return fn(*views(xbc, proj, params, heads, P, N, tail))

                    def fwd_bwd():
                        with torch.autocast("cuda", dtype=dtype):
                            y = fn(*views(xbc, proj, params, heads, P, N, tail))
                        torch.autograd.grad(y, leaves, dy.view(y.shape), allow_unused=True)

                    outs[name] = fwd().float().flatten(2)
                    times[name] = (do_bench(fwd, return_mode="median"), do_bench(fwd_bwd, return_mode="median"))
                diff = ((outs["triton"] - outs["matmul"]).abs().max() / outs["matmul"].abs().max()).item()
                (fm, bm), (ft, bt) = times["matmul"], times["triton"]
                print(f"| {op} | {model} s{stage + 1} ({L}, {heads}, {P}, {N}) | {fm:.3f} | {ft:.3f} | {fm / ft:.2f}x | "
                      f"{bm:.3f} | {bt:.3f} | {bm / bt:.2f}x | {diff:.1e} |", flush=True)
            del xbc, proj, params, dy, outs
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())

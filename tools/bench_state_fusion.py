#!/usr/bin/env python
"""GPU benchmark of Spatial-Mamba's state fusion + observation: the separate path against the one op.

At Spatial-Mamba-T's four stage shapes (batch 128, 224x224, E = 2 * dim channels, bf16 autocast as in
training) times, forward (no grad) and forward + backward:

- separate: ``state_fusion`` (float32 fused map) then the observation y = h' C + u D in PyTorch, viewed
  channels-last (what ``StructureAwareSSM`` runs with ``fused_observe=False``);
- fused: ``state_fusion_observe`` (one op, y channels-last in the autocast dtype, h' never stored);

each alone and followed by the mixer's out-norm (``nn.LayerNorm``, which copies the separate path's
transposed y to contiguous first; and, for the fused path, ``ssm_kernels.layer_norm`` as ``FastLayerNorm``
runs it, which the first fused model used). Inputs as the model gives them: the states float32 (B, E, H, W), C a
strided view of the (B, R + 2, L) projection, u (B, E, L) and the gradient in bf16. Also checks that the
two paths agree. Times are medians of ``triton.testing.do_bench`` (CUDA events), in milliseconds.

    python tools/bench_state_fusion.py
    python tools/bench_state_fusion.py --sweep     # also the fused kernels at other launch parameters

Switching the model to the fused op is worth it when "fused" beats "separate" forward and forward +
backward at stage 1 (where ~60% of the mixer's elements are), and not much worse elsewhere.
"""
from __future__ import annotations

import argparse
import math

import torch
import triton

from ssm_kernels import layer_norm, state_fusion, state_fusion_observe
from ssm_kernels.triton import state_fusion as sf

#: Spatial-Mamba-T's four stages at 224x224: (dim, map side); the mixer's E = 2 * dim
STAGES = [(64, 56), (128, 28), (256, 14), (512, 7)]
#: (P, BC, warps) tried by --sweep, forward and backward
SWEEP = [(1, 16, 8), (2, 8, 4), (2, 16, 8), (4, 8, 4), (4, 16, 8), (2, 32, 8), (8, 8, 8)]


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def inputs(batch, E, side, device):
    L, R = side * side, math.ceil(E / 2 / 16)
    h = torch.randn(batch, E, side, side, device=device).requires_grad_()
    weight = torch.randn(3, E, 3, 3, device=device).requires_grad_()
    alpha = torch.randn(3, device=device).requires_grad_()
    proj = torch.randn(batch, R + 2, L, device=device, dtype=torch.bfloat16).requires_grad_()
    u = torch.randn(batch, E, L, device=device, dtype=torch.bfloat16).requires_grad_()
    D = torch.randn(E, device=device).requires_grad_()
    return h, weight, alpha, proj, u, D


def paths(E, side, device):
    norm = torch.nn.LayerNorm(E, device=device)

    def separate(h, weight, alpha, proj, u, D):
        batch = h.shape[0]
        fused = state_fusion(h, weight, alpha, (1, 3, 5)).flatten(2)
        y = fused * proj[:, -1:] + u * D[:, None]
        return y.transpose(1, 2).view(batch, side, side, E)

    def fused(h, weight, alpha, proj, u, D):
        return state_fusion_observe(h, weight, alpha, proj[:, -1:], u, D, (1, 3, 5))

    return {"separate": separate, "fused": fused,
            "separate + LN": lambda *x: norm(separate(*x)), "fused + LN": lambda *x: norm(fused(*x)),
            # the first fused model also had the Triton LayerNorm (FastLayerNorm) there: its part, measured apart
            "fused + ssm_kernels.layer_norm": lambda *x: layer_norm(fused(*x), norm.weight, norm.bias)}


def timings(fn, x, grad):
    def fwd():
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
            fn(*x)

    def fwd_bwd():
        with torch.autocast("cuda", torch.bfloat16):
            out = fn(*x)
        torch.autograd.backward(out, grad.to(out.dtype))

    return bench(fwd), bench(fwd_bwd)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--sweep", action="store_true", help="also time the fused op at other launch parameters")
    args = parser.parse_args(argv)
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()}, batch {args.batch}, bf16 autocast; median ms")
    print("| stage | path | fwd ms | fwd+bwd ms |")
    print("|---|---|---:|---:|")
    for stage, (dim, side) in enumerate(STAGES):
        E = 2 * dim
        x = inputs(args.batch, E, side, device)
        grad = torch.randn(args.batch, side, side, E, device=device)
        fns = paths(E, side, device)
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
            want = fns["separate"](*x).float()
            diff = ((fns["fused"](*x).float() - want).abs().max() / want.abs().max()).item()
        label = f"s{stage + 1} {side}x{side} E={E}"
        for name, fn in fns.items():
            f, fb = timings(fn, x, grad)
            print(f"| {label} | {name} | {f:.3f} | {fb:.3f} |", flush=True)
        print(f"| {label} | max abs(fused - separate) / max abs(separate), bf16 y | {diff:.2e} | |", flush=True)
        if args.sweep:
            saved = (sf.OBS_P, sf.OBS_BC, sf.OBS_WARPS, sf.OBS_BWD_P, sf.OBS_BWD_BC, sf.OBS_BWD_WARPS)
            for P, BC, warps in SWEEP:
                sf.OBS_P, sf.OBS_BC, sf.OBS_WARPS = P, BC, warps
                sf.OBS_BWD_P, sf.OBS_BWD_BC, sf.OBS_BWD_WARPS = P, BC, warps
                f, fb = timings(fns["fused"], x, grad)
                print(f"| {label} | fused P={P} BC={BC} warps={warps} (fwd and bwd) | {f:.3f} | {fb:.3f} |",
                      flush=True)
            sf.OBS_P, sf.OBS_BC, sf.OBS_WARPS, sf.OBS_BWD_P, sf.OBS_BWD_BC, sf.OBS_BWD_WARPS = saved
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

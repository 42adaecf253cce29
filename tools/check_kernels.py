#!/usr/bin/env python
"""Correctness of the Triton scan kernels at full size, on a GPU.

For VMamba-T's stage shapes at 224x224 and 512x512 (batch 32) and a Vim-like N = 16 sequence, runs
the Triton selective scan, the state-only scan at Spatial-Mamba-T's stage shapes (N = 1, every state
returned, the gradient flowing in through the states) and its state fusion, the fused 2-D scan (also as VMamba calls it: low-rank step size, dt/B/C
read in place from one projection, the out-norm fused) and the LayerNorm, in float32 and bfloat16,
forward and backward, with every output buffer NaN-poisoned (an unwritten element fails), against
the reference backend run in float64 on the same inputs. Fresh random inputs per case. Pass:
relative error (||x - ref|| / ||ref||) under 1e-4 for float32 and 1e-2 for bfloat16, outputs and the
gradients of every input.

    python tools/check_kernels.py [--batch 32] [--sizes 224 512]
    TRITON_INTERPRET=1 python tools/check_kernels.py --device cpu --batch 1 --sizes 32   # dry run on CPU
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ["SSM_KERNELS_POISON"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ssm_kernels import CROSS, layer_norm, scan2d, selective_scan, selective_scan_states, state_fusion  # noqa: E402

TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2}


def rel(a, b) -> float:
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("nan")
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def scan_case(batch, K, Dg, N, L, dtype, device):
    mk = lambda *s: torch.randn(*s, device=device).to(dtype)
    return dict(u=mk(batch, K * Dg, L), delta=mk(batch, K * Dg, L) - 1.0,
                A=-torch.rand(K * Dg, N, device=device) * 2 - 0.05, B=mk(batch, K, N, L), C=mk(batch, K, N, L),
                D=torch.randn(K * Dg, device=device), z=mk(batch, K * Dg, L),
                delta_bias=torch.randn(K * Dg, device=device) * 0.5)


def states_case(batch, D, N, L, dtype, device):
    """Spatial-Mamba's state equation: u, delta (batch, D, L), B (batch, N, L), no C, no D."""
    mk = lambda *s: torch.randn(*s, device=device).to(dtype)
    return dict(u=mk(batch, D, L), delta=mk(batch, D, L) - 1.0, A=-torch.rand(D, N, device=device) * 2 - 0.05,
                B=mk(batch, N, L), delta_bias=torch.randn(D, device=device) * 0.5)


def fusion_case(batch, E, side, dtype, device):
    """Spatial-Mamba's state fusion: the (batch, E, side, side) states, three 3x3 kernels per channel, alpha."""
    return dict(h=torch.randn(batch, E, side, side, device=device).to(dtype),
                weight=torch.randn(3, E, 3, 3, device=device) / 3, alpha=torch.randn(3, device=device))


def map_case(batch, H, W, Dg, N, dtype, device):
    mk = lambda *s: torch.randn(*s, device=device).to(dtype)
    return dict(u=mk(batch, H, W, Dg), delta=mk(batch, H, W, 4, Dg) - 1.0, A=-torch.rand(4 * Dg, N, device=device) - 0.1,
                B=mk(batch, H, W, 4, N), C=mk(batch, H, W, 4, N), D=torch.randn(4 * Dg, device=device),
                delta_bias=torch.randn(4 * Dg, device=device) * 0.5)


def vmamba_case(batch, H, W, Dg, N, dtype, device):
    """VMamba's call: dt (low rank), B and C as views of one projection, the float32 step-size
    projection weight, the LayerNorm after the merge fused in (its weight and bias are inputs too)."""
    rank = -(-Dg // 16)
    x = map_case(batch, H, W, Dg, N, dtype, device)
    del x["delta"], x["B"], x["C"]
    x["proj"] = torch.randn(batch, H, W, 4, rank + 2 * N, device=device).to(dtype)
    x["dt_weight"] = torch.randn(4, Dg, rank, device=device) * rank ** -0.5
    x["norm_weight"] = torch.rand(Dg, device=device) + 0.5
    x["norm_bias"] = torch.randn(Dg, device=device)
    return x


def norm_case(batch, H, W, C, dtype, device):
    """The blocks' pre-norm: LayerNorm over C of a (batch, H, W, C) map."""
    return dict(x=(torch.randn(batch, H, W, C, device=device) * 2 + 0.5).to(dtype),
                weight=torch.rand(C, device=device) + 0.5, bias=torch.randn(C, device=device))


class _Norm:
    """A LayerNorm over channels whose weight and bias are given tensors (leaves of the comparison)."""

    def __init__(self, weight, bias):
        self.weight, self.bias, self.eps, self.normalized_shape = weight, bias, 1e-5, tuple(weight.shape)

    def __call__(self, y):
        return F.layer_norm(y, self.normalized_shape, self.weight.to(y.dtype), self.bias.to(y.dtype), self.eps)


def compare(fn, inputs, dtype):
    """(forward error, {input: gradient error}) of the Triton op against the float64 reference."""
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    exact = {k: v.detach().double().requires_grad_() for k, v in inputs.items()}
    got = fn(leaves, "triton")
    ref = fn(exact, "reference")
    got, ref = (got if isinstance(got, tuple) else (got,)), (ref if isinstance(ref, tuple) else (ref,))
    errors = [rel(g, r) for g, r in zip(got, ref)]
    seeds = [torch.randn_like(r) for r in ref]
    g_got = torch.autograd.grad(got, list(leaves.values()), [s.to(g.dtype) for s, g in zip(seeds, got)])
    g_ref = torch.autograd.grad(ref, list(exact.values()), seeds)
    grads = {k: rel(a, b) for k, a, b in zip(leaves, g_got, g_ref)}
    return max(errors), grads


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512], help="image sizes of the stage shapes")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here (dry-run on CPU: TRITON_INTERPRET=1 ... --device cpu)", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU (Triton interpreter)'}, "
          f"torch {torch.__version__}")
    cases = []
    for size in args.sizes:
        for stage, dim in enumerate((96, 192, 384, 768)):
            side = size // (4 * 2 ** stage)
            cases.append((f"selective_scan VMamba-T s{stage + 1} @{size}", "seq", (args.batch, 4, dim, 1, side * side)))
            cases.append((f"scan2d VMamba-T s{stage + 1} @{size}", "map", (args.batch, side, side, dim, 1)))
            cases.append((f"scan2d as VMamba calls it s{stage + 1} @{size}", "vmamba",
                          (args.batch, side, side, dim, 1)))
            cases.append((f"layer_norm s{stage + 1} @{size}", "norm", (args.batch, side, side, dim)))
        for stage, inner in enumerate((128, 256, 512, 1024)):  # Spatial-Mamba-T: E = 2 * dim
            side = size // (4 * 2 ** stage)
            cases.append((f"selective_scan_states Spatial-Mamba-T s{stage + 1} @{size}", "states",
                          (args.batch, inner, 1, side * side)))
            cases.append((f"state_fusion Spatial-Mamba-T s{stage + 1} @{size}", "fusion", (args.batch, inner, side)))
    if device.type == "cuda":
        cases.append(("selective_scan Vim-like N=16", "seq", (args.batch, 1, 768, 16, 197)))
        cases.append(("scan2d N=16 28x28", "map", (max(1, args.batch // 4), 28, 28, 96, 16)))

    def seq_fn(x, backend):
        return selective_scan(**x, delta_softplus=True, return_last_state=True, backend=backend)

    def states_fn(x, backend):
        return selective_scan_states(**x, delta_softplus=True, backend=backend)

    def fusion_fn(x, backend):
        return state_fusion(**x, dilations=(1, 3, 5), backend=backend)

    def norm_fn(x, backend):
        return layer_norm(**x, backend=backend)

    def map_fn(x, backend):
        x = dict(x)
        if "proj" in x:  # as VMamba calls it
            rank = x["dt_weight"].shape[2]
            N = (x["proj"].shape[-1] - rank) // 2
            x["delta"], x["B"], x["C"] = x.pop("proj").split([rank, N, N], dim=-1)
            x["out_norm"] = _Norm(x.pop("norm_weight"), x.pop("norm_bias"))
        return scan2d(**x, paths=CROSS(x["u"].shape[1], x["u"].shape[2], x["u"].device), backend=backend)

    # each kind of case: (its inputs, the op that runs them)
    kinds = {"seq": (scan_case, seq_fn), "map": (map_case, map_fn), "vmamba": (vmamba_case, map_fn),
             "states": (states_case, states_fn), "fusion": (fusion_case, fusion_fn),
             "norm": (norm_case, norm_fn)}
    print("| case | shape | dtype | fwd rel err | worst grad (rel err) | result |")
    print("|---|---|---|---:|---|---|")
    failures = 0
    for name, kind, shape in cases:
        for dtype in (torch.float32, torch.bfloat16):
            start = time.time()
            make_inputs, fn = kinds[kind]
            inputs = make_inputs(*shape, dtype, device)
            fwd, grads = compare(fn, inputs, dtype)
            worst = max(grads, key=lambda k: (grads[k] != grads[k], grads[k]))
            ok = fwd < TOL[dtype] and all(g < TOL[dtype] for g in grads.values())
            failures += not ok
            print(f"| {name} | {shape} | {str(dtype)[6:]} | {fwd:.1e} | d{worst} {grads[worst]:.1e} | "
                  f"{'pass' if ok else 'FAIL'} ({time.time() - start:.0f}s) |", flush=True)
            del inputs
            torch.cuda.empty_cache()
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

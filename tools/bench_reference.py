#!/usr/bin/env python
"""CPU benchmark of the reference selective scan against the naive step-by-step loop.

Shapes are VMamba-T's four stages at 224x224 (K = 4 directions, N = 1) and a Vim-S-like sequence
(N = 16). For each: forward time, forward+backward time, and the bytes autograd keeps for backward
(the memory that grows with the sequence), for

- naive:       one position at a time, autograd through the loop;
- reference:   the public op on the reference backend (chunked doubling scan, chunk-recompute backward);
- ref-autograd: the same chunked scan with plain autograd through it (what the recompute saves).

    python tools/bench_reference.py [--batch-size 8] [--repeats 3] [--skip-naive]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from ssm_kernels import selective_scan
from ssm_kernels.reference import selective_scan_naive, selective_scan_ref

SHAPES = [  # (label, channels K*D, length L, d_state N, groups K)
    ("VMamba-T stage 1 (56x56)", 4 * 96, 3136, 1, 4),
    ("VMamba-T stage 2 (28x28)", 4 * 192, 784, 1, 4),
    ("VMamba-T stage 3 (14x14)", 4 * 384, 196, 1, 4),
    ("VMamba-T stage 4 (7x7)", 4 * 768, 49, 1, 4),
    ("Vim-S-like (197 tokens, N=16)", 768, 197, 16, 1),
]


def _inputs(batch, channels, length, d_state, groups):
    g = lambda *s: torch.randn(*s, requires_grad=True)
    return (g(batch, channels, length), g(batch, channels, length),
            (-torch.rand(channels, d_state) - 0.1).requires_grad_(), g(batch, groups, d_state, length),
            g(batch, groups, d_state, length), g(channels), None, g(channels))


def _saved_bytes(fn, args) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return total


def _time(fn, repeats) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-naive", action="store_true", help="leave out the (slow) naive loop")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    impls = {
        "naive": lambda *a: selective_scan_naive(*a, delta_softplus=True),
        "reference": lambda *a: selective_scan(*a, delta_softplus=True, backend="reference"),
        "ref-autograd": lambda *a: selective_scan_ref(*a, delta_softplus=True),
    }
    if args.skip_naive:
        impls.pop("naive")
    print(f"CPU, {torch.get_num_threads()} threads, batch {args.batch_size}, float32; times in ms (median of {args.repeats})")
    print("| shape | (K*D, L, N) | impl | forward | fwd+bwd | saved for backward (MiB) |")
    print("|---|---|---|---:|---:|---:|")
    for label, channels, length, d_state, groups in SHAPES:
        inputs = _inputs(args.batch_size, channels, length, d_state, groups)
        for name, fn in impls.items():
            with torch.no_grad():
                fwd = _time(lambda: fn(*inputs), args.repeats)
            both = _time(lambda: fn(*inputs).sum().backward(), args.repeats)
            saved = _saved_bytes(fn, inputs) / 2 ** 20
            print(f"| {label} | ({channels}, {length}, {d_state}) | {name} | {fwd:.1f} | {both:.1f} | {saved:.1f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""The host's single-thread speed over time: a fixed pure-Python loop, timed every few seconds on one CPU.

    python tools/host_speed.py --cpu 12 --seconds 600 > host_speed.txt &   # beside a benchmark on CPUs 0-3
    python tools/benchmark.py --model vmamba_tiny swin_tiny_patch4_window7_224 --passes 3

A model whose host issues its kernels slower than the GPU runs them (eager vmamba_tiny at batch 128) runs at the
host's speed, so its img/s moves with the CPU's, where a GPU-bound model's (Swin-T's) does not. This tells how much the
CPU itself moves: each line is the time of the same loop (about 17 ms on an idle, fast core of a lent H200 host), and
the summary at the end gives its spread. Run it on a CPU outside the benchmark's (``benchmark.py --cpus``): it takes
about 1% of that CPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def loop_ms(n: int = 200_000) -> float:
    """Milliseconds of a fixed pure-Python loop (integer arithmetic: the interpreter's speed, no memory traffic)."""
    start = time.perf_counter()
    total = 0
    for i in range(n):
        total += i * i
    return 1000 * (time.perf_counter() - start)


def summary(samples) -> str:
    """min / median / 90th percentile / max of the samples (ms), and the share at least 1.5x the fastest."""
    ordered = sorted(samples)
    fast = ordered[0]
    slow = sum(s >= 1.5 * fast for s in ordered) / len(ordered)
    return (f"{len(ordered)} samples: min {fast:.2f} ms, median {statistics.median(ordered):.2f}, "
            f"p90 {ordered[int(0.9 * (len(ordered) - 1))]:.2f}, max {ordered[-1]:.2f}; "
            f"{100 * slow:.0f}% at least 1.5x the fastest")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: as started)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to sample")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between samples")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        if args.cpu not in os.sched_getaffinity(0):
            print(f"CPU {args.cpu} is not one this process may use: {sorted(os.sched_getaffinity(0))}",
                  file=sys.stderr)
            return 2
        os.sched_setaffinity(0, {args.cpu})
    start, samples = time.time(), []
    while True:
        samples.append(loop_ms())
        print(f"{time.time() - start:7.1f} s: {samples[-1]:6.2f} ms", flush=True)
        if time.time() - start + args.interval > args.seconds:
            break
        time.sleep(args.interval)
    print(summary(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())

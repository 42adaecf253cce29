#!/usr/bin/env python
"""End-to-end GPU throughput of zoo models beside any timm model (Swin-T, ConvNeXt-T, ...).

Images per second at a fixed batch under autocast (fp16 by default): inference (forward, no grad)
and training (forward + backward + SGD step), with peak GPU memory.

    python tools/benchmark.py                                  # vmamba_tiny vs Swin-T and ConvNeXt-T
    python tools/benchmark.py --models vmamba_tiny vmamba_small vmamba_base --batch-size 128 --compile
    python tools/benchmark.py --compile reduce-overhead     # CUDA graphs: for hosts slower than the GPU
"""
from __future__ import annotations

import argparse
import sys

import timm
import torch

import vmamba_zoo  # noqa: F401  (registers the zoo's models)
from vmamba_zoo.profiling import measure_throughput

DEFAULT_MODELS = ["vmamba_tiny", "swin_tiny_patch4_window7_224", "convnext_tiny"]


def profile(model, kw, train: bool):
    """GPU time per kernel over a few steps (torch.profiler), largest first."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        measure_throughput(model, train=train, **dict(kw, steps=3, warmup=0))
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--amp", choices=["fp16", "bf16"], default="fp16")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                        help="torch.compile each model first, in MODE (default; 'reduce-overhead' replays CUDA "
                             "graphs: no per-kernel launch cost on the host)")
    parser.add_argument("--channels-last", action="store_true", help="feed channels-last images")
    parser.add_argument("--no-train", action="store_true", help="inference only")
    parser.add_argument("--profile", action="store_true", help="print the GPU kernels' time table per model")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    amp = torch.float16 if args.amp == "fp16" else torch.bfloat16
    torch.backends.cudnn.benchmark = True
    rows = []
    for name in args.models:
        model = timm.create_model(name).cuda()
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        run = torch.compile(model, mode=args.compile) if args.compile else model
        kw = dict(batch_size=args.batch_size, img_size=args.img_size, amp_dtype=amp, steps=args.steps,
                  channels_last=args.channels_last)
        inf = measure_throughput(run, train=False, **kw)
        train = (None, None) if args.no_train else measure_throughput(run, train=True, **kw)
        rows.append((name, inf, train))
        if args.profile:
            profile(run, kw, train=not args.no_train)
        print(f"{name}: inference {inf[0]:.0f} img/s ({inf[1]:.1f} GiB)"
              + ("" if args.no_train else f", training {train[0]:.0f} img/s ({train[1]:.1f} GiB)"), flush=True)
        del model, run
        torch.cuda.empty_cache()
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch_size}, "
          f"{args.img_size}x{args.img_size}, {args.amp} autocast"
          + (f", compiled ({args.compile})" if args.compile else "")
          + ("; peak memory leaves out the CUDA graphs' pool, made before the timed steps"
             if args.compile == "reduce-overhead" else ""))
    print("| model | inference img/s (peak GiB) | training img/s (peak GiB) |\n|---|---:|---:|")
    for name, inf, train in rows:
        t = "—" if train[0] is None else f"{train[0]:.0f} ({train[1]:.1f})"
        print(f"| {name} | {inf[0]:.0f} ({inf[1]:.1f}) | {t} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

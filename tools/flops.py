#!/usr/bin/env python
"""Parameters and GFLOPs of a zoo model, counted as the papers count them.

    python tools/flops.py --model vmamba_tiny
    python tools/flops.py --model vmamba_small --img-size 512
    python tools/flops.py --model vmamba_base --img-size 800 1280 --by-operator
"""
from __future__ import annotations

import argparse
import sys

import timm

import vmamba_zoo
from vmamba_zoo.profiling import count_params, flop_analysis


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help=f"one of: {', '.join(vmamba_zoo.list_models())}")
    parser.add_argument("--img-size", type=int, nargs="+", default=[224], metavar="N",
                        help="input size: N (square) or H W (default 224)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (0: backbone only)")
    parser.add_argument("--by-operator", action="store_true", help="also print FLOPs per operator type")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.model not in vmamba_zoo.list_models():
        print(f"unknown model {args.model!r}; the zoo has: {', '.join(vmamba_zoo.list_models())}", file=sys.stderr)
        return 2
    if len(args.img_size) not in (1, 2):
        print("--img-size takes N or H W", file=sys.stderr)
        return 2
    height, width = (args.img_size * 2)[:2]
    model = timm.create_model(args.model, num_classes=args.num_classes).eval()
    analysis = flop_analysis(model, input_size=(3, height, width))
    print(f"{args.model} @ {height}x{width}: params {count_params(model) / 1e6:.2f} M, "
          f"GFLOPs {analysis.total() / 1e9:.3f}")
    if args.by_operator:
        for op, flops in sorted(analysis.by_operator().items(), key=lambda kv: -kv[1]):
            print(f"  {op:<28s} {flops / 1e9:10.4f} G")
    return 0


if __name__ == "__main__":
    sys.exit(main())

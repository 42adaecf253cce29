#!/usr/bin/env python
"""The zoo table: every model's parameters, GFLOPs and forward latency, beside the published numbers.

    python tools/zoo_table.py                       # all models, 224x224, CPU latency at batch 1
    python tools/zoo_table.py --models 'vmamba_*' --img-size 512 --batch-size 2
"""
from __future__ import annotations

import argparse
import sys

import timm
import torch
from tqdm import tqdm

import vmamba_zoo
from vmamba_zoo.models import PUBLISHED
from vmamba_zoo.profiling import count_flops, count_params, measure_latency


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="wildcard filter on model names (default: all)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=1, help="batch size of the latency measurement")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes (median reported)")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def _fmt(value, spec):
    return "—" if value is None else format(value, spec)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = vmamba_zoo.list_models(args.models)
    if not names:
        print(f"no model matches {args.models!r}", file=sys.stderr)
        return 2
    size = (3, args.img_size, args.img_size)
    rows = []
    for name in tqdm(names, desc="measuring", unit="model", file=sys.stderr):
        model = timm.create_model(name).eval()
        flops = count_flops(model, size)
        latency = measure_latency(model.to(args.device), size, args.batch_size, repeats=args.repeats)
        rows.append((name, count_params(model), flops, latency, PUBLISHED.get(name, {})))
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"| model | params (M) | paper params (M) | GFLOPs @{args.img_size} | paper GFLOPs | "
          f"latency (ms, batch {args.batch_size}, {where}) | paper top-1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, params, flops, latency, paper in rows:
        print(f"| {name} | {params / 1e6:.2f} | {_fmt(paper.get('params_m'), 'g')} | {flops / 1e9:.2f} | "
              f"{_fmt(paper.get('gflops') if args.img_size == 224 else None, 'g')} | {latency:.1f} | "
              f"{_fmt(paper.get('top1'), '.1f')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

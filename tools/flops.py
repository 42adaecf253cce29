#!/usr/bin/env python
"""Parameters and GFLOPs of a zoo model, or of a whole detector / segmentor, counted as the papers count them.

    python tools/flops.py --model vmamba_tiny
    python tools/flops.py --model vmamba_small --img-size 512
    python tools/flops.py --model vmamba_base --img-size 800 1280 --by-operator
    python tools/flops.py --config configs/mmdet/mask-rcnn_vmamba-t_fpn_1x_coco.py      # at 1280x800
    python tools/flops.py --config configs/mmseg/upernet_vmamba-t_8xb2-160k_ade20k-512x512.py   # at 512x2048

With ``--config`` the model is built from an mmdet / mmseg config (randomly initialised, nothing is
downloaded) and one image of ``--shape H W`` goes through its inference graph in 'tensor' mode, as the
VMamba authors' analysis counts it: for Mask R-CNN backbone, FPN, RPN, the box head on the RPN's
proposals (up to 1000) and the mask head on the first 100 of them, at 1280x800 (mmdet's get_flops
default; H and W swapped give the same count); for UperNet backbone and decode head (the auxiliary
head is training only, but its parameters are counted, as the papers do) at 512x2048.
"""
from __future__ import annotations

import argparse
import sys
import warnings

import timm

# fvcore calls torch.jit.script when imported, which torch 2.14 answers with a FutureWarning (as pytest.ini)
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

import vmamba_zoo  # noqa: E402
from vmamba_zoo.profiling import count_params, flop_analysis  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help=f"one of: {', '.join(vmamba_zoo.list_models())}")
    target.add_argument("--config", help="an mmdet / mmseg config: count the whole detector or segmentor")
    parser.add_argument("--shape", type=int, nargs=2, metavar=("H", "W"),
                        help="input of --config (default 1280 800 for mmdet, 512 2048 for mmseg)")
    parser.add_argument("--img-size", type=int, nargs="+", default=[224], metavar="N",
                        help="input size: N (square) or H W (default 224)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (0: backbone only)")
    parser.add_argument("--by-operator", action="store_true", help="also print FLOPs per operator type")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.config:
        return report_config(args.config, args.shape, args.by_operator)
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


#: the inputs the papers count detection and segmentation at, (H, W)
DEFAULT_SHAPES = {"mmdet": (1280, 800), "mmseg": (512, 2048)}


def config_complexity(config: str, shape=None, cfg_options=None) -> dict:
    """Build the model of an mm config and count it: params and FLOPs, total and per top-level part.

    Returns dict(scope, shape, params, flops, parts={name: (params, flops)}, analysis).
    """
    import torch

    from vmamba_zoo.mm import build_model_from_config

    model, scope = build_model_from_config(config, cfg_options)
    model.eval()
    height, width = shape or DEFAULT_SHAPES[scope]
    meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
                batch_input_shape=(height, width), scale_factor=(1.0, 1.0), padding_size=[0, 0, 0, 0])
    if scope == "mmdet":
        from mmdet.structures import DetDataSample as Sample
    else:
        from mmseg.structures import SegDataSample as Sample
    samples = [Sample(metainfo=meta)]

    class Graph(torch.nn.Module):  # the inference graph without post-processing, as mm's 'tensor' mode
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x, samples, mode="tensor")

    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, height, width, generator=generator)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = flop_analysis(Graph(), inputs=(image,))
        total = int(analysis.total())
        by_module = analysis.by_module()
    parts = {name: (count_params(child), int(by_module.get(f"model.{name}", 0)))
             for name, child in model.named_children() if count_params(child)}
    return dict(scope=scope, shape=(height, width), params=count_params(model), flops=total, parts=parts,
                analysis=analysis)


def report_config(config: str, shape=None, by_operator: bool = False) -> int:
    result = config_complexity(config, shape)
    height, width = result["shape"]
    print(f"{config} @ {height}x{width} ({result['scope']}): params {result['params'] / 1e6:.2f} M, "
          f"GFLOPs {result['flops'] / 1e9:.1f}")
    for name, (params, flops) in result["parts"].items():
        print(f"  {name:<16s} params {params / 1e6:7.2f} M   GFLOPs {flops / 1e9:8.1f}")
    if by_operator:
        for op, flops in sorted(result["analysis"].by_operator().items(), key=lambda kv: -kv[1]):
            print(f"  {op:<28s} {flops / 1e9:10.4f} G")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Export a zoo model to ONNX, and check it with ONNX Runtime.

    python tools/export_onnx.py --model vmamba_tiny                       # -> vmamba_tiny.onnx, 1x3x224x224
    python tools/export_onnx.py --model vmamba_small --img-size 256 --output small.onnx --check
    python tools/export_onnx.py --model vmamba_tiny --checkpoint vssm1_tiny_0230s_ckpt_epoch_264.pth --check

``torch.onnx.export`` with the dynamo exporter (``torch.export`` then ONNX, opset 18+). The scan ops
export through their plain-PyTorch reference (``ssm_kernels.is_exporting``): the graph holds only
standard ONNX operators (the scan as a chunked log-depth recurrence, the scan paths as constant gather
indices), so any ONNX runtime runs it; none of the official repositories can export their models, whose
scans are CUDA extensions. The graph is specialised to the batch and image size given (the scan paths
and the scan's chunking depend on the map size): export one file per input size.

``--check`` runs the file with ONNX Runtime on CPU on a random image and prints the largest difference
from PyTorch's float32 logits; it fails (exit 1) above 1e-4 relative to the largest logit.
Needs the ``onnx`` extra: ``pip install -e ".[onnx]"`` (onnx, onnxscript, onnxruntime).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import timm
import torch

import vmamba_zoo

#: ONNX Runtime's logits must match PyTorch's within this, relative to the largest |logit|
TOLERANCE = 1e-4


def export(model: torch.nn.Module, example: torch.Tensor, path, optimize: bool = True) -> Path:
    """Export ``model`` (put in eval mode) for inputs shaped like ``example`` to the ONNX file ``path``."""
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on constants and deprecated paths
        program = torch.onnx.export(model, (example,), dynamo=True, optimize=optimize, verbose=False,
                                    input_names=["image"], output_names=["logits"])
    program.save(str(path))
    return Path(path)


#: --ort-level: ONNX Runtime's graph optimisation levels
ORT_LEVELS = dict(disable="ORT_DISABLE_ALL", basic="ORT_ENABLE_BASIC", extended="ORT_ENABLE_EXTENDED",
                  all="ORT_ENABLE_ALL")


def run_onnxruntime(path, example: torch.Tensor, level: str = "all") -> torch.Tensor:
    """The ONNX file's output for ``example``, computed by ONNX Runtime on CPU at optimisation ``level``."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, ORT_LEVELS[level])
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: example.numpy()})
    return torch.from_numpy(out)


def check(path, model: torch.nn.Module, example: torch.Tensor, level: str = "all"):
    """(max |ONNX Runtime - PyTorch|, the same relative to max |PyTorch|) on ``example``, float32."""
    with torch.no_grad():
        expected = model.eval()(example)
    got = run_onnxruntime(path, example, level)
    diff = (got - expected).abs().max().item()
    return diff, diff / expected.abs().max().item()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help=f"one of: {', '.join(vmamba_zoo.list_models())}")
    parser.add_argument("--img-size", type=int, nargs="+", default=None, metavar="N",
                        help="input size: N (square) or H W (default: the model's pretrained input size)")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size the graph is built for (default 1)")
    parser.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default: the model's)")
    parser.add_argument("--checkpoint", help="weights to export: an official or zoo checkpoint file")
    parser.add_argument("--output", help="the ONNX file (default: <model>.onnx)")
    parser.add_argument("--no-optimize", action="store_true", help="skip the exporter's graph optimisation")
    parser.add_argument("--check", action="store_true",
                        help=f"compare ONNX Runtime (CPU) with PyTorch; fail above {TOLERANCE:g} relative")
    parser.add_argument("--ort-level", choices=tuple(ORT_LEVELS), default="all",
                        help="ONNX Runtime graph optimisation level for --check (default all)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.model not in vmamba_zoo.list_models():
        print(f"unknown model {args.model!r}; the zoo has: {', '.join(vmamba_zoo.list_models())}", file=sys.stderr)
        return 2
    kwargs = {} if args.num_classes is None else dict(num_classes=args.num_classes)
    if args.checkpoint:
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=args.checkpoint))
    model = timm.create_model(args.model, **kwargs).eval()
    if args.img_size is None:
        height, width = model.pretrained_cfg["input_size"][1:]
    elif len(args.img_size) in (1, 2):
        height, width = (args.img_size * 2)[:2]
    else:
        print("--img-size takes N or H W", file=sys.stderr)
        return 2
    example = torch.randn(args.batch_size, model.pretrained_cfg["input_size"][0], height, width)
    with torch.no_grad():
        model(example)  # a size the model does not take fails here, with the model's own message
    path = export(model, example, args.output or f"{args.model}.onnx", optimize=not args.no_optimize)
    print(f"{args.model} @ {args.batch_size}x{example.shape[1]}x{height}x{width} -> {path} "
          f"({path.stat().st_size / 2 ** 20:.1f} MiB)")
    if args.check:
        diff, relative = check(path, model, example, args.ort_level)
        ok = relative <= TOLERANCE
        print(f"ONNX Runtime (CPU) vs PyTorch float32 logits: max |difference| {diff:.3g} "
              f"({relative:.3g} relative) {'ok' if ok else f'FAILED (> {TOLERANCE:g})'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

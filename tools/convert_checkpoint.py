#!/usr/bin/env python
"""Convert an official checkpoint into a zoo state dict (and check that it loads).

    python tools/convert_checkpoint.py --model vmamba_tiny \
        --input vssm1_tiny_0230s_ckpt_epoch_264.pth --output vmamba_tiny.in1k.pth
    python tools/convert_checkpoint.py --mm-config configs/mmdet/mask-rcnn_vmamba-t_fpn_1x_coco.py \
        --input official_mask_rcnn_vmamba_tiny.pth --output mask-rcnn_vmamba-t_fpn_1x_coco.pth

With ``--mm-config`` the input is an official detection / segmentation checkpoint (backbone, neck
and heads): the backbone keys are converted, the rest kept, the result is checked to load strictly
into the config's model, and written as an mmengine checkpoint for ``tools/test.py CONFIG OUTPUT``
or ``load_from``.

The output loads with ``model.load_state_dict(torch.load(path))`` or, through timm,
``timm.create_model("vmamba_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=path))``
(timm also accepts the official file directly that way). Key mismatches are listed and fail.
"""
from __future__ import annotations

import argparse
import sys

import timm
import torch

import vmamba_zoo
from vmamba_zoo.models import (CheckpointMismatchError, CheckpointReadError, convert_official_state_dict, load_checkpoint_file,
                               unwrap_state_dict)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help=f"one of: {', '.join(vmamba_zoo.list_models())}")
    target.add_argument("--mm-config", help="an mmdet / mmseg config of ours: convert a whole detector / segmentor")
    parser.add_argument("--input", required=True, help="official checkpoint (.pth)")
    parser.add_argument("--output", required=True, help="where to write the converted state dict (.pth or .safetensors)")
    return parser.parse_args(argv)


def convert(model_name: str, checkpoint) -> dict:
    """The zoo state dict for ``model_name`` from an official checkpoint (dict); raises on mismatch."""
    state_dict = unwrap_state_dict(checkpoint)
    head = state_dict.get("classifier.head.weight", state_dict.get("head.weight", state_dict.get("head.fc.weight")))
    num_classes = head.shape[0] if head is not None else 0
    model = timm.create_model(model_name, num_classes=num_classes)
    converted = convert_official_state_dict(state_dict, model)
    model.load_state_dict(converted, strict=True)
    return model.state_dict()


def convert_dense(config: str, checkpoint) -> dict:
    """The state dict of the model of an mm ``config`` from an official detector / segmentor checkpoint."""
    from vmamba_zoo.mm import build_model_from_config, convert_dense_state_dict

    model, _ = build_model_from_config(config)
    converted = convert_dense_state_dict(checkpoint, model.backbone)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise CheckpointMismatchError(config, missing, unexpected, [])
    return model.state_dict()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except CheckpointReadError as err:  # missing, empty, truncated or not a checkpoint: say so and stop
        print(err, file=sys.stderr)
        return 2


def run(args) -> int:
    """Convert as ``args`` say; exit status."""
    if args.mm_config:
        try:
            state_dict = convert_dense(args.mm_config, load_checkpoint_file(args.input))
        except CheckpointMismatchError as err:
            print(err, file=sys.stderr)
            return 1
        torch.save({"state_dict": state_dict, "meta": {"converted_from": args.input}}, args.output)
        print(f"wrote {len(state_dict)} tensors for {args.mm_config} to {args.output}")
        return 0
    if args.model not in vmamba_zoo.list_models():
        print(f"unknown model {args.model!r}; the zoo has: {', '.join(vmamba_zoo.list_models())}", file=sys.stderr)
        return 2
    checkpoint = load_checkpoint_file(args.input)
    try:
        state_dict = convert(args.model, checkpoint)
    except CheckpointMismatchError as err:
        print(err, file=sys.stderr)
        return 1
    if args.output.endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state_dict.items()}, args.output)
    else:
        torch.save(state_dict, args.output)
    print(f"wrote {len(state_dict)} tensors for {args.model} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

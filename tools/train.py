#!/usr/bin/env python
"""Train a detector or segmentor from an mmdet / mmseg config, through mmengine's Runner.

    python tools/train.py configs/mmdet/mask-rcnn_vmamba-t_fpn_1x_coco.py
    python tools/train.py CONFIG --work-dir work_dirs/run1 --amp --cfg-options train_dataloader.batch_size=4
    python tools/train.py CONFIG --resume                  # the latest checkpoint in the work dir
    bash tools/dist_train.sh CONFIG 8                      # 8 GPUs (torchrun, --launcher pytorch)

The flags are those of mmdet's and mmseg's own tools/train.py. Any config works whose codebase is
installed (its ``default_scope`` picks mmdet or mmseg); the zoo's backbones come in through the
config's ``custom_imports``.
"""
from __future__ import annotations

import argparse
import sys

from mmengine.config import Config

from _runner_args import add_common_args, load_config, runner_for


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="train config file")
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default ./work_dirs/<config name>)")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (GPU)")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help="scale the lr by total batch size / the config's auto_scale_lr.base_batch_size")
    parser.add_argument("--resume", nargs="?", type=str, const="auto",
                        help="resume from this checkpoint, or (no value) from the latest one in the work dir")
    add_common_args(parser)
    return parser.parse_args(argv)


def build_config(args) -> Config:
    cfg = load_config(args)
    if args.amp:
        if cfg.optim_wrapper.get("type", "OptimWrapper") == "AmpOptimWrapper":
            print("AMP is already enabled in the config", file=sys.stderr)
        else:
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    if args.auto_scale_lr:
        if "auto_scale_lr" not in cfg or "base_batch_size" not in cfg.auto_scale_lr:
            raise ValueError("--auto-scale-lr needs auto_scale_lr.base_batch_size in the config")
        cfg.auto_scale_lr.enable = True
    if args.resume == "auto":
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None) -> int:
    cfg = build_config(parse_args(argv))
    runner_for(cfg).train()
    return 0


if __name__ == "__main__":
    sys.exit(main())

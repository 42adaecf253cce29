#!/usr/bin/env python
"""Evaluate a checkpoint with an mmdet / mmseg config (COCO box/mask AP, mIoU, ...), through
mmengine's Runner.

    python tools/test.py configs/mmdet/mask-rcnn_vmamba-t_fpn_1x_coco.py work_dirs/.../epoch_12.pth
    python tools/test.py CONFIG CHECKPOINT --tta          # multi-scale + flip (mmseg's 'ms' mIoU)
    python tools/test.py CONFIG CHECKPOINT --launcher pytorch   # under torchrun

The flags are those of mmdet's and mmseg's own tools/test.py (the common part).
"""
from __future__ import annotations

import argparse
import sys

from mmengine.config import Config
from mmengine.runner import Runner

from _runner_args import add_common_args, load_config, runner_for


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="test config file")
    parser.add_argument("checkpoint", help="checkpoint file (one written by tools/train.py, or converted)")
    parser.add_argument("--work-dir", help="where the evaluation log goes (default ./work_dirs/<config name>)")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation from the config's tta_pipeline")
    add_common_args(parser)
    return parser.parse_args(argv)


def build_config(args) -> Config:
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if args.tta:
        if "tta_model" not in cfg or "tta_pipeline" not in cfg:
            raise ValueError(f"{args.config} defines no tta_model / tta_pipeline")
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    return cfg


def build_runner(argv=None) -> Runner:
    """The Runner that ``main`` would run (``runner.test()`` returns the metrics)."""
    return runner_for(build_config(parse_args(argv)))


def main(argv=None) -> int:
    build_runner(argv).test()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What tools/train.py and tools/test.py share: the mm tools' common flags, the config they build, the Runner."""
from __future__ import annotations

import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--cfg-options``, ``--launcher`` and the ``--local-rank`` that older launchers pass."""
    parser.add_argument("--cfg-options", nargs="+", action=DictAction,
                        help="override config entries, key=value (e.g. train_cfg.max_iters=300)")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none",
                        help="job launcher (pytorch for torchrun)")
    # torch.distributed.launch passes --local-rank (older versions --local_rank); torchrun sets LOCAL_RANK
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)


def load_config(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` with the launcher, ``--cfg-options`` and the work dir applied."""
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    return cfg


def runner_for(cfg: Config) -> Runner:
    """mmengine's Runner, or the config's own ``runner_type``."""
    return Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)

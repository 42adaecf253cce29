"""The model of an mmdet / mmseg config, as the zoo's tools build it (FLOPs, checkpoint conversion)."""
from __future__ import annotations

import importlib
from typing import Optional, Tuple

from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn

#: the OpenMMLab codebases whose configs and registries the zoo serves
CODEBASES = ("mmdet", "mmseg")


def build_model_from_config(config: str, cfg_options: Optional[dict] = None) -> Tuple[nn.Module, str]:
    """``(model, scope)``: the detector / segmentor of ``config``, randomly initialised.

    ``init_weights`` is not called, so nothing (no pretrained backbone) is downloaded. ``scope`` is the
    config's ``default_scope``, ``'mmdet'`` or ``'mmseg'``.
    """
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get("default_scope", "mmdet")
    if scope not in CODEBASES:
        raise ValueError(f"{config}: default_scope {scope!r} is neither mmdet nor mmseg")
    init_default_scope(scope)
    return importlib.import_module(f"{scope}.registry").MODELS.build(cfg.model), scope

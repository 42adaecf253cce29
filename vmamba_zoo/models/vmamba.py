"""VMamba: Visual State Space Model (Liu et al., 2024), the released v2 models.

A convolutional stem, four stages of VSS blocks (SS2D mixer over four cross-scan directions, then an
MLP) with overlapping-conv downsampling between them, and a LayerNorm + pool + linear head. Official
code: github.com/MzeroMiko/VMamba (``vmamba.py``); our ``vmamba_tiny`` is their ``vmamba_tiny_s1l8``,
``vmamba_small`` / ``vmamba_base`` their ``s2l15`` models.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
from torch import nn
from timm.models import generate_default_cfgs, register_model

from ssm_kernels import CROSS

from ..layers import SS2D, ConvDownsample, ConvStem, FastLayerNorm, MixerBlock, Stage
from ._builder import create_zoo_model, init_linear, zoo_cfg
from ._checkpoint import remap_checkpoint
from ._hierarchical import HierarchicalSSM

__all__ = ["VMamba", "checkpoint_filter_fn"]


class VMamba(HierarchicalSSM):
    """VMamba (v2 architecture).

    Args:
        in_chans: image channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: 'avg', 'max', ... or '' (no pooling).
        dims: channels of the four stages.
        depths: blocks per stage.
        d_state, ssm_ratio, dt_rank, d_conv, conv_bias: SS2D mixer settings (see :class:`SS2D`).
        mlp_ratio: MLP hidden size / dim.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this value.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (2, 2, 8, 2),
        d_state: int = 1,
        ssm_ratio: float = 1.0,
        dt_rank="auto",
        d_conv: int = 3,
        conv_bias: bool = False,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if len(dims) != len(depths):
            raise ValueError(f"dims {tuple(dims)} and depths {tuple(depths)} must have one entry per stage")
        self.in_chans = in_chans
        self.stem = ConvStem(in_chans, dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # also under a meta device
        stages, self.feature_info = [], []
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            blocks = [
                MixerBlock(dim, SS2D(dim, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank, d_conv=d_conv,
                                     conv_bias=conv_bias, scan=CROSS),
                           mlp_ratio=mlp_ratio, drop_path=rates.pop(0), norm_layer=FastLayerNorm)
                for _ in range(depth)
            ]
            downsample = ConvDownsample(dims[i - 1], dim) if i > 0 else None
            stages.append(Stage(blocks, downsample))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2 ** i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self._init_head(dims[-1], num_classes, global_pool, drop_rate)
        self.apply(init_linear)

    def filter_checkpoint(self, state_dict):
        return checkpoint_filter_fn(state_dict, self)


# Official key -> our key. The official model keeps the downsample at the end of stage i; ours opens
# stage i + 1. Older official checkpoints store x_proj / dt_projs as stacked (K, ...) tensors.
_BLOCK = r"^layers\.(\d+)\.blocks\.(\d+)\."
_RULES = [
    (r"^patch_embed\.0\.", "stem.conv1."),
    (r"^patch_embed\.2\.", "stem.norm1."),
    (r"^patch_embed\.5\.", "stem.conv2."),
    (r"^patch_embed\.7\.", "stem.norm2."),
    (_BLOCK + r"norm\.", r"stages.\1.blocks.\2.norm1."),
    (_BLOCK + r"op\.conv2d\.", r"stages.\1.blocks.\2.mixer.conv."),
    (_BLOCK + r"op\.x_proj(_weight|\.weight)$", r"stages.\1.blocks.\2.mixer.x_proj.weight"),
    (_BLOCK + r"op\.dt_projs(_weight|\.weight)$", r"stages.\1.blocks.\2.mixer.dt_proj_weight"),
    (_BLOCK + r"op\.dt_projs_bias$", r"stages.\1.blocks.\2.mixer.dt_bias"),
    (_BLOCK + r"op\.A_logs$", r"stages.\1.blocks.\2.mixer.A_log"),
    (_BLOCK + r"op\.Ds$", r"stages.\1.blocks.\2.mixer.D"),
    (_BLOCK + r"op\.", r"stages.\1.blocks.\2.mixer."),
    (_BLOCK, r"stages.\1.blocks.\2."),
    (r"^layers\.(\d+)\.downsample\.1\.", lambda m: f"stages.{int(m[1]) + 1}.downsample.conv."),
    (r"^layers\.(\d+)\.downsample\.3\.", lambda m: f"stages.{int(m[1]) + 1}.downsample.norm."),
    (r"^(classifier\.)?norm\.", "norm_pre."),
    (r"^(classifier\.)?head\.", "head.fc."),
]


def checkpoint_filter_fn(state_dict, model: VMamba):
    """Official VMamba checkpoint (or ours) -> our state dict; raises listing any key mismatch."""
    return remap_checkpoint(state_dict, model, _RULES, native_key="stem.conv1.weight")


def _create(variant: str, pretrained: bool = False, **kwargs) -> VMamba:
    return create_zoo_model(VMamba, variant, pretrained, checkpoint_filter_fn, **kwargs)


_cfg = partial(zoo_cfg, first_conv="stem.conv1", license="mit",
               paper_ids="arXiv:2401.10166", origin_url="https://github.com/MzeroMiko/VMamba")


#: Published numbers (official README; throughput on an A100, batch 128, 224x224), the exact parameter
#: counts of the official models and their FLOPs by the family's rule (the official fvcore count), for the
#: tests, the zoo table and the model cards. The dense results are in each config's ``paper`` dict.
PUBLISHED = {
    "vmamba_tiny": dict(official_name="vmamba_tiny_s1l8", official_params=30_249_064, params_m=30,
                        official_flops=4_905_609_984, gflops=4.9, top1=82.6, img_s=1686, train_img_s=571),
    "vmamba_small": dict(official_name="vmamba_small_s2l15", official_params=50_147_752, params_m=50,
                         official_flops=8_715_774_720, gflops=8.7, top1=83.6, img_s=877, train_img_s=314),
    "vmamba_base": dict(official_name="vmamba_base_s2l15", official_params=88_557_800, params_m=89,
                        official_flops=15_358_944_256, gflops=15.4, top1=83.9, img_s=646, train_img_s=247),
}

#: What the model cards say about the family as a whole (tools/make_model_cards.py).
CARD = dict(
    family="VMamba",
    paper="VMamba: Visual State Space Model",
    arxiv="2401.10166",
    code="https://github.com/MzeroMiko/VMamba",
    commit="2ed52ea",
    license="MIT",
    top1_source="official README (ImageNet-1k, 224x224)",
    dense_source="official README (COCO: detection/, ADE20K: segmentation/ tables)",
    throughput_source="official README (A100, batch 128, 224x224)",
    flops_rule="fvcore multiply-adds; LayerNorm 5/elem; each selective scan 9*B*L*D*N + B*L*D (the official handle)",
    scan="cross: row-major, column-major and both reversed (K = 4)",
    bibtex="""@inproceedings{liu2024vmamba,
  title={VMamba: Visual State Space Model},
  author={Liu, Yue and Tian, Yunjie and Zhao, Yuzhong and Yu, Hongtian and Xie, Lingxi and Wang, Yaowei and Ye, Qixiang and Jiao, Jianbin and Liu, Yunfan},
  booktitle={Advances in Neural Information Processing Systems},
  year={2024}
}""",
)

#: Architecture overrides that make every model of the family tiny (interop and CPU tests).
TINY_KWARGS = dict(dims=(16, 32, 32, 32), depths=(1, 1, 1, 1))

_RELEASES = "https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/"
default_cfgs = generate_default_cfgs({
    "vmamba_tiny.in1k": _cfg(_RELEASES + "vssm1_tiny_0230s_ckpt_epoch_264.pth"),
    "vmamba_small.in1k": _cfg(_RELEASES + "vssm_small_0229_ckpt_epoch_222.pth"),
    "vmamba_base.in1k": _cfg(_RELEASES + "vssm_base_0229_ckpt_epoch_237.pth"),
})


@register_model
def vmamba_tiny(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-T (official ``vmamba_tiny_s1l8``): 30.2M params, 4.9 GFLOPs, 82.6% ImageNet top-1."""
    args = dict(dims=(96, 192, 384, 768), depths=(2, 2, 8, 2), d_state=1, ssm_ratio=1.0, dt_rank="auto",
                d_conv=3, conv_bias=False, mlp_ratio=4.0, drop_path_rate=0.2)
    return _create("vmamba_tiny", pretrained, **dict(args, **kwargs))


@register_model
def vmamba_small(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-S (official ``vmamba_small_s2l15``): 50.1M params, 8.7 GFLOPs, 83.6% ImageNet top-1."""
    args = dict(dims=(96, 192, 384, 768), depths=(2, 2, 15, 2), d_state=1, ssm_ratio=2.0, dt_rank="auto",
                d_conv=3, conv_bias=False, mlp_ratio=4.0, drop_path_rate=0.3)
    return _create("vmamba_small", pretrained, **dict(args, **kwargs))


@register_model
def vmamba_base(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-B (official ``vmamba_base_s2l15``): 88.6M params, 15.4 GFLOPs, 83.9% ImageNet top-1."""
    args = dict(dims=(128, 256, 512, 1024), depths=(2, 2, 15, 2), d_state=1, ssm_ratio=2.0, dt_rank="auto",
                d_conv=3, conv_bias=False, mlp_ratio=4.0, drop_path_rate=0.6)
    return _create("vmamba_base", pretrained, **dict(args, **kwargs))

"""EfficientVMamba: Atrous Selective Scan for Light Weight Visual Mamba (Pei, Huang and Xu, 2024).

A k4 s4 patch stem, two stages of EVSS blocks (the atrous selective scan ES2D beside a depthwise-conv
branch, one channel attention gating both), two stages of MobileNet-v2 inverted residuals with
squeeze-excite, patch merging between the stages, and a LayerNorm + pool + linear head. The atrous
scan splits each map into its four stride-2 sub-grids and scans each once (two row-major, two
column-major) with its own parameters: a quarter of the tokens per direction of VMamba's cross scan.
Official code: github.com/TerryPei/EfficientVMamba (``classification/models/vmamba_efficient.py``).
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
from fvcore.nn.jit_handles import einsum_flop_jit
from torch import nn
from timm.layers import DropPath
from timm.models import generate_default_cfgs, register_model
from timm.models._efficientnet_blocks import InvertedResidual, SqueezeExcite

from ssm_kernels import dwconv2d

from ..layers import (AtrousSS2D, Conv2d, FastLayerNorm, PatchMerging, PatchStem, Stage, make_convs_opaque,
                      weights_cast_together)
from ..profiling.flops import numpy_einsum_macs, scan2d_flop_jit
from ._builder import create_zoo_model, init_linear, zoo_cfg
from ._checkpoint import remap_checkpoint
from ._hierarchical import HierarchicalSSM

__all__ = ["EfficientVMamba", "EVSSBlock", "BiAttn", "checkpoint_filter_fn"]


class BiAttn(nn.Module):
    """Channel attention of the EVSS block: x * sigmoid(W2 GELU(W1 mean_hw(LN(x)))), channels last.

    The LayerNorm's output is only averaged over the map for a matmul: a :class:`FastLayerNorm` (one Triton
    kernel each way, output in the autocast dtype), where PyTorch's LayerNorm under autocast
    adds a cast of its input and writes a float32 map (two of them a block: ~10% of a training step)."""

    def __init__(self, dim: int, ratio: float = 0.125):
        super().__init__()
        hidden = int(dim * ratio)
        self.norm = FastLayerNorm(dim)
        self.global_reduce = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.channel_select = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the spatial average as sum / count: the official FLOP count (fvcore) leaves this mean uncounted,
        # where the zoo counts an aten::mean as global pooling (1 per element)
        pooled = self.norm(x).sum(dim=(1, 2), keepdim=True) / (x.shape[1] * x.shape[2])
        return x * self.channel_select(self.act(self.global_reduce(pooled))).sigmoid()


class EVSSBlock(nn.Module):
    """x + drop_path(BiAttn(ES2D(n)) + BiAttn(conv(n))), n = LN(x): one BiAttn shared by both branches;
    conv is depthwise 3x3, BatchNorm, GELU, pointwise (channels last in and out). n feeds only the mixer's
    in-projection and the depthwise conv, which read it in the autocast dtype: a :class:`FastLayerNorm`."""

    def __init__(self, dim: int, drop_path: float = 0.0, d_state: int = 16, ssm_ratio: float = 2.0,
                 dt_rank="auto", recompute_states: bool = False):
        super().__init__()
        self.norm = FastLayerNorm(dim)
        self.mixer = AtrousSS2D(dim, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank,
                                recompute_states=recompute_states)
        self.conv_branch = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.BatchNorm2d(dim), nn.GELU(), Conv2d(dim, dim, 1))
        self.bi_attn = BiAttn(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with weights_cast_together(self):  # in training under autocast: the block's matmul weights in one cast
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm(x)
        dwconv, bn, act, pwconv = self.conv_branch
        # the depthwise conv and its bias in one op reading n in place; then BatchNorm, GELU and the pointwise conv
        # on the channels-first view of its channels-last output
        conv = dwconv2d(n, dwconv.weight, dwconv.bias).permute(0, 3, 1, 2)
        conv = pwconv(act(bn(conv))).permute(0, 2, 3, 1)
        return x + self.drop_path(self.bi_attn(self.mixer(n)) + self.bi_attn(conv))


class ChannelsLastInvertedResidual(InvertedResidual):
    """timm's MobileNet-v2 inverted residual (1x1 expand, BN, ReLU, depthwise 3x3, BN, ReLU, squeeze-excite,
    1x1 project, BN, + x) on a channels-last map; its convolutions are the zoo's :class:`Conv2d`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        make_convs_opaque(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _inverted_residual(dim: int, drop_path: float) -> nn.Module:
    # expand 4, squeeze to 1/8 of the expanded channels (official: int(4 dim * 0.125)), ReLU
    return ChannelsLastInvertedResidual(dim, dim, exp_ratio=4.0, se_layer=partial(SqueezeExcite, rd_ratio=0.125),
                                        drop_path_rate=drop_path)


class EfficientVMamba(HierarchicalSSM):
    """EfficientVMamba.

    Args:
        in_chans: image channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: 'avg', 'max', ... or '' (no pooling).
        embed_dim: channels of the first stage; stage i has embed_dim * 2**i.
        depths: blocks per stage (EVSS blocks in the first ``ssm_stages`` stages, inverted residuals after).
        ssm_stages: how many stages use EVSS blocks.
        d_state, ssm_ratio, dt_rank: ES2D settings (see :class:`~vmamba_zoo.layers.AtrousSS2D`).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this value.
        recompute_states: the d_state 16 scans' backward re-runs their forward from one saved state per 128
            steps (least memory) instead of reading every chunk's saved state (the default here: EfficientVMamba's
            maps are small, and its training then still peaks below the official code's).

    Any input whose sides are multiples of 4 works (odd maps are padded for the atrous scan and the
    patch merging, as the official code does).
    """

    input_divisor = 4
    #: the official count (analyze/get_flops.py) takes einsums as fvcore's own handle estimates them
    flop_handles = {"aten::einsum": einsum_flop_jit,
                    "prim::PythonOp.Scan2dFn": partial(scan2d_flop_jit, einsum_macs=numpy_einsum_macs)}

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 48,
        depths: Sequence[int] = (2, 2, 4, 2),
        ssm_stages: int = 2,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        dt_rank="auto",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        recompute_states: bool = False,
    ):
        super().__init__()
        self.in_chans = in_chans
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        self.stem = PatchStem(in_chans, dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, self.feature_info = [], []
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            if i < ssm_stages:
                blocks = [EVSSBlock(dim, rates.pop(0), d_state, ssm_ratio, dt_rank, recompute_states)
                          for _ in range(depth)]
            else:
                blocks = [_inverted_residual(dim, rates.pop(0)) for _ in range(depth)]
            downsample = PatchMerging(dims[i - 1], dim) if i > 0 else None
            stages.append(Stage(blocks, downsample))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2 ** i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self._init_head(dims[-1], num_classes, global_pool, drop_rate)
        self.apply(init_linear)

    def filter_checkpoint(self, state_dict):
        return checkpoint_filter_fn(state_dict, self)


# Official key -> our key. The official model keeps the downsample at the end of stage i; ours opens stage
# i + 1. Its inverted-residual stages are Sequential(permute, blocks..., permute, downsample): block j is
# entry j + 1.
_EVSS = r"^layers\.(\d+)\.blocks\.(\d+)\."
_IR = r"^layers\.(\d+)\.(\d+)\."


def _ir(suffix: str):
    return lambda m: f"stages.{m[1]}.blocks.{int(m[2]) - 1}.{suffix}"


_RULES = [
    (r"^patch_embed\.0\.", "stem.conv."),
    (r"^patch_embed\.2\.", "stem.norm."),
    (_EVSS + r"op\.x_proj_weight$", r"stages.\1.blocks.\2.mixer.x_proj.weight"),
    (_EVSS + r"op\.dt_projs_weight$", r"stages.\1.blocks.\2.mixer.dt_proj_weight"),
    (_EVSS + r"op\.dt_projs_bias$", r"stages.\1.blocks.\2.mixer.dt_bias"),
    (_EVSS + r"op\.A_logs$", r"stages.\1.blocks.\2.mixer.A_log"),
    (_EVSS + r"op\.Ds$", r"stages.\1.blocks.\2.mixer.D"),
    (_EVSS + r"op\.conv2d\.", r"stages.\1.blocks.\2.mixer.conv."),
    (_EVSS + r"op\.", r"stages.\1.blocks.\2.mixer."),
    (_EVSS + r"se\.", r"stages.\1.blocks.\2.bi_attn."),
    (_EVSS, r"stages.\1.blocks.\2."),
    (r"^layers\.(\d+)\.(?:downsample|\d+)\.(norm|reduction)\.", lambda m: f"stages.{int(m[1]) + 1}.downsample.{m[2]}."),
    (_IR + r"conv_pw\.0\.", _ir("conv_pw.")),
    (_IR + r"conv_pw\.1\.", _ir("bn1.")),
    (_IR + r"conv_dw\.0\.", _ir("conv_dw.")),
    (_IR + r"conv_dw\.1\.", _ir("bn2.")),
    (_IR + r"se\.", _ir("se.")),
    (_IR + r"conv_pw2\.0\.", _ir("conv_pwl.")),
    (_IR + r"conv_pw2\.1\.", _ir("bn3.")),
    (r"^classifier\.norm\.", "norm_pre."),
    (r"^classifier\.head\.", "head.fc."),
]


def checkpoint_filter_fn(state_dict, model: EfficientVMamba):
    """Official EfficientVMamba checkpoint (or ours) -> our state dict; raises listing any key mismatch."""
    return remap_checkpoint(state_dict, model, _RULES, native_key="stem.conv.weight")


def _create(variant: str, pretrained: bool = False, **kwargs) -> EfficientVMamba:
    return create_zoo_model(EfficientVMamba, variant, pretrained, checkpoint_filter_fn, **kwargs)


_cfg = partial(zoo_cfg, first_conv="stem.conv", license="mit",
               paper_ids="arXiv:2403.09977", origin_url="https://github.com/TerryPei/EfficientVMamba")


#: Published numbers (official README), the exact parameter counts of the official models and their FLOPs by
#: the family's rule (the official fvcore count of the model as trained), for the tests, the zoo table and
#: the model cards.
PUBLISHED = {
    "efficientvmamba_tiny": dict(official_name="EfficientVMamba-T", official_params=6_493_660, params_m=6.5,
                                 official_flops=806_431_376, gflops=0.8, top1=76.5),
    "efficientvmamba_small": dict(official_name="EfficientVMamba-S", official_params=11_273_688, params_m=11.3,
                                  official_flops=1_342_576_368, gflops=1.3, top1=78.7),
    "efficientvmamba_base": dict(official_name="EfficientVMamba-B", official_params=33_717_136, params_m=33.7,
                                 official_flops=3_996_667_872, gflops=4.0, top1=81.8),
}

#: What the model cards say about the family as a whole (tools/make_model_cards.py).
CARD = dict(
    family="EfficientVMamba",
    paper="EfficientVMamba: Atrous Selective Scan for Light Weight Visual Mamba",
    arxiv="2403.09977",
    code="https://github.com/TerryPei/EfficientVMamba",
    commit="0bc5ee2",
    license="MIT",
    top1_source="official README (ImageNet-1k, 224x224)",
    flops_rule=("fvcore multiply-adds; LayerNorm 5/elem, eval BatchNorm 2/elem, average pooling 1/elem (BiAttn's "
                "mean uncounted); each selective scan 9*B*L*D*N + B*L*D with D = 4 directions x inner channels and "
                "L = a sub-grid's length (the official handle)"),
    scan="atrous: the four stride-2 sub-grids, two row-major and two column-major (K = 4, each position once)",
    notes=[
        "efficientvmamba_small is the published EfficientVMamba-S (embed 64: 11.3M params, 1.3 GFLOPs); the "
        "official repository's vssm_efficient_small.yaml says EMBED_DIM 96, which builds a 24.8M-parameter, "
        "2.8-GFLOP model (efficientvmamba_small with embed_dim=96).",
        "Official weights: huggingface.co/TerryPei/EfficientVMamba-{Tiny,Small,Base}; they load through "
        "checkpoint_filter_fn (timm pretrained_cfg_overlay=dict(file=...)).",
        "The official yaml's D_STATE, DT_RANK and WINDOWSIZE never reach the model (the defaults, 16 / auto / "
        "stride 2, are what it builds).",
    ],
    bibtex="""@article{pei2024efficientvmamba,
  title={EfficientVMamba: Atrous Selective Scan for Light Weight Visual Mamba},
  author={Pei, Xiaohuan and Huang, Tao and Xu, Chang},
  journal={arXiv preprint arXiv:2403.09977},
  year={2024}
}""",
)

#: Architecture overrides that make every model of the family tiny (interop and CPU tests).
TINY_KWARGS = dict(embed_dim=8, depths=(1, 1, 1, 1), d_state=4)

# The official weights are on the Hugging Face hub (huggingface.co/TerryPei/EfficientVMamba-{Tiny,Small,Base}),
# under file names the README does not give: download one and load it with
# ``pretrained_cfg_overlay=dict(file=path)`` (it goes through checkpoint_filter_fn).
default_cfgs = generate_default_cfgs({
    "efficientvmamba_tiny.in1k": _cfg(),
    "efficientvmamba_small.in1k": _cfg(),
    "efficientvmamba_base.in1k": _cfg(),
})


@register_model
def efficientvmamba_tiny(pretrained: bool = False, **kwargs) -> EfficientVMamba:
    """EfficientVMamba-T: 6.5M params, 0.8 GFLOPs, 76.5% ImageNet top-1."""
    args = dict(embed_dim=48, depths=(2, 2, 4, 2), d_state=16, ssm_ratio=2.0, dt_rank="auto", drop_path_rate=0.2)
    return _create("efficientvmamba_tiny", pretrained, **dict(args, **kwargs))


@register_model
def efficientvmamba_small(pretrained: bool = False, **kwargs) -> EfficientVMamba:
    """EfficientVMamba-S (the published model, embed 64): 11.3M params, 1.3 GFLOPs, 78.7% ImageNet top-1."""
    args = dict(embed_dim=64, depths=(2, 2, 4, 2), d_state=16, ssm_ratio=2.0, dt_rank="auto", drop_path_rate=0.2)
    return _create("efficientvmamba_small", pretrained, **dict(args, **kwargs))


@register_model
def efficientvmamba_base(pretrained: bool = False, **kwargs) -> EfficientVMamba:
    """EfficientVMamba-B: 33.7M params, 4.0 GFLOPs, 81.8% ImageNet top-1."""
    args = dict(embed_dim=96, depths=(2, 2, 9, 2), d_state=16, ssm_ratio=2.0, dt_rank="auto", drop_path_rate=0.2)
    return _create("efficientvmamba_base", pretrained, **dict(args, **kwargs))

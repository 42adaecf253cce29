"""Spatial-Mamba: Effective Visual State Space Models via Structure-Aware State Fusion (Xiao et al., 2024).

A convolution-BatchNorm stem, four stages of blocks (a conditional position encoding, the
structure-aware SSM, another position encoding, an MLP) with inverted-bottleneck downsampling between
them, and a LayerNorm + pool + linear head. The structure-aware SSM scans the map once, row-major, and
keeps every hidden state; the states are fused over the 2-D neighbourhood by three dilated depthwise
convolutions (structure-aware state fusion) before the observation y = C . h' + D * u reads them. Official
code: github.com/EdwardChasel/Spatial-Mamba (``classification/models/spatialmamba.py``).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from timm.models import generate_default_cfgs, register_model

from ssm_kernels import dwconv2d, observe_norm_gate, selective_scan_states

from ..layers import (ConvBNStem, ExpandDownsample, FastLayerNorm, MixerBlock, Stage, StateFusion, a_log_init,
                      autocast_weights, dt_bias_init)
from ._builder import create_zoo_model, zoo_cfg
from ._checkpoint import CONV_BN_STEM_RULES, EXPAND_DOWNSAMPLE_RULES, remap_checkpoint
from ._hierarchical import HierarchicalSSM

__all__ = ["SpatialMamba", "StructureAwareSSM", "checkpoint_filter_fn"]


class StructureAwareSSM(nn.Module):
    """The structure-aware SSM mixer on channels-last maps (B, H, W, dim) -> (B, H, W, dim).

    in_proj to (x, z), u = SiLU(dwconv3x3(x)); from u a low-rank step size, B and C per position; one
    row-major scan of the state equation h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t returning every state;
    the states fused over the map (:class:`~vmamba_zoo.layers.StateFusion`); y = C . h' + D * u; LayerNorm,
    gate by SiLU(z) (the three as one op, :func:`ssm_kernels.observe_norm_gate`), out_proj.

    Args:
        dim: channels in and out.
        d_state: SSM state size N (the fusion convolves one state map per channel: N must be 1).
        ssm_ratio: inner channels E = ssm_ratio * dim.
        dt_rank: rank of the step-size projection ('auto' = ceil(dim / 16)).
        d_conv: depthwise conv kernel size.
        fused_observe: run the fusion and the observation as one op (:meth:`StateFusion.observe`: y written
            channels-last in the autocast dtype, h' never stored) instead of ``state_fusion`` then the
            observation in PyTorch. The same function and parameters; which is faster is measured by
            ``tools/bench_state_fusion.py`` (kernels/NOTES.md).
    """

    def __init__(self, dim: int, d_state: int = 1, ssm_ratio: float = 2.0, dt_rank="auto", d_conv: int = 3,
                 fused_observe: bool = False):
        super().__init__()
        self.fused_observe = fused_observe
        if d_state != 1:
            raise ValueError(f"StructureAwareSSM fuses one state map per channel: d_state must be 1, got {d_state}")
        inner = int(ssm_ratio * dim)
        rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        self.d_inner, self.d_state, self.dt_rank = inner, d_state, rank
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = nn.Conv2d(inner, inner, d_conv, padding=(d_conv - 1) // 2, groups=inner)
        # (dt, B, C) from u; kept as a matrix that multiplies the channels-first sequence, initialised
        # as nn.Linear initialises its weight (the model-level init of linear layers does not reach it)
        x_proj = nn.Linear(inner, rank + 2 * d_state, bias=False)
        self.x_proj_weight = nn.Parameter(x_proj.weight.detach().clone())
        std = rank ** -0.5
        self.dt_proj_weight = nn.Parameter(torch.empty(inner, rank).uniform_(-std, std))
        self.dt_bias = nn.Parameter(dt_bias_init(inner))
        self.A_log = nn.Parameter(a_log_init(inner, d_state))
        self.D = nn.Parameter(torch.ones(inner))
        self.state_fusion = StateFusion(inner)
        # its output only goes through the gate into out_proj; observe_norm_gate reads its weight, bias and eps
        self.out_norm = FastLayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        R, N = self.dt_rank, self.d_state
        x, z = self.in_proj(x).chunk(2, dim=-1)
        # the conv, its bias and SiLU in one op on the channels-last half of the projection (read in place),
        # written channels-first as the state scan reads it (no transposing copy after it)
        u = dwconv2d(x, self.conv.weight, self.conv.bias, silu=True, channels_first=True)
        u = u.flatten(1, 2).transpose(1, 2).contiguous()                                 # (B, E, L)
        # batched products written channels-first as the scan reads them (torch.matmul of a matrix by a batch
        # computes the transposed product and copies it back: a copy of all of dt)
        # (the weights cast for autocast once in inference: autocast would cast the expanded views, batch-sized copies)
        x_proj, dt_proj = autocast_weights(self, self.x_proj_weight, self.dt_proj_weight)
        dt, B, C = torch.bmm(x_proj.expand(batch, -1, -1), u).split([R, N, N], dim=1)  # (B, R|N|N, L)
        dt = torch.bmm(dt_proj.expand(batch, -1, -1), dt)                              # (B, E, L)
        h = selective_scan_states(u, dt, self.A_log, B, delta_bias=self.dt_bias.float(), delta_softplus=True,
                                  a_is_log=True)  # A = -exp(A_log) inside the scan
        # the fusion, then the observation y = C . h' + D * u (N = 1), out_norm(y) * SiLU(z), channels-last
        h = h.view(batch, self.d_inner, height, width)
        if self.fused_observe:
            y = self.state_fusion.observe(h, C, u, self.D)                                # (B, H, W, E)
            return self.out_proj(self.out_norm(y) * F.silu(z))
        norm = self.out_norm
        return self.out_proj(observe_norm_gate(self.state_fusion(h).flatten(2), C, u, self.D, norm.weight, norm.bias,
                                               z, norm.eps))


class SpatialMamba(HierarchicalSSM):
    """Spatial-Mamba.

    Args:
        in_chans: image channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: 'avg', 'max', ... or '' (no pooling).
        dims: channels of the four stages (each downsample doubles them).
        depths: blocks per stage.
        d_state, ssm_ratio, dt_rank, d_conv: structure-aware SSM settings (see :class:`StructureAwareSSM`).
        mlp_ratio: MLP hidden size / dim.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this value.
        fused_observe: the mixers' state fusion and observation as one op (see :class:`StructureAwareSSM`).
    """

    #: the official count (SpatialMamba.flops) runs fvcore on the model in train mode: batch norm at 5 FLOPs
    #: an element, not folded into its convolution. The state-only scan node is counted by its default
    #: handle, 7 * B * L * D * N; the head's pooling (AdaptiveAvgPool1d there) is not counted.
    flops_in_train_mode = True
    flop_handles = {"aten::mean": None}

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (2, 4, 8, 4),
        d_state: int = 1,
        ssm_ratio: float = 2.0,
        dt_rank="auto",
        d_conv: int = 3,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        fused_observe: bool = False,
    ):
        super().__init__()
        if len(dims) != len(depths):
            raise ValueError(f"dims {tuple(dims)} and depths {tuple(depths)} must have one entry per stage")
        self.in_chans = in_chans
        self.stem = ConvBNStem(in_chans, dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # also under a meta device
        stages, self.feature_info = [], []
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            blocks = [
                MixerBlock(dim, StructureAwareSSM(dim, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank,
                                                  d_conv=d_conv, fused_observe=fused_observe),
                           mlp_ratio=mlp_ratio, drop_path=rates.pop(0), norm_layer=FastLayerNorm, cpe=True)
                for _ in range(depth)
            ]
            downsample = ExpandDownsample(dims[i - 1], dim) if i > 0 else None
            stages.append(Stage(blocks, downsample))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2 ** i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self._init_head(dims[-1], num_classes, global_pool, drop_rate)
        self.apply(_init_weights)

    def filter_checkpoint(self, state_dict):
        return checkpoint_filter_fn(state_dict, self)


def _init_weights(m: nn.Module):
    """The official initialisation: linear layers truncated normal (std 0.02) with zero bias; LayerNorms
    one and zero; convolutions, the SSM's own parameters and the state fusion keep theirs."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# Official key -> our key. The official model keeps the downsample at the end of stage i; ours opens
# stage i + 1. The official eval-mode cache of the merged fusion kernel (``_merge_weight``) is a plain
# attribute, never in a state dict.
_BLOCK = r"^layers\.(\d+)\.blocks\.(\d+)\."
_MIXER = _BLOCK + r"self_attention\."
_RULES = [
    *CONV_BN_STEM_RULES,
    (_BLOCK + r"cpe(\d)\.", r"stages.\1.blocks.\2.cpe\3.proj."),
    (_BLOCK + r"ln_(\d)\.", r"stages.\1.blocks.\2.norm\3."),
    (_MIXER + r"conv2d\.", r"stages.\1.blocks.\2.mixer.conv."),
    (_MIXER + r"dt_projs_weight$", r"stages.\1.blocks.\2.mixer.dt_proj_weight"),
    (_MIXER + r"dt_projs_bias$", r"stages.\1.blocks.\2.mixer.dt_bias"),
    (_MIXER + r"A_logs$", r"stages.\1.blocks.\2.mixer.A_log"),
    (_MIXER + r"Ds$", r"stages.\1.blocks.\2.mixer.D"),
    (_MIXER + r"state_fusion\.kernel_3$", r"stages.\1.blocks.\2.mixer.state_fusion.weight.0"),
    (_MIXER + r"state_fusion\.kernel_3_1$", r"stages.\1.blocks.\2.mixer.state_fusion.weight.1"),
    (_MIXER + r"state_fusion\.kernel_3_2$", r"stages.\1.blocks.\2.mixer.state_fusion.weight.2"),
    (_MIXER, r"stages.\1.blocks.\2.mixer."),
    (_BLOCK, r"stages.\1.blocks.\2."),
    *EXPAND_DOWNSAMPLE_RULES,
    (r"^norm\.", "norm_pre."),
    (r"^head\.", "head.fc."),
]


def checkpoint_filter_fn(state_dict, model: SpatialMamba):
    """Official Spatial-Mamba checkpoint (or ours) -> our state dict; raises listing any key mismatch."""
    return remap_checkpoint(state_dict, model, _RULES, native_key="stem.conv1.0.weight")


def _create(variant: str, pretrained: bool = False, **kwargs) -> SpatialMamba:
    return create_zoo_model(SpatialMamba, variant, pretrained, checkpoint_filter_fn, **kwargs)


_cfg = partial(zoo_cfg, first_conv="stem.conv1.0", license="apache-2.0",
               paper_ids="arXiv:2410.15091", origin_url="https://github.com/EdwardChasel/Spatial-Mamba")


_DRIVE = "https://drive.google.com/file/d/{}/view"

#: Published numbers (official README), the exact parameter counts of the official models and their FLOPs by
#: the family's rule (the official fvcore count, in train mode), for the tests, the zoo table and the cards.
#: ``checkpoint``: the official Google Drive files (no direct download: fetch by hand, load with
#: ``pretrained_cfg_overlay=dict(file=...)``). The dense results are in each config's ``paper`` dict.
PUBLISHED = {
    "spatialmamba_tiny": dict(
        official_name="spatialmamba_tiny", official_params=26_748_862, params_m=27,
        official_flops=4_467_681_280, gflops=4.5, top1=83.5,
        checkpoint=_DRIVE.format("19kXoqGSTuKKs4AHbdUSrdKZTwTWenLIW")),
    "spatialmamba_small": dict(
        official_name="spatialmamba_small", official_params=43_074_280, params_m=43,
        official_flops=7_116_974_080, gflops=7.1, top1=84.6,
        checkpoint=_DRIVE.format("1Wb3sYoWLpgmWrmHMYKwdgDwGPZaqM28O")),
    "spatialmamba_base": dict(
        official_name="spatialmamba_base", official_params=95_745_592, params_m=96,
        official_flops=15_800_638_464, gflops=15.8, top1=85.3,
        checkpoint=_DRIVE.format("1k8dHp2QRCOqBSgAi36YkhZp_O8LqOPjM")),
}

#: What the model cards say about the family as a whole (tools/make_model_cards.py).
CARD = dict(
    family="Spatial-Mamba",
    paper="Spatial-Mamba: Effective Visual State Space Models via Structure-Aware State Fusion",
    arxiv="2410.15091",
    code="https://github.com/EdwardChasel/Spatial-Mamba",
    commit="71221eb",
    license="Apache-2.0",
    top1_source="official README (ImageNet-1k, 224x224)",
    flops_rule=("fvcore multiply-adds in train mode (BatchNorm 5/elem, the state fusion as three 3x3 depthwise "
                "convolutions); the state-only scan 7*B*L*D*N (the official handle); pooling not counted"),
    scan="one row-major scan returning every state, fused over the map by dilated depthwise convolutions",
    notes=[
        "The official checkpoints are Google Drive files (PUBLISHED[...]['checkpoint']): download them by hand "
        "and pass pretrained=True, pretrained_cfg_overlay=dict(file=path).",
        "The official eval path caches the fused 11x11 kernel on the first eval forward and never refreshes it; "
        "ours always computes the fusion from the current parameters (the same function).",
        "fused_observe=True (timm.create_model kwarg) runs the state fusion and the observation as one Triton op "
        "that never stores the fused states: the same function, slower end to end for now (kernels/NOTES.md), so "
        "off by default.",
    ],
    bibtex="""@article{xiao2024spatialmamba,
  title={Spatial-Mamba: Effective Visual State Space Models via Structure-Aware State Fusion},
  author={Xiao, Chaodong and Li, Minghan and Zhang, Zhengqiang and Meng, Deyu and Zhang, Lei},
  journal={arXiv preprint arXiv:2410.15091},
  year={2024}
}""",
)

#: Architecture overrides that make every model of the family tiny (interop and CPU tests).
TINY_KWARGS = dict(dims=(16, 32, 32, 32), depths=(1, 1, 1, 1))

default_cfgs = generate_default_cfgs({
    "spatialmamba_tiny.in1k": _cfg(),
    "spatialmamba_small.in1k": _cfg(),
    "spatialmamba_base.in1k": _cfg(),
})


@register_model
def spatialmamba_tiny(pretrained: bool = False, **kwargs) -> SpatialMamba:
    """Spatial-Mamba-T: 26.7M params, 4.5 GFLOPs, 83.5% ImageNet top-1."""
    args = dict(dims=(64, 128, 256, 512), depths=(2, 4, 8, 4), d_state=1, ssm_ratio=2.0, dt_rank="auto", d_conv=3,
                mlp_ratio=4.0, drop_path_rate=0.2)
    return _create("spatialmamba_tiny", pretrained, **dict(args, **kwargs))


@register_model
def spatialmamba_small(pretrained: bool = False, **kwargs) -> SpatialMamba:
    """Spatial-Mamba-S: 43.1M params, 7.1 GFLOPs, 84.6% ImageNet top-1."""
    args = dict(dims=(64, 128, 256, 512), depths=(2, 4, 21, 5), d_state=1, ssm_ratio=2.0, dt_rank="auto", d_conv=3,
                mlp_ratio=4.0, drop_path_rate=0.3)
    return _create("spatialmamba_small", pretrained, **dict(args, **kwargs))


@register_model
def spatialmamba_base(pretrained: bool = False, **kwargs) -> SpatialMamba:
    """Spatial-Mamba-B: 95.7M params, 15.8 GFLOPs, 85.3% ImageNet top-1."""
    args = dict(dims=(96, 192, 384, 768), depths=(2, 4, 21, 5), d_state=1, ssm_ratio=2.0, dt_rank="auto", d_conv=3,
                mlp_ratio=4.0, drop_path_rate=0.5)
    return _create("spatialmamba_base", pretrained, **dict(args, **kwargs))

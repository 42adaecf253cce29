"""VSSD: Vision Mamba with Non-Causal State Space Duality (Shi et al., 2024).

A convolution-BatchNorm stem, four stages of blocks with conditional position encodings (x + DW3x3(x)
before the mixer and before the MLP), inverted-bottleneck downsampling between stages, and a
LayerNorm + pool + linear head. The mixer of stages 0-2 is the non-causal SSD (NC-SSD): Mamba-2's
state-space duality made non-causal, i.e. a linear attention per head with keys B, values Δ·a·x and
queries C over all tokens at once, so the 2-D map needs no scan order at all
(:func:`ssm_kernels.non_causal_ssd`). Stage 3 uses standard softmax attention. Official code:
github.com/YuHengsss/VSSD (``classification/models/mamba2.py``, model type ``vmamba2``).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from timm.models import generate_default_cfgs, register_model

from ssm_kernels import dwconv2d, non_causal_ssd

from ..layers import ConvBNStem, ExpandDownsample, FastLayerNorm, MixerBlock, Stage, dt_bias_init
from ._builder import create_zoo_model, zoo_cfg
from ._checkpoint import CONV_BN_STEM_RULES, EXPAND_DOWNSAMPLE_RULES, remap_checkpoint, unwrap_state_dict
from ._hierarchical import HierarchicalSSM

__all__ = ["VSSD", "NonCausalSSDMixer", "SoftmaxAttention", "checkpoint_filter_fn"]


class NonCausalSSDMixer(nn.Module):
    """VSSD's NC-SSD token mixer on a channels-last map (B, H, W, C).

    in_proj -> [z (E) | x, B, C (E + 2N) | dt (heads)]; DW 3x3 conv and SiLU over x, B, C; the
    non-causal SSD per head (head_dim P = E / heads, B and C shared by the heads, Δ = softplus(dt +
    dt_bias), weight a = exp(A_log) > 0); LayerNorm over E, times z (not activated); out_proj.

    Args:
        dim: channels C.
        num_heads: SSD heads (E / num_heads is the head dim; 64 in every released model).
        expand: E / C.
        d_state: N, the size of B and C.
        d_conv: the depthwise conv's kernel.
    """

    def __init__(self, dim: int, num_heads: int, expand: int = 2, d_state: int = 64, d_conv: int = 3):
        super().__init__()
        inner = expand * dim
        if inner % num_heads:
            raise ValueError(f"NonCausalSSDMixer: {inner} inner channels do not split into {num_heads} heads")
        self.inner, self.num_heads, self.d_state = inner, num_heads, d_state
        self.head_dim = inner // num_heads
        conv_dim = inner + 2 * d_state
        self.in_proj = nn.Linear(dim, inner + conv_dim + num_heads, bias=False)
        self.conv = nn.Conv2d(conv_dim, conv_dim, d_conv, padding=(d_conv - 1) // 2, groups=conv_dim)
        self.dt_bias = nn.Parameter(dt_bias_init(num_heads))
        self.A_log = nn.Parameter(torch.empty(num_heads).uniform_(1, 16).log())
        self.D = nn.Parameter(torch.ones(num_heads))
        self.norm = nn.LayerNorm(inner)  # applied inside non_causal_ssd, with the gate
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        length, heads, n = height * width, self.num_heads, self.d_state
        z, xbc, dt = self.in_proj(x).split([self.inner, self.inner + 2 * n, heads], dim=-1)
        # the conv, its bias and SiLU in one op, reading the projection's slice in place; its output is
        # (B, H, W, E + 2N) contiguous: x, B, C are read from it in place
        xbc = dwconv2d(xbc, self.conv.weight, self.conv.bias, silu=True)
        xs, B, C = xbc.split([self.inner, n, n], dim=-1)
        heads_shape = (batch, length, heads, self.head_dim)
        y = non_causal_ssd(xs.reshape(heads_shape), dt.reshape(batch, length, heads), self.A_log.exp(),
                           B.reshape(batch, length, n), C.reshape(batch, length, n), self.D, self.dt_bias,
                           dt_softplus=True, z=z.reshape(heads_shape), norm_weight=self.norm.weight,
                           norm_bias=self.norm.bias, norm_eps=self.norm.eps)   # LayerNorm(y) * z, fused
        return self.out_proj(y.view(batch, height, width, self.inner))


class SoftmaxAttention(nn.Module):
    """Global multi-head softmax attention on a channels-last map (VSSD's last stage): qkv without
    bias, head dim C / heads, no position bias (the blocks' position-encoding convs give position)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SoftmaxAttention: {dim} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, dim = x.shape
        qkv = self.qkv(x).view(batch, height * width, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(batch, height, width, dim))


class VSSD(HierarchicalSSM):
    """VSSD.

    Args:
        in_chans: image channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: 'avg', 'max', ... or '' (no pooling).
        dims: channels of the four stages.
        depths: blocks per stage.
        num_heads: heads per stage (of the NC-SSD, or of the attention).
        mixers: per stage 'ssd' (NC-SSD) or 'attention' (softmax attention).
        d_state: N of the NC-SSD.
        ssd_expansion: the NC-SSD's inner channels / dim.
        mlp_ratio: MLP hidden size / dim.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this value.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (2, 4, 8, 4),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        mixers: Sequence[str] = ("ssd", "ssd", "ssd", "attention"),
        d_state: int = 64,
        ssd_expansion: int = 2,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if not len(dims) == len(depths) == len(num_heads) == len(mixers):
            raise ValueError(f"dims {tuple(dims)}, depths {tuple(depths)}, num_heads {tuple(num_heads)} and "
                             f"mixers {tuple(mixers)} must have one entry per stage")
        if any(m not in ("ssd", "attention") for m in mixers):
            raise ValueError(f"mixers must be 'ssd' or 'attention', got {tuple(mixers)}")
        self.in_chans = in_chans
        self.stem = ConvBNStem(in_chans, dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # also under a meta device
        stages, self.feature_info = [], []
        for i, (dim, depth, heads, kind) in enumerate(zip(dims, depths, num_heads, mixers)):
            def mixer():
                if kind == "attention":
                    return SoftmaxAttention(dim, heads)
                return NonCausalSSDMixer(dim, heads, expand=ssd_expansion, d_state=d_state)

            blocks = [MixerBlock(dim, mixer(), mlp_ratio=mlp_ratio, drop_path=rates.pop(0), norm_layer=FastLayerNorm,
                                 cpe=True) for _ in range(depth)]
            downsample = ExpandDownsample(dims[i - 1], dim) if i > 0 else None
            stages.append(Stage(blocks, downsample))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2 ** i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self._init_head(dims[-1], num_classes, global_pool, drop_rate)
        self.apply(_init_weights)

    def filter_checkpoint(self, state_dict):
        return checkpoint_filter_fn(state_dict, self)


def _init_weights(m: nn.Module):
    """The official initialisation: every linear layer trunc_normal(0.02) with zero bias, LayerNorms 1 / 0."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# ---- FLOPs by the official rule (fvcore, as VMAMBA2.flops() runs it) -------------------------------------

def _ssd_flop_jit(inputs, outputs, all_heads: bool = False) -> int:
    """The official count of an NC-SSD node: its two matmuls broadcast B and C over the heads, and fvcore's
    matmul handle counts the broadcast operand's shape only, i.e. ONE head, 2 * b * L * N * P (plus the
    fused LayerNorm's 5 FLOPs per element)."""
    from ..profiling.flops import non_causal_ssd_flop_jit  # fvcore is imported on first use only
    return non_causal_ssd_flop_jit(inputs, outputs, all_heads=all_heads)


def _all_heads_flop_jit(inputs, outputs) -> int:
    """An NC-SSD node with every head counted (the work the model does)."""
    return _ssd_flop_jit(inputs, outputs, all_heads=True)


def _attention_flop_jit(inputs, outputs) -> int:
    """Softmax attention as the official code's two einsums count in fvcore: numpy's estimate of each
    (2 * b * heads * L * L * d), printed to 4 digits, halved."""
    batch, heads, length, head_dim = inputs[0].type().sizes()
    exact = batch * heads * length * length * head_dim
    return 2 * math.floor(float(f"{2 * exact:.3e}") / 2)


#: the official rule: the NC-SSD for one head, attention by fvcore's rounded einsum count, the
#: 1-D average pool uncounted
OFFICIAL_FLOP_HANDLES = {
    "prim::PythonOp.NonCausalSSDFn": _ssd_flop_jit,
    "aten::scaled_dot_product_attention": _attention_flop_jit,
    "aten::mean": None,
}
VSSD.flop_handles = OFFICIAL_FLOP_HANDLES

#: the same with every head of the NC-SSD counted (the work the model does)
ALL_HEADS_FLOP_HANDLES = dict(OFFICIAL_FLOP_HANDLES, **{"prim::PythonOp.NonCausalSSDFn": _all_heads_flop_jit})


# ---- official checkpoints ----------------------------------------------------------------------------------
# The official model keeps the downsample at the end of stage i; ours opens stage i + 1.
_BLOCK = r"^layers\.(\d+)\.blocks\.(\d+)\."
_RULES = [
    *CONV_BN_STEM_RULES,
    (_BLOCK + r"cpe(\d)\.", r"stages.\1.blocks.\2.cpe\3.proj."),
    (_BLOCK + r"attn\.conv2d\.", r"stages.\1.blocks.\2.mixer.conv."),
    (_BLOCK + r"attn\.to_qkv\.", r"stages.\1.blocks.\2.mixer.qkv."),
    (_BLOCK + r"attn\.to_out\.", r"stages.\1.blocks.\2.mixer.proj."),
    (_BLOCK + r"attn\.", r"stages.\1.blocks.\2.mixer."),
    (_BLOCK, r"stages.\1.blocks.\2."),
    *EXPAND_DOWNSAMPLE_RULES,
    (r"^norm\.", "norm_pre."),
    (r"^head\.", "head.fc."),
]


def checkpoint_filter_fn(state_dict, model: VSSD):
    """Official VSSD checkpoint (or ours) -> our state dict; raises listing any key mismatch.

    A training checkpoint holding both the model and its EMA gives the EMA's weights if the model's
    pretrained file is one of the official ``*_ema.pth`` releases (selected on the EMA's accuracy),
    else the model's."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    source = str(cfg.get("file") or cfg.get("url") or "")
    if source.endswith("_ema.pth") and isinstance(state_dict.get("model_ema"), dict):
        state_dict = state_dict["model_ema"]
    return remap_checkpoint(unwrap_state_dict(state_dict), model, _RULES, native_key="stem.conv1.0.weight")


def _create(variant: str, pretrained: bool = False, **kwargs) -> VSSD:
    return create_zoo_model(VSSD, variant, pretrained, checkpoint_filter_fn, **kwargs)


_cfg = partial(zoo_cfg, first_conv="stem.conv1.0", license="unknown",
               paper_ids="arXiv:2407.18559", origin_url="https://github.com/YuHengsss/VSSD")


#: Published numbers (official README), the exact parameter counts of the official models and their FLOPs
#: by the family's rule (the official fvcore count, NC-SSD counted for one head); ``flops_all_heads`` counts
#: every head. ``top1_mesa``: trained with MESA (official README's second table).
#: ``params_m`` of micro and tiny: the yaml comments (13.5M, 24.27M; the README rounds to 14M, 24M).
PUBLISHED = {
    "vssd_micro": dict(official_name="vssd_micro_e300", official_params=13_512_964, params_m=13.5,
                       official_flops=2_305_701_632, flops_all_heads=2_406_856_448, gflops=2.3, top1=82.5),
    "vssd_tiny": dict(official_name="vssd_tiny_e300", official_params=24_270_724, params_m=24.3,
                      official_flops=4_475_384_800, flops_all_heads=4_693_750_752, gflops=4.5, top1=83.6, top1_mesa=84.1),
    "vssd_small": dict(official_name="vssd_small_e300", official_params=40_075_650, params_m=40,
                       official_flops=7_365_999_448, flops_all_heads=7_756_168_024, gflops=7.4, top1=84.1,
                       top1_mesa=84.5),
    "vssd_base": dict(official_name="vssd_base_e300", official_params=88_823_151, params_m=89,
                      official_flops=16_066_232_896, flops_all_heads=16_719_725_120, gflops=16.1, top1=84.7,
                      top1_mesa=85.4),
}

#: What the model cards say about the family as a whole (tools/make_model_cards.py).
CARD = dict(
    family="VSSD",
    paper="VSSD: Vision Mamba with Non-Causal State Space Duality",
    arxiv="2407.18559",
    code="https://github.com/YuHengsss/VSSD",
    commit="87b753b",
    license="unknown (the official repository has no license file)",
    top1_source="official README (ImageNet-1k, 224x224; MESA-trained results as top1_mesa)",
    flops_rule=("fvcore multiply-adds as the official VMAMBA2.flops(): LayerNorm 5/elem, the NC-SSD's two matmuls "
                "counted for ONE head (2*B*L*N*P: fvcore's matmul handle ignores the broadcast head axis), attention "
                "by fvcore's rounded einsum estimate, the average pool uncounted; flops_all_heads counts every head"),
    scan="none: the non-causal SSD is order-free (KV = sum_l B_l (dt*a*x_l)^T per head, y = C.KV + D*x)",
    notes=[
        "vssd_micro is registered with drop_path_rate 0.2: the official builder reads "
        "MODEL.VMAMBA2.DROP_PATH_RATE (default 0.2), so micro's yaml DROP_PATH_RATE 0.1 is never used.",
        "Stage 3 is standard softmax attention (no position bias), stages 0-2 the NC-SSD.",
        "Input height and width must be multiples of 32.",
    ],
    bibtex="""@article{shi2024vssd,
  title={VSSD: Vision Mamba with Non-Causal State Space Duality},
  author={Shi, Yuheng and Dong, Minjing and Li, Mingjia and Xu, Chang},
  journal={arXiv preprint arXiv:2407.18559},
  year={2024}
}""",
)

#: Architecture overrides that make every model of the family tiny (interop and CPU tests).
TINY_KWARGS = dict(dims=(16, 32, 32, 32), depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2), d_state=8)

_HF = "https://huggingface.co/YuhengSSS/VSSD/resolve/main/"
default_cfgs = generate_default_cfgs({
    "vssd_micro.in1k": _cfg(_HF + "vssd_micro_best.pth"),
    "vssd_tiny.in1k": _cfg(_HF + "vssd_tiny_best_ema.pth"),
    "vssd_tiny.in1k_mesa": _cfg(_HF + "vssd_tiny_e300_with_mesa.pth"),
    "vssd_small.in1k": _cfg(_HF + "vssd_small_best_ema.pth"),
    "vssd_small.in1k_mesa": _cfg(_HF + "vssd_small_e300_with_mesa.pth"),
    "vssd_base.in1k": _cfg(_HF + "vssd_base_best_ema.pth"),
    "vssd_base.in1k_mesa": _cfg(_HF + "vssd_base_e300_with_mesa.pth"),
})


@register_model
def vssd_micro(pretrained: bool = False, **kwargs) -> VSSD:
    """VSSD-Micro (official ``vssd_micro_e300``): 13.5M params, 2.3 GFLOPs, 82.5% ImageNet top-1."""
    args = dict(dims=(48, 96, 192, 384), depths=(2, 2, 8, 4), num_heads=(2, 4, 8, 16), d_state=48,
                ssd_expansion=2, mlp_ratio=4.0, drop_path_rate=0.2)  # 0.2, not the yaml's 0.1: see CARD notes
    return _create("vssd_micro", pretrained, **dict(args, **kwargs))


@register_model
def vssd_tiny(pretrained: bool = False, **kwargs) -> VSSD:
    """VSSD-Tiny (official ``vssd_tiny_e300``): 24.3M params, 4.5 GFLOPs, 83.6% ImageNet top-1."""
    args = dict(dims=(64, 128, 256, 512), depths=(2, 4, 8, 4), num_heads=(2, 4, 8, 16), d_state=64,
                ssd_expansion=2, mlp_ratio=4.0, drop_path_rate=0.2)
    return _create("vssd_tiny", pretrained, **dict(args, **kwargs))


@register_model
def vssd_small(pretrained: bool = False, **kwargs) -> VSSD:
    """VSSD-Small (official ``vssd_small_e300``): 40.1M params, 7.4 GFLOPs, 84.1% ImageNet top-1."""
    args = dict(dims=(64, 128, 256, 512), depths=(3, 4, 21, 5), num_heads=(2, 4, 8, 16), d_state=64,
                ssd_expansion=2, mlp_ratio=4.0, drop_path_rate=0.4)
    return _create("vssd_small", pretrained, **dict(args, **kwargs))


@register_model
def vssd_base(pretrained: bool = False, **kwargs) -> VSSD:
    """VSSD-Base (official ``vssd_base_e300``): 88.8M params, 16.1 GFLOPs, 84.7% ImageNet top-1."""
    args = dict(dims=(96, 192, 384, 768), depths=(3, 4, 21, 5), num_heads=(3, 6, 12, 24), d_state=64,
                ssd_expansion=2, mlp_ratio=4.0, drop_path_rate=0.6)
    return _create("vssd_base", pretrained, **dict(args, **kwargs))

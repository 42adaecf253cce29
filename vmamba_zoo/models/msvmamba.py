"""MSVMamba: Multi-Scale VMamba (Shi et al., 2024), the released nano / micro / tiny models.

A 4x4 patch stem, four stages of blocks (the multi-scale SS2D mixer, then a convolutional FFN) with
patch merging between them, and a LayerNorm + pool + linear head. The mixer scans the full-resolution map
once, row by row, and a half-resolution copy along three orders joined into one sequence, upsampling the
latter back (:class:`~vmamba_zoo.layers.MultiScaleSS2D`). Official code: github.com/YuHengsss/MSVMamba
(``classification/models/vmamba.py`` with ``SSCORE_TYPE: multiscale_4scan_12``).
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
from torch import nn
from timm.models import generate_default_cfgs, register_model

from ssm_kernels import selective_scan_flops

from ..layers import ConvFFN, FastLayerNorm, MixerBlock, MultiScaleSS2D, PatchMerging, PatchStem, Stage
from ._builder import create_zoo_model, zoo_cfg
from ._checkpoint import remap_checkpoint
from ._hierarchical import HierarchicalSSM

__all__ = ["MSVMamba", "checkpoint_filter_fn"]


class MSVMamba(HierarchicalSSM):
    """MSVMamba.

    Args:
        in_chans: image channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: 'avg', 'max', ... or '' (no pooling).
        embed_dim: channels of the first stage (doubling at each stage).
        depths: blocks per stage.
        d_state, ssm_ratio, dt_rank: multi-scale SS2D settings (see :class:`MultiScaleSS2D`).
        ffn_ratio: hidden channels of the convolutional FFN / dim.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this value.

    Any input whose sides are multiples of 4 (the patch stem): odd maps inside are zero-padded by the patch
    merging, and the half-resolution branch of an odd map has ceil(H / 2) x ceil(W / 2) positions, as in the
    official code.
    """

    input_divisor = 4

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 96,
        depths: Sequence[int] = (1, 2, 9, 2),
        d_state: int = 1,
        ssm_ratio: float = 2.0,
        dt_rank="auto",
        ffn_ratio: float = 2.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.in_chans = in_chans
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        self.stem = PatchStem(in_chans, dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # also under a meta device
        stages, self.feature_info = [], []
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            blocks = [
                MixerBlock(dim, MultiScaleSS2D(dim, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank),
                           mlp_ratio=ffn_ratio, mlp_layer=ConvFFN, drop_path=rates.pop(0), norm_layer=FastLayerNorm)
                for _ in range(depth)
            ]
            downsample = PatchMerging(dims[i - 1], dim) if i > 0 else None
            stages.append(Stage(blocks, downsample))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2 ** i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self._init_head(dims[-1], num_classes, global_pool, drop_rate)
        # the official initialisation: every nn.Linear of the official model (its FFN's are 1x1 convs)
        ffn_linears = {id(m) for m in self.modules() if isinstance(m, ConvFFN) for m in (m.fc1, m.fc2)}
        for m in self.modules():
            if isinstance(m, nn.Linear) and id(m) not in ffn_linears:
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # FLOPs by the official rule (see _official_scan_flops)
        ranks = {m.d_inner: m.dt_rank for m in self.modules() if isinstance(m, MultiScaleSS2D)}
        self.flop_handles = {
            "aten::einsum": None,
            "prim::PythonOp.SelectiveScanFn": partial(_official_scan_flops, ranks=ranks),
            "prim::PythonOp.Scan2dFn": _official_scan2d_flops,
        }

    def filter_checkpoint(self, state_dict):
        return checkpoint_filter_fn(state_dict, self)


# FLOPs. The official count (VSSM.flops: fvcore's defaults, its own scan handle) sees each branch as the
# sequence it scans: the x_proj and dt_proj einsums run on the gathered sequence (3 h'w' steps for the
# half-resolution branch, where we project the map once per position), counted by fvcore's einsum handle
# (numpy's rounded estimate); then 9 BLDN + BLD for the scan; the out-norm, 5 per element of the sequence.
# Our einsums are left uncounted and each scan node counts its projections as the official does.

def _sequence_flops(batch: int, length: int, channels: int, d_state: int, rank: int) -> int:
    """The official count of one branch's sequence of ``length`` steps: projections and scan."""
    from ..profiling.flops import numpy_einsum_macs  # fvcore, only when counting
    x_proj = numpy_einsum_macs(batch * length * channels * (rank + 2 * d_state))
    dt_proj = numpy_einsum_macs(batch * length * channels * rank)
    return x_proj + dt_proj + selective_scan_flops(batch, length, channels, d_state)


def _official_scan_flops(inputs, outputs, ranks) -> int:
    """The unfused scan (reference backend): its step-size and x_proj einsums are uncounted above."""
    from ..profiling.flops import get_shape, scan_inputs
    args = scan_inputs(inputs, outputs, fused=False)
    batch, channels, length = get_shape(args["u"])
    d_state = get_shape(args["A"])[1]
    return _sequence_flops(batch, length, channels, d_state, ranks[channels])


def _official_scan2d_flops(inputs, outputs) -> int:
    """The fused scan (Triton backend): projections, scan and out-norm (per step) of its sequence."""
    from ..profiling.flops import get_shape, numpy_einsum_macs, scan2d_flop_jit, scan_inputs
    args = scan_inputs(inputs, outputs, fused=True)
    _, channels, rank = get_shape(args["dt_weight"])
    d_state = get_shape(args["A"])[1]
    batch, length = get_shape(args["u"])[0], get_shape(args["index"])[1]
    x_proj = numpy_einsum_macs(batch * length * channels * (rank + 2 * d_state))
    return x_proj + scan2d_flop_jit(inputs, outputs, einsum_macs=numpy_einsum_macs)


# Official key -> our key. The official model keeps the downsample at the end of stage i; ours opens
# stage i + 1. Its FFN's 1x1 convs are our linear layers (weights reshaped by remap_checkpoint).
_BLOCK = r"^layers\.(\d+)\.blocks\.(\d+)\."
_OP = r"stages.\1.blocks.\2.mixer."
_RULES = [
    (r"^patch_embed\.0\.", "stem.conv."),
    (r"^patch_embed\.2\.", "stem.norm."),
    (_BLOCK + r"norm\.", r"stages.\1.blocks.\2.norm1."),
    (_BLOCK + r"op\.x_proj_weight$", _OP + "x_proj_weight"),
    (_BLOCK + r"op\.dt_projs_weight$", _OP + "dt_proj_weight"),
    (_BLOCK + r"op\.dt_projs_bias$", _OP + "dt_bias"),
    (_BLOCK + r"op\.A_logs$", _OP + "A_log"),
    (_BLOCK + r"op\.Ds$", _OP + "D"),
    (_BLOCK + r"op\.conv2d\.", _OP + "conv."),
    (_BLOCK + r"op\.conv2d_b1\.", _OP + "conv_low."),
    (_BLOCK + r"op\.se\.fc\.0\.", _OP + "se.fc1."),
    (_BLOCK + r"op\.se\.fc\.2\.", _OP + "se.fc2."),
    (_BLOCK + r"op\.", _OP),
    (_BLOCK + r"convFFN\.linear1\.", r"stages.\1.blocks.\2.mlp.fc1."),
    (_BLOCK + r"convFFN\.linear2\.", r"stages.\1.blocks.\2.mlp.fc2."),
    (_BLOCK + r"convFFN\.dwc\.", r"stages.\1.blocks.\2.mlp.dwconv."),
    (_BLOCK, r"stages.\1.blocks.\2."),
    (r"^layers\.(\d+)\.downsample\.", lambda m: f"stages.{int(m[1]) + 1}.downsample."),
    (r"^(classifier\.)?norm\.", "norm_pre."),
    (r"^(classifier\.)?head\.", "head.fc."),
]


def checkpoint_filter_fn(state_dict, model: MSVMamba):
    """Official MSVMamba checkpoint (or ours) -> our state dict; raises listing any key mismatch."""
    return remap_checkpoint(state_dict, model, _RULES, native_key="stem.conv.weight")


def _create(variant: str, pretrained: bool = False, **kwargs) -> MSVMamba:
    return create_zoo_model(MSVMamba, variant, pretrained, checkpoint_filter_fn, **kwargs)


_cfg = partial(zoo_cfg, first_conv="stem.conv", license="mit",
               paper_ids="arXiv:2405.14174", origin_url="https://github.com/YuHengsss/MSVMamba")


#: Published numbers (official README; params_m as the classification yamls' comments give them, the README
#: rounds to 7 / 12 / 33 M), the exact parameter counts of the official models and their FLOPs by
#: the family's rule (the official fvcore count, VSSM.flops), for the tests, the zoo table and the model cards.
PUBLISHED = {
    "msvmamba_nano": dict(official_name="vssm_nano_ms_e300", official_params=6_864_136, params_m=6.86,
                          official_flops=882_952_156, gflops=0.9, top1=77.3),
    "msvmamba_micro": dict(official_name="vssm_micro_ms_e300", official_params=11_879_272, params_m=11.88,
                           official_flops=1_532_304_900, gflops=1.5, top1=79.8),
    "msvmamba_tiny": dict(official_name="vssm_tiny_ms_e300", official_params=33_046_312, params_m=33.08,
                          official_flops=4_612_927_988, gflops=4.6, top1=82.8),
}

#: What the model cards say about the family as a whole (tools/make_model_cards.py).
CARD = dict(
    family="MSVMamba",
    paper="Multi-Scale VMamba: Hierarchy in Hierarchy Visual State Space Model",
    arxiv="2405.14174",
    code="https://github.com/YuHengsss/MSVMamba",
    commit="c394019",
    license="MIT",
    top1_source="official README (ImageNet-1k, 224x224)",
    flops_rule=("fvcore multiply-adds; LayerNorm 5/elem; bilinear upsampling 4 per output element; each branch's "
                "x_proj and dt_proj counted on its scanned sequence as fvcore's einsum handle estimates them, its "
                "scan 9*B*L*D*N + B*L*D (the official VSSM.flops)"),
    scan=("multi-scale: one row-major scan of the full map; one scan of the half-resolution map along three orders "
          "joined into one sequence (row-major reversed, column-major, column-major reversed), upsampled and added"),
    notes=["Two SSM parameter sets per block: the three half-resolution orders share one set and one recurrence.",
           "The FFN is a ConvFFN (1x1, + depthwise 3x3, GELU, 1x1); squeeze-excitation on the mixer output.",
           "The official checkpoints are Google Drive folders (official README): download the .pth and load it with "
           "pretrained=True, pretrained_cfg_overlay=dict(file=path); the converter maps the official keys."],
    bibtex="""@article{shi2024multiscale,
  title={Multi-Scale VMamba: Hierarchy in Hierarchy Visual State Space Model},
  author={Shi, Yuheng and Dong, Minjing and Xu, Chang},
  journal={arXiv preprint arXiv:2405.14174},
  year={2024}
}""",
)

#: Architecture overrides that make every model of the family tiny (interop and CPU tests).
TINY_KWARGS = dict(embed_dim=16, depths=(1, 1, 1, 1))

default_cfgs = generate_default_cfgs({
    "msvmamba_nano.in1k": _cfg(),
    "msvmamba_micro.in1k": _cfg(),
    "msvmamba_tiny.in1k": _cfg(),
})


@register_model
def msvmamba_nano(pretrained: bool = False, **kwargs) -> MSVMamba:
    """MSVMamba-N (official ``vssm_nano_224_ms``): 6.9M params, 0.9 GFLOPs, 77.3% ImageNet top-1."""
    args = dict(embed_dim=48, depths=(1, 2, 5, 2), d_state=1, ssm_ratio=2.0, dt_rank="auto", ffn_ratio=2.0,
                drop_path_rate=0.2)
    return _create("msvmamba_nano", pretrained, **dict(args, **kwargs))


@register_model
def msvmamba_micro(pretrained: bool = False, **kwargs) -> MSVMamba:
    """MSVMamba-M (official ``vssm_micro_224_ms``): 11.9M params, 1.5 GFLOPs, 79.8% ImageNet top-1."""
    args = dict(embed_dim=64, depths=(1, 2, 5, 2), d_state=1, ssm_ratio=2.0, dt_rank="auto", ffn_ratio=2.0,
                drop_path_rate=0.2)
    return _create("msvmamba_micro", pretrained, **dict(args, **kwargs))


@register_model
def msvmamba_tiny(pretrained: bool = False, **kwargs) -> MSVMamba:
    """MSVMamba-T (official ``vssm_tiny_224_ms``): 33.0M params, 4.6 GFLOPs, 82.8% ImageNet top-1."""
    args = dict(embed_dim=96, depths=(1, 2, 9, 2), d_state=1, ssm_ratio=2.0, dt_rank="auto", ffn_ratio=2.0,
                drop_path_rate=0.2)
    return _create("msvmamba_tiny", pretrained, **dict(args, **kwargs))

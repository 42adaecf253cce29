"""Vim: Vision Mamba (Zhu et al., ICML 2024), the released middle-class-token models.

A plain, ViT-like model: a patch embedding (16x16 conv, stride 16, or stride 8 for the long-sequence
fine-tuned "+" models), a class token inserted in the MIDDLE of the token sequence, an absolute position
embedding, 24 pre-norm residual blocks of RMSNorm and a bidirectional Mamba mixer (:class:`BiMamba`,
no MLP), a final RMSNorm and a linear classifier on the middle class token. The residual stream is
kept in float32 (the official ``residual_in_fp32`` with its fused add + norm). Official code:
github.com/hustvl/Vim (``vim/models_mamba.py``).

Unlike the official code, which asserts its training size, any input whose sides are multiples of the
patch stride works: the position embedding is interpolated (bicubic, as timm's ViTs do) around the
class token's own embedding, which stays in the middle.
"""
from __future__ import annotations

import math
from functools import partial
from typing import List, Optional, Tuple, Union

import torch
from torch import nn
from timm.layers import lecun_normal_, register_notrace_function, resample_abs_pos_embed, trunc_normal_
from timm.models import adapt_input_conv, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq

from ..layers import BiMamba, Conv2d, MixerBlock, NotScriptable
from ._builder import create_zoo_model, zoo_cfg
from ._checkpoint import load_checkpoint_file, remap_checkpoint, unwrap_state_dict

__all__ = ["Vim", "checkpoint_filter_fn", "resample_pos_embed"]


@register_notrace_function  # compares grid sizes: one torch.fx leaf
def resample_pos_embed(pos_embed: torch.Tensor, new_grid: Tuple[int, int], old_grid: Tuple[int, int],
                       interpolation: str = "bicubic", antialias: bool = True) -> torch.Tensor:
    """A (1, M + 1, D) position embedding with the class token's entry at M // 2 (M = old grid's tokens)
    for another grid: the patch part resampled as timm resamples a ViT's, the class entry kept in the
    middle of the new sequence."""
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    mid = old_grid[0] * old_grid[1] // 2
    cls = pos_embed[:, mid:mid + 1]
    patches = torch.cat([pos_embed[:, :mid], pos_embed[:, mid + 1:]], dim=1)
    patches = resample_abs_pos_embed(patches, new_size=list(new_grid), old_size=list(old_grid), num_prefix_tokens=0,
                                     interpolation=interpolation, antialias=antialias)
    new_mid = new_grid[0] * new_grid[1] // 2
    return torch.cat([patches[:, :new_mid], cls, patches[:, new_mid:]], dim=1)


class PatchEmbed(nn.Module):
    """Image -> (B, grid_h * grid_w, D) tokens, row-major: a patch_size conv with the given stride."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size, self.stride = patch_size, stride
        self.proj = Conv2d(in_chans, embed_dim, patch_size, stride=stride)

    def grid(self, height: int, width: int) -> Tuple[int, int]:
        return (height - self.patch_size) // self.stride + 1, (width - self.patch_size) // self.stride + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Vim(NotScriptable, nn.Module):
    """Vision Mamba.

    Args:
        img_size: the size the position embedding is trained at (other sizes interpolate it).
        patch_size, stride: patch embedding conv (stride < patch_size: overlapping patches).
        in_chans: image channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: 'token' (the middle class token, as the official model), 'avg' (mean of the
            patch tokens) or '' (no pooling: forward_head returns every token).
        embed_dim, depth: token width and number of blocks.
        d_state, expand, d_conv: the :class:`BiMamba` mixer's settings.
        norm_eps: RMSNorm epsilon.
        drop_rate: dropout before the classifier (not in the official models).
        pos_drop_rate: dropout after adding the position embedding (the official ``drop_rate``).
        drop_path_rate: stochastic depth of block i's output, linspace(0, rate, depth)[i], as the
            official schedule gives it.
    """

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        patch_size: int = 16,
        stride: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "token",
        embed_dim: int = 192,
        depth: int = 24,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        norm_eps: float = 1e-5,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if global_pool not in ("token", "avg", "max", ""):
            raise ValueError(f"global_pool must be 'token', 'avg', 'max' or '', got {global_pool!r}")
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.in_chans, self.num_classes, self.global_pool = in_chans, num_classes, global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.grad_checkpointing = False
        self.patch_embed = PatchEmbed(patch_size, stride, in_chans, embed_dim)
        self.grid_size = self.patch_embed.grid(*img_size)
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        norm_layer = partial(nn.RMSNorm, eps=norm_eps)
        self.blocks = nn.Sequential(*[
            MixerBlock(embed_dim, BiMamba(embed_dim, d_state=d_state, expand=expand, d_conv=d_conv), mlp_ratio=0,
                       drop_path=rates[i], norm_layer=norm_layer)
            for i in range(depth)
        ])
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=stride) for i in range(depth)]
        self.norm = norm_layer(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(depth)

    def _init_weights(self, depth: int):
        """The official initialisation (the mixers' own layers keep nn.Linear's / nn.Conv1d's defaults)."""
        lecun_normal_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        for block in self.blocks:  # GPT-2's rescaled residual projections
            nn.init.kaiming_uniform_(block.mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                block.mixer.out_proj.weight /= math.sqrt(depth)

    # ---- input and embeddings -----------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the problem if ``x`` is not a batch of images this model takes."""
        if isinstance(x, torch.fx.Proxy):  # traced by torch.fx: no data to check
            return
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__} expects a 4-D image batch (B, C, H, W), got {shape}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"{type(self).__name__} expects {self.in_chans} input channels, got {x.shape[1]} "
                             f"(input shape {tuple(x.shape)}; images must be channels first)")
        height, width = x.shape[-2:]
        stride, patch = self.patch_embed.stride, self.patch_embed.patch_size
        if height % stride or width % stride or min(height, width) < patch:
            raise ValueError(f"{type(self).__name__} needs height and width divisible by its patch stride {stride} "
                             f"(and at least {patch}), got {height}x{width}; resize or pad the input")

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Image -> (tokens with the class token in the middle and positions added, the patch grid)."""
        self.check_input(x)
        grid = self.patch_embed.grid(x.shape[-2], x.shape[-1])  # no unpacking of a shape: torch.fx traces this
        x = self.patch_embed(x)
        mid = x.shape[1] // 2
        x = torch.cat([x[:, :mid], self.cls_token.expand(x.shape[0], -1, -1), x[:, mid:]], dim=1)
        # a float32 position embedding makes the residual stream float32 under autocast too
        x = x + resample_pos_embed(self.pos_embed, grid, self.grid_size)
        return self.pos_drop(x), grid

    @staticmethod
    def _split_tokens(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, M + 1, D) -> (patch tokens (B, M, D), class token (B, 1, D))."""
        mid = (x.shape[1] - 1) // 2
        return torch.cat([x[:, :mid], x[:, mid + 1:]], dim=1), x[:, mid:mid + 1]

    # ---- timm interface -----------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self):
        # as the official recipe (timm's optimizer factory also exempts every 1-D parameter: norms,
        # biases, D, the dt bias)
        return {"pos_embed", "cls_token"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return dict(stem=r"^cls_token|pos_embed|patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        if global_pool is not None:
            if global_pool not in ("token", "avg", "max", ""):
                raise ValueError(f"global_pool must be 'token', 'avg', 'max' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> normalised tokens (B, M + 1, D), the class token at index M // 2."""
        x, _ = self._embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "token":
            x = x[:, (x.shape[1] - 1) // 2]
        elif self.global_pool == "avg":
            x = self._split_tokens(x)[0].mean(dim=1)
        elif self.global_pool == "max":
            x = self._split_tokens(x)[0].amax(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """Block outputs as in timm's ViTs: the last ``indices`` blocks if int, those listed if a sequence.

        Each intermediate is the patch tokens (class token removed) as an NCHW map (``'NHWC'`` or
        ``'NLC'`` on request), normalised with the final norm if ``norm``; with
        ``return_prefix_tokens`` each comes as (map, class token (B, 1, D)).
        """
        if output_fmt not in ("NCHW", "NHWC", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW', 'NHWC' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x, (gh, gw) = self._embed(x)
        blocks = self.blocks[:max_index + 1] if stop_early else self.blocks
        intermediates = []
        for i, block in enumerate(blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i in take_indices:
                patches, cls = self._split_tokens(self.norm(x) if norm else x)
                if output_fmt != "NLC":
                    patches = patches.reshape(x.shape[0], gh, gw, -1)
                    if output_fmt == "NCHW":
                        patches = patches.permute(0, 3, 1, 2).contiguous()
                intermediates.append((patches, cls) if return_prefix_tokens else patches)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the blocks (and optionally the final norm and the head) not needed for ``indices``."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    # ---- weights ------------------------------------------------------------------------------------
    def filter_checkpoint(self, state_dict):
        return checkpoint_filter_fn(state_dict, self)

    @torch.jit.ignore
    def load_pretrained(self, checkpoint_path: str):
        """Load an official or zoo checkpoint file (timm calls this for ``pretrained=True``): the
        classifier is kept only if its class count matches; the patch embedding is adapted to other
        input channels and the position embedding to another size, as timm does."""
        state_dict = unwrap_state_dict(load_checkpoint_file(checkpoint_path))
        head = state_dict.get("head.weight")
        if not isinstance(self.head, nn.Linear) or head is None or head.shape != self.head.weight.shape:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
        weight = state_dict["patch_embed.proj.weight"]
        if weight.shape[1] != self.in_chans:
            state_dict["patch_embed.proj.weight"] = adapt_input_conv(self.in_chans, weight)
        missing, unexpected = self.load_state_dict(checkpoint_filter_fn(state_dict, self), strict=False)
        assert not unexpected and all(k.startswith("head.") for k in missing), (missing, unexpected)


# Official key -> ours. The two directions' tensors of each mixer are stacked first (_stack_directions).
_RULES = [
    (r"^layers\.(\d+)\.norm\.", r"blocks.\1.norm1."),
    (r"^layers\.(\d+)\.mixer\.", r"blocks.\1.mixer."),
    (r"^norm_f\.", "norm."),
]
# (forward tensor, backward tensor, ours, how): stack -> (2, ...), cat -> (2 * first dim, ...)
_DIRECTIONS = [
    ("conv1d.weight", "conv1d_b.weight", "conv_weight", "stack"),
    ("conv1d.bias", "conv1d_b.bias", "conv_bias", "cat"),
    ("x_proj.weight", "x_proj_b.weight", "x_proj_weight", "stack"),
    ("dt_proj.weight", "dt_proj_b.weight", "dt_proj_weight", "stack"),
    ("dt_proj.bias", "dt_proj_b.bias", "dt_bias", "cat"),
    ("A_log", "A_b_log", "A_log", "cat"),
    ("D", "D_b", "D", "cat"),
]
_CLASSIFIER = ("head.weight", "head.bias")


def _stack_directions(state_dict):
    """The official per-direction tensors of every mixer (``conv1d`` / ``conv1d_b``, ...) as our stacked ones.
    A pair with one half missing is left as it is (the key check then reports it)."""
    out = dict(state_dict)
    prefixes = {k[:-len("conv1d_b.weight")] for k in state_dict if k.endswith(".mixer.conv1d_b.weight")}
    for prefix in sorted(prefixes):
        for forward, backward, ours, how in _DIRECTIONS:
            pair = (prefix + forward, prefix + backward)
            if all(k in out for k in pair):
                a, b = (out.pop(k) for k in pair)
                if a.dim() == 3:  # conv weights (E, 1, W)
                    a, b = a[:, 0], b[:, 0]
                out[prefix + ours] = torch.stack([a, b]) if how == "stack" else torch.cat([a, b])
    return out


def checkpoint_filter_fn(state_dict, model: Vim):
    """Official Vim checkpoint (or ours) -> our state dict; raises listing any key mismatch.

    The two directions' tensors of each mixer are stacked, and a position embedding trained at another
    size is resampled to the model's (around the middle class token).
    """
    state_dict = unwrap_state_dict(state_dict)
    if "blocks.0.mixer.conv_weight" not in state_dict:
        state_dict = _stack_directions(state_dict)
    pos_embed = state_dict.get("pos_embed")
    if pos_embed is not None and pos_embed.shape != model.pos_embed.shape:
        side = math.isqrt(pos_embed.shape[1] - 1)
        if side * side == pos_embed.shape[1] - 1:  # the official models' grids are square
            state_dict = dict(state_dict, pos_embed=resample_pos_embed(pos_embed, model.grid_size, (side, side)))
    return remap_checkpoint(state_dict, model, _RULES, native_key="blocks.0.mixer.conv_weight",
                            classifier_keys=_CLASSIFIER)


def _create(variant: str, pretrained: bool = False, **kwargs) -> Vim:
    # the official dense-prediction taps: the last block of each quarter of the depth (5, 11, 17, 23 of 24)
    depth = kwargs.get("depth", 24)
    out_indices = kwargs.pop("out_indices", tuple(sorted({max(0, depth * (i + 1) // 4 - 1) for i in range(4)})))
    return create_zoo_model(Vim, variant, pretrained, checkpoint_filter_fn, out_indices, **kwargs)


_HF = "https://huggingface.co/hustvl/"


_cfg = partial(zoo_cfg, first_conv="patch_embed.proj", license="apache-2.0",
               paper_ids="arXiv:2401.09417", origin_url="https://github.com/hustvl/Vim", classifier="head",
               pool_size=None)


#: Published numbers (official README: ImageNet-1k top-1 at 224x224; it rounds the parameters to 7M / 26M / 98M,
#: ``params_m`` keeps one decimal), the exact parameter counts of the official models, and FLOPs: the official
#: repository has no count, so ``official_flops`` is the official model counted by the zoo's rule (fvcore +
#: 9BLDN + BLD per scan direction, VMamba's); ``cited_flops`` is the closed form of LocalMamba's
#: ``VisionMamba.flops()`` behind the 1.5 / 5.1 G that later papers cite (each projection and conv counted once
#: for the two directions, the class token left out).
PUBLISHED = {
    "vim_tiny": dict(official_name="vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2",
                     official_params=7_148_008, params_m=7.1, official_flops=1_819_227_648, gflops=1.82,
                     cited_flops=1_475_175_936, cited_gflops=1.5, top1=76.1, top5=93.0),
    "vim_tiny_stride8": dict(
        official_name="vim_tiny_patch16_stride8_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2",
        official_params=7_250_344, params_m=7.3, official_flops=6_741_179_904, gflops=6.74, top1=78.3, top5=94.2),
    "vim_small": dict(official_name="vim_small_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2",
                      official_params=25_796_584, params_m=25.8, official_flops=5_904_264_192, gflops=5.90,
                      cited_flops=5_117_955_072, cited_gflops=5.1, top1=80.5, top5=95.1),
    "vim_small_stride8": dict(
        official_name="vim_small_patch16_stride8_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2",
        official_params=26_001_256, params_m=26.0, official_flops=21_878_504_448, gflops=21.88, top1=81.6, top5=95.4),
    "vim_base": dict(
        official_name="vim_base_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_middle_cls_token_div2",
        official_params=97_598_440, params_m=97.6, official_flops=20_871_763_968, gflops=20.87,
        cited_flops=18_906_322_944, cited_gflops=18.9, top1=81.9, top5=95.8),
}

#: What the model cards say about the family as a whole (tools/make_model_cards.py).
CARD = dict(
    family="Vim",
    paper="Vision Mamba: Efficient Visual Representation Learning with Bidirectional State Space Model",
    arxiv="2401.09417",
    code="https://github.com/hustvl/Vim",
    commit="dd0358a",
    license="Apache-2.0",
    top1_source="official README (ImageNet-1k, 224x224)",
    flops_rule=("the official repository has no FLOPs count: the official model counted by the zoo's rule (fvcore "
                "multiply-adds; each scan direction 9*B*L*D*N + B*L*D; RMSNorm, the z gate and the pos-embed add "
                "uncounted); the 1.5 / 5.1 G cited by later papers is LocalMamba's closed form (cited_flops)"),
    scan="a 1-D token sequence with a middle class token, forward and reversed (K = 2, one channel group each)",
    notes=[
        "The '+' models (vim_tiny_stride8, vim_small_stride8) embed 16x16 patches with stride 8 (729 tokens at "
        "224x224) and are fine-tuned from the stride-16 ones; their FLOPs are ours, the paper gives none.",
        "Input sides must be multiples of the patch stride (16, or 8 for the '+' models); the position embedding "
        "is interpolated for sizes other than 224 (the official code accepts 224 only).",
        "The official non-fused fallback (mamba_simple.Mamba without the CUDA fast path) runs the forward "
        "branch only; the released weights are trained with both branches, as here.",
    ],
    bibtex="""@inproceedings{zhu2024vim,
  title={Vision Mamba: Efficient Visual Representation Learning with Bidirectional State Space Model},
  author={Zhu, Lianghui and Liao, Bencheng and Zhang, Qian and Wang, Xinlong and Liu, Wenyu and Wang, Xinggang},
  booktitle={International Conference on Machine Learning},
  year={2024}
}""",
)

#: Architecture overrides that make every model of the family tiny (interop and CPU tests).
TINY_KWARGS = dict(embed_dim=16, depth=2, d_state=4)

default_cfgs = generate_default_cfgs({
    "vim_tiny.in1k": _cfg(_HF + "Vim-tiny-midclstok/resolve/main/vim_t_midclstok_76p1acc.pth"),
    "vim_tiny_stride8.in1k": _cfg(_HF + "Vim-tiny-midclstok/resolve/main/vim_t_midclstok_ft_78p3acc.pth"),
    "vim_small.in1k": _cfg(_HF + "Vim-small-midclstok/resolve/main/vim_s_midclstok_80p5acc.pth"),
    "vim_small_stride8.in1k": _cfg(_HF + "Vim-small-midclstok/resolve/main/vim_s_midclstok_ft_81p6acc.pth"),
    "vim_base.in1k": _cfg(_HF + "Vim-base-midclstok/resolve/main/vim_b_midclstok_81p9acc.pth"),
})


@register_model
def vim_tiny(pretrained: bool = False, **kwargs) -> Vim:
    """Vim-Ti: 7.1M params, 1.82 GFLOPs by the zoo's rule (1.5 as cited), 76.1% ImageNet top-1."""
    args = dict(patch_size=16, stride=16, embed_dim=192, depth=24, d_state=16, drop_path_rate=0.0)
    return _create("vim_tiny", pretrained, **dict(args, **kwargs))


@register_model
def vim_tiny_stride8(pretrained: bool = False, **kwargs) -> Vim:
    """Vim-Ti+ (16x16 patches at stride 8, long-sequence fine-tuned): 7.3M params, 78.3% ImageNet top-1."""
    args = dict(patch_size=16, stride=8, embed_dim=192, depth=24, d_state=16, drop_path_rate=0.0)
    return _create("vim_tiny_stride8", pretrained, **dict(args, **kwargs))


@register_model
def vim_small(pretrained: bool = False, **kwargs) -> Vim:
    """Vim-S: 25.8M params, 5.90 GFLOPs by the zoo's rule (5.1 as cited), 80.5% ImageNet top-1."""
    args = dict(patch_size=16, stride=16, embed_dim=384, depth=24, d_state=16, drop_path_rate=0.05)
    return _create("vim_small", pretrained, **dict(args, **kwargs))


@register_model
def vim_small_stride8(pretrained: bool = False, **kwargs) -> Vim:
    """Vim-S+ (16x16 patches at stride 8, long-sequence fine-tuned): 26.0M params, 81.6% ImageNet top-1."""
    args = dict(patch_size=16, stride=8, embed_dim=384, depth=24, d_state=16, drop_path_rate=0.0)
    return _create("vim_small_stride8", pretrained, **dict(args, **kwargs))


@register_model
def vim_base(pretrained: bool = False, **kwargs) -> Vim:
    """Vim-B: 97.6M params, 20.87 GFLOPs by the zoo's rule (18.9 by LocalMamba's), 81.9% ImageNet top-1."""
    args = dict(patch_size=16, stride=16, embed_dim=768, depth=24, d_state=16, drop_path_rate=0.1)
    return _create("vim_base", pretrained, **dict(args, **kwargs))

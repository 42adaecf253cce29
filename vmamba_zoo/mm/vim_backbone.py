"""``VimBackbone``: the zoo's plain Vim models as mmdet / mmseg backbones.

Vim is single-scale (one map at the patch stride). Its official dense-prediction backbones (hustvl/Vim,
``seg/backbone/vim.py`` and ``det/detectron2/modeling/backbone/vim.py``) differ from the classifier in
ways this wrapper reproduces as options:

- no class token: the patch tokens alone go through the blocks, with the patch part of the position
  embedding (interpolated to the input's grid, any size divisible by the patch stride);
- taps of intermediate blocks (5, 11, 17, 23 of 24), either the residual stream after the block
  (``feature='residual'``, the official ``use_residual_as_feature``; the last block's output is the
  stream plus its mixer output without drop path, the official ``last_layer_process='add'``) or the
  block's mixer output alone (``feature='mixer'``, the official default, used by the Vim-Ti recipe);
- optionally a 2-D rotary position embedding applied to the residual stream before every block
  (``rope=True``; the official Vim-S segmentation and all detection recipes set ``if_rope``);
- for UperNet, the deconvolution / max-pool pyramid (``fpn=True``, the official ``fpn1..fpn4``) that
  turns the four stride-16 taps into strides 4, 8, 16, 32.

The ViTDet simple feature pyramid of the detection recipe is a neck (:class:`~vmamba_zoo.mm.SimpleFPN`).
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import timm
import torch
from mmcv.cnn import build_norm_layer
from torch import nn

import vmamba_zoo
from vmamba_zoo.models import CheckpointMismatchError, family_module
from vmamba_zoo.models import vim
from vmamba_zoo.models.vim import Vim, checkpoint_filter_fn

from .backbone import ZooBackbone

__all__ = ["VimBackbone", "rope_frequencies", "apply_rope"]


def rope_frequencies(dim: int, grid: Tuple[int, int], step: float, theta: float = 10000.0,
                     device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (grid_h * grid_w, dim) of the official 2-D rotary embedding (EVA-02's
    ``VisionRotaryEmbeddingFast`` with ``dim = embed_dim // 2``): the first half of the channels rotates
    with the row, the second half with the column, in interleaved pairs; position i sits at ``i * step``
    (the official step is the pretraining grid over the fine-tuning grid, 14 / 32 at 512x512)."""
    if dim % 4:
        raise ValueError(f"the rotary embedding needs embed_dim divisible by 4, got {dim}")
    half = dim // 2
    inv_freq = 1.0 / theta ** (torch.arange(0, half, 2, dtype=torch.float32, device=device) / half)

    def axis(n):  # (n, half): each frequency twice, for the (even, odd) pair it rotates
        pos = torch.arange(n, dtype=torch.float32, device=device) * step
        return torch.outer(pos, inv_freq).repeat_interleave(2, dim=-1)

    rows, cols = axis(grid[0]), axis(grid[1])
    freqs = torch.cat([rows[:, None].expand(-1, grid[1], -1), cols[None].expand(grid[0], -1, -1)], dim=-1)
    freqs = freqs.reshape(grid[0] * grid[1], dim)
    return freqs.cos(), freqs.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (even, odd) channel pair of tokens x (B, L, D) by the angles of ``cos`` / ``sin`` (L, D)."""
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return x * cos + rotated * sin


def _mix(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A Vim block's mixer output on its normalised input (the block's residual add left to the caller)."""
    return block.mixer(block.norm1(x))


class VimBackbone(ZooBackbone):
    """Intermediate block outputs of a zoo Vim model as NCHW maps, for necks and decode heads.

    Args:
        model_name: a zoo Vim model, e.g. ``'vim_tiny'``.
        img_size: the training crop (512 for ADE20K, 1024 for ViTDet): the position embedding is kept at
            this grid (a pretrained one is interpolated to it once, on load) and interpolated from it
            for other input sizes.
        out_indices: blocks whose outputs are returned (negative counts from the end).
        feature: ``'residual'`` (the residual stream after the block) or ``'mixer'`` (the block's mixer
            output alone); see the module docstring.
        rope: apply the 2-D rotary position embedding to the residual stream before every block.
        rope_pretrain_grid: the official ``pt_hw_seq_len`` (224 / 16 = 14): rotary positions are
            ``i * rope_pretrain_grid / (img_size / stride)``.
        fpn: turn four taps (or one, repeated) into strides 4, 8, 16, 32 as the official segmentation
            backbone does (stride 16: deconv-norm-GELU-deconv, deconv, identity, max-pool; stride 8:
            deconv, identity, max-pool 2, max-pool 4).
        fpn_norm_cfg: the norm in the stride-4 branch (official: SyncBN).
        drop_path_rate: stochastic depth of the blocks (the official dense recipes: 0.1).
        with_cp: gradient checkpointing of the blocks.
        model_kwargs: more keyword arguments for the timm model (e.g. the family's ``TINY_KWARGS``).
        init_cfg: ``dict(type='Pretrained', checkpoint=path_or_url)`` loads an official Vim
            classification checkpoint (class token and head dropped, position embedding interpolated
            around its middle class token) or one of ours (also a whole detector / segmentor's), through
            the zoo's converter; a file that does not fit raises
            :class:`~vmamba_zoo.CheckpointMismatchError` listing every mismatched key.
    """

    def __init__(
        self,
        model_name: str,
        img_size: int = 512,
        out_indices: Sequence[int] = (5, 11, 17, 23),
        feature: str = "residual",
        rope: bool = False,
        rope_pretrain_grid: int = 14,
        fpn: bool = False,
        fpn_norm_cfg: Optional[dict] = None,
        drop_path_rate: float = 0.1,
        with_cp: bool = False,
        model_kwargs: Optional[dict] = None,
        init_cfg: Optional[Union[dict, List[dict]]] = None,
    ):
        super().__init__(init_cfg=init_cfg)
        if model_name not in vmamba_zoo.list_models():
            raise ValueError(f"unknown model {model_name!r}; the zoo has: {', '.join(vmamba_zoo.list_models())}")
        if feature not in ("residual", "mixer"):
            raise ValueError(f"feature must be 'residual' or 'mixer', got {feature!r}")
        self.model_name, self.feature, self.with_cp = model_name, feature, with_cp
        if family_module(model_name) is not vim:
            raise ValueError(f"VimBackbone wraps Vim models, not {model_name}; hierarchical models go in "
                             f"VisualSSMBackbone")
        self.model_kwargs = dict(model_kwargs or {}, img_size=img_size, drop_path_rate=drop_path_rate)
        model = timm.create_model(model_name, pretrained=False, num_classes=0, **self.model_kwargs)
        depth = len(model.blocks)
        indices = sorted({i + depth if i < 0 else i for i in out_indices})
        if not indices or indices[0] < 0 or indices[-1] >= depth:
            raise ValueError(f"out_indices {tuple(out_indices)} must name blocks of {model_name} (0..{depth - 1})")
        self.out_indices, self.depth = tuple(indices), depth
        stride, dim = model.patch_embed.stride, model.embed_dim
        # what the official dense backbones do not have: class token, final norm, classifier, later blocks
        del model.cls_token
        model.pos_embed = nn.Parameter(model._split_tokens(model.pos_embed.detach())[0].clone())
        model.norm = nn.Identity()
        model.blocks = model.blocks[:indices[-1] + 1]
        if indices[-1] == depth - 1:  # the official last_layer_process='add': no drop path on the last output
            model.blocks[-1].drop_path = nn.Identity()
        self.model = model
        self.rope = rope
        self.rope_step = rope_pretrain_grid / model.grid_size[0]
        self.fpn = fpn
        if fpn:
            if len(indices) not in (1, 4):
                raise ValueError(f"fpn=True makes four maps from four taps or one, got out_indices {self.out_indices}")
            self.fpn1, self.fpn2, self.fpn3, self.fpn4 = self._pyramid(dim, stride, fpn_norm_cfg)
            self.channels, self.strides = (dim,) * 4, (4, 8, 16, 32)
        else:
            self.channels, self.strides = (dim,) * len(indices), (stride,) * len(indices)

    @staticmethod
    def _pyramid(dim: int, stride: int, norm_cfg: Optional[dict]) -> List[nn.Module]:
        up = lambda: nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)  # noqa: E731
        if stride == 16:
            norm = build_norm_layer(norm_cfg or dict(type="SyncBN", requires_grad=True), dim)[1]
            return [nn.Sequential(up(), norm, nn.GELU(), up()), nn.Sequential(up()), nn.Identity(),
                    nn.MaxPool2d(kernel_size=2, stride=2)]
        if stride == 8:
            return [nn.Sequential(up()), nn.Identity(), nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2)),
                    nn.Sequential(nn.MaxPool2d(kernel_size=4, stride=4))]
        raise ValueError(f"fpn=True needs a patch stride of 16 or 8, got {stride}")

    # ---- forward -----------------------------------------------------------------------------------
    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Image -> patch tokens with their position embedding (no class token), and the patch grid."""
        model = self.model
        model.check_input(x)
        grid = model.patch_embed.grid(x.shape[-2], x.shape[-1])
        pos = model.pos_embed
        if tuple(grid) != tuple(model.grid_size):
            pos = timm.layers.resample_abs_pos_embed(pos, new_size=list(grid), old_size=list(model.grid_size),
                                                     num_prefix_tokens=0)
        return model.pos_drop(model.patch_embed(x) + pos), grid

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x, grid = self._embed(x)
        rope = rope_frequencies(x.shape[-1], grid, self.rope_step, device=x.device) if self.rope else None
        feats = []
        for i, block in enumerate(self.model.blocks):
            if rope is not None:
                x = apply_rope(x, *rope)
            if self.with_cp and self.training:
                mixed = torch.utils.checkpoint.checkpoint(_mix, block, x, use_reentrant=False)
            else:
                mixed = _mix(block, x)
            x = x + block.drop_path(mixed)
            if i in self.out_indices:
                if self.feature == "mixer":
                    feat = mixed
                elif rope is not None and i < self.depth - 1:  # the official tap: the next block's input, rotated
                    feat = apply_rope(x, *rope)
                else:
                    feat = x
                feats.append(feat.transpose(1, 2).reshape(x.shape[0], -1, *grid).contiguous())
        if self.fpn:
            feats = feats * 4 if len(feats) == 1 else feats
            feats = [op(f) for op, f in zip((self.fpn1, self.fpn2, self.fpn3, self.fpn4), feats)]
        return tuple(feats)

    # ---- weights -------------------------------------------------------------------------------------
    MAY_STAY_INITIALISED = re.compile(r"^fpn")  # a classification checkpoint leaves the pyramid as initialised

    def convert_checkpoint(self, checkpoint: Mapping, prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
        """An official Vim classifier's state dict, or one of ours (of this backbone or of a whole
        detector / segmentor) -> this backbone's. Raises :class:`CheckpointMismatchError` listing the
        missing, unexpected and mis-shaped keys."""
        state = self._backbone_part(checkpoint, prefix)
        own = self.state_dict()
        if any(k.startswith("model.") for k in state):  # ours: checked as it is
            mis_shaped = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                          for k, v in state.items() if k in own and v.shape != own[k].shape]
            missing = [k for k in own if k not in state]
            unexpected = [k for k in state if k not in own]
            if missing or unexpected or mis_shaped:
                raise CheckpointMismatchError(self.model_name, missing, unexpected, mis_shaped)
            return state
        # Official: a classifier, or the backbone of an official segmentor / detector (no class token, the
        # pyramid layers fpn*, rotary buffers rope.*, the detector without the final norm_f). Converted
        # against the whole classification model, then cut to what this backbone has; the position
        # embedding comes at this backbone's grid with its class entry dropped.
        state = {k: v for k, v in state.items() if not k.startswith(("rope.", "head."))}
        pyramid = {k: v for k, v in state.items() if k.startswith("fpn")}
        state = {k: v for k, v in state.items() if k not in pyramid}
        reference = timm.create_model(self.model_name, pretrained=False, num_classes=0, **self.model_kwargs)
        if "cls_token" not in state and "pos_embed" in state:  # a dense backbone's: add a placeholder class entry
            pos = state["pos_embed"]
            mid = pos.shape[1] // 2
            state["pos_embed"] = torch.cat([pos[:, :mid], pos.new_zeros(1, 1, pos.shape[2]), pos[:, mid:]], dim=1)
            state["cls_token"] = reference.cls_token.detach()
            if "norm_f.weight" not in state:
                state["norm_f.weight"] = reference.norm.weight.detach()
        converted = checkpoint_filter_fn(state, reference)
        converted["pos_embed"] = Vim._split_tokens(converted["pos_embed"])[0]
        kept = {f"model.{k}": v for k, v in converted.items() if f"model.{k}" in own}
        unexpected = [k for k in pyramid if k not in own]
        mis_shaped = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                      for k, v in pyramid.items() if k in own and v.shape != own[k].shape]
        if unexpected or mis_shaped:
            raise CheckpointMismatchError(self.model_name, [], unexpected, mis_shaped)
        kept.update(pyramid)
        return kept


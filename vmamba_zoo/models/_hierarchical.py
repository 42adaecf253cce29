"""The timm model interface shared by every four-stage (hierarchical) visual SSM of the zoo.

A family builds ``stem``, ``stages`` (an ``nn.Sequential`` of :class:`~vmamba_zoo.layers.Stage`),
``norm_pre`` and ``head``, all on channels-last maps, sets ``in_chans`` and ``feature_info``, and
implements ``filter_checkpoint`` (official keys -> ours); this base class gives it the rest of the
timm API (``load_pretrained`` included, which timm calls for ``pretrained=True``): ``forward_features``, ``forward_head``, ``forward_intermediates``,
``prune_intermediate_layers``, ``set_grad_checkpointing``, ``group_matcher``, ``reset_classifier``,
``no_weight_decay``, and the checks that reject bad input with a clear message.
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
from torch import nn
from timm.layers import ClassifierHead
from timm.models import adapt_input_conv
from timm.models._features import feature_take_indices

from ..layers import FastLayerNorm, NotScriptable
from ._checkpoint import load_checkpoint_file


class HierarchicalSSM(NotScriptable, nn.Module):
    """Base of the hierarchical zoo models. Feature maps inside are channels last (B, H, W, C).

    Interoperability: ``torch.fx`` (the scan ops are leaf nodes; timm's FX feature extraction,
    ``features_only=True, feature_cls='fx'``, returns the stages' channels-last outputs as they are,
    where the default ``features_only`` gives NCHW maps), ``torch.jit.trace``, ``torch.compile``,
    ``torch.export`` and ONNX export (``tools/export_onnx.py``; the ops decompose into plain tensor ops)
    all work. ``torch.jit.script`` does not: the scan ops dispatch to Triton or PyTorch at run time
    through autograd Functions, which TorchScript cannot compile, so scripting raises at once with that
    reason (:class:`~vmamba_zoo.layers.NotScriptable`), as timm leaves its own non-scriptable models out
    of scripting.
    """

    #: input height and width must be multiples of this (the total stride of the network)
    input_divisor: int = 32
    output_fmt = "NHWC"
    #: the classifier's parameters (dropped from a checkpoint for another class count)
    classifier_keys = ("head.fc.weight", "head.fc.bias")

    def _init_head(self, num_features: int, num_classes: int, global_pool: str, drop_rate: float):
        """The classification end: LayerNorm on the final map, global pool, dropout, linear."""
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = num_features
        self.norm_pre = FastLayerNorm(num_features, residual=True)
        self.head = ClassifierHead(num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                   input_fmt="NHWC")

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the problem if ``x`` is not a batch of images this model takes.

        Skipped under ``torch.fx`` symbolic tracing, where ``x`` is a proxy without a shape; the traced
        graph still runs the ops' own shape checks."""
        if isinstance(x, torch.fx.Proxy):
            return
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__} expects a 4-D image batch (B, C, H, W), got {shape}")
        in_chans = self.in_chans
        if x.shape[1] != in_chans:
            raise ValueError(f"{type(self).__name__} expects {in_chans} input channels, got {x.shape[1]} "
                             f"(input shape {tuple(x.shape)}; images must be channels first)")
        height, width = x.shape[-2:]
        if height % self.input_divisor or width % self.input_divisor:
            raise ValueError(f"{type(self).__name__} needs height and width divisible by {self.input_divisor}, "
                             f"got {height}x{width}; resize or pad the input")

    def filter_checkpoint(self, state_dict):
        """Official (or zoo) state dict -> this model's keys; raise listing mismatches."""
        raise NotImplementedError

    @torch.jit.ignore
    def load_pretrained(self, checkpoint_path: str):
        """Load an official or zoo checkpoint file (timm calls this for ``pretrained=True``).

        The classifier is kept only if its class count matches; a stem for other than 3 input
        channels is adapted as timm does.
        """
        state_dict = self.filter_checkpoint(load_checkpoint_file(checkpoint_path))
        own = self.state_dict()
        for key in self.classifier_keys:
            if key in state_dict and (key not in own or own[key].shape != state_dict[key].shape):
                del state_dict[key]
        first_conv = getattr(self, "pretrained_cfg", {}).get("first_conv")
        weight = state_dict.get(f"{first_conv}.weight")
        if weight is not None and weight.shape[1] != self.in_chans:
            state_dict[f"{first_conv}.weight"] = adapt_input_conv(self.in_chans, weight)
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        assert not unexpected and all(k in self.classifier_keys for k in missing), (missing, unexpected)

    # ---- timm interface -------------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^norm_pre", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self):
        # 1-D parameters (norms, biases, D) are exempted by timm's optimizer factory already; the
        # official recipes decay everything else, including A_log and the dt bias.
        return set()

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> final feature map (B, H/32, W/32, C), normalised; channels last. The stages' layers are
        called from here, not through the stages, so that each stage's input is freed once its first
        block is done with it (see :class:`~vmamba_zoo.layers.Stage`)."""
        self.check_input(x)
        x = self.stem(x)
        for stage in self.stages:
            for layer in stage.layers():
                x = layer(x)
        return self.norm_pre(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs as in timm: the last ``indices`` stages if int, those listed if a sequence.

        Intermediates are NCHW by default (``output_fmt='NHWC'`` keeps them channels last);
        ``norm=True`` applies the final norm to the last stage's output.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        self.check_input(x)
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[:max_index + 1] if stop_early else self.stages
        last = len(self.stages) - 1
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            for layer in stage.layers():  # as forward_features
                x = layer(x)
            if i in take_indices:
                feat = self.norm_pre(x) if norm and i == last else x
                intermediates.append(feat.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else feat)
        if intermediates_only:
            return intermediates
        if i == last:
            x = self.norm_pre(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages (and optionally norm and head) not needed for ``indices``."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if prune_norm:
            self.norm_pre = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

"""``VisualSSMBackbone``: any zoo model as an mmdet / mmseg backbone.

The wrapper builds the zoo model with timm (no classifier, no final norm, only the stages up to the
last requested output), takes the stage outputs from ``forward_intermediates`` and puts a LayerNorm
on each of them (``outnorm{i}``), as the official VMamba dense-prediction backbones do, so official
detection and segmentation checkpoints map onto it key for key.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import timm
import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

import vmamba_zoo
from vmamba_zoo.models import (CheckpointMismatchError, convert_official_state_dict, load_checkpoint_file,
                               unwrap_state_dict)

__all__ = ["VisualSSMBackbone", "ZooBackbone", "convert_dense_state_dict"]

_OUTNORM = re.compile(r"^outnorm(\d+)\.")


class ZooBackbone(BaseModule):
    """What the zoo's mm backbones share: ``init_cfg=dict(type='Pretrained', ...)`` loads through the zoo's
    converter (:meth:`convert_checkpoint`, each backbone's own), and the layers a classification checkpoint
    cannot hold (:attr:`MAY_STAY_INITIALISED`, e.g. the output norms) keep their initial values."""

    #: the keys a checkpoint may lack (the dense-prediction layers a classifier has not)
    MAY_STAY_INITIALISED: re.Pattern

    model_name: str

    def init_weights(self):
        """mmengine's initialisation, except that ``Pretrained`` goes through the zoo's converter."""
        original = self.init_cfg
        cfgs = original if isinstance(original, list) else [original] if original else []
        pretrained = [c for c in cfgs if c.get("type") == "Pretrained"]
        if not pretrained:
            return super().init_weights()
        self.init_cfg = [c for c in cfgs if c.get("type") != "Pretrained"] or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = original
        for cfg in pretrained:
            self.load_checkpoint(cfg["checkpoint"], prefix=cfg.get("prefix"))

    def load_checkpoint(self, checkpoint: Union[str, os.PathLike, Mapping], prefix: Optional[str] = None):
        """Load weights from a file / URL / state dict in any of the formats the class docstring lists.

        ``prefix`` (e.g. ``'backbone.'``) selects part of a larger state dict; by default a state
        dict whose keys start with ``backbone.`` (a whole detector or segmentor) is cut to those.
        """
        if not isinstance(checkpoint, Mapping):
            checkpoint = load_checkpoint_file(_local_file(str(checkpoint)))
        state = self.convert_checkpoint(checkpoint, prefix)
        missing, unexpected = self.load_state_dict(state, strict=False)
        assert not unexpected, unexpected
        not_loaded = [k for k in missing if not self.MAY_STAY_INITIALISED.match(k)]
        assert not not_loaded, not_loaded
        if missing:
            print_log(f"{type(self).__name__}: not in the checkpoint, kept initialised: "
                      f"{sorted({k.split('.')[0] for k in missing})}", logger="current")
        print_log(f"{type(self).__name__}({self.model_name}): loaded {len(state)} tensors", logger="current")

    def convert_checkpoint(self, checkpoint: Mapping, prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
        """This backbone's state dict from ``checkpoint`` (each backbone converts its own)."""
        raise NotImplementedError

    def _backbone_part(self, checkpoint: Mapping, prefix: Optional[str]) -> Dict[str, torch.Tensor]:
        """The state dict of ``checkpoint`` cut to the keys under ``prefix``, which are stripped of it; by default
        ``'backbone.'`` where any key has it (a whole detector or segmentor), else all of it."""
        state = unwrap_state_dict(checkpoint)
        if prefix is None and any(k.startswith("backbone.") for k in state):
            prefix = "backbone."
        if prefix:
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not state:
                raise CheckpointMismatchError(self.model_name, [f"(no key starts with {prefix!r})"], [], [])
        return state


class VisualSSMBackbone(ZooBackbone):
    """A zoo model's stage outputs as a tuple of NCHW maps, for necks and decode heads.

    Args:
        model_name: a zoo model (``vmamba_zoo.list_models()``), e.g. ``'vmamba_tiny'``.
        out_indices: stages whose outputs are returned (0 = stride 4, ..., 3 = stride 32).
        drop_path_rate: stochastic depth; ``None`` keeps the model's own default (the value its
            official recipes use).
        frozen_stages: -1 trains everything; 0 freezes the stem; k >= 1 also freezes stages 0..k-1
            (with their output norms). Frozen parts stay in eval mode (no drop path).
        norm_eval: keep every batch-norm-like layer (one with running statistics) in eval mode while
            training. VMamba uses LayerNorm only, so this changes nothing there.
        out_norm: put a LayerNorm on each output (``outnorm{i}``), as the official backbones do.
        with_cp: gradient checkpointing of the blocks (saves memory, costs a second forward).
        model_kwargs: more keyword arguments for the timm model, e.g. ``dict(dims=(32, 64, 128, 256),
            depths=(1, 1, 2, 1))`` for a small variant.
        init_cfg: ``dict(type='Pretrained', checkpoint=path_or_url)`` loads an official checkpoint
            (classification, or a detection / segmentation one whose keys start with ``backbone.``)
            or one of ours, through the zoo's converter: a file that does not fit raises
            :class:`~vmamba_zoo.CheckpointMismatchError` listing every mismatched key. Other
            mmengine init configs work as usual.
    """

    def __init__(
        self,
        model_name: str,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        drop_path_rate: Optional[float] = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        out_norm: bool = True,
        with_cp: bool = False,
        model_kwargs: Optional[dict] = None,
        init_cfg: Optional[Union[dict, List[dict]]] = None,
    ):
        super().__init__(init_cfg=init_cfg)
        if model_name not in vmamba_zoo.list_models():
            raise ValueError(f"unknown model {model_name!r}; the zoo has: {', '.join(vmamba_zoo.list_models())}")
        self.model_name = model_name
        self.model_kwargs = dict(model_kwargs or {})
        if drop_path_rate is not None:
            self.model_kwargs["drop_path_rate"] = drop_path_rate
        model = timm.create_model(model_name, pretrained=False, num_classes=0, **self.model_kwargs)
        num_stages = len(model.feature_info)
        indices = sorted({i + num_stages if i < 0 else i for i in out_indices})
        if not indices or indices[0] < 0 or indices[-1] >= num_stages:
            raise ValueError(f"out_indices {tuple(out_indices)} must name stages of {model_name} (0..{num_stages - 1})")
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f"frozen_stages must be in -1..{num_stages}, got {frozen_stages}")
        self.out_indices = tuple(indices)
        self.channels = tuple(model.feature_info[i]["num_chs"] for i in indices)
        self.strides = tuple(model.feature_info[i]["reduction"] for i in indices)
        # what dense prediction does not use: the classifier, the final norm, stages past the last output
        model.prune_intermediate_layers(list(indices), prune_norm=True, prune_head=True)
        # The official models take any input size (each stride-2 conv rounds up); so do ours, the size
        # check is only there to catch classification inputs of the wrong size. Detection pads to 32
        # anyway; segmentation evaluates whole images of any size (2048x512 resized, keep ratio).
        model.input_divisor = 1
        model.set_grad_checkpointing(with_cp)
        self.model = model
        for i, channels in zip(indices, self.channels):
            self.add_module(f"outnorm{i}", nn.LayerNorm(channels) if out_norm else nn.Identity())
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self._freeze_stages()

    # ---- training mode, freezing -----------------------------------------------------------------
    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        frozen = [self.model.stem]
        for i in range(min(self.frozen_stages, len(self.model.stages))):
            frozen.append(self.model.stages[i])
            if i in self.out_indices:
                frozen.append(getattr(self, f"outnorm{i}"))
        return frozen

    def _freeze_stages(self):
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _NormBase):
                    module.eval()
        return self

    # ---- forward -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feats = self.model.forward_intermediates(x, indices=list(self.out_indices), output_fmt="NHWC",
                                                 intermediates_only=True, stop_early=True)
        return tuple(getattr(self, f"outnorm{i}")(feat).permute(0, 3, 1, 2).contiguous()
                     for i, feat in zip(self.out_indices, feats))

    # ---- weights -------------------------------------------------------------------------------------
    MAY_STAY_INITIALISED = _OUTNORM  # classification checkpoints have no output norms

    def convert_checkpoint(self, checkpoint: Mapping, prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
        """Official or zoo state dict (of a classifier, a backbone or a whole detector) -> ours.

        Raises :class:`CheckpointMismatchError` listing missing, unexpected and mis-shaped keys.
        """
        state = self._backbone_part(checkpoint, prefix)
        outnorms = {k: v for k, v in state.items() if _OUTNORM.match(k)}
        body = {k: v for k, v in state.items() if k not in outnorms}
        if any(k.startswith("model.") for k in body):  # our own wrapper's keys
            body = {k[len("model."):] if k.startswith("model.") else k: v for k, v in body.items()}
        state = {f"model.{k}": v for k, v in self._convert_body(body).items()}
        # output norms of stages this backbone does not return (or out_norm=False) are not needed
        own = self.state_dict()
        outnorms = {k: v for k, v in outnorms.items() if k in own}
        mis_shaped = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                      for k, v in outnorms.items() if v.shape != own[k].shape]
        if mis_shaped:
            raise CheckpointMismatchError(self.model_name, [], [], mis_shaped)
        state.update(outnorms)
        return state

    def _convert_body(self, body: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Convert through the family's converter, which checks every key against a model.

        A file may hold more than this backbone keeps (a classifier's final norm, stages past the last
        output) or less (a detection checkpoint has no final norm): the converter is run against the
        kept parts first, then against the whole architecture with and without its final norm. The
        error of the closest candidate is raised if none fits.
        """
        own = self.model.state_dict()
        errors = []
        for candidate in self._reference_models():
            try:
                converted = convert_official_state_dict(body, candidate)
            except CheckpointMismatchError as err:
                errors.append(err)
                continue
            return {k: v for k, v in converted.items() if k in own}
        raise min(errors, key=lambda e: len(e.missing) + len(e.unexpected) + len(e.mis_shaped))

    def _reference_models(self):
        """This backbone's model; the full model; the full model without final norm; ours with it."""
        yield self.model
        full = timm.create_model(self.model_name, pretrained=False, num_classes=0, **self.model_kwargs)
        final_norm = full.norm_pre
        yield full
        full.norm_pre = nn.Identity()
        yield full
        self.model.norm_pre = final_norm
        try:
            yield self.model
        finally:
            self.model.norm_pre = nn.Identity()


def _local_file(path: str) -> str:
    """A local path for ``path``; URLs are downloaded once into torch's hub cache."""
    if re.match(r"^https?://", path):
        from torch.hub import download_url_to_file, get_dir
        target = os.path.join(get_dir(), "checkpoints", os.path.basename(path.split("?")[0]))
        if not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            download_url_to_file(path, target)
        return target
    return os.path.expanduser(path)


def convert_dense_state_dict(checkpoint: Mapping, backbone: VisualSSMBackbone,
                             prefix: str = "backbone.") -> Dict[str, torch.Tensor]:
    """An official detector / segmentor checkpoint -> the state dict of the same detector built with
    :class:`VisualSSMBackbone` (for ``load_from``): backbone keys converted, the rest unchanged."""
    state = unwrap_state_dict(checkpoint)
    converted = backbone.convert_checkpoint({k: v for k, v in state.items() if k.startswith(prefix)}, prefix)
    out = {k: v for k, v in state.items() if not k.startswith(prefix)}
    out.update({prefix + k: v for k, v in converted.items()})
    return out


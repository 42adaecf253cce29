"""The zoo's families, one module each; importing registers their models with timm.

Every family module defines, beside its model class and ``@register_model`` functions:
``PUBLISHED`` (per model: ``official_name``, ``official_params``, ``official_flops`` by the family's
FLOPs rule, and the published ``params_m``, ``gflops``, ``top1``, ...), ``CARD`` (the family's paper,
code, license, BibTeX, FLOPs rule and scan, for the model cards) and ``TINY_KWARGS`` (architecture
overrides that make its models tiny, for the tests that run every model).
"""
import sys

from . import efficient_vmamba, group_mamba, msvmamba, spatial_mamba, vim, vmamba, vssd
from ._builder import PretrainedDownloadError, build_zoo_model
from ._checkpoint import (CheckpointMismatchError, CheckpointReadError, load_checkpoint_file, remap_checkpoint,
                          unwrap_state_dict)
from .efficient_vmamba import EfficientVMamba
from .group_mamba import GroupMamba
from .msvmamba import MSVMamba
from .spatial_mamba import SpatialMamba
from .vim import Vim
from .vmamba import VMamba
from .vssd import VSSD

#: timm module names of the families, in the order the zoo table lists them
FAMILIES = ("vmamba", "vim", "msvmamba", "efficient_vmamba", "spatial_mamba", "group_mamba", "vssd")
#: published numbers of every model, by model name (see each family's ``PUBLISHED``)
PUBLISHED = {name: row for family in FAMILIES for name, row in sys.modules[f"{__name__}.{family}"].PUBLISHED.items()}


def family_module(model_name: str):
    """The family module that registers ``model_name``."""
    for family in FAMILIES:
        module = sys.modules[f"{__name__}.{family}"]
        if model_name in module.PUBLISHED:
            return module
    raise KeyError(f"{model_name!r} is not a zoo model")


def tiny_kwargs(model_name: str) -> dict:
    """Overrides that build a tiny model of ``model_name``'s architecture (for tests)."""
    return dict(family_module(model_name).TINY_KWARGS)


def convert_official_state_dict(state_dict, model):
    """Map an official checkpoint (or one of ours) onto ``model``'s state dict, by the model's family.

    Raises :class:`CheckpointMismatchError` listing missing, unexpected and mis-shaped keys.
    """
    if not hasattr(model, "filter_checkpoint"):
        raise TypeError(f"no official-checkpoint converter for {type(model).__name__}")
    return model.filter_checkpoint(state_dict)


__all__ = ["VMamba", "Vim", "MSVMamba", "EfficientVMamba", "SpatialMamba", "GroupMamba", "VSSD", "convert_official_state_dict",
           "CheckpointMismatchError", "CheckpointReadError", "PretrainedDownloadError", "build_zoo_model",
           "remap_checkpoint",
           "unwrap_state_dict", "load_checkpoint_file", "FAMILIES", "PUBLISHED", "family_module", "tiny_kwargs"]

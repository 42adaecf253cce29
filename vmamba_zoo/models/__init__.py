"""The zoo's families, one module each; importing registers their models with timm.

Every family module defines, beside its model class and ``@register_model`` functions:
``PUBLISHED`` (per model: ``official_name``, ``official_params``, ``official_flops`` by the family's
FLOPs rule, and the published ``params_m``, ``gflops``, ``top1``, ...), ``CARD`` (the family's paper,
code, license, BibTeX, FLOPs rule and scan, for the model cards) and ``TINY_KWARGS`` (architecture
overrides that make its models tiny, for the tests that run every model).
"""
import sys

from . import spatial_mamba, vmamba
from ._checkpoint import CheckpointMismatchError, load_checkpoint_file, remap_checkpoint, unwrap_state_dict
from .spatial_mamba import SpatialMamba
from .vmamba import VMamba

#: timm module names of the families, in the order the zoo table lists them
FAMILIES = ("vmamba", "spatial_mamba")

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


__all__ = ["VMamba", "SpatialMamba", "convert_official_state_dict", "CheckpointMismatchError", "remap_checkpoint",
           "unwrap_state_dict", "load_checkpoint_file", "FAMILIES", "PUBLISHED", "family_module", "tiny_kwargs"]

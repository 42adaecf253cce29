"""The zoo's families, one module each; importing registers their models with timm."""
from . import vmamba
from ._checkpoint import CheckpointMismatchError, load_checkpoint_file, remap_checkpoint, unwrap_state_dict
from .vmamba import VMamba

#: timm module names of the families, in the order the zoo table lists them
FAMILIES = ("vmamba",)

#: published numbers of every model, by model name (see each family's ``PUBLISHED``)
PUBLISHED = {**vmamba.PUBLISHED}


def convert_official_state_dict(state_dict, model):
    """Map an official checkpoint (or one of ours) onto ``model``'s state dict, by the model's family.

    Raises :class:`CheckpointMismatchError` listing missing, unexpected and mis-shaped keys.
    """
    if not hasattr(model, "filter_checkpoint"):
        raise TypeError(f"no official-checkpoint converter for {type(model).__name__}")
    return model.filter_checkpoint(state_dict)


__all__ = ["VMamba", "convert_official_state_dict", "CheckpointMismatchError", "remap_checkpoint",
           "unwrap_state_dict", "load_checkpoint_file", "FAMILIES", "PUBLISHED"]

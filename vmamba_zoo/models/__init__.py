"""The zoo's families, one module each; importing registers their models with timm."""
from . import vmamba
from ._checkpoint import CheckpointMismatchError, remap_checkpoint, unwrap_state_dict
from .vmamba import VMamba

#: timm module names of the families, in the order the zoo table lists them
FAMILIES = ("vmamba",)

__all__ = ["VMamba", "CheckpointMismatchError", "remap_checkpoint", "unwrap_state_dict", "FAMILIES"]

"""vmamba_zoo: visual state-space backbones as timm models.

    import timm, vmamba_zoo
    model = timm.create_model("vmamba_tiny", pretrained=False)

Importing the package registers every model of the zoo with timm.
"""
from typing import List

import timm

from . import models
from .models import CheckpointMismatchError

__version__ = "0.1.0"


def list_models(pattern: str = "") -> List[str]:
    """Names of the zoo's models (optionally filtered by a wildcard ``pattern``), family by family,
    smallest first within a family."""
    names = []
    for family in models.FAMILIES:
        found = timm.list_models(pattern or "*", module=family)
        names += sorted(found, key=lambda n: models.PUBLISHED.get(n, {}).get("official_params", 0))
    return names


__all__ = ["list_models", "CheckpointMismatchError", "__version__"]

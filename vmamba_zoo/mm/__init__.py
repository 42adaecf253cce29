"""The zoo's models as OpenMMLab backbones (mmdet and mmseg).

Importing this package registers :class:`VisualSSMBackbone` in the ``MODELS`` registry of mmdet and of
mmseg (whichever of the two is installed; at least one must be). mm configs import it with::

    custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)
    model = dict(backbone=dict(type='VisualSSMBackbone', model_name='vmamba_tiny', out_indices=(0, 1, 2, 3)))

``import vmamba_zoo`` alone never imports this package (timm users need no OpenMMLab install).
"""
import importlib

from .backbone import VisualSSMBackbone, convert_dense_state_dict
from .config import CODEBASES, build_model_from_config

#: the mm codebases whose MODELS registry holds VisualSSMBackbone
REGISTERED_IN = []
for _codebase in CODEBASES:
    try:
        _registry = importlib.import_module(f"{_codebase}.registry").MODELS
    except ImportError:
        continue
    _registry.register_module(module=VisualSSMBackbone)
    REGISTERED_IN.append(_codebase)
if not REGISTERED_IN:
    raise ImportError("vmamba_zoo.mm needs mmdet or mmsegmentation (bash tools/install.sh installs both)")

__all__ = ["VisualSSMBackbone", "convert_dense_state_dict", "build_model_from_config", "REGISTERED_IN"]

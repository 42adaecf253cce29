"""The zoo's models as OpenMMLab backbones (mmdet and mmseg).

Importing this package registers :class:`VisualSSMBackbone` (hierarchical models) and
:class:`VimBackbone` (the plain Vim models) in the ``MODELS`` registry of mmdet and of mmseg (whichever
of the two is installed; at least one must be), and, in mmdet's, the ViTDet neck :class:`SimpleFPN` and
a channels-first LayerNorm ``'LN2d'`` (timm's ``LayerNorm2d``) for the heads' ``norm_cfg``. mm configs
import it with::

    custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)
    model = dict(backbone=dict(type='VisualSSMBackbone', model_name='vmamba_tiny', out_indices=(0, 1, 2, 3)))

``import vmamba_zoo`` alone never imports this package (timm users need no OpenMMLab install).
"""
import importlib

from .backbone import VisualSSMBackbone, convert_dense_state_dict
from .config import CODEBASES, build_model_from_config
from .simple_fpn import SimpleFPN
from .vim_backbone import VimBackbone

#: the mm codebases whose MODELS registry holds VisualSSMBackbone
REGISTERED_IN = []
for _codebase in CODEBASES:
    try:
        _registry = importlib.import_module(f"{_codebase}.registry").MODELS
    except ImportError:
        continue
    _registry.register_module(module=VisualSSMBackbone)
    _registry.register_module(module=VimBackbone)
    if _codebase == "mmdet":
        _registry.register_module(module=SimpleFPN)
        if _registry.get("LN2d") is None:  # mmdet's own projects/ViTDet registers one of the same name
            from timm.layers import LayerNorm2d
            _registry.register_module(name="LN2d", module=LayerNorm2d)
    REGISTERED_IN.append(_codebase)
if not REGISTERED_IN:
    raise ImportError("vmamba_zoo.mm needs mmdet or mmsegmentation (bash tools/install.sh installs both)")

__all__ = ["VisualSSMBackbone", "VimBackbone", "SimpleFPN", "convert_dense_state_dict", "build_model_from_config",
           "REGISTERED_IN"]

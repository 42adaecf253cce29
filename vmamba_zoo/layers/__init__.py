"""Building blocks shared by the zoo's families (all channels last inside the stages)."""
from .bimamba import BiMamba
from .block import ConvPosEnc, MixerBlock, drop_path_scales
from .conv import Conv2d, make_convs_opaque
from .interop import NotScriptable, register_fx_leaves
from .linear import Linear, autocast_weights, cast_weights_once, weights_cast_together
from .downsample import ConvDownsample, ExpandDownsample, PatchMerging
from .mlp import ConvFFN, Mlp, SqueezeExcite
from .msss2d import MultiScaleSS2D
from .norm import FastLayerNorm, FastLayerNorm2d
from .ss2d import SS2D, AtrousSS2D
from .ssm_init import a_log_init, dt_bias_init
from .state_fusion import StateFusion
from .stage import Stage
from .stem import ConvBN, ConvBNStem, ConvStem, PatchStem

__all__ = [
    "Conv2d", "make_convs_opaque", "MixerBlock", "ConvPosEnc", "drop_path_scales", "ConvDownsample", "PatchMerging",
    "ExpandDownsample", "FastLayerNorm", "FastLayerNorm2d", "SS2D", "AtrousSS2D", "MultiScaleSS2D", "ConvFFN", "Mlp",
    "SqueezeExcite", "StateFusion", "Stage", "ConvStem", "PatchStem", "ConvBN", "ConvBNStem", "a_log_init",
    "dt_bias_init", "BiMamba", "NotScriptable", "register_fx_leaves", "Linear", "autocast_weights",
    "cast_weights_once", "weights_cast_together",
]

"""Building blocks shared by the zoo's families (all channels last inside the stages)."""
from .block import ConvPosEnc, MixerBlock
from .downsample import ConvDownsample, ExpandDownsample, PatchMerging
from .norm import FastLayerNorm
from .ss2d import SS2D
from .ssm_init import a_log_init, dt_bias_init
from .state_fusion import StateFusion
from .stage import Stage
from .stem import ConvBN, ConvBNStem, ConvStem, PatchStem

__all__ = ["MixerBlock", "ConvPosEnc", "ConvDownsample", "PatchMerging", "ExpandDownsample", "FastLayerNorm", "SS2D",
           "StateFusion", "Stage", "ConvStem", "PatchStem", "ConvBN", "ConvBNStem", "a_log_init", "dt_bias_init"]

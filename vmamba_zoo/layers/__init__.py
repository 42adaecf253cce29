"""Building blocks shared by the zoo's families (all channels last inside the stages)."""
from .block import MixerBlock
from .downsample import ConvDownsample
from .norm import FastLayerNorm
from .ss2d import SS2D
from .ssm_init import a_log_init, dt_bias_init
from .stage import Stage
from .stem import ConvStem

__all__ = ["MixerBlock", "ConvDownsample", "FastLayerNorm", "SS2D", "Stage", "ConvStem", "a_log_init", "dt_bias_init"]

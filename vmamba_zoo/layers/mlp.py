"""Channel mixers beside the blocks' MLP, channels last: the convolutional FFN and squeeze-excitation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssm_kernels import dwconv2d


class Mlp(nn.Module):
    """fc2(act(fc1(x))) on the last axis: timm's ``Mlp`` (same arguments and parameter names) without its dropout and
    norm slots, which no zoo model uses. Each is a module call in every block of an eager step, whose host time
    bounds a small model's inference: three calls a block fewer."""

    def __init__(self, in_features: int, hidden_features: int, act_layer=nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvFFN(nn.Module):
    """Feed-forward with a depthwise 3x3 convolution inside (MSVMamba): expand with a 1x1 map, add a
    depthwise 3x3 conv of the expansion to itself, GELU, project back. The 1x1 convolutions are linear
    layers on the channels-last map (same weights, reshaped). Takes timm ``Mlp``'s arguments, so that
    :class:`~vmamba_zoo.layers.MixerBlock` builds it with ``mlp_layer=ConvFFN``."""

    def __init__(self, in_features: int, hidden_features: int, act_layer=nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = nn.Conv2d(hidden_features, hidden_features, 3, padding=1, groups=hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        if torch.jit.is_scripting():  # TorchScript compiles only this branch: the op's dispatch is Python
            x = x + F.conv2d(x.permute(0, 3, 1, 2), self.dwconv.weight, self.dwconv.bias, padding=1,
                             groups=x.shape[3]).permute(0, 2, 3, 1)
        else:  # x + dwconv(x) in one op
            x = dwconv2d(x, self.dwconv.weight, self.dwconv.bias, residual=True)
        return self.fc2(self.act(x))


class SqueezeExcite(nn.Module):
    """Squeeze-excitation on a channels-last map, without biases (MSVMamba's SE): x times
    sigmoid(fc2(ReLU(fc1(the mean of x over the map))))."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(self.act(self.fc1(x.mean((1, 2))))))
        return x * gate[:, None, None, :]

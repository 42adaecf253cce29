"""The multi-scale SS2D mixer of MSVMamba: one full-resolution scan and one half-resolution scan.

As the official code defines it (``SS2D`` with ``multiscale_4scan_12``): the in-projection gives x and a
gate z; x feeds two branches,

- full resolution: depthwise 3x3 conv, SiLU, ONE row-major scan (:data:`ssm_kernels.ROW`);
- half resolution: depthwise 7x7 stride-2 conv of the same x, SiLU, ONE scan along three orders of the
  small map in a row (row-major reversed, column-major, column-major reversed: :data:`ssm_kernels.MULTISCALE_LOW`),
  the state carrying from one order to the next,

each with its own parameter set (0: half resolution, 1: full, the official order). Every step's output
goes through the shared out-norm; the three visits of a small-map position are summed, the small map is
upsampled bilinearly and added to the full one. Then squeeze-excitation, the gate, the out-projection.
Both scans run in the fused ``scan2d`` (projection of the step size, norm and merge inside).
"""
from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import trunc_normal_

from ssm_kernels import MULTISCALE_LOW, ROW, ScanPattern, dwconv2d, scan2d

from .conv import Conv2d
from .mlp import SqueezeExcite
from .ssm_init import a_log_init, dt_bias_init

#: the official parameter sets: 0 the half-resolution branch, 1 the full-resolution one
LOW, FULL = 0, 1


class MultiScaleSS2D(nn.Module):
    """Multi-scale 2-D selective-scan mixer on channels-last maps (B, H, W, dim) -> (B, H, W, dim).

    Args:
        dim: channels in and out.
        d_state: SSM state size N per channel.
        ssm_ratio: inner channels E = ssm_ratio * dim.
        dt_rank: rank of the step-size projection ('auto' = ceil(dim / 16)).
        d_conv: kernel of the full-resolution depthwise conv; the half-resolution one is 7x7, stride 2.
        conv_bias: biases in both depthwise convs.
        se_ratio: squeeze-excitation hidden channels = E * se_ratio.
    """

    def __init__(self, dim: int, d_state: int = 1, ssm_ratio: float = 2.0, dt_rank: Union[int, str] = "auto",
                 d_conv: int = 3, conv_bias: bool = True, se_ratio: float = 0.125, act_layer=nn.SiLU):
        super().__init__()
        inner = int(ssm_ratio * dim)
        rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        self.d_state, self.dt_rank, self.d_inner = d_state, rank, inner

        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = nn.Conv2d(inner, inner, d_conv, padding=(d_conv - 1) // 2, groups=inner, bias=conv_bias)
        self.conv_low = Conv2d(inner, inner, 7, stride=2, padding=3, groups=inner, bias=conv_bias)
        self.act = act_layer()
        # two parameter sets (LOW, FULL), in the official layout
        self.x_proj_weight = nn.Parameter(torch.empty(2, rank + 2 * d_state, inner))
        self.dt_proj_weight = nn.Parameter(torch.empty(2, inner, rank))
        self.dt_bias = nn.Parameter(dt_bias_init((2, inner)))
        self.A_log = nn.Parameter(a_log_init(2 * inner, d_state))
        self.D = nn.Parameter(torch.ones(2 * inner))
        self.out_norm = nn.LayerNorm(inner)
        self.se = SqueezeExcite(inner, int(inner * se_ratio))
        self.out_proj = nn.Linear(inner, dim, bias=False)
        nn.init.uniform_(self.x_proj_weight, -inner ** -0.5, inner ** -0.5)  # as nn.Linear, the official's
        nn.init.uniform_(self.dt_proj_weight, -rank ** -0.5, rank ** -0.5)
        for linear in (self.in_proj, self.out_proj, self.se.fc1, self.se.fc2):
            trunc_normal_(linear.weight, std=0.02)

    def scan(self, u: torch.Tensor, params, pattern: ScanPattern) -> torch.Tensor:
        """One branch's scan of the map u (b, h, w, E) with its parameters (x_proj weight, dt_proj weight
        (1, E, R), dt_bias, A_log, D: one of :meth:`branch_parameters`), out-normed."""
        height, width = u.shape[1:3]
        x_proj_weight, dt_proj_weight, dt_bias, A_log, D = params
        # the projection on the map, once per position (the official projects the gathered sequence); the scan
        # reads its (dt, B, C) slices in place
        proj = torch.einsum("bhwe,ce->bhwc", u, x_proj_weight).unsqueeze(3)
        return scan2d(u, proj, A_log, None, None, D.float(), dt_bias.float(), pattern(height, width, u.device),
                      delta_softplus=True, dt_weight=dt_proj_weight, out_norm=self.out_norm, a_is_log=True)

    def branch_parameters(self):
        """The two parameter sets (LOW, FULL), each the x_proj weight, dt_proj weight (1, E, R), dt_bias, A_log, D.

        Each parameter is unbound into its two sets once (one autograd node, whose backward stacks both
        branches' gradients in one kernel), not indexed per branch (a zero-filled full-size gradient and a
        copy per index, then their sum)."""
        E = self.d_inner
        both = (self.x_proj_weight.unbind(0), self.dt_proj_weight.unsqueeze(1).unbind(0), self.dt_bias.unbind(0),
                self.A_log.view(2, E, -1).unbind(0), self.D.view(2, E).unbind(0))
        return [[sets[branch] for sets in both] for branch in (LOW, FULL)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[1:3]
        x, z = self.in_proj(x).chunk(2, dim=-1)
        if isinstance(self.act, nn.SiLU):  # the full-resolution conv, its bias and SiLU in one op, x read in place
            full = dwconv2d(x, self.conv.weight, self.conv.bias, silu=True)
        else:
            full = self.act(dwconv2d(x, self.conv.weight, self.conv.bias))
        low = self.act(self.conv_low(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)   # ceil(H / 2) x ceil(W / 2), stride 2
        params = self.branch_parameters()
        y_low = self.scan(low, params[LOW], MULTISCALE_LOW).permute(0, 3, 1, 2)
        y_low = F.interpolate(y_low, size=(height, width), mode="bilinear", align_corners=False)
        y = self.scan(full, params[FULL], ROW) + y_low.permute(0, 2, 3, 1)
        return self.out_proj(self.se(y) * self.act(z))

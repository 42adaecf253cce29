"""SS2D: the 2-D selective-scan token mixer, parameterised by its scan pattern.

As VMamba v2 defines it (the ``v05_noz`` form of the official code): in-projection, depthwise conv,
SiLU, then per scan direction a projection of every position to (dt, B, C), a selective scan along
that direction's path, the K directions merged back onto the map, LayerNorm, out-projection.

The per-direction projections are applied on the map, before the gather: a 1x1 projection commutes
with reordering positions, so this is the official grouped projection of the K gathered copies,
without making the copies.
"""
from __future__ import annotations

import math
from typing import Union

import torch
from torch import nn
from timm.layers import trunc_normal_

from ssm_kernels import CROSS, ScanPattern, scan2d

from .ssm_init import a_log_init, dt_bias_init


class SS2D(nn.Module):
    """2-D selective-scan mixer on channels-last maps (B, H, W, dim) -> (B, H, W, dim).

    Args:
        dim: channels in and out.
        d_state: SSM state size N per channel.
        ssm_ratio: inner channels = ssm_ratio * dim.
        dt_rank: rank of the step-size projection ('auto' = ceil(dim / 16)).
        d_conv: depthwise conv kernel size (< 2: no conv).
        conv_bias: bias in the depthwise conv.
        scan: the scan pattern (K directions, each with its own dt/B/C projection, A and D).
    """

    def __init__(self, dim: int, d_state: int = 1, ssm_ratio: float = 1.0, dt_rank: Union[int, str] = "auto",
                 d_conv: int = 3, conv_bias: bool = False, scan: ScanPattern = CROSS, act_layer=nn.SiLU):
        super().__init__()
        inner = int(ssm_ratio * dim)
        rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        K = scan.num_directions
        self.scan, self.d_state, self.dt_rank, self.d_inner = scan, d_state, rank, inner

        self.in_proj = nn.Linear(dim, inner, bias=False)
        self.conv = nn.Conv2d(inner, inner, d_conv, padding=(d_conv - 1) // 2, groups=inner,
                              bias=conv_bias) if d_conv > 1 else None
        self.act = act_layer()
        self.x_proj = nn.Linear(inner, K * (rank + 2 * d_state), bias=False)
        # Shapes follow the official parameters, so that timm's optimizer factory exempts from weight
        # decay exactly what the official recipe exempts (the 1-D ones: D).
        self.dt_proj_weight = nn.Parameter(torch.empty(K, inner, rank))
        self.dt_bias = nn.Parameter(dt_bias_init((K, inner)))
        self.A_log = nn.Parameter(a_log_init(K * inner, d_state))
        self.D = nn.Parameter(torch.ones(K * inner))
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)
        for linear in (self.in_proj, self.x_proj, self.out_proj):
            trunc_normal_(linear.weight, std=0.02)
        trunc_normal_(self.dt_proj_weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K, R, N = self.scan.num_directions, self.dt_rank, self.d_state
        x = self.in_proj(x)
        if self.conv is not None:
            x = self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = self.act(x)
        dt, B, C = self.x_proj(x).unflatten(-1, (K, R + 2 * N)).split([R, N, N], dim=-1)
        A = -self.A_log.float().exp()
        # the rank-R step-size projection and the out-norm run inside the scan (fused on GPU); the scan
        # builds the pattern's paths for x's map size (no shape read here: torch.fx traces this)
        y = scan2d(x, dt, A, B, C, self.D.float(), self.dt_bias.float().view(-1), self.scan,
                   delta_softplus=True, dt_weight=self.dt_proj_weight, out_norm=self.out_norm)
        return self.out_proj(y)

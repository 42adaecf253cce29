"""SS2D: the 2-D selective-scan token mixer, parameterised by its scan pattern.

As VMamba v2 defines it (the ``v05_noz`` form of the official code): in-projection, depthwise conv,
SiLU, then per scan direction a projection of every position to (dt, B, C), a selective scan along
that direction's path, the K directions merged back onto the map, LayerNorm, out-projection.

The per-direction projections are applied on the map, before the gather: a 1x1 projection commutes
with reordering positions, so this is the official grouped projection of the K gathered copies,
without making the copies.

``z_gate=True`` adds Mamba's gate (in-projection to twice the inner channels, out-norm output times
SiLU(z)). :class:`AtrousSS2D` is EfficientVMamba's ES2D: the same mixer over the atrous scan.
"""
from __future__ import annotations

import math
from typing import Union

import torch
from torch import nn
from timm.layers import register_notrace_function, trunc_normal_

from ssm_kernels import ATROUS, CROSS, ScanPattern, dwconv2d, scan2d

from .downsample import pad_to_even
from .linear import autocast_weights
from .ssm_init import a_log_init, dt_bias_init


class SS2D(nn.Module):
    """2-D selective-scan mixer on channels-last maps (B, H, W, dim) -> (B, H, W, dim).

    Args:
        dim: channels in and out.
        d_state: SSM state size N per channel.
        ssm_ratio: inner channels = ssm_ratio * dim.
        dt_rank: rank of the step-size projection ('auto' = ceil(dim / 16)).
        d_conv: depthwise conv kernel size, odd (< 2: no conv).
        conv_bias: bias in the depthwise conv.
        scan: the scan pattern (K directions, each with its own dt/B/C projection, A and D).
        z_gate: gate the normalised scan output with SiLU(z), z a second half of the in-projection.
        recompute_states: at d_state > 1, the scan's backward re-runs its forward from a few saved states (least
            memory) rather than reading every chunk's saved state (faster): see :func:`ssm_kernels.scan2d`.
    """

    def __init__(self, dim: int, d_state: int = 1, ssm_ratio: float = 1.0, dt_rank: Union[int, str] = "auto",
                 d_conv: int = 3, conv_bias: bool = False, scan: ScanPattern = CROSS, act_layer=nn.SiLU,
                 z_gate: bool = False, recompute_states: bool = True):
        super().__init__()
        self.recompute_states = recompute_states
        inner = int(ssm_ratio * dim)
        rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        K = scan.num_directions
        self.scan, self.d_state, self.dt_rank, self.d_inner, self.z_gate = scan, d_state, rank, inner, z_gate

        self.in_proj = nn.Linear(dim, 2 * inner if z_gate else inner, bias=False)
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
        x = self.in_proj(x)
        if self.z_gate:
            x, z = x.chunk(2, dim=-1)
        if self.conv is None:
            x = self.act(x)
        elif isinstance(self.act, nn.SiLU):  # the conv, its bias and SiLU in one op, the map read in place
            x = dwconv2d(x, self.conv.weight, self.conv.bias, silu=True)
        else:
            x = self.act(dwconv2d(x, self.conv.weight, self.conv.bias))
        y = self.scan_map(x)
        if self.z_gate:
            y = y * self.act(z)
        return self.out_proj(y)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Each direction's (dt, B, C), concatenated, at every position: (b, H, W, K, R + 2N)."""
        K, R, N = self.scan.num_directions, self.dt_rank, self.d_state
        return self.x_proj(x).unflatten(-1, (K, R + 2 * N))

    def scan_map(self, x: torch.Tensor) -> torch.Tensor:
        """The scan of the activated inner map (b, H, W, inner), merged and normalised (out_norm)."""
        # the split of the projection into (dt, B, C), the rank-R step-size projection, A = -exp(A_log) and the
        # out-norm run inside the scan (fused on GPU); the scan builds the pattern's paths for x's map size (no
        # shape read here: torch.fx traces this)
        return scan2d(x, self.project(x), self.A_log, None, None, _at_least_float32(self.D),
                      _at_least_float32(self.dt_bias).view(-1), self.scan, delta_softplus=True,
                      dt_weight=self.dt_proj_weight, out_norm=self.out_norm, a_is_log=True,
                      recompute_states=self.recompute_states)


@register_notrace_function  # reads the map's size: one torch.fx leaf
def project_phases(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each position of an even-sized map (b, H, W, inner) projected by the weight of its 2x2 phase: weight
    (4, out, inner) indexed by direction k = row parity + 2 * column parity; returns (b, H, W, 1, out)."""
    batch, height, width, inner = x.shape
    phases = x.view(batch, height // 2, 2, width // 2, 2, inner)
    weight = weight.view(2, 2, -1, inner)  # (column parity j, row parity i, out, inner)
    return torch.einsum("bhiwje,jice->bhiwjc", phases, weight).reshape(batch, height, width, 1, -1)


@register_notrace_function  # reads the map's size: one torch.fx leaf
def crop_like(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``y`` (b, H', W', C) cropped to ``like``'s height and width."""
    return y[:, :like.shape[1], :like.shape[2]]


class AtrousSS2D(SS2D):
    """EfficientVMamba's ES2D: SS2D with a z gate over the atrous scan (:data:`ssm_kernels.ATROUS`).

    Direction k scans only the positions of one 2x2 phase of the map (row parity + 2 * column
    parity = k), so each position is projected to (dt, B, C) once, with its own direction's weights
    (the official cost: one projection per token, not K); the scan reads that one map for every
    direction (a stride-0 direction axis) and, the directions being disjoint, writes one output map.
    An odd height or width is zero-padded at the bottom / right for the scan and cropped after, as the
    official code does (the padded positions still decay the state of the directions that cross them).
    """

    def __init__(self, dim: int, d_state: int = 16, ssm_ratio: float = 2.0, dt_rank: Union[int, str] = "auto",
                 d_conv: int = 3, conv_bias: bool = True, act_layer=nn.SiLU, recompute_states: bool = True):
        super().__init__(dim, d_state, ssm_ratio, dt_rank, d_conv, conv_bias, scan=ATROUS, act_layer=act_layer,
                         z_gate=True, recompute_states=recompute_states)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        weight, _ = autocast_weights(self.x_proj, self.x_proj.weight, None)  # the cast kept or made together
        proj = project_phases(x, weight)  # one projection per position, by its own direction
        return proj.expand(-1, -1, -1, 4, -1)

    def scan_map(self, x: torch.Tensor) -> torch.Tensor:
        return crop_like(super().scan_map(pad_to_even(x)), x)


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """The SSM parameters in float32 for the scan (also in a half-precision model), float64 kept."""
    return t.to(torch.promote_types(t.dtype, torch.float32))

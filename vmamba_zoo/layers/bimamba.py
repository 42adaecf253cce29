"""BiMamba: the bidirectional Mamba mixer of Vim ("bimamba v2") over a token sequence.

Mamba's block (one in-projection to x and a gate z, a short causal conv, SiLU, an input-dependent
selective scan, the z gate, one out-projection) with two scan branches: forward over the sequence and
backward over the reversed sequence, each with its own conv1d, x/dt projections, A and D. The two
outputs are added and halved before the shared out-projection:

    x, z = in_proj(h);  u_k = SiLU(conv_k(x))  (direction 1: on the reversed sequence)
    y_k = SSM_k(u_k) (direction 1 scans backwards);  out = out_proj((y_0 + y_1) / 2 * SiLU(z))

Here the two directions' parameters are stacked (k = 0 forward, 1 backward), so that one op runs both
convs (:func:`ssm_kernels.causal_conv1d`, the backward one anti-causal in the input's own order) and
one fused scan runs both directions over :data:`ssm_kernels.BIDIRECTIONAL` (direction k reads its own
channel group of the convs' output and writes its result back in sequence order): no reversed copy of
anything is ever made. One more op (:func:`ssm_kernels.merge_gate`) sums and halves the two outputs and
applies the gate, keeping for the backward only the merged output (z is a view of the in-projection's
output, which the conv keeps anyway).
"""
from __future__ import annotations

import math
from typing import Union

import torch
from torch import nn

from ssm_kernels import BIDIRECTIONAL, causal_conv1d, merge_gate, scan2d

from .linear import autocast_weights
from .ssm_init import a_log_init, dt_bias_init


class BiMamba(nn.Module):
    """Bidirectional Mamba mixer on token sequences (B, L, dim) -> (B, L, dim).

    Args:
        dim: channels in and out.
        d_state: SSM state size N per channel.
        expand: inner channels E = expand * dim.
        dt_rank: rank R of the step-size projection ('auto' = ceil(dim / 16)).
        d_conv: width of the causal depthwise conv.
        conv_bias: bias in the convs.
        divide_out: halve the sum of the two directions (Vim's ``if_divide_out``).

    Parameters (direction k = 0 forward, 1 backward; 1-D where the official ones are, so that the
    optimizer's weight-decay rule sees them as the official recipe does): ``conv_weight`` (2, E, W),
    ``conv_bias`` (2E,), ``x_proj_weight`` (2, R + 2N, E), ``dt_proj_weight`` (2, E, R), ``dt_bias``
    (2E,), ``A_log`` (2E, N), ``D`` (2E,).
    """

    def __init__(self, dim: int, d_state: int = 16, expand: int = 2, dt_rank: Union[int, str] = "auto",
                 d_conv: int = 4, conv_bias: bool = True, divide_out: bool = True):
        super().__init__()
        inner = int(expand * dim)
        rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        K = BIDIRECTIONAL.num_directions
        self.d_inner, self.d_state, self.dt_rank, self.divide_out = inner, d_state, rank, divide_out
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        # nn.Conv1d's and nn.Linear's default initialisation, as the official layers get it
        self.conv_weight = nn.Parameter(torch.empty(K, inner, d_conv).uniform_(-d_conv ** -0.5, d_conv ** -0.5))
        self.conv_bias = nn.Parameter(torch.empty(K * inner).uniform_(-d_conv ** -0.5, d_conv ** -0.5)) \
            if conv_bias else None
        self.x_proj_weight = nn.Parameter(
            torch.empty(K, rank + 2 * d_state, inner).uniform_(-inner ** -0.5, inner ** -0.5))
        self.dt_proj_weight = nn.Parameter(torch.empty(K, inner, rank).uniform_(-rank ** -0.5, rank ** -0.5))
        self.dt_bias = nn.Parameter(dt_bias_init(K * inner))
        self.A_log = nn.Parameter(a_log_init(K * inner, d_state))
        self.D = nn.Parameter(torch.ones(K * inner))
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        batch, length, _ = h.shape
        E = self.d_inner
        x, z = self.in_proj(h).chunk(2, dim=-1)                  # views: the conv reads x in place
        u = causal_conv1d(x, self.conv_weight, self.conv_bias, reverse=(False, True), silu=True)  # (B, L, 2E)
        # each direction's x_proj on its own channel group, one batched matmul over the two groups read in
        # place (strided views, no copy); the scan reads dt, B, C in place from its output (B, 1, L, 2, R + 2N), a
        # 1 x L map
        x_proj, = autocast_weights(self, self.x_proj_weight)  # cast once in inference
        dbc = torch.bmm(u.view(batch * length, 2, E).transpose(0, 1), x_proj.transpose(1, 2).to(u.dtype))
        dbc = dbc.transpose(0, 1).view(batch, 1, length, 2, -1)
        # the rank-R step-size projection and A = -exp(A_log) run inside the scan (fused on GPU); y: (B, 1, L, 2E),
        # float32
        y = scan2d(u.unsqueeze(1), dbc, self.A_log, None, None, self.D.float(), self.dt_bias.float(),
                   BIDIRECTIONAL(1, length, u.device), delta_softplus=True, dt_weight=self.dt_proj_weight,
                   a_is_log=True)
        # in inference nothing else holds them: freed here, they are not live beside the gate's and out_proj's
        # outputs (tools/peak_memory.py: Vim-S's predicted peak 0.664 -> 0.621 GiB at batch 128; in training,
        # autograd keeps what its backward needs)
        del x, u, dbc
        # the directions summed (halved), gated by SiLU(z): one op, which keeps only the merged output for the backward
        gated = merge_gate(y.view(batch, length, 2 * E), z, 0.5 if self.divide_out else 1.0)
        del y, z
        return self.out_proj(gated)


#!/usr/bin/env python
"""Correctness of the Triton scan kernels at full size, on a GPU.

For VMamba-T's stage shapes at 224x224 and 512x512 (batch 32), Vim's sequences (197 tokens at 224x224,
730 for the stride-8 models, 785 at 448x448; d_state 16, where the backward re-runs the forward over each
checkpoint segment) and long sequences at batch 1 (1536x1536: the
forward splits them into segments), runs the Triton selective scan, the fused 2-D
scan (also as VMamba calls it: low-rank step size, dt/B/C read in place from one projection, the
out-norm fused; as Vim calls it: both directions of a token sequence in one launch; as EfficientVMamba
calls it at its two SSM stages: atrous paths, N = 16, one projected map read by all four directions;
as GroupMamba calls it: four channel groups, group k scanned in direction k only, on split-channel paths;
as MSVMamba calls it, both branches: the row-major scan of the full map, and the half-resolution map's
path that visits every position three times, each visit out-normed then summed; and as the layers call
them since v10.2: Mamba's A_log in A's place, A = -exp(A_log) computed inside the kernels, and the x_proj
output passed whole, B = C = None),
the channels-last depthwise conv2d (VMamba-T's SS2D conv + SiLU on a slice of the in-projection, without
bias; Spatial-Mamba-T's position encoding x + dwconv(x) and its mixer's conv + SiLU, with bias),
the state-only scan at Spatial-Mamba-T's stage shapes (N = 1, every state returned, the gradient
flowing in through the states), its state fusion and the fusion + observation op, the observation + out-norm +
gate op after the fusion (observe_norm_gate), the LayerNorm and the blocks' residual add fused with it
(add_layer_norm: a float32 stream, the branch in the case's dtype), the causal conv1d (both of Vim's
directions in one launch), Vim's merge of its two directions with the output gate (merge_gate) and, at VSSD's NC-SSD stage shapes (micro, tiny, base), the non-causal SSD as
VSSD calls it, in float32 and bfloat16,
forward and backward, with every output buffer NaN-poisoned (an unwritten element fails), against
the reference backend run in float64 on the same inputs. Fresh random inputs per case. Pass:
relative error (||x - ref|| / ||ref||) under 1e-4 for float32 and 1e-2 for bfloat16, outputs and the
gradients of every input.

    python tools/check_kernels.py [--batch 32] [--sizes 224 512] [--cases 'scan2d.*s1']
    TRITON_INTERPRET=1 python tools/check_kernels.py --device cpu --batch 1 --sizes 32   # dry run on CPU
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time

os.environ["SSM_KERNELS_POISON"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ssm_kernels import (ATROUS, BIDIRECTIONAL, CROSS, CROSS_SPLIT, MULTISCALE_LOW, ROW, add_layer_norm,  # noqa: E402
                         causal_conv1d, dwconv2d, merge_gate, layer_norm, non_causal_ssd, observe_norm_gate, scan2d,
                         selective_scan, selective_scan_states, state_fusion, state_fusion_observe)

TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2}


def rel(a, b) -> float:
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("nan")
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def scan_case(batch, K, Dg, N, L, dtype, device):
    mk = lambda *s: torch.randn(*s, device=device).to(dtype)
    return dict(u=mk(batch, K * Dg, L), delta=mk(batch, K * Dg, L) - 1.0,
                A=-torch.rand(K * Dg, N, device=device) * 2 - 0.05, B=mk(batch, K, N, L), C=mk(batch, K, N, L),
                D=torch.randn(K * Dg, device=device), z=mk(batch, K * Dg, L),
                delta_bias=torch.randn(K * Dg, device=device) * 0.5)


def states_case(batch, D, N, L, dtype, device):
    """Spatial-Mamba's state equation: u, delta (batch, D, L), B (batch, N, L), no C, no D."""
    mk = lambda *s: torch.randn(*s, device=device).to(dtype)
    return dict(u=mk(batch, D, L), delta=mk(batch, D, L) - 1.0, A=-torch.rand(D, N, device=device) * 2 - 0.05,
                B=mk(batch, N, L), delta_bias=torch.randn(D, device=device) * 0.5)


def states_slice_case(batch, D, N, L, dtype, device):
    """As :func:`states_case`, with B a slice of the x projection's (batch, R + 2N, L) output, as Spatial-Mamba
    passes it (the forward reads it in place)."""
    x = states_case(batch, D, N, L, dtype, device)
    del x["B"]
    x["proj"] = torch.randn(batch, 4 + 2 * N, L, device=device).to(dtype)
    return x


def fusion_case(batch, E, side, dtype, device):
    """Spatial-Mamba's state fusion: the (batch, E, side, side) states, three 3x3 kernels per channel, alpha."""
    return dict(h=torch.randn(batch, E, side, side, device=device).to(dtype),
                weight=torch.randn(3, E, 3, 3, device=device) / 3, alpha=torch.randn(3, device=device))


def observe_case(batch, E, side, dtype, device):
    """Spatial-Mamba's fusion + observation: the float32 states, the kernels and alpha, C a strided view of the
    (dt, B, C) projection, u, D."""
    mk = lambda *s: torch.randn(*s, device=device).to(dtype)
    return dict(fusion_case(batch, E, side, torch.float32, device), proj=mk(batch, 6, side * side),
                u=mk(batch, E, side * side), D=torch.randn(E, device=device))


def observe_gate_case(batch, E, side, dtype, device):
    """Spatial-Mamba's observation + out-norm + gate after the fusion: the fused float32 states (batch, E, L), C a
    strided view of the (dt, B, C) projection, u, D, the LayerNorm's weight and bias, z the second half of the
    (batch, side, side, 2E) in-projection."""
    mk = lambda *s: torch.randn(*s, device=device).to(dtype)
    L = side * side
    return dict(h=torch.randn(batch, E, L, device=device) * 2 + 0.5, proj=mk(batch, 6, L), u=mk(batch, E, L),
                D=torch.randn(E, device=device), weight=torch.rand(E, device=device) + 0.5,
                bias=torch.randn(E, device=device), xz=mk(batch, side, side, 2 * E))


def map_case(batch, H, W, Dg, N, dtype, device):
    mk = lambda *s: torch.randn(*s, device=device).to(dtype)
    return dict(u=mk(batch, H, W, Dg), delta=mk(batch, H, W, 4, Dg) - 1.0, A=-torch.rand(4 * Dg, N, device=device) - 0.1,
                B=mk(batch, H, W, 4, N), C=mk(batch, H, W, 4, N), D=torch.randn(4 * Dg, device=device),
                delta_bias=torch.randn(4 * Dg, device=device) * 0.5)


def vmamba_case(batch, H, W, Dg, N, dtype, device):
    """VMamba's call: dt (low rank), B and C as views of one projection, the float32 step-size
    projection weight, the LayerNorm after the merge fused in (its weight and bias are inputs too)."""
    rank = -(-Dg // 16)
    x = map_case(batch, H, W, Dg, N, dtype, device)
    del x["delta"], x["B"], x["C"]
    x["proj"] = torch.randn(batch, H, W, 4, rank + 2 * N, device=device).to(dtype)
    x["dt_weight"] = torch.randn(4, Dg, rank, device=device) * rank ** -0.5
    x["norm_weight"] = torch.rand(Dg, device=device) + 0.5
    x["norm_bias"] = torch.randn(Dg, device=device)
    return x


def vim_scan_case(batch, L, E, N, dtype, device):
    """Vim's call (BiMamba): a 1 x L map of both directions' conv outputs (2E channels, direction k reads
    group k), dt/B/C as views of one (2, R + 2N) projection per position, the step-size projection fused."""
    rank = -(-E // 32)  # ceil(dim / 16) with E = 2 * dim
    mk = lambda *s: torch.randn(*s, device=device).to(dtype)
    return dict(u=mk(batch, 1, L, 2 * E), proj=mk(batch, 1, L, 2, rank + 2 * N),
                dt_weight=torch.randn(2, E, rank, device=device) * rank ** -0.5,
                A=-torch.rand(2 * E, N, device=device) * 2 - 0.05, D=torch.randn(2 * E, device=device),
                delta_bias=torch.randn(2 * E, device=device) * 0.5 - 2.0)


def conv1d_case(batch, L, E, dtype, device):
    """Vim's conv: x a slice of the (batch, L, 2E) in-projection, both directions' (E, 4) kernels."""
    return dict(xz=torch.randn(batch, L, 2 * E, device=device).to(dtype),
                weight=torch.randn(2, E, 4, device=device) * 0.5, bias=torch.randn(2 * E, device=device))


def dwconv_case(batch, H, W, C, bias, dtype, device):
    """A depthwise 3x3 conv's input as the mixers pass it, a slice of a wider (batch, H, W, 2C) in-projection
    (the position encoding's contiguous map is its first half made contiguous), its (C, 1, 3, 3) weight and,
    if ``bias``, its bias."""
    x = dict(xz=torch.randn(batch, H, W, 2 * C, device=device).to(dtype),
             weight=torch.randn(C, 1, 3, 3, device=device) * 0.3)
    if bias:
        x["bias"] = torch.randn(C, device=device)
    return x


def gate_case(batch, L, E, dtype, device):
    """Vim's merge and gate: the fused scan's float32 output (both directions side by side), z the in-projection's
    second half."""
    return dict(y=torch.randn(batch, L, 2 * E, device=device), xz=torch.randn(batch, L, 2 * E, device=device).to(dtype))


def evm_case(batch, H, W, Dg, N, dtype, device):
    """EfficientVMamba's call: as VMamba's, on the atrous paths, with dt/B/C one projected map (each position
    by its own direction's weights) that all four directions read through a stride-0 direction axis."""
    x = vmamba_case(batch, H, W, Dg, N, dtype, device)
    x["proj"] = x["proj"][:, :, :, :1].contiguous()
    return x


def group_case(batch, H, W, C, N, dtype, device):
    """GroupMamba's call: C channels in four groups of E = C / 4, each scanned in its own direction only
    (split-channel paths), low-rank step size (rank ceil(E / 16)), dt/B/C views of one projection, no
    fused norm (the per-group norm follows the scan)."""
    E = C // 4
    rank = -(-E // 16)
    mk = lambda *s: torch.randn(*s, device=device).to(dtype)
    return dict(u=mk(batch, H, W, C), proj=mk(batch, H, W, 4, rank + 2 * N), A=-torch.rand(C, N, device=device) - 0.1,
                D=torch.randn(C, device=device), delta_bias=torch.randn(C, device=device) * 0.5,
                dt_weight=torch.randn(4, E, rank, device=device) * rank ** -0.5)


def msvmamba_case(batch, H, W, Dg, rank, dtype, device):
    """One branch of MSVMamba's mixer (K = 1): dt (low rank), B and C views of one projection, N = 1, the
    out-norm fused."""
    mk = lambda *s: torch.randn(*s, device=device).to(dtype)
    return dict(u=mk(batch, H, W, Dg), proj=mk(batch, H, W, 1, rank + 2), A=-torch.rand(Dg, 1, device=device) - 0.1,
                D=torch.randn(Dg, device=device), delta_bias=torch.randn(Dg, device=device) * 0.5,
                dt_weight=torch.randn(1, Dg, rank, device=device) * rank ** -0.5,
                norm_weight=torch.rand(Dg, device=device) + 0.5, norm_bias=torch.randn(Dg, device=device))


def norm_case(batch, H, W, C, dtype, device):
    """The blocks' pre-norm: LayerNorm over C of a (batch, H, W, C) map."""
    return dict(x=(torch.randn(batch, H, W, C, device=device) * 2 + 0.5).to(dtype),
                weight=torch.rand(C, device=device) + 0.5, bias=torch.randn(C, device=device))


def add_norm_case(batch, H, W, C, dtype, device):
    """A block's residual add and the norm after it: a float32 stream, the branch in the case's dtype."""
    return dict(norm_case(batch, H, W, C, torch.float32, device),
                branch=torch.randn(batch, H, W, C, device=device).to(dtype))


def ssd_case(batch, L, heads, P, N, dtype, device):
    """VSSD's call of the non-causal SSD, all views as in the model: x (with 3 spare channels per head:
    strided heads), B and C of one map, dt of a wider projection; the per-head weight a > 0, D, the
    step-size bias; the LayerNorm and the gate z fused after it."""
    mk = lambda *s: torch.randn(*s, device=device).to(dtype)
    return dict(xs=mk(batch, L, heads, P + 3), bc=mk(batch, L, 2 * N + 5), proj=(mk(batch, L, heads + 7) - 1.0).to(dtype),
                A=torch.rand(heads, device=device) * 15 + 1, D=torch.randn(heads, device=device),
                dt_bias=torch.randn(heads, device=device) - 3, z=mk(batch, L, heads, P),
                norm_weight=torch.rand(heads * P, device=device) + 0.5, norm_bias=torch.randn(heads * P, device=device))


def with_a_log(make_inputs):
    """The same inputs with A_log = log(-A) in A's place (the layers' call: ``a_is_log=True``)."""
    def make(*args):
        x = make_inputs(*args)
        x["A_log"] = (-x.pop("A")).log()
        return x
    return make


def a_log_fn(fn):
    """Run ``fn`` as the layers call the op: A_log passed as A with ``a_is_log=True`` (its gradient is A_log's)
    and, where there is a projection, the whole of it (B = C = None, split inside the op)."""
    return lambda x, backend: fn({("A" if k == "A_log" else k): v for k, v in x.items()}, backend, a_is_log=True,
                                 whole_projection=True)


class _Norm:
    """A LayerNorm over channels whose weight and bias are given tensors (leaves of the comparison)."""

    def __init__(self, weight, bias):
        self.weight, self.bias, self.eps, self.normalized_shape = weight, bias, 1e-5, tuple(weight.shape)

    def __call__(self, y):
        return F.layer_norm(y, self.normalized_shape, self.weight.to(y.dtype), self.bias.to(y.dtype), self.eps)


def compare(fn, inputs, dtype):
    """(forward error, {input: gradient error}) of the Triton op against the float64 reference."""
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    exact = {k: v.detach().double().requires_grad_() for k, v in inputs.items()}
    got = fn(leaves, "triton")
    ref = fn(exact, "reference")
    got, ref = (got if isinstance(got, tuple) else (got,)), (ref if isinstance(ref, tuple) else (ref,))
    errors = [rel(g, r) for g, r in zip(got, ref)]
    # seeds representable in the output's dtype: both sides back-propagate the same gradient
    seeds = [torch.randn_like(r).to(g.dtype).to(r.dtype) for r, g in zip(ref, got)]
    g_got = torch.autograd.grad(got, list(leaves.values()), [s.to(g.dtype) for s, g in zip(seeds, got)])
    g_ref = torch.autograd.grad(ref, list(exact.values()), seeds)
    grads = {k: rel(a, b) for k, a, b in zip(leaves, g_got, g_ref)}
    return max(errors), grads


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512], help="image sizes of the stage shapes")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cases", default="", metavar="REGEX", help="only the cases whose name matches REGEX")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here (dry-run on CPU: TRITON_INTERPRET=1 ... --device cpu)", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU (Triton interpreter)'}, "
          f"torch {torch.__version__}")
    cases = []
    for size in args.sizes:
        for stage, dim in enumerate((96, 192, 384, 768)):
            side = size // (4 * 2 ** stage)
            cases.append((f"selective_scan VMamba-T s{stage + 1} @{size}", "seq", (args.batch, 4, dim, 1, side * side)))
            cases.append((f"scan2d VMamba-T s{stage + 1} @{size}", "map", (args.batch, side, side, dim, 1)))
            cases.append((f"scan2d as VMamba calls it s{stage + 1} @{size}", "vmamba",
                          (args.batch, side, side, dim, 1)))
            cases.append((f"scan2d as VMamba calls it (A_log, whole projection) s{stage + 1} @{size}",
                          "vmamba_log",
                          (args.batch, side, side, dim, 1)))
            cases.append((f"layer_norm s{stage + 1} @{size}", "norm", (args.batch, side, side, dim)))
            cases.append((f"add_layer_norm s{stage + 1} @{size}", "add_norm", (args.batch, side, side, dim)))
            cases.append((f"add_layer_norm with drop path s{stage + 1} @{size}", "add_norm_drop",
                          (args.batch, side, side, dim)))
            cases.append((f"dwconv2d + SiLU as VMamba-T's SS2D calls it s{stage + 1} @{size}", "dwconv_silu",
                          (args.batch, side, side, dim, False)))
        for stage, inner in enumerate((96, 192)):  # EfficientVMamba-T's ES2D stages: inner = 2 x (48, 96)
            side = size // (4 * 2 ** stage)
            cases.append((f"scan2d as EfficientVMamba calls it s{stage + 1} @{size}", "evm",
                          (args.batch, side, side, inner, 16)))
            cases.append((f"scan2d as EfficientVMamba calls it (A_log, whole projection) s{stage + 1} @{size}",
                          "evm_log", (args.batch, side, side, inner, 16)))
        for stage, dim in enumerate((64, 128, 348, 448)):
            side = size // (4 * 2 ** stage)
            cases.append((f"scan2d as GroupMamba-T calls it s{stage + 1} @{size}", "group",
                          (args.batch, side, side, dim, 1)))
        for stage, dim in enumerate((96, 192, 384, 768)):  # MSVMamba-T: E = 2 * dim, rank ceil(dim / 16)
            side, rank = size // (4 * 2 ** stage), -(-dim // 16)
            low = -(-side // 2)
            cases.append((f"scan2d MSVMamba-T full-res s{stage + 1} @{size}", "ms_full",
                          (args.batch, side, side, 2 * dim, rank)))
            cases.append((f"scan2d MSVMamba-T half-res (3 visits) s{stage + 1} @{size}", "ms_low",
                          (args.batch, low, low, 2 * dim, rank)))
            cases.append((f"scan2d MSVMamba-T half-res (3 visits; A_log, whole projection) s{stage + 1} @{size}",
                          "ms_low_log",
                          (args.batch, low, low, 2 * dim, rank)))
        for stage, inner in enumerate((128, 256, 512, 1024)):  # Spatial-Mamba-T: E = 2 * dim
            side = size // (4 * 2 ** stage)
            cases.append((f"selective_scan_states Spatial-Mamba-T s{stage + 1} @{size}", "states",
                          (args.batch, inner, 1, side * side)))
            cases.append((f"selective_scan_states Spatial-Mamba-T, B a projection slice s{stage + 1} @{size}",
                          "states_slice", (args.batch, inner, 1, side * side)))
            cases.append((f"state_fusion Spatial-Mamba-T s{stage + 1} @{size}", "fusion", (args.batch, inner, side)))
            cases.append((f"dwconv2d + residual Spatial-Mamba-T position encoding s{stage + 1} @{size}",
                          "dwconv_res", (args.batch, side, side, inner // 2, True)))
            cases.append((f"dwconv2d + SiLU Spatial-Mamba-T mixer (channels-first output) s{stage + 1} @{size}",
                          "dwconv_silu_cf", (args.batch, side, side, inner, True)))
            cases.append((f"dwconv2d + SiLU Spatial-Mamba-T mixer s{stage + 1} @{size}", "dwconv_silu",
                          (args.batch, side, side, inner, True)))
            cases.append((f"state_fusion_observe Spatial-Mamba-T s{stage + 1} @{size}", "observe",
                          (args.batch, inner, side)))
            cases.append((f"observe_norm_gate Spatial-Mamba-T s{stage + 1} @{size}", "observe_gate",
                          (args.batch, inner, side)))
    for size in args.sizes:
        for model, dims, heads, N in (("micro", (48, 96, 192), (2, 4, 8), 48), ("tiny", (64, 128, 256), (2, 4, 8), 64),
                                      ("base", (96, 192, 384), (3, 6, 12), 64)):
            for stage, (dim, nh) in enumerate(zip(dims, heads)):
                side = size // (4 * 2 ** stage)
                cases.append((f"non_causal_ssd VSSD-{model} s{stage + 1} @{size}", "ssd",
                              (args.batch, side * side, nh, 2 * dim // nh, N)))
    if device.type == "cuda":
        for L in (197, 730, 785):
            for model, E in (("Vim-Ti", 384), ("Vim-S", 768)):
                cases.append((f"causal_conv1d {model} L={L}", "conv1d", (args.batch, L, E)))
                cases.append((f"merge_gate {model} L={L}", "gate", (args.batch, L, E)))
                cases.append((f"scan2d as Vim calls it {model} L={L}", "vim", (args.batch, L, E, 16)))
        cases.append(("selective_scan Vim-like N=16", "seq", (args.batch, 1, 768, 16, 197)))
        # N = 16 at Vim-Ti's sequence shapes without the fused projection (8-step chunks, 16 a checkpoint
        # segment: 25 chunks = 16 + 9, 99 = 6 x 16 + 3), and with the gradient entering through every state
        for L in (197, 785):
            cases.append((f"selective_scan Vim-Ti N=16 L={L}", "seq", (args.batch, 2, 384, 16, L)))
        cases.append(("selective_scan_states N=16 L=785", "states", (max(1, args.batch // 4), 384, 16, 785)))
        cases.append(("scan2d N=16 28x28", "map", (max(1, args.batch // 4), 28, 28, 96, 16)))
        # long sequences at batch 1: the forward splits them into segments (a summary pass first)
        cases.append(("scan2d as VMamba calls it s1 @1536, batch 1", "vmamba", (1, 384, 384, 96, 1)))
        cases.append(("selective_scan L=147456, batch 1", "seq", (1, 4, 96, 1, 147456)))
        cases.append(("selective_scan A_log L=147456, batch 1", "seq_log", (1, 4, 96, 1, 147456)))
        cases.append(("scan2d as VMamba calls it (A_log, whole projection) s1 @1536, batch 1", "vmamba_log",
                      (1, 384, 384, 96, 1)))
        cases.append(("selective_scan N=16 L=16384, batch 1", "seq", (1, 2, 64, 16, 16384)))

    def seq_fn(x, backend, whole_projection=False, **kw):
        return selective_scan(**x, delta_softplus=True, return_last_state=True, backend=backend, **kw)

    def states_fn(x, backend):
        return selective_scan_states(**x, delta_softplus=True, backend=backend)

    def states_slice_fn(x, backend):
        x = dict(x)
        N = x["A"].shape[1]
        x["B"] = x.pop("proj")[:, -2 * N:-N]
        return states_fn(x, backend)

    def fusion_fn(x, backend):
        return state_fusion(**x, dilations=(1, 3, 5), backend=backend)

    def observe_fn(x, backend):
        x = dict(x)
        x["C"] = x.pop("proj")[:, -1:]
        return state_fusion_observe(**x, dilations=(1, 3, 5), backend=backend)

    def observe_gate_fn(x, backend):
        x = dict(x)
        E = x["h"].shape[1]
        x["C"], x["z"] = x.pop("proj")[:, -1:], x.pop("xz")[..., E:]
        return observe_norm_gate(**x, backend=backend)

    def norm_fn(x, backend):
        return layer_norm(**x, backend=backend)

    def add_norm_fn(x, backend):
        return add_layer_norm(**x, backend=backend)

    def add_norm_drop_fn(x, backend):  # every third sample dropped, the others scaled by 1 / 0.8
        batch = x["x"].shape[0]
        scale = torch.tensor([0.0 if i % 3 == 0 else 1.25 for i in range(batch)], device=x["x"].device)
        return add_layer_norm(**x, backend=backend, branch_scale=scale)

    def conv1d_fn(x, backend):
        E = x["weight"].shape[1]
        return causal_conv1d(x["xz"][..., :E], x["weight"], x["bias"], reverse=(False, True), silu=True,
                             backend=backend)

    def dwconv_fn(silu, residual, channels_first=False):
        def fn(x, backend):
            C = x["weight"].shape[0]
            inp = x["xz"][..., :C].contiguous() if residual else x["xz"][..., C:]
            return dwconv2d(inp, x["weight"], x.get("bias"), silu=silu, residual=residual, backend=backend,
                            channels_first=channels_first)
        return fn

    def gate_fn(x, backend):
        E = x["xz"].shape[-1] // 2
        return merge_gate(x["y"], x["xz"][..., E:], 0.5, backend=backend)

    def vim_fn(x, backend):
        x = dict(x)
        rank = x["dt_weight"].shape[2]
        N = (x["proj"].shape[-1] - rank) // 2
        x["delta"], x["B"], x["C"] = x.pop("proj").split([rank, N, N], dim=-1)
        paths = BIDIRECTIONAL(1, x["u"].shape[2], x["u"].device)
        return scan2d(**x, paths=paths, delta_softplus=True, backend=backend)

    def map_fn(x, backend, whole_projection=False, **kw):
        x = dict(x)
        if "proj" in x:  # as VMamba calls it
            rank = x["dt_weight"].shape[2]
            N = (x["proj"].shape[-1] - rank) // 2
            proj = x.pop("proj")
            atrous = proj.shape[3] == 1  # as EfficientVMamba calls it
            whole = proj.expand(-1, -1, -1, 4, -1)
            x["delta"], x["B"], x["C"] = (whole, None, None) if whole_projection else whole.split([rank, N, N], -1)
            x["out_norm"] = _Norm(x.pop("norm_weight"), x.pop("norm_bias"))
        else:
            atrous = False
        pattern = ATROUS if atrous else CROSS
        return scan2d(**x, paths=pattern(x["u"].shape[1], x["u"].shape[2], x["u"].device), backend=backend, **kw)

    def group_fn(x, backend):
        x = dict(x)
        rank = x["dt_weight"].shape[2]
        N = (x["proj"].shape[-1] - rank) // 2
        x["delta"], x["B"], x["C"] = x.pop("proj").split([rank, N, N], dim=-1)
        return scan2d(**x, paths=CROSS_SPLIT(x["u"].shape[1], x["u"].shape[2], x["u"].device), backend=backend)

    def branch_fn(pattern):  # MSVMamba's branches
        def fn(x, backend, whole_projection=False, **kw):
            x = dict(x)
            rank, proj = x["dt_weight"].shape[2], x.pop("proj")
            x["delta"], x["B"], x["C"] = (proj, None, None) if whole_projection else proj.split([rank, 1, 1], -1)
            x["out_norm"] = _Norm(x.pop("norm_weight"), x.pop("norm_bias"))
            return scan2d(**x, paths=pattern(x["u"].shape[1], x["u"].shape[2], x["u"].device), backend=backend,
                          **kw)
        return fn

    def ssd_fn(x, backend):
        x = dict(x)
        heads, N = x["A"].shape[0], (x["bc"].shape[-1] - 5) // 2
        xs, bc, proj = x.pop("xs"), x.pop("bc"), x.pop("proj")
        return non_causal_ssd(xs[..., :-3], proj[..., 3:3 + heads], B=bc[..., :N], C=bc[..., N:2 * N], **x,
                              dt_softplus=True, backend=backend)

    # each kind of case: (its inputs, the op that runs them)
    kinds = {"seq": (scan_case, seq_fn), "map": (map_case, map_fn), "vmamba": (vmamba_case, map_fn),
             "norm": (norm_case, norm_fn), "add_norm": (add_norm_case, add_norm_fn),
             "add_norm_drop": (add_norm_case, add_norm_drop_fn), "conv1d": (conv1d_case, conv1d_fn),
             "gate": (gate_case, gate_fn), "vim": (vim_scan_case, vim_fn),
             "evm": (evm_case, map_fn), "group": (group_case, group_fn), "ms_full": (msvmamba_case, branch_fn(ROW)),
             "ms_low": (msvmamba_case, branch_fn(MULTISCALE_LOW)), "ssd": (ssd_case, ssd_fn),
             "states": (states_case, states_fn), "states_slice": (states_slice_case, states_slice_fn),
             "fusion": (fusion_case, fusion_fn),
             "observe": (observe_case, observe_fn), "observe_gate": (observe_gate_case, observe_gate_fn),
             "dwconv_silu": (dwconv_case, dwconv_fn(True, False)),
             "dwconv_silu_cf": (dwconv_case, dwconv_fn(True, False, channels_first=True)),
             "dwconv_res": (dwconv_case, dwconv_fn(False, True)),
             "seq_log": (with_a_log(scan_case), a_log_fn(seq_fn)),
             "vmamba_log": (with_a_log(vmamba_case), a_log_fn(map_fn)),
             "evm_log": (with_a_log(evm_case), a_log_fn(map_fn)),
             "ms_low_log": (with_a_log(msvmamba_case), a_log_fn(branch_fn(MULTISCALE_LOW)))}
    cases = [case for case in cases if re.search(args.cases, case[0])]
    print("| case | shape | dtype | fwd rel err | worst grad (rel err) | result |")
    print("|---|---|---|---:|---|---|")
    failures = 0
    for name, kind, shape in cases:
        for dtype in (torch.float32, torch.bfloat16):
            start = time.time()
            make_inputs, fn = kinds[kind]
            inputs = make_inputs(*shape, dtype, device)
            fwd, grads = compare(fn, inputs, dtype)
            worst = max(grads, key=lambda k: (grads[k] != grads[k], grads[k]))
            ok = fwd < TOL[dtype] and all(g < TOL[dtype] for g in grads.values())
            failures += not ok
            print(f"| {name} | {shape} | {str(dtype)[6:]} | {fwd:.1e} | d{worst} {grads[worst]:.1e} | "
                  f"{'pass' if ok else 'FAIL'} ({time.time() - start:.0f}s) |", flush=True)
            del inputs
            torch.cuda.empty_cache()
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

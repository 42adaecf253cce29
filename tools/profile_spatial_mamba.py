#!/usr/bin/env python
"""Where Spatial-Mamba's structure-aware SSM spends time and memory, at Spatial-Mamba-T's stage shapes.

Per stage (E = 2 * dim channels on an H x W map, N = 1), times the mixer's pieces forward and
forward + backward on the inputs the model gives them: the state-only scan (u, delta: (B, E, L) -> every
state, float32 (B, E, 1, L)), the state fusion alone (three replicate-padded dilated depthwise convolutions of the
(B, E, H, W) states) and then the observation, out-norm and gate in one op (``observe_norm_gate``: what the mixer
runs), the fusion with the observation (``fused_observe=True``'s op: y = C * h' + D * u written channels-last) and
the out-norm and gate after it (LayerNorm(y) * SiLU(z)), and the whole mixer, and counts the bytes
each piece keeps for its backward (saved tensors, device independent) and, on CUDA, its peak memory
beyond its inputs. On CUDA under bf16 autocast (as training runs), on CPU in float32 with the reference
scan (a smaller batch: CPU times say little about the GPU, the saved bytes are the same per image).

    python tools/profile_spatial_mamba.py                      # CUDA, batch 128
    python tools/profile_spatial_mamba.py --device cpu --batch 2
"""
from __future__ import annotations

import argparse
import contextlib
import time

import torch

from ssm_kernels import observe_norm_gate, selective_scan_states
from vmamba_zoo.models.spatial_mamba import StructureAwareSSM

#: Spatial-Mamba-T's four stages at 224x224: (dim, map side)
STAGES = [(64, 56), (128, 28), (256, 14), (512, 7)]


def timed(fn, device, repeats):
    """Median seconds of fn()."""
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def saved_bytes(fn):
    """Bytes of the tensors autograd saves for backward during fn() (views of one storage counted once)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def peak_bytes(fn, device):
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def pieces(mixer, batch, side, device, dtype):
    """The mixer's pieces as zero-argument forward functions on leaf inputs of the model's shapes."""
    E, L = mixer.d_inner, side * side
    leaf = lambda *s, dt=dtype: torch.randn(*s, device=device, dtype=dt).requires_grad_()
    u, dt, B, C = leaf(batch, E, L), leaf(batch, E, L), leaf(batch, 1, L), leaf(batch, 1, L)
    h, fused = leaf(batch, E, side, side, dt=torch.float32), leaf(batch, E, L, dt=torch.float32)
    y, z = leaf(batch, side, side, E), leaf(batch, side, side, E)
    x = leaf(batch, side, side, mixer.out_proj.out_features)
    return {
        "scan": lambda: selective_scan_states(u, dt, -mixer.A_log.float().exp(), B, delta_bias=mixer.dt_bias.float(),
                                              delta_softplus=True),
        "fusion": lambda: mixer.state_fusion(h),
        "observation + out norm + gate": lambda: observe_norm_gate(fused, C, u, mixer.D, mixer.out_norm.weight,
                                                                   mixer.out_norm.bias, z),
        "fusion + observation": lambda: mixer.state_fusion.observe(h, C, u, mixer.D),
        "out norm + gate": lambda: mixer.out_norm(y) * torch.nn.functional.silu(z),
        "mixer": lambda: mixer(x),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    autocast = torch.autocast("cuda", torch.bfloat16) if cuda else contextlib.nullcontext()
    print(f"{torch.cuda.get_device_name() if cuda else 'CPU'}, batch {args.batch}, "
          f"{'bf16 autocast' if cuda else 'float32, reference scan'}; times: median ms; memory: MB")
    print("| stage | piece | fwd ms | fwd+bwd ms | saved for bwd MB | peak fwd+bwd MB |")
    print("|---|---|---:|---:|---:|---:|")
    for stage, (dim, side) in enumerate(STAGES):
        mixer = StructureAwareSSM(dim).to(device)
        fns = pieces(mixer, args.batch, side, device, dtype)
        for name, fn in fns.items():
            def fwd():
                with torch.no_grad(), autocast:
                    fn()

            def fwd_bwd():
                with autocast:
                    out = fn()
                out.float().square().mean().backward()

            repeats = args.repeats if cuda or stage > 0 else max(1, args.repeats // 5)
            with autocast:
                saved = saved_bytes(fn)
            row = (timed(fwd, device, repeats) * 1e3, timed(fwd_bwd, device, repeats) * 1e3, saved / 2 ** 20,
                   peak_bytes(fwd_bwd, device) / 2 ** 20)
            print(f"| s{stage + 1} {side}x{side} E={2 * dim} | {name} | {row[0]:.3f} | {row[1]:.3f} | "
                  f"{row[2]:.1f} | {row[3]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

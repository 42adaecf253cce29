"""Registers, spills and memory instructions of ``observe_norm_gate``'s kernels, from their sm_90 SASS (no GPU).

Compiles the forward and backward kernels as the launchers call them at Spatial-Mamba-T's four stages (batch 128,
224x224; the fused states float32, C, u, z, the output and its gradient fp16 as under autocast; u channels-first)
with the launch blocks the heuristics pick or the ones given, and prints for each: registers a thread, spill
instructions (LDL / STL), instructions per tile element a thread holds, and the global loads and stores by width
(LDG.E.128: four float32 or eight fp16 a lane; LDG.E: one element a lane). Counts come from the local Triton, which
may differ in detail from the GPU machine's. See kernels/NOTES.md, "Observe + norm + gate".

    python tools/observe_sass.py
    python tools/observe_sass.py --pass bwd --BM 16 --BE 128 --warps 8
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernels"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernel_sass import compile_kernel, instructions  # noqa: E402
from ssm_kernels.triton import observe as obs  # noqa: E402

STAGES = {1: (128, 56), 2: (256, 28), 3: (512, 14), 4: (1024, 7)}   # Spatial-Mamba-T: (E = 2 * dim, side)
BATCH = 128
POINTERS = dict(h="fp32", c="fp16", u="fp16", d="fp32", w="fp32", b="fp32", z="fp16", out="fp16", stats="fp32",
                g="fp16", dh="fp32", dc="fp32", du="fp16", dz="fp16", part="fp32")


def arguments(E: int, side: int, which: str, overrides: dict):
    """(integer arguments, constexprs, warps) of one launch, as ``_observe_norm_gate_fwd/bwd`` pass them."""
    L, R = side * side, -(-E // 32)
    BM, BE, warps = obs._blocks(E, which)
    BM, BE, warps = overrides.get("BM") or BM, overrides.get("BE") or BE, overrides.get("warps") or warps
    VL = obs._vec(L)
    V = obs._vec(L, E * L)                      # h, u, dh, du: contiguous (B, E, L)
    ints = dict(L=L // VL, E=E, rows=BATCH * L, parts=256, sh_b=E * L // V, sh_e=L // V, sh_l=1, sc_b=(R + 2) * L,
                sc_l=1, su_b=E * L // V, su_e=L // V, su_l=1, sz_b=L * 2 * E, sz_l=2 * E, eps=1e-5,
                sdh_b=E * L // V, sdh_e=L // V, sdh_l=1, sdu_b=E * L // V, sdu_e=L // V, sdu_l=1)
    return ints, dict(BM=BM, BE=BE, ONE_BLOCK=BE >= E, VL=VL, VH=V, VU=V), warps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", type=int, nargs="+", choices=sorted(STAGES), default=sorted(STAGES))
    parser.add_argument("--pass", dest="pass_", choices=["fwd", "bwd", "both"], default="both")
    for name in ("BM", "BE", "warps"):
        parser.add_argument(f"--{name}", type=int, help=f"override the launch's {name}")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("observe_sass.py compiles the kernels: unset TRITON_INTERPRET", file=sys.stderr)
        return 2
    kernels = {"fwd": obs.observe_norm_gate_fwd_kernel, "bwd": obs.observe_norm_gate_bwd_kernel}
    for stage in args.stage:
        E, side = STAGES[stage]
        for which, fn in kernels.items():
            if args.pass_ not in ("both", which):
                continue
            ints, flags, warps = arguments(E, side, which, vars(args))
            sass, usage = compile_kernel(fn, POINTERS, ints, flags, warps)
            code = instructions(sass)
            mix = collections.Counter(op for _, op, _, _ in code)
            memory = collections.Counter(op + mods for _, op, mods, _ in code if op in ("LDG", "STG", "REDG"))
            per_thread = flags["BM"] * flags["BE"] / (32 * warps)
            print(f"s{stage} E={E} {side}x{side} {which} (BM={flags['BM']}, BE={flags['BE']}, warps={warps}, "
                  f"V={flags['VH']}): {usage}, {mix['LDL'] + mix['STL']} spill instructions, "
                  f"{len(code) / per_thread:.0f} instructions per element")
            print("    " + ", ".join(f"{op} {n}" for op, n in memory.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

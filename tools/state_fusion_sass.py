"""Registers, spills and instructions per element of the state-fusion kernels, from their sm_90 SASS (no GPU).

Compiles, as the launchers call them at one of Spatial-Mamba-T's stages (batch 128, 224x224, dilations
1, 3, 5, C, u, y and dy in bfloat16 as under autocast, the states float32), the separate fusion's kernels
(``state_fusion``: one (image, channel) plane and 256 positions a program) and the fusion + observation's
(``state_fusion_observe``), and prints for each: registers a thread, stack bytes, spill instructions
(LDL / STL: local memory), instructions per element (the kernel's static instruction count over the
elements a thread holds: what a thread executes, up to predicated-off branches, in a kernel without a
runtime loop; the backward's programs loop over up to 4 tiles: its loop bodies per element, for near-border
and interior programs when split) and the opcode mix. Counts come from the local Triton, which may differ
in detail from the GPU machine's. See kernels/NOTES.md, "Spatial-Mamba".

    python tools/state_fusion_sass.py --stage 1
    python tools/state_fusion_sass.py --stage 1 --pass bwd --P 2 --BC 16 --warps 8 --sass /tmp/bwd.sass
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernels"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton  # noqa: E402

from kernel_sass import compile_kernel, instructions  # noqa: E402
from ssm_kernels.triton import state_fusion as sf  # noqa: E402

STAGES = {1: (128, 56), 2: (256, 28), 3: (512, 14), 4: (1024, 7)}   # Spatial-Mamba-T: (E = 2 * dim, side)
BATCH, K = 128, 3
POINTERS = dict(h="fp32", w="fp32", alpha="fp32", dil="i32", out="fp32", dh="fp32", dw="fp32", dalpha="fp32",
                c="bf16", u="bf16", d="fp32", y="bf16", dy="bf16", dc="fp32", du="bf16", dd="fp32", s="fp32")


def kernels(stage: int, overrides: dict):
    """(name, kernel, pointer types, integer arguments, constexprs, warps, elements a program) at a stage."""
    E, side = STAGES[stage]
    L = side * side
    out = []
    # the separate fusion: its g is the float32 gradient of the float32 fused map
    for name, fn in (("state_fusion fwd", sf.state_fusion_fwd_kernel),
                     ("state_fusion bwd", sf.state_fusion_bwd_kernel)):
        out.append((name, fn, dict(POINTERS, g="fp32"), dict(C=E, H=side, W=side), dict(K=K, BLOCK=sf.BLOCK), 4,
                    sf.BLOCK))
    for name, fn, (P, BC, warps) in (
            ("state_fusion_observe fwd", sf.fusion_observe_fwd_kernel, (sf.OBS_P, sf.OBS_BC, sf.OBS_WARPS)),
            ("state_fusion_observe bwd", sf.fusion_observe_bwd_kernel,
             (sf.OBS_BWD_P, sf.OBS_BWD_BC, sf.OBS_BWD_WARPS))):
        P, BC, warps = overrides.get("P") or P, overrides.get("BC") or BC, overrides.get("warps") or warps
        grid, P = sf._observe_grid(BATCH, E, L, P, BC)
        split, M, n_near, near_tiles, tiles = sf._split(side, side, 5, 32 * P)
        ints = dict(E=E, H=side, W=side, c_stride=3 * L,  # C a view of the (B, R + 2, L) projection
                    M=M, n_near=n_near, near_tiles=near_tiles, tiles=tiles, TILES=sf.OBS_BWD_TILES,
                    near_programs=triton.cdiv(near_tiles, sf.OBS_BWD_TILES))
        flags = dict(K=K, P=P, BC=BC, **(dict(SPLIT=split) if name.endswith("bwd") else {}))
        out.append((name, fn, dict(POINTERS, g="fp32"), ints, flags, warps, P * 32 * BC))
        if name.endswith("bwd"):  # its first pass: g = dy * C, channels-first
            out.append(("state_fusion_observe bwd, g = dy C", sf.observe_grad_kernel, dict(POINTERS, g="fp32"),
                        dict(E=E, L=L, c_stride=3 * L), dict(BQ=64, BC=64), 4, 64 * 64))
    return out


def summary(sass: str, elements_per_thread: float) -> dict:
    code = instructions(sass)
    mix = collections.Counter(op for _, op, _, _ in code)
    return dict(total=len(code), per_element=len(code) / elements_per_thread, spills=mix["LDL"] + mix["STL"],
                mix=mix, loops=loop_bodies(code))


def loop_bodies(code) -> list:
    """Instruction counts of the kernel's runtime loops (their backward branches' spans, 200 instructions or
    more), in address order: in the backward, the loop over a program's tiles (split: near-border, interior)."""
    addresses = [a for a, _, _, _ in code]
    spans = []
    for address, op, _, operands in code:
        target = re.match(r"0x([0-9a-f]+)", operands) if op == "BRA" else None
        if target and int(target.group(1), 16) < address:
            n = sum(1 for a in addresses if int(target.group(1), 16) <= a <= address)
            if n >= 200:
                spans.append(n)
    return spans


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", type=int, choices=sorted(STAGES), default=1)
    parser.add_argument("--pass", dest="pass_", choices=["fwd", "bwd", "both"], default="both")
    for name in ("P", "BC", "warps"):
        parser.add_argument(f"--{name}", type=int, help=f"override state_fusion_observe's {name}")
    parser.add_argument("--sass", type=Path, help="also write the last kernel's whole SASS here")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("state_fusion_sass.py compiles the kernels: unset TRITON_INTERPRET", file=sys.stderr)
        return 2
    E, side = STAGES[args.stage]
    print(f"Spatial-Mamba-T stage {args.stage} (E={E}, {side}x{side}), batch {BATCH}, sm_90, "
          f"Triton {triton.__version__}")
    for name, fn, pointers, ints, flags, warps, elements in kernels(args.stage, vars(args)):
        if args.pass_ != "both" and args.pass_ not in name:
            continue
        sass, usage = compile_kernel(fn, pointers, ints, flags, warps)
        if args.sass:
            args.sass.write_text(sass)
        s = summary(sass, elements / (32 * warps))
        blocks = ", ".join(f"{k}={v}" for k, v in flags.items() if k != "K")
        print(f"{name} ({blocks}, warps={warps}): {usage}, {s['spills']} spill instructions, "
              f"{s['total']} instructions, {s['per_element']:.0f} per element"
              + (" (static: every path, loops once)" if s["loops"] else ""))
        if s["loops"]:
            per_thread = elements / (32 * warps)
            kinds = ["near-border", "interior"] if flags.get("SPLIT") else ["row-major"]
            print("    loop over a program's tiles, per element: " + ", ".join(
                f"{kind} {n / per_thread:.0f}" for kind, n in zip(kinds, s["loops"])))
        print("    mix: " + ", ".join(f"{op} {n}" for op, n in s["mix"].most_common(14)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

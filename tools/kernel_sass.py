"""Instruction counts of the scan kernels' chunk loops, read from their sm_90 SASS (no GPU needed).

Compiles ``scan_fwd_kernel`` or ``scan_bwd_kernel`` for an H100 (sm_90) as the fused ``scan2d`` launches
them for one of VMamba-T's stages at 224x224 (low-rank step size, dt/B/C read in place from the x_proj
output, bfloat16 inputs), with the launch parameters the heuristics pick or the ones given, disassembles
the cubin with the ``cuobjdump`` that ships with Triton, and prints the chunk loop's size: instructions
per chunk, per element and thread (the number to push down: every warp instruction serves 32 elements),
warp shuffles per element, register spills, and the opcode mix. This is how the v6 and v7 kernels were
tuned (kernels/NOTES.md). Counts come from the local Triton, which may differ in detail from the GPU
machine's.

    python tools/kernel_sass.py --pass fwd --stage 1
    python tools/kernel_sass.py --pass bwd --stage 1 --BD 32 --BL 32 --sass /tmp/bwd.sass
"""
from __future__ import annotations

import argparse
import collections
import math
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernels"))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from ssm_kernels.triton import kernels, ops  # noqa: E402

STAGES = {1: (96, 56), 2: (192, 28), 3: (384, 14), 4: (768, 7)}   # VMamba-T: (channels, side) at 224x224
K = 4

#: Element types of the pointer arguments, as scan2d passes them under bfloat16 autocast.
POINTERS = dict(u="bf16", dt="bf16", A="fp32", B="bf16", C="bf16", D="fp32", bias="fp32", z="bf16", idx="i64",
                dtw="fp32", out="bf16", last="fp32", states="fp32", ckpt="fp32", scratch="fp32", seg="fp32",
                dout="bf16", dlast="fp32", dstates="fp32", du="bf16", ddt="bf16", dA="fp32", dB="fp32", dC="fp32",
                dD="fp32", dbias="fp32", dz="bf16")


def launch_arguments(stage: int, backward: bool, overrides: dict, d_state: int = 1):
    """(integer arguments, constexpr flags, num_warps) of one scan2d launch at a VMamba-T stage, batch
    128, with the strides the launchers derive (meta tensors: nothing is allocated)."""
    Dg, side = STAGES[stage]
    batch, L, N, R = 128, side * side, d_state, math.ceil(Dg / 16)
    meta = dict(device="meta")
    u = torch.empty(batch, side, side, Dg, **meta)
    x_proj = torch.empty(batch, side, side, K, R + 2 * N, **meta)       # VMamba reads dt, B, C from it in place
    low, B = x_proj[..., :R], x_proj[..., R:R + N]
    layout = ops._map_layout(u, low, B, torch.empty(K, L, dtype=torch.int64, **meta), False,
                             torch.empty(K, Dg, R, **meta))
    BD, NP, RP, BL, warps, stages = ops._blocks(Dg, N, L, backward, R)
    BD, BL = overrides.get("BD") or BD, overrides.get("BL") or BL
    warps, stages = overrides.get("warps") or warps, overrides.get("stages") or stages
    names = [f"{p}_{s}" for p in ("su", "sd", "sb") for s in ("b", "k", "d", "l")]
    n_chunks = triton.cdiv(L, BL)
    S = ops._ckpt_chunks(N, BL)                                         # chunks per checkpoint segment
    ints = dict(zip(names, layout.strides()), L=L, Dg=Dg, N=N, R=R, n_chunks=n_chunks, n_seg=1, seg_chunks=n_chunks,
                n_ckpt=n_chunks if S == 1 else triton.cdiv(n_chunks, S) - 1, s_dir=u.numel())
    ints["sb_n"] = ints.pop("sb_d")
    # the backward's gradient buffers: the step size's as (K, batch, positions, Dg), dB and dC in B's shape
    sk, sb, sp, sc = torch.empty(K, batch, L, Dg, **meta).stride()
    ints.update(sg_b=sb, sg_k=sk, sg_d=sc, sg_l=sp)
    ints.update(zip(("sdb_b", "sdb_k", "sdb_n", "sdb_l"), ops._per_direction(torch.empty(B.shape, **meta))))
    flags = dict(HAS_D=True, HAS_BIAS=True, HAS_Z=False, HAS_INDEX=True, HAS_DT_PROJ=True, SOFTPLUS=True,
                 DOT_F32=False, FAST_MATH=True, STORE_STATES=False, STORE_LAST=False, SUMMARY=False, HAS_DSTATES=False,
                 HAS_DLAST=False, BY_STEP=False, CKPT_CHUNKS=S, A_LOG=True, BD=BD, NP=NP, RP=RP, BL=BL, STAGES=stages)
    return ints, flags, warps


def compile_sass(backward: bool, ints: dict, flags: dict, warps: int) -> str:
    fn = kernels.scan_bwd_kernel if backward else kernels.scan_fwd_kernel
    return compile_kernel(fn, POINTERS, ints, flags, warps)[0]


def compile_kernel(fn, pointers: dict, ints: dict, flags: dict, warps: int):
    """(SASS, resource usage line: registers, stack, shared memory) of a Triton kernel compiled for sm_90:
    ``pointers`` maps each pointer argument (its name less ``_ptr``) to its element type, ``ints`` each integer
    argument to its value (Triton specialises on 1 and on multiples of 16; a float: an fp32 argument), ``flags`` the
    constexprs."""
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in flags:
            signature[name], constexprs[name] = "constexpr", flags[name]
        elif name.endswith("_ptr"):
            signature[name] = "*" + pointers[name[:-4]]
            attrs[(i,)] = [["tt.divisibility", 16]]          # torch's allocations are 16-byte aligned
        elif isinstance(ints[name], float):
            signature[name] = "fp32"
        elif ints[name] == 1:                                # Triton specialises integer arguments equal to 1
            signature[name], constexprs[name] = "constexpr", 1
        else:
            signature[name] = "i64" if ints[name] >= 2 ** 31 else "i32"
            if ints[name] % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    compiled = triton.compile(ASTSource(fn, signature, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    cubin = Path(os.environ.get("TMPDIR", "/tmp")) / f"kernel_{os.getpid()}.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    try:
        sass = subprocess.run([str(cuobjdump), "-sass", str(cubin)], check=True, capture_output=True, text=True).stdout
        usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", str(cubin)], check=True, capture_output=True,
                               text=True).stdout
    finally:
        cubin.unlink()
    found = re.search(r"REG:\d+ STACK:\d+ SHARED:\d+", usage)
    return sass, found.group(0) if found else usage.strip()


_INSTRUCTION = re.compile(r"\s+/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)(\S*)\s*(.*?);")


def instructions(sass: str):
    """(address, opcode, modifiers, operands) of every instruction."""
    matches = (_INSTRUCTION.match(line) for line in sass.splitlines())
    return [(int(m.group(1), 16), m.group(2), m.group(3), m.group(4)) for m in matches if m]


def chunk_loop(code) -> list:
    """The instructions of the kernel's chunk loop: the span of its longest backward branch."""
    spans = []
    for address, op, _, operands in code:
        target = re.match(r"0x([0-9a-f]+)", operands) if op == "BRA" else None
        if target and int(target.group(1), 16) < address:
            spans.append((int(target.group(1), 16), address))
    if not spans:
        raise RuntimeError("no loop found in the SASS")
    start, end = max(spans, key=lambda s: s[1] - s[0])
    return [ins for ins in code if start <= ins[0] <= end]


def summary(code, flags: dict, warps: int) -> dict:
    loop = chunk_loop(code)
    per_thread = flags["BL"] * flags["NP"] * flags["BD"] / (32 * warps)     # elements of a chunk each thread holds
    mix = collections.Counter(op for _, op, _, _ in loop)
    return dict(loop=len(loop), per_element=len(loop) / per_thread, shuffles=mix["SHFL"] / per_thread,
                spills=sum(1 for _, op, _, _ in code if op in ("LDL", "STL")), mix=mix)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pass", dest="pass_", choices=["fwd", "bwd"], default="fwd")
    parser.add_argument("--stage", type=int, choices=sorted(STAGES), default=1)
    for name in ("BD", "BL", "warps", "stages"):
        parser.add_argument(f"--{name}", type=int, help=f"override the heuristics' {name}")
    parser.add_argument("--d-state", type=int, default=1, help="states per channel (VMamba 1; Vim, EfficientVMamba 16)")
    parser.add_argument("--sass", type=Path, help="also write the whole SASS here")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("kernel_sass.py compiles the kernels: unset TRITON_INTERPRET", file=sys.stderr)
        return 2
    backward = args.pass_ == "bwd"
    ints, flags, warps = launch_arguments(args.stage, backward, vars(args), args.d_state)
    sass = compile_sass(backward, ints, flags, warps)
    if args.sass:
        args.sass.write_text(sass)
    s = summary(instructions(sass), flags, warps)
    print(f"scan2d {args.pass_}, VMamba-T stage {args.stage} (Dg={ints['Dg']}, L={ints['L']}, R={ints['R']}, N={ints['N']}), "
          f"BD={flags['BD']} BL={flags['BL']} warps={warps} stages={flags['STAGES']}, "
          f"sm_90, Triton {triton.__version__}")
    print(f"chunk loop: {s['loop']} instructions, {s['per_element']:.1f} per element and thread, "
          f"{s['shuffles']:.1f} shuffles per element; {s['spills']} spill instructions in the kernel")
    print("mix: " + ", ".join(f"{op} {n}" for op, n in s["mix"].most_common(16)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

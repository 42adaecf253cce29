#!/usr/bin/env python
"""GPU benchmark of the scan kernels: reference (PyTorch), Triton, and the official CUDA kernel.

First measures the card's two ceilings (device-to-device copy bandwidth, bf16 matmul rate). Then, at
VMamba-T's stage shapes (batch 128, K = 4 directions, N = 1 and 16), times:

- selective_scan forward and forward+backward: reference backend, Triton backend, and mamba-ssm's CUDA
  kernel (``selective_scan_cuda``) when it can be imported;
- scan2d (with VMamba's low-rank step-size projection) forward and forward+backward: the fused Triton
  kernel, the same work unfused (projection einsum, gather, Triton selective scan, merge), and the
  reference; with the minimal bytes of the fused forward (read the map, the low-rank step sizes, B and
  C once, write the float32 output once) and the achieved fraction of the copy bound.

Inputs are bfloat16 (float32 parameters), as under mixed precision. Times are medians of
``triton.testing.do_bench`` (CUDA events), in milliseconds.

    python tools/bench_kernels.py [--batch 128] [--no-reference]
    python tools/bench_kernels.py --sweep      # launch-parameter sweep (coordinate descent) instead
    python tools/bench_kernels.py --parts      # where the fused scan2d's time goes, per stage
    python tools/bench_kernels.py --floors     # what the fused forward cannot go below, per stage
"""
from __future__ import annotations

import argparse
import sys

import torch
import triton
import triton.language as tl

from ssm_kernels import CROSS, cross_merge, cross_scan, scan2d, selective_scan
from ssm_kernels.triton.kernels import LOG2E, _exp2, _log2
from ssm_kernels.triton.launch import _INTERPRETED, cdiv


#: VMamba-T's four stages at 224x224: (channels, map side)
STAGES = [(96, 56), (192, 28), (384, 14), (768, 7)]


def ceilings(device):
    n = 2 ** 30
    src = torch.empty(n, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median")
    copy_gbs = 2 * n / ms / 1e6
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    ms = triton.testing.do_bench(lambda: a @ b, return_mode="median")
    return copy_gbs, 2 * 8192 ** 3 / ms / 1e9


def official_scan():
    """mamba-ssm's CUDA selective scan as (forward, forward+backward) closures, or None."""
    try:
        import selective_scan_cuda
    except ImportError:
        return None

    def fwd(u, delta, A, B, C, D, bias):
        return selective_scan_cuda.fwd(u, delta, A, B, C, D, None, bias, True)

    def fwd_bwd(u, delta, A, B, C, D, bias, dout):
        out, x, *_ = fwd(u, delta, A, B, C, D, bias)
        return selective_scan_cuda.bwd(u, delta, A, B, C, D, None, bias, dout, x, None, None, True, False)

    return fwd, fwd_bwd


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def triton_ops(kind, args, dout):
    """(forward, backward) closures calling the Triton custom ops directly, without autograd: "seq" for
    selective_scan's arguments (u, delta, A, B, C, D, z, bias), "map" for scan2d's."""
    from ssm_kernels.triton import ops as tops
    if kind == "seq":
        fwd = lambda: tops.selective_scan_fwd(*args, True, False, False)
        ckpt = fwd()[3]
        return fwd, lambda: tops.selective_scan_bwd(*args, ckpt, dout, None, None, True)
    no_norm = (None, None, 0.0)
    fwd = lambda: tops.scan2d_fwd(*args, *no_norm, True, False)
    ckpt = fwd()[1]
    empty = ckpt.new_empty(0)
    return fwd, lambda: tops.scan2d_bwd(*args, None, ckpt, empty, empty, dout, True, False)


def scan_rows(batch, device, with_reference):
    official = official_scan()
    rows = []
    for stage, (Dg, side) in enumerate([(96, 56), (192, 28), (384, 14)]):
        L = side * side
        for N in (1, 16):
            KD = 4 * Dg
            mk = lambda *s: torch.randn(*s, device=device, dtype=torch.bfloat16)
            u, delta, B, C = mk(batch, KD, L), mk(batch, KD, L) - 1, mk(batch, 4, N, L), mk(batch, 4, N, L)
            A = -torch.rand(KD, N, device=device) - 0.1
            D, bias = torch.randn(KD, device=device), torch.randn(KD, device=device)
            dout = mk(batch, KD, L)
            leaves = [t.clone().requires_grad_() for t in (u, delta, A, B, C, D, bias)]
            row = {"shape": f"s{stage + 1} (B={batch}, KD={KD}, L={L}, N={N})"}
            for backend in (["reference"] if with_reference else []) + ["triton"]:
                run = lambda: selective_scan(u, delta, A, B, C, D, None, bias, True, backend=backend)
                row[f"{backend} fwd"] = bench(run)

                def both():
                    out = selective_scan(*leaves[:5], leaves[5], None, leaves[6], True, backend=backend)
                    torch.autograd.grad(out, leaves, dout)
                row[f"{backend} fwd+bwd"] = bench(both)
            # the kernels alone, called like the official kernel below (no autograd, no Python wrapper)
            fwd_op, bwd_op = triton_ops("seq", (u, delta, A, B, C, D, None, bias), dout)
            row["triton ops fwd+bwd"] = bench(lambda: (fwd_op(), bwd_op()))
            if official is not None:
                fwd, fwd_bwd = official
                row["official fwd"] = bench(lambda: fwd(u, delta, A, B, C, D, bias))
                row["official fwd+bwd"] = bench(lambda: fwd_bwd(u, delta, A, B, C, D, bias, dout))
            nbytes = 2 * (3 * batch * KD * L + 2 * batch * 4 * N * L)
            row["triton fwd GB/s"] = nbytes / row["triton fwd"] / 1e6
            rows.append(row)
            print(row, flush=True)
    return rows


def stage_inputs(batch, Dg, side, device):
    """scan2d's inputs at a VMamba-T stage, as its mixer passes them: (u, the low-rank step sizes, A, B, C,
    D, bias, the step-size projection's weight); bf16 maps, float32 parameters, N = 1, K = 4."""
    mk = lambda *s: torch.randn(*s, device=device, dtype=torch.bfloat16)
    rank = -(-Dg // 16)  # VMamba-T: dt_rank = ceil(dim / 16), d_inner = dim
    u, low = mk(batch, side, side, Dg), mk(batch, side, side, 4, rank)
    B, C = mk(batch, side, side, 4, 1), mk(batch, side, side, 4, 1)
    A = -torch.rand(4 * Dg, 1, device=device) - 0.1
    D, bias = torch.randn(4 * Dg, device=device), torch.randn(4 * Dg, device=device)
    weight = torch.randn(4, Dg, rank, device=device) * rank ** -0.5
    return u, low, A, B, C, D, bias, weight


def scan2d_rows(batch, device, copy_gbs, with_reference):
    rows = []
    for stage, (Dg, side) in enumerate(STAGES):
        u, low, A, B, C, D, bias, weight = stage_inputs(batch, Dg, side, device)
        rank = weight.shape[2]
        paths = CROSS(side, side, device)
        L = side * side
        leaves = [t.clone().requires_grad_() for t in (u, low, A, B, C, D, bias, weight)]
        dout = torch.randn(batch, side, side, Dg, device=device)

        def fused(u, low, A, B, C, D, bias, weight):
            return scan2d(u, low, A, B, C, D, bias, paths, backend="triton", dt_weight=weight)

        def unfused(u, low, A, B, C, D, bias, weight):  # projection as an einsum, gather, Triton scan, merge
            delta = torch.einsum("bhwkr,kdr->bhwkd", low, weight)
            ys = selective_scan(cross_scan(u, paths).reshape(batch, -1, L), cross_scan(delta, paths).reshape(batch, -1, L),
                                A, cross_scan(B, paths), cross_scan(C, paths), D, None, bias, True, backend="triton")
            return cross_merge(ys.float().view(batch, 4, Dg, L), paths)

        variants = {"fused": fused, "unfused": unfused}
        if with_reference:
            variants["reference"] = lambda *a: scan2d(*a[:7], paths, backend="reference", dt_weight=a[7])
        row = {"shape": f"s{stage + 1} (B={batch}, {side}x{side}, D={Dg}, R={rank})"}
        with torch.autocast("cuda", dtype=torch.bfloat16):  # the einsum runs in bf16, as in a model
            for name, fn in variants.items():
                row[f"{name} fwd"] = bench(lambda: fn(u, low, A, B, C, D, bias, weight))

                def both():
                    torch.autograd.grad(fn(*leaves), leaves, dout)
                row[f"{name} fwd+bwd"] = bench(both)
        # minimal bytes: read u, the low-rank step sizes, B, C once; write the float32 map once
        nbytes = 2 * (batch * L * Dg + batch * L * 4 * rank + 2 * batch * L * 4) + 4 * batch * L * Dg
        row["fused fwd GB/s"] = nbytes / row["fused fwd"] / 1e6
        row["bound ms"] = nbytes / copy_gbs / 1e6
        row["% of bound"] = 100 * row["bound ms"] / row["fused fwd"]
        rows.append(row)
        print(row, flush=True)
    return rows


def sweep(batch, device, only=""):
    """Time the forward and backward ops under launch parameters varied one at a time."""
    from ssm_kernels.triton import ops as tops
    cases = []
    for Dg, side, N in [(96, 56, 1), (384, 14, 1), (768, 7, 1), (96, 28, 16)]:
        L = side * side
        rank = -(-Dg // 16)
        mk = lambda *s: torch.randn(*s, device=device, dtype=torch.bfloat16)
        seq = (mk(batch, 4 * Dg, L), mk(batch, 4 * Dg, L) - 1, -torch.rand(4 * Dg, N, device=device) - 0.1,
               mk(batch, 4, N, L), mk(batch, 4, N, L), torch.randn(4 * Dg, device=device), None,
               torch.randn(4 * Dg, device=device))
        maps = (mk(batch, side, side, Dg), mk(batch, side, side, 4, rank), seq[2], mk(batch, side, side, 4, N),
                mk(batch, side, side, 4, N), seq[5], seq[7], CROSS(side, side, device).index,
                torch.randn(4, Dg, rank, device=device) * rank ** -0.5)
        cases.append((f"seq Dg={Dg} L={L} N={N}", "seq", seq, mk(batch, 4 * Dg, L)))
        cases.append((f"map {side}x{side} Dg={Dg} R={rank} N={N}", "map", maps,
                      torch.randn(batch, side, side, Dg, device=device)))

    def run(kind, args, dout):
        fwd, bwd = triton_ops(kind, args, dout)
        return bench(fwd), bench(bwd)

    for name, kind, args, dout in cases:
        if only not in name:
            continue
        N = args[2].shape[1]
        BLs = [8, 16, 32] if N == 1 else [4, 8, 16]
        tops.TUNING.clear()  # start from the heuristics, not from the previous case's best
        rank = args[8].shape[2] if kind == "map" else 0
        Dg, L = args[2].shape[0] // 4, (args[0].shape[-1] if kind == "seq" else args[7].shape[1])
        f, b = tops._blocks(Dg, N, L, False, rank), tops._blocks(Dg, N, L, True, rank)
        best = {"BL": f[3], "fwd": dict(BD=f[0], warps=f[4], stages=f[5]), "bwd": dict(BD=b[0], warps=b[4], stages=b[5])}
        tops.TUNING.clear()
        tops.TUNING.update(best)
        base = run(kind, args, dout)
        print(f"{name}: start {best} fwd {base[0]:.3f} bwd {base[1]:.3f}", flush=True)
        results = {}
        for key, values in [("BL", BLs), ("BD", [16, 32, 64] if N == 1 else [4, 8, 16]),
                            ("warps", [1, 2, 4]), ("stages", [1, 2, 3])]:
            for pass_ in (["fwd", "bwd"] if key != "BL" else [None]):
                timings = {}
                for v in values:
                    trial = {"BL": best["BL"], "fwd": dict(best["fwd"]), "bwd": dict(best["bwd"])}
                    if key == "BL":
                        trial["BL"] = v
                    else:
                        trial[pass_][key] = v
                    tops.TUNING.clear()
                    tops.TUNING.update(trial)
                    try:
                        t = run(kind, args, dout)
                    except Exception as err:  # out of resources etc.
                        print(f"  {key}={v} ({pass_}): {type(err).__name__}", flush=True)
                        continue
                    timings[v] = t
                score = (lambda t: t[0] + t[1]) if key == "BL" else (lambda t: t[0] if pass_ == "fwd" else t[1])
                v_best = min(timings, key=lambda v: score(timings[v]))
                if key == "BL":
                    best["BL"] = v_best
                else:
                    best[pass_][key] = v_best
                print(f"  {key} ({pass_ or 'both'}): " + ", ".join(f"{v}: {t[0]:.3f}/{t[1]:.3f}" for v, t in timings.items())
                      + f" -> {v_best}", flush=True)
                results = timings[v_best]
        print(f"{name}: best {best} fwd {results[0]:.3f} bwd {results[1]:.3f} (from {base[0]:.3f}/{base[1]:.3f})",
              flush=True)
    tops.TUNING.clear()


def merge_norm_rows(batch, device, copy_gbs):
    """The merge of K=4 direction slices + LayerNorm (VMamba's out-norm): PyTorch's three ops under
    autocast (sum into float32, layer_norm, the cast for the next matmul) against the fused kernels."""
    from ssm_kernels.triton.merge_norm import merge_norm_bwd, merge_norm_fwd
    rows = []
    for stage, (Dg, side) in enumerate(STAGES):
        slices = torch.randn(4, batch, side, side, Dg, device=device, dtype=torch.float16)
        norm = torch.nn.LayerNorm(Dg, device=device)
        dy = torch.randn(batch, side, side, Dg, device=device, dtype=torch.float16)

        def torch_fwd(s):
            with torch.autocast("cuda", dtype=torch.float16):
                return norm(s.sum(0, dtype=torch.float32)).half()

        leaf = slices.clone().requires_grad_()
        params = list(norm.parameters())
        y, stats = merge_norm_fwd(slices, norm.weight, norm.bias, norm.eps)
        row = {"shape": f"s{stage + 1} (B={batch}, {side}x{side}, D={Dg})",
               "pytorch fwd": bench(lambda: torch_fwd(slices)),
               "pytorch fwd+bwd": bench(lambda: torch.autograd.grad(torch_fwd(leaf), [leaf] + params, dy)),
               "fused fwd": bench(lambda: merge_norm_fwd(slices, norm.weight, norm.bias, norm.eps)),
               "fused fwd+bwd": bench(lambda: (merge_norm_fwd(slices, norm.weight, norm.bias, norm.eps),
                                               merge_norm_bwd(slices, norm.weight, stats, dy)))}
        # minimal bytes of the forward: read the 4 half slices, write the half map
        row["% of bound (fwd)"] = 100 * 10 * slices[0].numel() / copy_gbs / 1e6 / row["fused fwd"]
        rows.append(row)
        print(row, flush=True)
    return rows


def parts_rows(batch, device):
    """Where the fused scan2d's time goes, per VMamba-T stage (bf16, the out-norm fused as in the model):
    the forward op and its scan kernel; the backward op and its pieces (the merge-norm backward, the
    scan backward with the projection's gradient, that gradient alone, the K-sum of du)."""
    from ssm_kernels.triton import ops as tops
    from ssm_kernels.triton.merge_norm import merge, merge_norm_bwd
    from ssm_kernels.triton.projection import projection_grads
    rows = []
    for stage, (Dg, side) in enumerate(STAGES):
        u, low, A, B, C, D, bias, w = stage_inputs(batch, Dg, side, device)
        mk = lambda *s: torch.randn(*s, device=device, dtype=torch.bfloat16)
        nw, nb = torch.ones(Dg, device=device), torch.zeros(Dg, device=device)
        index = CROSS(side, side, device).index
        args = (u, low, A, B, C, D, bias, index, w)
        _, ckpt, slices, stats = tops._scan2d_fwd(*args, nw, nb, 1e-5, True, False)
        dy = mk(batch, side, side, Dg)
        dout, _ = merge_norm_bwd(slices, nw, stats, dy)
        layout = tops._map_layout(u, low, B, index, False, w)
        buf, s_dir = tops._direction_buffer(u, index, False)
        g = mk(4, batch * side * side, Dg)
        _, acc = tops._accumulators(tops.accumulator_shapes(A, B, C, w), device)
        dw = acc[5]                                          # the projection's weight gradient
        row = {"shape": f"s{stage + 1} ({side}x{side}, D={Dg})",
               "fwd op": bench(lambda: tops._scan2d_fwd(*args, nw, nb, 1e-5, True, False)),
               "scan kernel": bench(lambda: tops._launch_fwd(layout, u, low, A, B, C, D, bias, None, index, w, buf,
                                                             s_dir, True, False, False)),
               "bwd op": bench(lambda: tops._scan2d_bwd(*args, nw, ckpt, slices, stats, dy, True, False)),
               "merge-norm bwd": bench(lambda: merge_norm_bwd(slices, nw, stats, dy)),
               "scan bwd + projection": bench(lambda: tops._launch_bwd(layout, u, low, A, B, C, D, bias, None, index,
                                                                       w, ckpt, dout, None, None, buf, s_dir, True,
                                                                       acc)),
               "projection grads": bench(lambda: projection_grads(g, low, w, dw, False)),
               "du merge": bench(lambda: merge(buf, u.dtype))}
        rows.append(row)
        print(row, flush=True)
    return rows


@triton.jit
def sfu_floor_kernel(out_ptr, a, iters, PASSES: tl.constexpr, BLOCK: tl.constexpr, FAST_MATH: tl.constexpr):
    """Per element and pass, the special-function work of any scan2d forward with softplus step sizes:
    softplus(x) (an exp and a log) and the decay exp(A * step) (an exp), as the scan kernels compute
    them; no memory traffic but one store per program, which keeps the work from being optimised away."""
    lane = tl.arange(0, BLOCK).to(tl.float32) * 1e-4 + tl.program_id(0) * 1e-7
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(iters):
        x = lane + i * 1e-3
        for p in tl.static_range(PASSES):
            step = _log2(1.0 + _exp2((x + p) * LOG2E, FAST_MATH), FAST_MATH)  # softplus(x) / ln 2
            acc += _exp2(a * step, FAST_MATH) * step
    tl.store(out_ptr + tl.program_id(0) * BLOCK + tl.arange(0, BLOCK), acc)


def floor_rows(batch, device, copy_gbs):
    """What the fused scan2d forward (K=4, N=1, no out-norm) cannot go below at each VMamba-T stage,
    beside its time, in ms. "issue bound": the bytes the issue counts (read the map, a step-size map,
    B and C once; write the bf16 output once) at the copy bandwidth, and 70% of it, the target. A design
    that merges the K directions after scanning them must hold each direction's output until the others
    reach its position, i.e. write the K slices and read them back ("slices traffic", the map, the low-rank
    step sizes, B and C read once, the output written once). One that does not must first summarise
    every direction's sequence to get the states at its tiles' edges, i.e. evaluate every element's
    step size and decay twice ("SFU 2 passes", the special-function work alone, measured)."""
    from ssm_kernels.triton import ops as tops
    rows = []
    for stage, (Dg, side) in enumerate(STAGES):
        u, low, A, B, C, D, bias, w = stage_inputs(batch, Dg, side, device)
        M, K, rank = batch * side * side, 4, w.shape[2]
        elements = M * K * Dg
        issue_bytes = 2 * (M * Dg + M * K * Dg + 2 * M * K + M * Dg)
        slices_bytes = 2 * (M * Dg + M * K * rank + 2 * M * K + 2 * K * M * Dg + M * Dg)
        BLOCK, iters = 1024, 16
        programs = cdiv(elements, BLOCK * iters)
        out = torch.empty(programs * BLOCK, device=device)
        index = CROSS(side, side, device).index
        bound = issue_bytes / copy_gbs / 1e6
        row = {"shape": f"s{stage + 1} ({side}x{side}, D={Dg})", "elements (M)": elements / 1e6,
               "issue bound": bound, "70% target": bound / 0.7,
               "ours fwd": bench(lambda: tops._scan2d_fwd(u, low, A, B, C, D, bias, index, w, None, None, 1e-5, True,
                                                          False)),
               "slices traffic": slices_bytes / copy_gbs / 1e6}
        for passes in (1, 2):
            row[f"SFU {passes} pass{'es' if passes > 1 else ''}"] = bench(
                lambda: sfu_floor_kernel[(programs,)](out, -0.5, iters, PASSES=passes, BLOCK=BLOCK,
                                                      FAST_MATH=not _INTERPRETED, num_warps=4))
        rows.append(row)
        print(row, flush=True)
    return rows


def table(rows, title):
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print(f"\n{title}\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k, "—")) for k in keys) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) reference backend")
    parser.add_argument("--sweep", nargs="?", const="", default=None, metavar="FILTER",
                        help="sweep launch parameters instead (cases whose name contains FILTER)")
    parser.add_argument("--parts", action="store_true", help="instead, where the fused scan2d's time goes")
    parser.add_argument("--floors", action="store_true",
                        help="instead, what the fused scan2d forward cannot go below (see floor_rows)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    torch.manual_seed(0)
    copy_gbs, tflops = ceilings(device)
    print(f"{torch.cuda.get_device_name()}: copy {copy_gbs:.0f} GB/s (read+write), bf16 matmul {tflops:.0f} TFLOP/s; "
          f"official CUDA scan: {'yes' if official_scan() else 'not available'}")
    if args.sweep is not None:
        sweep(args.batch, device, args.sweep)
        return 0
    if args.parts:
        table(parts_rows(args.batch, device), "scan2d as VMamba calls it (out-norm fused), its parts, ms")
        return 0
    if args.floors:
        table(floor_rows(args.batch, device, copy_gbs), "fused scan2d forward (N=1, K=4, bf16) and its floors, ms")
        return 0
    scans = scan_rows(args.batch, device, not args.no_reference)
    fused = scan2d_rows(args.batch, device, copy_gbs, not args.no_reference)
    norms = merge_norm_rows(args.batch, device, copy_gbs)
    table(scans, "selective_scan (bf16 inputs), ms")
    table(fused, "scan2d with the step-size projection, K=4, N=1 (bf16 inputs, float32 output), ms")
    table(norms, "merge of 4 directions + LayerNorm (fp16 slices), ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

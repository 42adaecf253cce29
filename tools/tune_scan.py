"""Launch-parameter sweep of the scan kernels on a zoo model's own mixers (needs a GPU).

``tools/bench_kernels.py --sweep`` tunes the kernels on synthetic VMamba-T shapes. This tool tunes them
where a model calls them: it records the input of the model's first mixer at each distinct input shape
(one forward at the given batch and size), then times that mixer alone, forward (no grad) and forward +
backward, under fp16 autocast, while it varies the launch parameters of ``ssm_kernels.triton.ops.TUNING``
one group at a time (coordinate descent from the built-in heuristics): the forward's channels per program
x warps, then its pipelining stages, then the same for the backward, then the checkpoint interval.
A mixer's time includes its matmuls and other ops, so the gains are the ones a training step sees.

    python tools/tune_scan.py --model vim_small efficientvmamba_tiny --batch-size 128

Prints, per mixer, every trial (ms) and the best launch parameters against the heuristics' own.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kernels"))

import timm  # noqa: E402

import vmamba_zoo  # noqa: E402,F401  (registers the zoo's models)
from ssm_kernels.triton import ops as tops  # noqa: E402


def mixer_inputs(model: torch.nn.Module, batch: int, size: int, amp: torch.dtype):
    """{name: (mixer, its input)} for the first mixer of each distinct input shape."""
    found, hooks = {}, []
    shapes = set()

    def keep(name, module):
        def hook(_module, args):
            shape = tuple(args[0].shape)
            if shape not in shapes:
                shapes.add(shape)
                found[name] = (module, args[0].detach().clone())
        return hook

    for name, module in model.named_modules():
        if name.endswith("mixer"):
            hooks.append(module.register_forward_pre_hook(keep(name, module)))
    x = torch.randn(batch, 3, size, size, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=amp):
        model(x)
    for h in hooks:
        h.remove()
    return found


def timed(fn, reps: int = 20) -> float:
    """Median milliseconds of ``fn`` (CUDA events), after two warm-up calls (which also compile)."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def measure(mixer, x, amp):
    """(forward ms without grad, forward + backward ms) of one mixer call under autocast."""
    leaf = x.clone().requires_grad_()
    grad = None

    def forward():
        with torch.no_grad(), torch.autocast("cuda", dtype=amp):
            mixer(x)

    def both():
        nonlocal grad
        with torch.autocast("cuda", dtype=amp):
            out = mixer(leaf)
        if grad is None:
            grad = torch.randn_like(out)
        out.backward(grad)
        leaf.grad = None

    return timed(forward), timed(both)


def try_config(mixer, x, amp, config):
    tops.TUNING.clear()
    tops.TUNING.update(config)
    try:
        return measure(mixer, x, amp)
    except Exception as err:  # out of shared memory / registers for this tile
        print(f"    {config}: {type(err).__name__}", flush=True)
        return None
    finally:
        tops.TUNING.clear()


def tune(name, mixer, x, amp, args):
    # the heuristics' own choice, as the starting point (shapes as the mixer's scan sees them)
    N = next((p.shape[-1] for n, p in mixer.named_parameters() if n.endswith("A_log")), 1)
    print(f"{name}: input {tuple(x.shape)}, d_state {N}", flush=True)
    base = measure(mixer, x, amp)
    print(f"  heuristics: fwd {base[0]:.3f} ms, fwd+bwd {base[1]:.3f} ms", flush=True)
    best = {"fwd": {}, "bwd": {}}
    best_t = base
    groups = [(("BD", "warps"), (args.bd, args.warps)), (("stages",), (args.stages,))]
    for pass_ in args.passes:
        score = 0 if pass_ == "fwd" else 1
        for keys, values in groups:
            for combo in itertools.product(*values):
                trial = {"fwd": dict(best["fwd"]), "bwd": dict(best["bwd"])}
                trial[pass_].update(zip(keys, combo))
                t = try_config(mixer, x, amp, trial)
                if t is None:
                    continue
                print(f"    {pass_} {dict(zip(keys, combo))}: fwd {t[0]:.3f} fwd+bwd {t[1]:.3f}", flush=True)
                if t[score] < best_t[score]:
                    best, best_t = trial, t
    for chunks in args.ckpt_chunks:
        trial = dict(best, ckpt_chunks=chunks)
        t = try_config(mixer, x, amp, trial)
        if t is not None:
            print(f"    ckpt_chunks {chunks}: fwd {t[0]:.3f} fwd+bwd {t[1]:.3f}", flush=True)
            if t[1] < best_t[1]:
                best, best_t = trial, t
    print(f"  best {json.dumps(best)}: fwd {best_t[0]:.3f} ms ({base[0] / best_t[0]:.2f}x), fwd+bwd {best_t[1]:.3f} ms "
          f"({base[1] / best_t[1]:.2f}x)", flush=True)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--amp-dtype", default="float16", choices=["float16", "bfloat16"])
    parser.add_argument("--only", default="", help="tune only the mixers whose name contains this")
    parser.add_argument("--bd", type=int, nargs="+", default=[4, 8, 16, 32], help="channels per program")
    parser.add_argument("--warps", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--ckpt-chunks", type=int, nargs="*", default=[1],
                        help="checkpoint intervals (chunks) to try at d_state > 1")
    parser.add_argument("--passes", nargs="+", default=["fwd", "bwd"], choices=["fwd", "bwd"])
    parser.add_argument("--save", metavar="JSON", help="write {model.mixer: best TUNING} to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU: the launch parameters are the Triton kernels' on the card")
    amp = getattr(torch, args.amp_dtype)
    results = {}
    for model_name in args.model:
        model = timm.create_model(model_name).cuda()
        for name, (mixer, x) in mixer_inputs(model, args.batch_size, args.img_size, amp).items():
            if args.only in name:
                results[f"{model_name}.{name}"] = tune(f"{model_name}.{name}", mixer, x, amp, args)
        del model
        torch.cuda.empty_cache()
    if args.save:
        with open(args.save, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

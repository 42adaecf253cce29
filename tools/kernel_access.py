#!/usr/bin/env python
"""Which arguments ``torch.compile`` takes each ``ssm_kernels`` Triton kernel to write.

Under ``torch.compile`` our ops are ``triton_op``s: inductor launches their kernels itself and reads which tensor
arguments a kernel writes from its Triton IR, before the IR's helper calls are inlined, counting every argument of a
helper call as feeding every result of it. An input it takes for written is cloned before each launch and copied
back after, parameters included: at batch 1 this was 56 of vmamba_tiny's 255 kernels a forward under CUDA graphs
(``kernels/NOTES.md``). The kernels are written so that this reading is exact (a helper that takes a pointer returns
loaded values, never an index or offset a store uses); this tool checks it.

It runs tiny models of every family forward and backward (training) and forward (inference) on the CPU through the
Triton backend with every launch recorded and skipped, then asks PyTorch's own analysis about each distinct launch
(kernel and constexpr flags). No GPU needed: the IR is generated for an sm_90 target. Prints one line a launch, or
JSON with ``--json``; ``tests/test_kernel_access.py`` compares it with each kernel's outputs.

    python tools/kernel_access.py                         # every family
    python tools/kernel_access.py --model vmamba_tiny --json
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys

if os.environ.get("TRITON_INTERPRET") == "1":  # the kernels must be Triton's JIT functions, not the interpreter's
    sys.exit("kernel_access.py reads the kernels' Triton IR: run it without TRITON_INTERPRET=1")

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ssm_kernels.triton as triton_backend  # noqa: E402
from ssm_kernels.triton import launch, ops  # noqa: E402

for _module in pkgutil.iter_modules(triton_backend.__path__):  # every kernel defined now, as JIT functions
    importlib.import_module(f"ssm_kernels.triton.{_module.name}")

FAMILY_MODELS = ["vmamba_tiny", "msvmamba_tiny", "efficientvmamba_tiny", "spatialmamba_tiny", "groupmamba_tiny",
                 "vssd_tiny", "vim_tiny"]


def record_launches(models, img_size: int = 64) -> dict:
    """{(kernel name, constexpr flags): (kernel, arguments, meta)}: the first launch of each, from tiny CPU models."""
    import timm
    import vmamba_zoo  # noqa: F401  (registers the models)
    from vmamba_zoo.models import tiny_kwargs

    calls = {}

    def record(self, grid, args, meta):
        flags = tuple(sorted((k, v) for k, v in meta.items() if isinstance(v, bool)))
        calls.setdefault((self.kernel.__name__, flags), (self.kernel, args, dict(meta)))

    saved = launch.Launcher._launch, os.environ.get("TRITON_INTERPRET"), os.environ.get("SSM_KERNELS_BACKEND")
    launch.Launcher._launch = record
    os.environ["TRITON_INTERPRET"] = "1"      # read per call by the backend choice: lets Triton take CPU tensors
    os.environ["SSM_KERNELS_BACKEND"] = "triton"
    ops.TUNING["segments"] = 2                # the segmented forward's two passes too
    try:
        torch.manual_seed(0)
        for name in models:
            model = timm.create_model(name, **tiny_kwargs(name))
            x = torch.randn(2, 3, img_size, img_size)
            model(x).float().sum().backward()
            with torch.no_grad():
                model.eval()(x)
        _paths_the_models_miss()
    finally:
        launch.Launcher._launch = saved[0]
        ops.TUNING.pop("segments", None)
        for key, value in zip(("TRITON_INTERPRET", "SSM_KERNELS_BACKEND"), saved[1:]):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return calls


def _paths_the_models_miss():
    """Launches the tiny models do not make: a scan with a gate and its last state (Mamba's), the observation over
    more channels than one block (> 256), the state fusion and observation in one op."""
    import ssm_kernels

    batch, D, N, L = 2, 8, 4, 40
    leaf = lambda *shape: torch.randn(*shape).requires_grad_()  # noqa: E731
    out, last = ssm_kernels.selective_scan(leaf(batch, D, L), leaf(batch, D, L), -torch.rand(D, N), leaf(batch, N, L),
                                           leaf(batch, N, L), leaf(D), leaf(batch, D, L), leaf(D),
                                           delta_softplus=True, return_last_state=True)
    (out.sum() + last.sum()).backward()
    E, L = 320, 12
    ssm_kernels.observe_norm_gate(leaf(batch, E, L), leaf(batch, 1, L), leaf(batch, E, L), leaf(E), leaf(E), leaf(E),
                                  leaf(batch, L, E)).sum().backward()
    E, H, W = 8, 5, 6
    ssm_kernels.state_fusion_observe(leaf(batch, E, H, W), leaf(3, E, 3, 3), leaf(3), leaf(batch, 1, H * W),
                                     leaf(batch, E, H * W), leaf(E)).sum().backward()


def written_arguments(kernel, args, meta) -> list:
    """The tensor arguments that PyTorch's analysis of the kernel's Triton IR finds written."""
    from torch._higher_order_ops import triton_kernel_wrap as wrap

    kwargs = dict(zip(kernel.arg_names, args))
    kwargs.update({k: v for k, v in meta.items() if k in kernel.arg_names})
    if hasattr(wrap, "identify_accessed_tensors"):  # torch >= 2.12
        return [dep.name for dep in wrap.identify_accessed_tensors(kernel, kwargs, {}).read_writes.writes]
    return list(wrap.identify_mutated_tensors(kernel, kwargs, {}))


def _sm90_target():
    """Triton IR for an sm_90 GPU without one: the analysis asks the active driver for its target."""
    if torch.cuda.is_available():
        return
    from triton.backends.compiler import GPUTarget

    class _Target:
        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

    triton.runtime.driver.set_active(_Target())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=FAMILY_MODELS, metavar="NAME",
                        help="zoo models, built tiny (default: one of every family)")
    parser.add_argument("--json", action="store_true", help="print [{kernel, flags, writes}] as JSON")
    args = parser.parse_args(argv)
    calls = record_launches(args.model)
    _sm90_target()
    rows = []
    for (name, flags), (kernel, kernel_args, meta) in sorted(calls.items()):
        rows.append(dict(kernel=name, flags=dict(flags), writes=written_arguments(kernel, kernel_args, meta)))
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            flags = " ".join(k for k, v in row["flags"].items() if v)
            print(f"{row['kernel']:32s} writes {', '.join(row['writes'])}   [{flags}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

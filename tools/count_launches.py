#!/usr/bin/env python
"""Kernel launches and autograd nodes of a model's inference forward and training step (eager).

    python tools/count_launches.py --model vmamba_tiny swin_tiny_patch4_window7_224 --batch-size 2 --amp
    python tools/count_launches.py --model msvmamba_tiny --device cpu --backend triton --img-size 64 -b 1 --top 20

Each model is measured whole (``forward``: a no-grad forward in eval mode; ``train step``: a forward in
train mode, cross entropy on random labels and backward, no optimizer step) and, with ``--module``
(default ``stages.0.blocks.0.mixer`` where the model has one), that submodule alone on the input it gets
inside the model (its training step: forward and backward from a fixed output gradient). One untimed
step runs first (compilation, lazy initialisation).

Two counts:

- ``device kernels`` (CUDA only): the kernels the GPU ran, from ``torch.profiler`` (Triton's included;
  memcpy / memset apart).
- ``dispatched``: every aten op that reaches a backend (views, ``empty`` allocations and other metadata-only
  ops left out), plus every launch of an ``ssm_kernels`` Triton kernel. On CPU this is the only count,
  a proxy for what the GPU would launch: a CPU op is one op where CUDA may run two kernels (a cuBLAS
  matmul with its split-K reduction) or none (a copy elided), but every op here costs the host one
  dispatch either way, which is what bounds an eager small model. On CPU ``--backend triton`` runs
  the scan kernels under Triton's interpreter (``TRITON_INTERPRET=1``, slow: keep the input tiny).

``autograd nodes``: the nodes of the training step's graph (parameters' AccumulateGrad left out),
each a few microseconds of the autograd engine's host time in backward.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sys
from typing import Dict, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import ParseKwargs  # noqa: E402

#: aten ops that launch nothing: allocation and metadata (the views are found by their schemas)
_NO_KERNEL = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "_unsafe_view",
              "_reshape_alias", "lift_fresh", "resize_", "set_", "is_same_size", "sym_size", "sym_stride",
              "sym_numel", "sym_storage_offset", "_has_compatible_shallow_copy_type", "record_stream"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["vmamba_tiny"], metavar="NAME",
                        help="zoo or timm model names (default: vmamba_tiny)")
    parser.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs, metavar="KEY=VALUE",
                        help="passed to timm.create_model, values as Python literals")
    parser.add_argument("--batch-size", "-b", type=int, default=2)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", choices=["reference", "triton"], default=None,
                        help="the scan backend (default: ssm_kernels' choice: Triton on CUDA, the reference on "
                             "CPU); triton on CPU sets TRITON_INTERPRET=1")
    parser.add_argument("--amp", action="store_true", help="autocast in --amp-dtype (else float32)")
    parser.add_argument("--amp-dtype", choices=["float16", "bfloat16"], default="float16")
    parser.add_argument("--module", default="auto", metavar="PATH",
                        help="also count this submodule alone ('auto': stages.0.blocks.0.mixer if present; 'none')")
    parser.add_argument("--count", choices=["model", "module", "both"], default="both",
                        help="what to count (module: the --module alone, after one model forward to find its input)")
    parser.add_argument("--top", type=int, default=0, metavar="N",
                        help="also list the N most frequent dispatched ops of each count")
    return parser.parse_args(argv)


def _launches_kernel(func) -> bool:
    """Whether an aten op reaching the dispatcher's backend runs a kernel (not a view or an allocation)."""
    name = func.overloadpacket.__name__
    if name == "_local_scalar_dense":  # .item(): a copy to the host
        return True
    if name in _NO_KERNEL or not any("Tensor" in str(r.type) for r in func._schema.returns):
        return False
    return not any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)


class DispatchCounter(TorchDispatchMode):
    """Counts the aten ops that run a kernel and the ssm_kernels Triton launches while active."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()
        self._paused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self._paused and _launches_kernel(func):
            self.ops["aten." + func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def triton_launch(self, name: str):
        """One Triton launch; the tensor ops Triton's interpreter runs to emulate it are not counted."""
        self.ops["triton." + name] += 1
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def total(self) -> int:
        return sum(self.ops.values())


_ACTIVE: Optional[DispatchCounter] = None


def _hook_triton_launches():
    """Count every launch of an ssm_kernels Triton kernel (they all go through ``Launcher``)."""
    try:
        from ssm_kernels.triton.launch import Launcher
    except ImportError:  # no triton: nothing to count
        return
    launch = Launcher._launch
    if getattr(launch, "counted", False):  # hooked already
        return

    def counted(self, grid, args, meta):
        if _ACTIVE is None:
            return launch(self, grid, args, meta)
        with _ACTIVE.triton_launch(getattr(self.kernel, "__name__", None) or self.kernel.fn.__name__):
            return launch(self, grid, args, meta)

    counted.counted = True
    Launcher._launch = counted


def autograd_nodes(root) -> int:
    """The nodes of the graph behind ``root`` (a grad_fn), AccumulateGrad left out."""
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack += [n for n, _ in node.next_functions]
    return sum(type(n).__name__ != "AccumulateGrad" for n in seen)


def count(fn, device: torch.device) -> Dict[str, object]:
    """Run ``fn`` under the counters: {'dispatched': Counter, 'kernels': int or None, 'copies': ...}. On CUDA the
    device kernels are counted in a run of ``fn`` of their own, outside the dispatch counter: a dispatch mode
    changes what runs (``autocast_weights`` keeps no casts under one), so they are a plain eager call's. The
    dispatched ops include those casts."""
    global _ACTIVE
    kernels = copies = None
    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile
        torch.cuda.synchronize(device)
        with profile(activities=[ProfilerActivity.CUDA]) as profiler:
            fn()
            torch.cuda.synchronize(device)
        device_events = [e for e in profiler.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        copies = sum(e.name.lower().startswith(("memcpy", "memset")) for e in device_events)
        kernels = len(device_events) - copies
    counter = DispatchCounter()
    _ACTIVE = counter
    try:
        with counter:
            result = fn()
    finally:
        _ACTIVE = None
    return dict(dispatched=counter.ops, kernels=kernels, copies=copies, result=result)


def measure(name: str, what: str, forward, train_step, device, top: int):
    """Count an inference forward and a training step; print one line each (and the top ops)."""
    train_step()  # warm-up: compilation, lazy initialisation
    with torch.no_grad():
        forward()  # after the training step, which drops the weights' kept casts: the counted forward is a steady one
        inference = count(lambda: forward(), device)
    train = count(train_step, device)
    nodes = train["result"]

    def fmt(c):
        text = f"{sum(c['dispatched'].values()):5d} dispatched"
        triton = sum(v for k, v in c["dispatched"].items() if k.startswith("triton."))
        text += f" ({triton} Triton)"
        if c["kernels"] is not None:
            text += f", {c['kernels']:5d} device kernels (+{c['copies']} memcpy/memset)"
        return text

    print(f"{name} {what}: forward {fmt(inference)} | train step {fmt(train)}, {nodes} autograd nodes")
    for label, c in (("forward", inference), ("train step", train)):
        if top:
            ops = ", ".join(f"{k} {v}" for k, v in c["dispatched"].most_common(top))
            print(f"    {label}: {ops}")
    return inference, train


def _submodule(model, path: str):
    if path == "none":
        return None, None
    if path == "auto":
        path = "stages.0.blocks.0.mixer"
        try:
            return path, model.get_submodule(path)
        except AttributeError:
            return None, None
    return path, model.get_submodule(path)


def run_model(name: str, args):
    import timm
    device = torch.device(args.device)
    kwargs = args.model_kwargs
    try:
        model = timm.create_model(name, img_size=args.img_size, **kwargs)  # models with a fixed size (Swin)
    except TypeError:
        model = timm.create_model(name, **kwargs)
    model = model.to(device)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    target = torch.randint(0, getattr(model, "num_classes", 1000) or 1, (args.batch_size,), device=device)
    amp = (lambda: torch.autocast(device.type, dtype=getattr(torch, args.amp_dtype))) if args.amp else \
        contextlib.nullcontext

    def forward():
        model.eval()
        with amp():
            return model(x)

    def train_step():
        model.train()
        with amp():
            out = model(x)
            out = out[0] if isinstance(out, (tuple, list)) else out
            loss = torch.nn.functional.cross_entropy(out, target)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return autograd_nodes(loss.grad_fn)

    if args.count != "module":
        measure(name, "model", forward, train_step, device, args.top)

    path, module = _submodule(model, args.module)
    if module is None or args.count == "model":
        return
    captured = []
    handle = module.register_forward_pre_hook(lambda m, inputs: captured.append(inputs[0].detach()))
    with torch.no_grad():
        forward()
    handle.remove()
    u = captured[0]
    with torch.no_grad(), amp():
        grad = torch.randn_like(module(u))

    def module_forward():
        module.eval()
        with amp():
            return module(u)

    def module_train_step():
        module.train()
        inp = u.detach().requires_grad_()  # a fresh leaf (a view: no copy counted)
        with amp():
            y = module(inp)
        y.backward(grad)
        module.zero_grad(set_to_none=True)
        return autograd_nodes(y.grad_fn)

    measure(name, path, module_forward, module_train_step, device, args.top)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.backend:
        os.environ["SSM_KERNELS_BACKEND"] = args.backend
        if args.backend == "triton" and args.device == "cpu":
            os.environ["TRITON_INTERPRET"] = "1"  # read when ssm_kernels is imported: import it after this
    import vmamba_zoo  # noqa: F401  (registers the zoo's models with timm)
    _hook_triton_launches()
    torch.manual_seed(0)
    for name in args.model:
        run_model(name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

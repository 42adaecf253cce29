"""What a training forward keeps for the backward: every tensor autograd saves, per module (e.g. per block).

A training step's memory is the parameters, optimizer state and what the forward saves for the backward
(plus the backward's transient gradients). This tool counts the saved part: one training forward of a zoo
model under ``torch.autograd.graph.saved_tensors_hooks``, each saved tensor attributed to the innermost
module running when it was saved and to the graph nodes that hold it (``grad_fn`` names: the op that
saved it). Storages are counted once however many ops and views save them, and whole (a saved view keeps
its whole storage alive); parameters are not counted (autocast's low-precision copies of them are, as
"weight casts").

By default the model runs on fake CUDA tensors (as ``tools/peak_memory.py``: shapes, dtypes and strides,
nothing computed), so CUDA autocast and the Triton backend's autograd functions decide what is saved as on
the GPU, at the real batch size, without a GPU. ``--device cpu`` runs it for real at a small batch, with what
CPU tensors get: the reference backend (the Triton one under the interpreter with SSM_KERNELS_BACKEND=triton
TRITON_INTERPRET=1) and PyTorch's CPU kernels (its RMSNorm, for one, is decomposed there and saves more).

    python tools/saved_tensors.py --model vim_tiny --batch-size 128 --amp-dtype float16 --module blocks.3
"""
from __future__ import annotations

import argparse
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

MiB = 2 ** 20


def _key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


@dataclass
class Saved:
    """One storage kept for the backward: its bytes, the first saved view's dtype and shape, the module that
    saved it first, and the graph nodes holding it."""
    nbytes: int
    dtype: torch.dtype
    shape: Tuple[int, ...]
    module: str
    ops: List[str] = field(default_factory=list)


class SavedTensors:
    """Context manager: records every storage saved for the backward during a forward of ``model``.

    After the forward, :meth:`attribute` walks the graph from the outputs to name the ops that saved each.
    """

    def __init__(self, model: torch.nn.Module):
        self.names = {m: name for name, m in model.named_modules()}
        self.params = {_key(p) for p in model.parameters()} | {_key(b) for b in model.buffers()}
        self.param_ids = {id(p) for p in model.parameters()}
        self.stack: List[str] = []
        self.saved: Dict[int, Saved] = {}
        self._keep = []  # the saved tensors themselves: their storages stay alive, so keys stay unique

    def __enter__(self):
        self._hooks = [register_module_forward_pre_hook(self._enter_module),
                       register_module_forward_hook(self._leave_module)]
        self._saving = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._saving.__enter__()
        return self

    def __exit__(self, *exc):
        self._saving.__exit__(*exc)
        for hook in self._hooks:
            hook.remove()

    def _enter_module(self, module, args):
        self.stack.append(self.names.get(module, ""))

    def _leave_module(self, module, args, output):
        self.stack.pop()

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _key(t)
        if key not in self.params and key not in self.saved:
            where = next((n for n in reversed(self.stack) if n), "")
            self.saved[key] = Saved(t.untyped_storage().nbytes(), t.dtype, tuple(t.shape), where)
            self._keep.append(t)
        return t

    def attribute(self, *outputs: torch.Tensor) -> None:
        """Name the graph nodes that hold each saved storage (walks the graph from ``outputs``)."""
        seen, todo = set(), [o.grad_fn for o in outputs if o.grad_fn is not None]
        while todo:
            node = todo.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            todo.extend(n for n, _ in node.next_functions)
            for t in _node_saved(node):
                entry = self.saved.get(_key(t))
                if entry is not None and node.name() not in entry.ops:
                    entry.ops.append(node.name())

    def by_module(self, depth: Optional[int] = None) -> Dict[str, int]:
        """Saved bytes per module name (cut to ``depth`` dotted parts, e.g. 2 for ``blocks.3``)."""
        totals = defaultdict(int)
        for entry in self.saved.values():
            name = entry.module if depth is None else ".".join(entry.module.split(".")[:depth])
            totals[name] += entry.nbytes
        return dict(totals)


def _node_saved(node) -> List[torch.Tensor]:
    """The tensors a graph node holds for its backward (a custom Function's saved_tensors, or a built-in
    node's ``_saved_*`` attributes)."""
    if hasattr(node, "saved_tensors"):  # a custom autograd.Function's node
        try:
            return [t for t in node.saved_tensors if isinstance(t, torch.Tensor)]
        except RuntimeError:  # already freed
            return []
    tensors = []
    for attr in dir(node):
        if attr.startswith("_saved_"):
            value = getattr(node, attr)
            for v in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(v, torch.Tensor):
                    tensors.append(v)
    return tensors


def count_saved(model: torch.nn.Module, x: torch.Tensor, amp_dtype: Optional[torch.dtype] = None,
                loss: bool = True) -> SavedTensors:
    """Run one training forward of ``model`` on ``x`` (with cross-entropy on its logits if ``loss``), under
    ``amp_dtype`` autocast on x's device type, and return the :class:`SavedTensors` record."""
    model.train()
    recorder = SavedTensors(model)
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None), recorder:
        out = model(x)
        if loss:
            target = torch.zeros(out.shape[0], dtype=torch.long, device=out.device)
            out = torch.nn.functional.cross_entropy(out, target)
    recorder.attribute(out)
    return recorder


def measure(model_name: str, batch: int, size: int, amp_dtype, device: str = "fake-cuda", sms: int = 132,
            **kwargs) -> SavedTensors:
    """:func:`count_saved` for a zoo model at ``batch`` x ``size``², on fake CUDA tensors (default) or real
    tensors of ``device``."""
    import timm
    import vmamba_zoo  # noqa: F401  (registers the models with timm)
    model = timm.create_model(model_name, **kwargs)
    if device != "fake-cuda":
        model = model.to(device)
        return count_saved(model, torch.randn(batch, 3, size, size, device=device), amp_dtype)
    from peak_memory import on_fake_cuda
    with on_fake_cuda(model, sms) as model:
        return count_saved(model, torch.randn(batch, 3, size, size, device="cuda"), amp_dtype)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a zoo (or timm) model name")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--amp-dtype", default="float16", help="autocast dtype, or 'none' (float32)")
    parser.add_argument("--device", default="fake-cuda", help="'fake-cuda' (default: no GPU needed) or a real device")
    parser.add_argument("--depth", type=int, default=2,
                        help="sum per module name cut to this many dotted parts (2: blocks.0, blocks.1, ...)")
    parser.add_argument("--module", default=None,
                        help="list every saved tensor of the modules whose name starts with this (e.g. blocks.3)")
    args = parser.parse_args(argv)
    amp = None if args.amp_dtype == "none" else getattr(torch, args.amp_dtype)
    rec = measure(args.model, args.batch_size, args.img_size, amp, args.device)
    total = sum(e.nbytes for e in rec.saved.values())
    print(f"{args.model}, training forward + loss, batch {args.batch_size}, {args.img_size}x{args.img_size}, "
          f"{args.amp_dtype} autocast, {args.device}: saved for the backward {total / MiB:.1f} MiB "
          f"({total / 2 ** 30:.3f} GiB) in {len(rec.saved)} storages")
    per_module = rec.by_module(args.depth)
    for name, nbytes in sorted(per_module.items(), key=lambda kv: _natural(kv[0])):
        print(f"  {nbytes / MiB:9.2f} MiB  {name or '(model)'}")
    if args.module is not None:
        rows = [e for e in rec.saved.values() if e.module.startswith(args.module)]
        print(f"saved in {args.module}* ({sum(e.nbytes for e in rows) / MiB:.2f} MiB):")
        for e in sorted(rows, key=lambda e: -e.nbytes):
            print(f"  {e.nbytes / MiB:9.2f} MiB  {_dtype_name(e.dtype):9s} {str(e.shape):24s} "
                  f"{e.module:28s} {', '.join(e.ops)}")
    return 0


def _natural(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


if __name__ == "__main__":
    raise SystemExit(main())

"""What lets the zoo's models trace with torch.fx and tells TorchScript users what to use instead.

- torch.fx: every public op of :mod:`ssm_kernels` (its ``PUBLIC_OPS``, filled by the ``@public_op``
  decorator) is registered with timm as a function not to trace into, so an op call is one leaf node
  of the graph that timm's FX feature extraction (``features_only=True, feature_cls='fx'``) and
  torchvision's ``create_feature_extractor`` build. This runs when the package is imported; an op added
  to ``ssm_kernels`` with ``@public_op`` is picked up with no change here.
- TorchScript: :class:`NotScriptable` makes ``torch.jit.script(model)`` fail at once, naming the
  reason and the alternatives.
"""
from __future__ import annotations

from ssm_kernels import PUBLIC_OPS
from timm.layers import register_notrace_function

__all__ = ["register_fx_leaves", "NotScriptable"]


def register_fx_leaves() -> None:
    """Register every public op of ``ssm_kernels`` with timm as an FX leaf (idempotent)."""
    for op in PUBLIC_OPS:
        register_notrace_function(op)


register_fx_leaves()


class NotScriptable:
    """Mixin for a model whose forward calls the scan ops: ``torch.jit.script`` stops with a clear error.

    The ops are Python functions that pick a backend at run time and run it through a
    ``torch.autograd.Function`` (Triton kernels on GPU, plain PyTorch elsewhere); TorchScript can compile
    neither, and a scripted model that called them as ignored Python functions could not be saved,
    which is what scripting is for. ``torch.jit.trace``, ``torch.compile``, ``torch.export`` and ONNX
    export all work.
    """

    def __prepare_scriptable__(self):  # torch.jit.script calls this before compiling anything
        raise RuntimeError(
            f"{type(self).__name__} does not support torch.jit.script: its scan ops (ssm_kernels) dispatch at run "
            f"time to Triton kernels or plain PyTorch through torch.autograd.Function, which TorchScript cannot "
            f"compile. Use torch.jit.trace(model, example_input), torch.compile(model), torch.export, or ONNX "
            f"export (tools/export_onnx.py) instead.")

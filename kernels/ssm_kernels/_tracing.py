"""A context in which ``torch.jit.trace`` records nothing (for work whose result the trace keeps as one node or as
a constant)."""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def tracing_paused():
    """Pause ``torch.jit.trace``'s recording (fvcore's FLOP count traces with it) inside the block."""
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)

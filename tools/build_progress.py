#!/usr/bin/env python
"""One progress line of a compile log (ninja's ``[N/M]`` steps), for tools/build_mmcv.sh.

    python tools/build_progress.py LOG ELAPSED_SECONDS
    -> mmcv build: 23/77 objects compiled, 6 min 05 s elapsed (log: LOG)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

_STEP = re.compile(rb"\[(\d+)/(\d+)\]")


def compiled(log: Path):
    """(objects done, total) from the last ninja ``[N/M]`` step in ``log``; None before compiling starts."""
    try:
        text = log.read_bytes()
    except FileNotFoundError:
        return None
    steps = _STEP.findall(text)
    return (int(steps[-1][0]), int(steps[-1][1])) if steps else None


def progress_line(log, elapsed: int) -> str:
    """What build_mmcv.sh prints every half minute while it compiles."""
    found = compiled(Path(log))
    done = "preparing the build" if found is None else f"{found[0]}/{found[1]} objects compiled"
    return f"mmcv build: {done}, {elapsed // 60} min {elapsed % 60:02d} s elapsed (log: {log})"


if __name__ == "__main__":
    print(progress_line(sys.argv[1], int(float(sys.argv[2]))), flush=True)

"""The command-line tools, run in-process at small sizes."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
import bench_reference  # noqa: E402
import flops  # noqa: E402
import zoo_table  # noqa: E402


def test_flops_tool(capsys):
    assert flops.main(["--model", "vmamba_tiny", "--img-size", "64", "96", "--by-operator"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"vmamba_tiny @ 64x96: params 30\.25 M, GFLOPs \d+\.\d+", out)
    assert "PythonOp.SelectiveScanFn" in out
    assert flops.main(["--model", "nope"]) == 2


def test_zoo_table_tool(capsys):
    assert zoo_table.main(["--models", "vmamba_tiny", "--img-size", "64", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| model | params (M)")
    assert re.search(r"\| vmamba_tiny \| 30\.25 \| 30 \| \d+\.\d+ \| — \| \d+\.\d \| 82\.6 \|", out)
    assert zoo_table.main(["--models", "nothing*"]) == 2


def test_bench_reference_tool(capsys, monkeypatch):
    monkeypatch.setattr(bench_reference, "SHAPES", [("tiny", 8, 300, 1, 4), ("tiny N=4", 4, 20, 4, 1)])
    assert bench_reference.main(["--batch-size", "2", "--repeats", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 6 and all(row.count("|") == 7 for row in rows)


def test_kernel_sass_tool():
    """Compiles a real scan kernel for sm_90 (no GPU needed), outside the tests' interpreter mode."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    tool = Path(__file__).parents[1] / "tools" / "kernel_sass.py"
    out = subprocess.run([sys.executable, str(tool), "--pass", "fwd", "--stage", "4", "--BL", "16"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "VMamba-T stage 4 (Dg=768, L=49, R=48), BD=16 BL=16" in out
    assert re.search(r"chunk loop: \d+ instructions, \d+\.\d per element and thread", out)


def test_bench_kernels_parts(monkeypatch):
    """The --parts breakdown's pieces run (tiny stages; the interpreter, so each piece once, untimed)."""
    import bench_kernels
    monkeypatch.setattr(bench_kernels, "STAGES", [(20, 5), (70, 3)])
    monkeypatch.setattr(bench_kernels, "bench", lambda fn: (fn(), 1.0)[1])
    rows = bench_kernels.parts_rows(2, "cuda" if torch.cuda.is_available() else "cpu")
    assert [r["shape"] for r in rows] == ["s1 (5x5, D=20)", "s2 (3x3, D=70)"]
    assert all(len(r) == 8 for r in rows)


def test_bench_kernels_floors(monkeypatch):
    """The --floors table's pieces run, the special-function kernel included (tiny stages, interpreter)."""
    import bench_kernels
    monkeypatch.setattr(bench_kernels, "STAGES", [(20, 5)])
    monkeypatch.setattr(bench_kernels, "bench", lambda fn: (fn(), 1.0)[1])
    rows = bench_kernels.floor_rows(2, "cuda" if torch.cuda.is_available() else "cpu", copy_gbs=3000.0)
    assert rows[0]["shape"] == "s1 (5x5, D=20)" and rows[0]["elements (M)"] == 2 * 25 * 4 * 20 / 1e6
    assert rows[0]["70% target"] > rows[0]["issue bound"] and "SFU 2 passes" in rows[0]

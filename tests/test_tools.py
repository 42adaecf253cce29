"""The command-line tools, run in-process at small sizes."""
import re
import sys
from pathlib import Path

import pytest

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

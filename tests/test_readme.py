"""The README opens with the same two set-up commands that CI runs, and every Python block in it runs."""
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
#: a Python block preceded by this comment is not run (it needs a GPU or a download); use sparingly
SKIP = "<!-- readme-test: skip -->"
_PYTHON_BLOCK = re.compile(r"(<!-- readme-test: skip -->\s*)?```python\n(.*?)```", re.S)


def python_blocks():
    """(line number, code, skipped) of every ```python block of the README."""
    return [(README[:m.start()].count("\n") + 1, m[2], bool(m[1])) for m in _PYTHON_BLOCK.finditer(README)]


def test_readme_setup_commands_are_what_ci_runs():
    first_block = README.split("```")[1].strip().splitlines()
    commands = [line for line in first_block if line and not line.startswith("#")]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert len(commands) == 2, f"the README's first code block must hold two commands, has {commands}"
    for command in commands:
        assert command in ci, f"README command {command!r} is not what .ci/run runs"


def test_readme_has_python_blocks():
    assert len(python_blocks()) >= 4


@pytest.mark.parametrize("line, code, skipped", python_blocks(), ids=[f"line{b[0]}" for b in python_blocks()])
def test_readme_python_block_runs(line, code, skipped, tmp_path, monkeypatch):
    """Each block runs on its own, as written, in a fresh namespace (CPU: the reference scan backend)."""
    if skipped:
        pytest.skip(f"README.md:{line} is marked {SKIP}")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__main__"})


def test_readme_speaks_to_users():
    """Short (the generated tables aside, which grow with the zoo) and without work history."""
    written = re.sub(r"<!-- ([\w-]+): begin.*?<!-- \1: end -->", "", README, flags=re.S)
    assert len(written.splitlines()) <= 250
    for path in [ROOT / "README.md", ROOT / "kernels" / "NOTES.md"]:
        assert "session" not in path.read_text().lower(), f"{path} speaks of sessions"


def _expand(pattern: str):
    """`vim_{tiny,small}_stride8` -> vim_tiny_stride8, vim_small_stride8."""
    m = re.search(r"\{([^}]*)\}", pattern)
    if not m:
        return [pattern]
    return [name for part in m[1].split(",") for name in _expand(pattern[:m.start()] + part + pattern[m.end():])]


def test_families_table_names_every_model_in_its_row():
    """The families table: one row a family, its model column naming exactly the registered models."""
    import vmamba_zoo
    from vmamba_zoo.models import FAMILIES

    section = README.split("## The families")[1].split("\n## ")[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ") and "`" in line]
    named = [name for row in rows for name in _expand_all(row[1])]
    assert sorted(named) == sorted(vmamba_zoo.list_models())
    assert len(rows) == len(FAMILIES)


def _expand_all(cell: str):
    return [name for pattern in re.findall(r"`([^`]+)`", cell) for name in _expand(pattern)]

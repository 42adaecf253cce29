"""The README opens with the same two set-up commands that CI runs."""
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_readme_setup_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1].strip().splitlines()
    commands = [line for line in first_block if line and not line.startswith("#")]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert len(commands) == 2, f"the README's first code block must hold two commands, has {commands}"
    for command in commands:
        assert command in ci, f"README command {command!r} is not what .ci/run runs"

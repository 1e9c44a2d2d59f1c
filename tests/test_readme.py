"""The README is the front door: its Python examples run as written, and CI runs its own commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def marked_blocks(name: str) -> list[str]:
    text = README.read_text()
    return re.findall(rf"<!-- ci:{name} -->\s*```\w*\n(.*?)```", text, flags=re.S)


def test_readme_has_setup_and_test_commands():
    (setup,) = marked_blocks("setup")
    (test,) = marked_blocks("test")
    assert "pip install" in setup and "samflow demo" in setup
    assert "pytest" in test


@pytest.mark.parametrize("index", range(len(marked_blocks("example"))))
def test_readme_python_example_runs(index, capsys):
    code = marked_blocks("example")[index]
    exec(compile(code, f"README.md example {index}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip()  # each example prints its result

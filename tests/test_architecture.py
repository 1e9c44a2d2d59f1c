"""The architecture's contracts (docs/ARCHITECTURE.md), checked as tests so the README's one test command runs them.

- the layer contracts in pyproject.toml ([tool.importlinter]) hold: `lint-imports`;
- `nodes/` (installed as samflow.nodes from outside samflow/, so import-linter cannot see it) imports the engine and
  the library, never a command, the CLI, the service or the batch engines;
- layers can be used alone: importing the models loads no engine, node, command, service or scale module, and
  `import samflow` loads nothing heavy; every public name of `samflow` still resolves;
- the tree is the architecture: at most 10 modules directly in samflow/, every package named in the design;
- ruff is clean.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# What a node may import from samflow (prefixes); everything else is refused.
NODE_ALLOWED = ("samflow.engine", "samflow.predict", "samflow.models", "samflow.ops", "samflow.data",
                "samflow.errors", "samflow.devices", "samflow.fileio", "samflow.pool", "samflow.nodes")


def _tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed: it is part of the test extra (pip install -e '.[test]')"
    return found


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_layer_contracts_hold() -> None:
    result = _run(_tool("lint-imports"))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_ruff_is_clean() -> None:
    result = _run(_tool("ruff"), "check", ".")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def _samflow_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every samflow import in a file, at any depth (function-level ones too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "samflow":  # `from samflow import X` reaches X's layer through the facade
                found += [(node.lineno, f"samflow.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name == "samflow" or name.startswith("samflow.")]


def test_nodes_import_no_command_cli_service_or_scale_module() -> None:
    offending = [f"nodes/{path.name}:{line}: {name}"
                 for path in sorted((ROOT / "nodes").glob("*.py"))
                 for line, name in _samflow_imports(path)
                 if not name.startswith(NODE_ALLOWED)]
    assert not offending, "nodes are thin adapters over the engine and the library:\n" + "\n".join(offending)


def test_the_node_import_check_sees_function_level_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\ndef f():\n    from samflow.commands.run import run\n    from samflow import scale\n")
    assert _samflow_imports(sample) == [(4, "samflow.commands.run"), (5, "samflow"), (5, "samflow.scale")]


def _loaded_after(statement: str) -> tuple[list[str], list[str]]:
    code = (f"import sys, json; {statement}; "
            "print(json.dumps([sorted(m for m in sys.modules if m.startswith('samflow')), "
            "sorted(m for m in ('torch', 'numpy', 'fastapi', 'ray', 'open_clip', 'av', 'networkx') "
            "if m in sys.modules)]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    ours, heavy = json.loads(result.stdout.strip().splitlines()[-1])
    return ours, heavy


def test_models_load_without_the_engine_or_anything_above() -> None:
    ours, _ = _loaded_after("import samflow.models.sam")
    above = ("samflow.engine", "samflow.nodes", "samflow.commands", "samflow.serve", "samflow.scale",
             "samflow.predict", "samflow.train", "samflow.data", "samflow.cli")
    base = ("samflow.models", "samflow.errors", "samflow.devices", "samflow.fileio", "samflow.pool", "samflow.yamlio")
    assert ours and all(m == "samflow" or m.startswith(base) for m in ours), ours
    assert not [m for m in ours if m.startswith(above)]


def test_import_samflow_is_cheap_and_public_names_resolve() -> None:
    ours, heavy = _loaded_after("import samflow")
    assert ours == ["samflow"] and heavy == []
    ours, heavy = _loaded_after("import samflow; samflow.Graph")
    assert "torch" not in heavy and not any(m.startswith(("samflow.models", "samflow.predict")) for m in ours)

    import samflow

    for name in samflow.__all__:
        assert getattr(samflow, name) is not None, name
    assert callable(samflow.train) and samflow.train.TrainConfig is samflow.TrainConfig
    assert samflow.distributed.run.__module__.startswith("samflow.scale")
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        samflow.nonsense  # noqa: B018


def test_the_tree_is_the_architecture() -> None:
    package = ROOT / "samflow"
    top_modules = sorted(p.name for p in package.glob("*.py"))
    assert len(top_modules) <= 10, top_modules
    design = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    packages = sorted(p.parent.relative_to(ROOT).as_posix() for p in package.glob("*/__init__.py"))
    missing = [name for name in packages if f"`{name}/`" not in design]
    assert not missing, f"docs/ARCHITECTURE.md does not describe {missing}"
    assert "docs/ARCHITECTURE.md" in (ROOT / "README.md").read_text()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert "../shared" not in doc.read_text(), f"{doc.name} points outside the repository"
    assert not (package / "models" / "sam" / "reference.py").exists()  # test-only code stays in tests/

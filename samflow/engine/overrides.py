"""`--set NAME=VALUE` overrides: reading them from the command line and applying them to a graph's params.

`yaml_overrides(["encoder.device=cuda"])` reads each VALUE as YAML (safe loader): {"encoder.device": "cuda"};
`apply_overrides` sets them in YAML-shaped graph data before it is validated (`Graph.from_yaml(overrides=...)`).
The same reader serves any `--set` (the recipes' config overrides too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from samflow.engine.validation import GraphValidationError, Problem, hint
from samflow.errors import InputError
from samflow.yamlio import LineMap, load_with_lines, plain


def name_value_pairs(values: list[str], what: str) -> dict[str, str]:
    """`NAME=VALUE` strings as {NAME: VALUE}; `what` (the option, e.g. '--input') names them in errors."""
    pairs = {}
    for text in values:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise InputError(f"{what} expects NAME=VALUE, got {text!r}")
        pairs[name.strip()] = value
    return pairs


def yaml_overrides(values: list[str]) -> dict[str, Any]:
    """`--set NAME=VALUE` options as {NAME: VALUE read as YAML (the safe, bounded reader of samflow.yamlio)}.

    A VALUE that is not YAML is an InputError naming the option and the YAML problem (the CLI's exit 2)."""
    return {key: _yaml_value(key, value) for key, value in name_value_pairs(values, "--set").items()}


def _yaml_value(name: str, text: str) -> Any:
    try:
        return plain(load_with_lines(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at column {mark.column + 1}" if mark is not None and mark.line == 0 else (
            f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "")
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"--set {name}={text!r}: the value is not valid YAML: {what}{where}") from None


def apply_overrides(data: Any, overrides: Mapping[str, Any], source: str) -> None:
    """Set {"NODE.PARAM[.KEY...]": value} in YAML-shaped graph data, in place; an unknown node is a problem."""
    nodes = data.get("nodes") if isinstance(data, dict) else None
    for path, value in overrides.items():
        node, _, param = path.partition(".")
        if not isinstance(nodes, dict) or not isinstance(nodes.get(node), dict) or not param:
            known = ", ".join(nodes) if isinstance(nodes, dict) else "none"
            raise GraphValidationError([Problem(f"cannot set '{path}': use NODE.PARAM with a node of the graph "
                                                f"({known}){hint(node, nodes or {})}", source)])
        target = nodes[node].get("params")
        if not isinstance(target, dict):
            target = nodes[node]["params"] = LineMap()
        *parents, leaf = param.split(".")
        for key in parents:
            if not isinstance(target.get(key), dict):
                target[key] = LineMap()
            target = target[key]
        target[leaf] = value

"""What a graph is made of, as plain data: references to values, node specs, and the names and format version
that both the builder (`graph.py`) and the YAML reader (`graph_yaml.py`) check against."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from samflow.engine.node import Node, NodeParams

FORMAT_VERSION = 1
GRAPH_INPUTS = "inputs"  # the pseudo-node of `$inputs.NAME`
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REF = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class Ref:
    """A reference to a value: output `port` of node `node`, or graph input `port` when node is 'inputs'."""

    node: str
    port: str

    def __str__(self) -> str:
        return f"${self.node}.{self.port}"

    @classmethod
    def parse(cls, text: Any) -> Ref | None:
        match = REF.match(text) if isinstance(text, str) else None
        return cls(match.group(1), match.group(2)) if match else None


@dataclass
class NodeSpec:
    """A node of the graph: its class, validated params and wired inputs (node instances live in a Scheduler)."""

    name: str
    node_type: type[Node]
    params: NodeParams
    inputs: dict[str, Ref] = field(default_factory=dict)
    description: str | None = None

    @property
    def type_id(self) -> str:
        return self.node_type.type_id

"""A graph as diagram source: Mermaid (renders in GitHub Markdown) or Graphviz DOT."""

from __future__ import annotations

from samflow.engine.graph import Graph
from samflow.engine.spec import GRAPH_INPUTS, NodeSpec


def _edges(graph: Graph) -> list[tuple[str, str, str]]:
    """(source id, target id, label) for every wire, graph inputs and outputs included."""
    edges = []
    for name, spec in graph.nodes.items():
        for port, ref in spec.inputs.items():
            source = f"in_{ref.port}" if ref.node == GRAPH_INPUTS else ref.node
            label = port if ref.node == GRAPH_INPUTS or ref.port == port else f"{ref.port} → {port}"
            edges.append((source, name, label))
    for name, ref in graph.outputs.items():
        edges.append((ref.node, f"out_{name}", ref.port))
    return edges


def _kind(spec: NodeSpec) -> str:
    """The node type, with the node's own summary of its params when it has one (e.g. 'sam.encoder · vit_b')."""
    summary = spec.node_type.summary(spec.params)
    return f"{spec.type_id} · {summary}" if summary else spec.type_id


def to_mermaid(graph: Graph) -> str:
    lines = ["flowchart LR"]
    for name, payload in graph.inputs.items():
        lines.append(f'  in_{name}(["{name}: {payload.type_name}"])')
    for name, spec in graph.nodes.items():
        lines.append(f'  {name}["{name}<br/><small>{_kind(spec)}</small>"]')
    for name in graph.outputs:
        lines.append(f'  out_{name}(["{name}"])')
    for source, target, label in _edges(graph):
        lines.append(f'  {source} -->|"{label}"| {target}')
    return "\n".join(lines) + "\n"


def to_dot(graph: Graph) -> str:
    lines = ["digraph samflow {", "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
    for name, payload in graph.inputs.items():
        lines.append(f'  "in_{name}" [label="{name}: {payload.type_name}", shape=ellipse];')
    for name, spec in graph.nodes.items():
        lines.append(f'  "{name}" [label="{name}\\n{_kind(spec)}"];')
    for name in graph.outputs:
        lines.append(f'  "out_{name}" [label="{name}", shape=ellipse];')
    for source, target, label in _edges(graph):
        lines.append(f'  "{source}" -> "{target}" [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"

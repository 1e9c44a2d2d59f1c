"""Graph: nodes wired by typed references, built in Python or loaded from YAML, validated before anything runs.

In Python, `add` returns handles to the new node's outputs and checks wiring at once:

    g = Graph()
    image = g.input("image", Image)
    encoder = g.add("sam.encoder", "encoder", params={"model": "tiny"}, image=image)
    clicks = g.add("prompt.points", "clicks", params={"points": [[120, 80]]})
    segment = g.add("sam.decoder", "segment", embedding=encoder.embedding, points=clicks.points)
    g.output("masks", segment.masks)

In YAML references are `$inputs.NAME` and `$NODE.PORT`. `Graph.load(path)` / `from_yaml(text)` collect every
problem (file, line, node, port, and what to do) and raise them together as one GraphError. The checks live in
`validation.py`, the YAML format in `graph_yaml.py`, `--set` overrides in `overrides.py`; this module is the
builder and the Graph API over them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import networkx as nx

from samflow.engine import graph_yaml, validation
from samflow.engine.node import Node, NodeParams
from samflow.engine.registry import find_node_type, node_types
from samflow.engine.spec import FORMAT_VERSION, GRAPH_INPUTS, NAME, NodeSpec, Ref
from samflow.engine.types import PAYLOAD_TYPES, Payload, get_payload_type
from samflow.engine.validation import GraphValidationError, Problem, hint, missing_inputs, parse_params
from samflow.errors import GraphError

# Ref, NodeSpec, Problem and GraphValidationError are part of this module's API (`from samflow.engine.graph
# import Graph, GraphValidationError, Ref`), wherever they are defined.
__all__ = ["FORMAT_VERSION", "GRAPH_INPUTS", "Graph", "GraphValidationError", "Handle", "NodeOutputs", "NodeSpec",
           "Problem", "Ref"]


@dataclass(frozen=True)
class Handle:
    """A typed reference to a value in one graph, as returned by `Graph.input` and `Graph.add`."""

    graph: Graph = field(repr=False, compare=False)
    ref: Ref
    type: type[Payload]

    def __str__(self) -> str:
        return f"{self.ref}: {self.type.type_name}"


class NodeOutputs:
    """The output handles of a node just added: `outputs.masks` or `outputs["masks"]`."""

    def __init__(self, graph: Graph, name: str) -> None:
        self._graph, self.name = graph, name

    def __getitem__(self, port: str) -> Handle:
        outputs = self._graph.nodes[self.name].node_type.outputs
        if port not in outputs:
            raise GraphError(f"node '{self.name}' has no output '{port}'; its outputs: {', '.join(outputs) or 'none'}")
        return Handle(self._graph, Ref(self.name, port), outputs[port])

    def __getattr__(self, port: str) -> Handle:
        if port.startswith("_"):
            raise AttributeError(port)
        return self[port]

    def __iter__(self) -> Iterator[Handle]:
        return (self[port] for port in self._graph.nodes[self.name].node_type.outputs)

    def __repr__(self) -> str:
        return f"NodeOutputs({self.name}: {', '.join(str(h) for h in self)})"


class Graph:
    """A typed DAG of nodes. Build with `input`/`add`/`output`, or `load`/`from_yaml`; run with a Scheduler."""

    def __init__(self, description: str | None = None, source: str | None = None) -> None:
        self.description = description
        self.source = source  # the YAML file it came from, for messages
        self.inputs: dict[str, type[Payload]] = {}
        self.nodes: dict[str, NodeSpec] = {}
        self.outputs: dict[str, Ref] = {}

    # ----------------------------------------------------------------- building in Python

    def input(self, name: str, payload: type[Payload] | str) -> Handle:
        """Declare a graph input; the value is given per item when the graph runs."""
        if isinstance(payload, str):
            resolved = get_payload_type(payload)
            if resolved is None:
                self._fail(f"unknown payload type '{payload}'{hint(payload, PAYLOAD_TYPES)}", port=name)
            payload = resolved
        if not (isinstance(payload, type) and issubclass(payload, Payload)):
            self._fail(f"input type must be a Payload class, got {payload!r}", port=name)
        if not NAME.match(name) or name in self.inputs:
            self._fail(f"bad or duplicate input name '{name}'")
        self.inputs[name] = payload
        return Handle(self, Ref(GRAPH_INPUTS, name), payload)

    def add(self, node_type: str | type[Node], name: str | None = None, *,
            params: NodeParams | Mapping[str, Any] | None = None, inputs: Mapping[str, Handle | str] | None = None,
            **port_inputs: Handle | str) -> NodeOutputs:
        """Add a node wired to earlier handles (or `$node.port` strings); return handles to its outputs.

        Raises GraphError at once for an unknown type, bad params, an unknown or missing input, or a wrong type.
        """
        cls = self._node_class(node_type)
        name = name or self._fresh_name(cls.type_id)
        if not NAME.match(name) or name == GRAPH_INPUTS:
            self._fail(f"bad node name '{name}': use letters, digits and _ (and not 'inputs')", node=name)
        if name in self.nodes:
            self._fail(f"a node named '{name}' already exists", node=name)
        parsed, errors = parse_params(cls, params)
        if errors:
            self._fail("; ".join(f"param {error}" for error in errors), node=name)
        wiring: dict[str, Ref] = {}
        for port, value in {**(inputs or {}), **port_inputs}.items():
            ref = self._as_ref(value, name, port)
            problem = validation.wiring_problem(self, cls, port, ref, parsed)
            if problem:
                self._fail(problem, node=name, port=port)
            wiring[port] = ref
        missing = missing_inputs(cls, wiring)
        if missing:
            self._fail(f"missing required input{'s' if len(missing) > 1 else ''} {', '.join(missing)}", node=name)
        self.nodes[name] = NodeSpec(name, cls, parsed, wiring)
        return NodeOutputs(self, name)

    def output(self, name: str, value: Handle | str) -> None:
        """Name a value as a graph output (returned by `Scheduler.run`, written by `samflow run`)."""
        if not NAME.match(name) or name in self.outputs:
            self._fail(f"bad or duplicate output name '{name}'")
        ref = self._as_ref(value, None, name)
        _, problem = validation.resolve(self, ref)
        if problem:
            self._fail(problem, port=name, port_kind="output")
        self.outputs[name] = ref

    def _node_class(self, node_type: str | type[Node]) -> type[Node]:
        if isinstance(node_type, str):
            cls = find_node_type(node_type)
            if cls is None:
                self._fail(f"unknown node type '{node_type}'{hint(node_type, node_types())}")
            return cls
        if isinstance(node_type, type) and issubclass(node_type, Node) and node_type.type_id:
            return node_type
        self._fail(f"{node_type!r} is not a registered node class (decorate it with @register)")

    def _fresh_name(self, type_id: str) -> str:
        base = type_id.split("@")[0].split(".")[-1]
        name, index = base, 2
        while name in self.nodes or name == GRAPH_INPUTS:
            name, index = f"{base}_{index}", index + 1
        return name

    def _as_ref(self, value: Handle | str, node: str | None, port: str) -> Ref:
        if isinstance(value, Handle):
            if value.graph is not self:
                self._fail(f"{value.ref} belongs to another graph", node=node, port=port)
            return value.ref
        ref = Ref.parse(value)
        if ref is None:
            self._fail(f"expected a handle or a '$node.port' reference, got {value!r}", node=node, port=port)
        return ref

    def _fail(self, message: str, **where: Any) -> NoReturn:
        file, line = _caller_location()
        raise GraphValidationError([Problem(message, file=file, line=line, **where)])

    # ----------------------------------------------------------------- structure

    def digraph(self) -> nx.DiGraph:
        """Nodes and their data edges (graph inputs are not nodes); edge attribute `ports`: [(out, in)]."""
        graph = nx.DiGraph()
        graph.add_nodes_from(self.nodes)
        for name, spec in self.nodes.items():
            for port, ref in spec.inputs.items():
                if ref.node != GRAPH_INPUTS:
                    if graph.has_edge(ref.node, name):
                        graph.edges[ref.node, name]["ports"].append((ref.port, port))
                    else:
                        graph.add_edge(ref.node, name, ports=[(ref.port, port)])
        return graph

    def generations(self) -> list[list[str]]:
        """Nodes in dependency layers: every node's inputs come from earlier layers (declaration order within)."""
        order = {name: index for index, name in enumerate(self.nodes)}
        return [sorted(layer, key=order.__getitem__) for layer in nx.topological_generations(self.digraph())]

    def validate(self) -> Graph:
        """Check the whole graph again (wiring, required inputs, cycles); raise GraphValidationError. Returns self."""
        validation.validate(self)
        return self

    # ----------------------------------------------------------------- YAML (graph_yaml.py)

    def to_dict(self) -> dict[str, Any]:
        """The graph as plain data in the YAML shape (params as set, not defaults)."""
        return graph_yaml.to_data(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The graph as YAML text (written to `path` too, when given); `from_yaml` reads it back."""
        text = graph_yaml.dump(self)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def load(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> Graph:
        """Read and validate a YAML graph file (UTF-8, at most graph_yaml.MAX_GRAPH_BYTES); `overrides` as in
        `from_yaml`."""
        return cls.from_yaml(graph_yaml.read_file(path), source=str(path), overrides=overrides)

    @classmethod
    def from_yaml(cls, text: str, source: str | None = None, overrides: Mapping[str, Any] | None = None) -> Graph:
        """Parse and validate YAML text (`source` names it in messages).

        `overrides` sets params before validation: {"encoder.device": "cpu", "encoder.model.image_size": 512}.
        """
        return cls.from_dict(graph_yaml.parse(text, source, overrides), source=source)

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> Graph:
        """Build and validate a graph from YAML-shaped data; every problem is reported, not only the first."""
        return graph_yaml.read(data, cls(source=source))


def _caller_location() -> tuple[str | None, int | None]:
    """The file and line of the user code that called into this module (for Python-built graphs)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return (frame.f_code.co_filename, frame.f_lineno) if frame is not None else (None, None)

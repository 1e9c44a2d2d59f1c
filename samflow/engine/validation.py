"""Graph checks with file:line problems: wiring and types, required inputs, params, cycles.

Every finding is a `Problem` (message, file, line, node, port); `GraphValidationError` carries them all, so a
graph's mistakes are reported together rather than one per run. The builder (`graph.py`) and the YAML reader
(`graph_yaml.py`) share these checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import networkx as nx
from pydantic import ValidationError

from samflow.engine.node import Node, NodeParams
from samflow.engine.spec import GRAPH_INPUTS, Ref
from samflow.engine.types import Payload
from samflow.errors import GraphError, nearest

if TYPE_CHECKING:
    from samflow.engine.graph import Graph


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a graph, with where it is."""

    message: str
    file: str | None = None
    line: int | None = None
    node: str | None = None
    port: str | None = None
    port_kind: str = "input"

    def __str__(self) -> str:
        where = ":".join(str(part) for part in (self.file, self.line) if part is not None)
        subject = []
        if self.node is not None:
            subject.append(f"node '{self.node}'")
        if self.port is not None:
            subject.append(f"{self.port_kind} '{self.port}'")
        text = (" ".join(subject) + ": " if subject else "") + self.message
        return f"{where}: {text}" if where else text


class GraphValidationError(GraphError):
    """A graph failed validation; `problems` lists each finding with its file, line, node and port."""

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        self.problems = problems
        if len(problems) == 1:
            text = str(problems[0])
        else:
            head = f"{source}: {len(problems)} problems" if source else f"{len(problems)} problems"
            text = "\n".join([head, *(f"  {p}" for p in problems)])
        super().__init__(text)


def resolve(graph: Graph, ref: Ref) -> tuple[type[Payload] | None, str | None]:
    """The payload type a reference carries in `graph`, or a message saying why it does not resolve."""
    if ref.node == GRAPH_INPUTS:
        if ref.port in graph.inputs:
            return graph.inputs[ref.port], None
        known = ", ".join(graph.inputs) or "none"
        return None, f"{ref}: the graph has no input '{ref.port}'{hint(ref.port, graph.inputs)} (inputs: {known})"
    spec = graph.nodes.get(ref.node)
    if spec is None:
        return None, f"{ref}: no node named '{ref.node}'{hint(ref.node, graph.nodes)}"
    outputs = spec.node_type.outputs
    if ref.port not in outputs:
        return None, (f"{ref}: node '{ref.node}' ({spec.type_id}) has no output '{ref.port}'"
                      f"{hint(ref.port, outputs)} (outputs: {', '.join(outputs) or 'none'})")
    return outputs[ref.port], None


def wiring_problem(graph: Graph, cls: type[Node], port: str, ref: Ref, params: NodeParams | None = None
                   ) -> str | None:
    """Why input `port` of a `cls` node cannot take `ref` in `graph` (no such port, no such value, wrong type, or,
    given the node's `params`, what its `input_problem` finds in the producer's `output_facts`)."""
    if port not in cls.inputs:
        return f"{cls.type_id} has no input '{port}'{hint(port, cls.inputs)} (inputs: {', '.join(cls.inputs)})"
    source_type, problem = resolve(graph, ref)
    if problem:
        return problem
    wanted = cls.inputs[port].type
    if not issubclass(source_type, wanted):
        return (f"type mismatch: {ref} is {source_type.type_name} but {cls.type_id} input '{port}' "
                f"expects {wanted.type_name}")
    source = graph.nodes.get(ref.node)
    if params is not None and source is not None:
        facts = source.node_type.output_facts(source.params, ref.port)
        if facts:
            return cls.input_problem(params, port, str(ref), facts)
    return None


def missing_inputs(cls: type[Node], wired: Mapping[str, Any]) -> list[str]:
    """The required inputs of a `cls` node that `wired` leaves out."""
    return [port for port, spec in cls.inputs.items() if not spec.optional and port not in wired]


def parse_params(cls: type[Node], raw: Any, with_locations: bool = False) -> tuple[NodeParams | None, list]:
    """Validate params; errors read 'points: Input should be a valid list' (with the top-level key if asked)."""
    try:
        return cls.parse_params(raw), []
    except ValidationError as exc:
        errors = []
        for error in exc.errors():
            location = ".".join(str(part) for part in error["loc"]) or "(params)"
            message = error["msg"].removeprefix("Value error, ")
            text = f"'{location}': {message}"
            if error["type"] not in ("value_error", "missing", "extra_forbidden"):
                text += f" (got {error['input']!r})"
            if error["type"] == "extra_forbidden":
                text += f"{hint(str(error['loc'][0]), cls.Params.model_fields)} " \
                        f"(params: {', '.join(cls.Params.model_fields) or 'none'})"
            errors.append((text, error["loc"][0] if error["loc"] else None) if with_locations else text)
        return None, errors
    except (TypeError, ValueError) as exc:
        return None, [(f"params: {exc}", None) if with_locations else f"params: {exc}"]


def cycle_problems(graph: Graph, lines: Mapping[str, int | None]) -> list[Problem]:
    """A problem naming the first cycle found (at the line `lines` gives its first node), or none."""
    digraph = graph.digraph()
    try:
        edges = nx.find_cycle(digraph)
    except nx.NetworkXNoCycle:
        return []
    names = [source for source, _ in edges] + [edges[0][0]]
    steps = "; ".join(f"{target}.{inp} <- ${source}.{out}" for source, target in edges
                      for out, inp in digraph.edges[source, target]["ports"])
    return [Problem(f"cycle: {' -> '.join(names)} ({steps})", graph.source or "<graph>", lines.get(names[0]),
                    node=names[0])]


def validate(graph: Graph) -> None:
    """Check the whole graph (wiring, required inputs, outputs, cycles); raise every problem as one error."""
    problems = []
    for name, spec in graph.nodes.items():
        for port, ref in spec.inputs.items():
            problem = wiring_problem(graph, spec.node_type, port, ref, spec.params)
            if problem:
                problems.append(Problem(problem, graph.source, node=name, port=port))
        for port in missing_inputs(spec.node_type, spec.inputs):
            problems.append(Problem("missing required input", graph.source, node=name, port=port))
    for name, ref in graph.outputs.items():
        problem = resolve(graph, ref)[1]
        if problem:
            problems.append(Problem(problem, graph.source, port=name, port_kind="output"))
    problems += cycle_problems(graph, {})
    if problems:
        raise GraphValidationError(problems, graph.source)


def hint(name: str, choices: Any) -> str:
    """'; did you mean ...?' with the nearest of `choices`, or ''."""
    found = nearest(name, list(choices))
    return f"; did you mean {' or '.join(repr(f) for f in found)}?" if found else ""

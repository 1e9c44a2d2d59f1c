"""Graph: nodes wired by typed references, built in Python or loaded from YAML, validated before anything runs.

In Python, `add` returns handles to the new node's outputs and checks wiring at once:

    g = Graph()
    image = g.input("image", Image)
    encoder = g.add("sam.encoder", "encoder", params={"model": "tiny"}, image=image)
    clicks = g.add("prompt.points", "clicks", params={"points": [[120, 80]]})
    segment = g.add("sam.decoder", "segment", embedding=encoder.embedding, points=clicks.points)
    g.output("masks", segment.masks)

In YAML (see DESIGN.md) references are `$inputs.NAME` and `$NODE.PORT`. `Graph.load(path)` / `from_yaml(text)`
collect every problem (file, line, node, port, and what to do) and raise them together as one GraphError.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import networkx as nx
import yaml
from pydantic import ValidationError

from samflow.engine.node import Node, NodeParams
from samflow.engine.registry import find_node_type, node_types
from samflow.engine.types import PAYLOAD_TYPES, Payload, get_payload_type
from samflow.errors import GraphError, nearest
from samflow.yamlio import LineMap, load_with_lines, plain

FORMAT_VERSION = 1
GRAPH_INPUTS = "inputs"  # the pseudo-node of `$inputs.NAME`
TOP_LEVEL_KEYS = ("samflow", "description", "inputs", "nodes", "outputs")
NODE_KEYS = ("type", "description", "params", "inputs")
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
                self._fail(f"unknown payload type '{payload}'{_hint(payload, PAYLOAD_TYPES)}", port=name)
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
        parsed, errors = _parse_params(cls, params)
        if errors:
            self._fail("; ".join(f"param {error}" for error in errors), node=name)
        wiring: dict[str, Ref] = {}
        for port, value in {**(inputs or {}), **port_inputs}.items():
            ref = self._as_ref(value, name, port)
            problem = self._wiring_problem(cls, port, ref)
            if problem:
                self._fail(problem, node=name, port=port)
            wiring[port] = ref
        missing = _missing_inputs(cls, wiring)
        if missing:
            self._fail(f"missing required input{'s' if len(missing) > 1 else ''} {', '.join(missing)}", node=name)
        self.nodes[name] = NodeSpec(name, cls, parsed, wiring)
        return NodeOutputs(self, name)

    def output(self, name: str, value: Handle | str) -> None:
        """Name a value as a graph output (returned by `Scheduler.run`, written by `samflow run`)."""
        if not NAME.match(name) or name in self.outputs:
            self._fail(f"bad or duplicate output name '{name}'")
        ref = self._as_ref(value, None, name)
        _, problem = self._resolve(ref)
        if problem:
            self._fail(problem, port=name, port_kind="output")
        self.outputs[name] = ref

    def _node_class(self, node_type: str | type[Node]) -> type[Node]:
        if isinstance(node_type, str):
            cls = find_node_type(node_type)
            if cls is None:
                self._fail(f"unknown node type '{node_type}'{_hint(node_type, node_types())}")
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

    # ----------------------------------------------------------------- checks shared by Python and YAML

    def _resolve(self, ref: Ref) -> tuple[type[Payload] | None, str | None]:
        """The payload type a reference carries, or a message saying why it does not resolve."""
        if ref.node == GRAPH_INPUTS:
            if ref.port in self.inputs:
                return self.inputs[ref.port], None
            known = ", ".join(self.inputs) or "none"
            return None, f"{ref}: the graph has no input '{ref.port}'{_hint(ref.port, self.inputs)} (inputs: {known})"
        spec = self.nodes.get(ref.node)
        if spec is None:
            return None, f"{ref}: no node named '{ref.node}'{_hint(ref.node, self.nodes)}"
        outputs = spec.node_type.outputs
        if ref.port not in outputs:
            return None, (f"{ref}: node '{ref.node}' ({spec.type_id}) has no output '{ref.port}'"
                          f"{_hint(ref.port, outputs)} (outputs: {', '.join(outputs) or 'none'})")
        return outputs[ref.port], None

    def _wiring_problem(self, cls: type[Node], port: str, ref: Ref) -> str | None:
        if port not in cls.inputs:
            return f"{cls.type_id} has no input '{port}'{_hint(port, cls.inputs)} (inputs: {', '.join(cls.inputs)})"
        source_type, problem = self._resolve(ref)
        if problem:
            return problem
        wanted = cls.inputs[port].type
        if not issubclass(source_type, wanted):
            return (f"type mismatch: {ref} is {source_type.type_name} but {cls.type_id} input '{port}' "
                    f"expects {wanted.type_name}")
        return None

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
        problems = []
        for name, spec in self.nodes.items():
            for port, ref in spec.inputs.items():
                problem = self._wiring_problem(spec.node_type, port, ref)
                if problem:
                    problems.append(Problem(problem, self.source, node=name, port=port))
            for port in _missing_inputs(spec.node_type, spec.inputs):
                problems.append(Problem("missing required input", self.source, node=name, port=port))
        for name, ref in self.outputs.items():
            problem = self._resolve(ref)[1]
            if problem:
                problems.append(Problem(problem, self.source, port=name, port_kind="output"))
        problems += _cycle_problems(self, {})
        if problems:
            raise GraphValidationError(problems, self.source)
        return self

    # ----------------------------------------------------------------- YAML

    def to_dict(self) -> dict[str, Any]:
        """The graph as plain data in the YAML shape (params as set, not defaults)."""
        data: dict[str, Any] = {"samflow": FORMAT_VERSION}
        if self.description:
            data["description"] = self.description
        data["inputs"] = {name: payload.type_name for name, payload in self.inputs.items()}
        nodes: dict[str, Any] = {}
        for name, spec in self.nodes.items():
            entry: dict[str, Any] = {"type": spec.type_id}
            if spec.description:
                entry["description"] = spec.description
            params = spec.params.model_dump(mode="json", exclude_unset=True)
            if params:
                entry["params"] = params
            if spec.inputs:
                entry["inputs"] = {port: str(ref) for port, ref in spec.inputs.items()}
            nodes[name] = entry
        data["nodes"] = nodes
        data["outputs"] = {name: str(ref) for name, ref in self.outputs.items()}
        return data

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The graph as YAML text (written to `path` too, when given); `from_yaml` reads it back."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def load(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> Graph:
        """Read and validate a YAML graph file; `overrides` as in `from_yaml`."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise GraphError(f"cannot read graph {path}: {exc.strerror or exc}") from exc
        return cls.from_yaml(text, source=str(path), overrides=overrides)

    @classmethod
    def from_yaml(cls, text: str, source: str | None = None, overrides: Mapping[str, Any] | None = None) -> Graph:
        """Parse and validate YAML text (`source` names it in messages).

        `overrides` sets params before validation: {"encoder.device": "cpu", "encoder.model.image_size": 512}.
        """
        try:
            data = load_with_lines(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            what = getattr(exc, "problem", None) or str(exc)
            raise GraphValidationError([Problem(f"YAML syntax error: {what}", source or "<yaml>", line)]) from exc
        if overrides:
            _apply_overrides(data, overrides, source or "<yaml>")
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> Graph:
        """Build and validate a graph from YAML-shaped data; every problem is reported, not only the first."""
        return _GraphReader(data, source).read()


class _GraphReader:
    """Turns YAML-shaped data into a Graph, collecting problems with their lines."""

    def __init__(self, data: Any, source: str | None) -> None:
        self.data = data
        self.file = source or "<graph>"
        self.graph = Graph(source=source)
        self.problems: list[Problem] = []
        self.lines: dict[str, int | None] = {}  # node name -> line, for cycle messages

    def problem(self, message: str, where: Any = None, key: Any = None, **subject: Any) -> None:
        line = where.line_of(key) if isinstance(where, LineMap) and key is not None else getattr(where, "line", None)
        self.problems.append(Problem(message, self.file, line, **subject))

    def read(self) -> Graph:
        data = self.data
        if not isinstance(data, dict):
            self.problem(f"a graph must be a mapping with {', '.join(TOP_LEVEL_KEYS)}; got {type(data).__name__}")
            raise GraphValidationError(self.problems, self.file)
        for key, line in getattr(data, "duplicate_keys", []):
            self.problems.append(Problem(f"duplicate top-level key '{key}'", self.file, line))
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                self.problem(f"unknown top-level key '{key}'{_hint(str(key), TOP_LEVEL_KEYS)} "
                             f"(allowed: {', '.join(TOP_LEVEL_KEYS)})", data, key)
        version = data.get("samflow")
        if version is None:
            self.problem(f"missing 'samflow: {FORMAT_VERSION}' (the graph format version)", data)
        elif version != FORMAT_VERSION:
            self.problem(f"unsupported graph format samflow: {version!r} (this samflow reads {FORMAT_VERSION})",
                         data, "samflow")
        description = data.get("description")
        self.graph.description = str(description) if description is not None else None
        self.read_inputs(self.section(data, "inputs"))
        raw_nodes = self.section(data, "nodes")
        for name, entry in raw_nodes.items():
            self.read_node(raw_nodes, name, entry)
        for name, entry in raw_nodes.items():
            if name in self.graph.nodes:
                self.wire_node(name, entry)
        self.read_outputs(self.section(data, "outputs"))
        self.problems += _cycle_problems(self.graph, self.lines)
        if self.problems:
            raise GraphValidationError(self.problems, self.file)
        return self.graph

    def section(self, data: dict, key: str) -> dict:
        value = data.get(key)
        if value is None:
            if key == "nodes":
                self.problem("the graph has no 'nodes' section", data)
            return {}
        if not isinstance(value, dict):
            self.problem(f"'{key}' must be a mapping, got {type(value).__name__}", data, key)
            return {}
        for dup, line in getattr(value, "duplicate_keys", []):
            self.problems.append(Problem(f"'{dup}' is defined twice in '{key}'", self.file, line))
        return value

    def read_inputs(self, inputs: dict) -> None:
        for name, type_name in inputs.items():
            payload = get_payload_type(type_name) if isinstance(type_name, str) else None
            if not NAME.match(str(name)):
                self.problem(f"bad input name '{name}'", inputs, name)
            elif payload is None:
                self.problem(f"unknown payload type {type_name!r}{_hint(str(type_name), PAYLOAD_TYPES)} "
                             f"(types: {', '.join(sorted(PAYLOAD_TYPES))})", inputs, name, port=str(name),
                             port_kind="graph input")
            else:
                self.graph.inputs[name] = payload

    def read_node(self, nodes: dict, name: Any, entry: Any) -> None:
        self.lines[name] = nodes.line_of(name) if isinstance(nodes, LineMap) else None
        node = str(name)
        if not NAME.match(node) or node == GRAPH_INPUTS:
            self.problem("bad node name: use letters, digits and _ (and not 'inputs')", nodes, name, node=node)
            return
        if not isinstance(entry, dict):
            self.problem(f"a node must be a mapping with 'type' (and 'params', 'inputs'), got {entry!r}",
                         nodes, name, node=node)
            return
        for key in entry:
            if key not in NODE_KEYS:
                self.problem(f"unknown key '{key}'{_hint(str(key), NODE_KEYS)} (allowed: {', '.join(NODE_KEYS)})",
                             entry, key, node=node)
        type_id = entry.get("type")
        if not isinstance(type_id, str):
            self.problem("missing 'type' (a registered node type; see `samflow nodes`)", entry, node=node)
            return
        cls = find_node_type(type_id)
        if cls is None:
            self.problem(f"unknown node type '{type_id}'{_hint(type_id, node_types())}", entry, "type", node=node)
            return
        raw_params = entry.get("params") or {}
        if not isinstance(raw_params, dict):
            self.problem(f"'params' must be a mapping, got {type(raw_params).__name__}", entry, "params", node=node)
            return
        params, errors = _parse_params(cls, plain(raw_params), with_locations=True)
        for error, first_key in errors:
            line_map = raw_params if first_key in raw_params else entry
            self.problem(f"param {error}", line_map, first_key if first_key in raw_params else "params", node=node)
        if params is not None:
            description = entry.get("description")
            self.graph.nodes[node] = NodeSpec(node, cls, params, {}, str(description) if description else None)

    def wire_node(self, name: str, entry: dict) -> None:
        spec = self.graph.nodes[name]
        inputs = entry.get("inputs") or {}
        if not isinstance(inputs, dict):
            self.problem(f"'inputs' must be a mapping of port: $node.port, got {inputs!r}", entry, "inputs",
                         node=name)
            return
        for port, text in inputs.items():
            ref = Ref.parse(text)
            if ref is None:
                self.problem(f"expected a reference like $inputs.NAME or $NODE.PORT, got {text!r}", inputs, port,
                             node=name, port=str(port))
                continue
            if self._node_already_reported(ref):
                continue
            problem = self.graph._wiring_problem(spec.node_type, str(port), ref)
            if problem:
                self.problem(problem, inputs, port, node=name, port=str(port))
            else:
                spec.inputs[str(port)] = ref
        for port in _missing_inputs(spec.node_type, inputs):
            wanted = spec.node_type.inputs[port].type.type_name
            self.problem(f"missing required input ({wanted})", entry, "inputs" if "inputs" in entry else "type",
                         node=name, port=port)

    def read_outputs(self, outputs: dict) -> None:
        for name, text in outputs.items():
            ref = Ref.parse(text)
            if ref is None:
                self.problem(f"expected a reference like $NODE.PORT, got {text!r}", outputs, name, port=str(name),
                             port_kind="output")
                continue
            problem = self.graph._resolve(ref)[1]
            if problem and not self._node_already_reported(ref):
                self.problem(problem, outputs, name, port=str(name), port_kind="output")
            elif not problem:
                self.graph.outputs[str(name)] = ref

    def _node_already_reported(self, ref: Ref) -> bool:
        # A node whose type or params failed is absent; don't pile a second message on each reference to it.
        return ref.node in self.lines and ref.node not in self.graph.nodes


def _apply_overrides(data: Any, overrides: Mapping[str, Any], source: str) -> None:
    nodes = data.get("nodes") if isinstance(data, dict) else None
    for path, value in overrides.items():
        node, _, param = path.partition(".")
        if not isinstance(nodes, dict) or not isinstance(nodes.get(node), dict) or not param:
            known = ", ".join(nodes) if isinstance(nodes, dict) else "none"
            raise GraphValidationError([Problem(f"cannot set '{path}': use NODE.PARAM with a node of the graph "
                                                f"({known}){_hint(node, nodes or {})}", source)])
        target = nodes[node].get("params")
        if not isinstance(target, dict):
            target = nodes[node]["params"] = LineMap()
        *parents, leaf = param.split(".")
        for key in parents:
            if not isinstance(target.get(key), dict):
                target[key] = LineMap()
            target = target[key]
        target[leaf] = value


def _parse_params(cls: type[Node], raw: Any, with_locations: bool = False) -> tuple[NodeParams | None, list]:
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
                text += f"{_hint(str(error['loc'][0]), cls.Params.model_fields)} " \
                        f"(params: {', '.join(cls.Params.model_fields) or 'none'})"
            errors.append((text, error["loc"][0] if error["loc"] else None) if with_locations else text)
        return None, errors
    except (TypeError, ValueError) as exc:
        return None, [(f"params: {exc}", None) if with_locations else f"params: {exc}"]


def _missing_inputs(cls: type[Node], wired: Mapping[str, Any]) -> list[str]:
    return [port for port, spec in cls.inputs.items() if not spec.optional and port not in wired]


def _cycle_problems(graph: Graph, lines: Mapping[str, int | None]) -> list[Problem]:
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


def _hint(name: str, choices: Any) -> str:
    found = nearest(name, list(choices))
    return f"; did you mean {' or '.join(repr(f) for f in found)}?" if found else ""


def _caller_location() -> tuple[str | None, int | None]:
    """The file and line of the user code that called into this module (for Python-built graphs)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return (frame.f_code.co_filename, frame.f_lineno) if frame is not None else (None, None)

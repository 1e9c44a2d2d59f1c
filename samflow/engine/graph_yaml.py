"""The YAML graph format: reading it into a Graph (collecting every problem with its line) and writing it back.

Reading is safe (a `yaml.SafeLoader`; node types only from the registry; params validated by each node's pydantic
model) and bounded: a graph's YAML text is at most `MAX_GRAPH_BYTES` (1 MiB; graphs are a few KB), and nesting and
aliases are bounded by samflow.yamlio. Where PyYAML has libyaml, the events come from libyaml's C parser (the
composing, with its limits and line numbers, stays samflow.yamlio's): a 1 MiB file reads in about 2 s instead of 10. References are `$inputs.NAME` and `$NODE.PORT` (the README shows a graph). `Graph.load`, `Graph.from_yaml` and
`Graph.from_dict` call `parse` and `read`; `Graph.to_dict` and `Graph.to_yaml` call `to_data` and `dump`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.composer import Composer

from samflow.engine.overrides import apply_overrides
from samflow.engine.registry import find_node_type, node_types
from samflow.engine.spec import FORMAT_VERSION, GRAPH_INPUTS, NAME, NodeSpec, Ref
from samflow.engine.types import PAYLOAD_TYPES, get_payload_type
from samflow.engine.validation import (
    GraphValidationError,
    Problem,
    cycle_problems,
    hint,
    missing_inputs,
    parse_params,
    resolve,
    wiring_problem,
)
from samflow.errors import GraphError
from samflow.yamlio import LineLoader, LineMap, load_with_lines, plain

if TYPE_CHECKING:
    from samflow.engine.graph import Graph

try:  # libyaml's parser, when PyYAML was built with it
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - PyYAML without libyaml
    CParser = None

TOP_LEVEL_KEYS = ("samflow", "description", "inputs", "nodes", "outputs")
NODE_KEYS = ("type", "description", "params", "inputs")
MAX_GRAPH_BYTES = 2**20  # the YAML text of one graph (file or string): 1 MiB


def read_file(path: str | Path) -> str:
    """The text of a graph file, read no further than MAX_GRAPH_BYTES (so /dev/zero or a 10 GB file is refused at
    once); GraphError naming the file when it cannot be read, is larger or is not UTF-8."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_GRAPH_BYTES + 1)
    except OSError as exc:
        raise GraphError(f"cannot read graph {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_GRAPH_BYTES:
        raise GraphValidationError([Problem(_too_large(), str(path))])
    try:
        return data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not part of the text
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise GraphValidationError([Problem(f"not UTF-8 text (byte {exc.start}): a graph file is YAML in UTF-8",
                                            str(path), line)]) from None


def parse(text: str, source: str | None = None, overrides: Mapping[str, Any] | None = None) -> Any:
    """YAML text as line-aware data (`samflow.yamlio`), with `overrides` applied to its params.

    A syntax error, a value YAML cannot construct (`!!int x`) or a text over MAX_GRAPH_BYTES is a
    GraphValidationError naming `source` (and the line).
    """
    if not isinstance(text, str):
        raise GraphValidationError([Problem(f"a graph is YAML text, got {type(text).__name__}", source or "<yaml>")])
    if len(text) > MAX_GRAPH_BYTES // 4 and len(text.encode("utf-8", "surrogatepass")) > MAX_GRAPH_BYTES:
        raise GraphValidationError([Problem(_too_large(), source or "<yaml>")])
    try:
        data = _load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(exc, "problem", None) or str(exc)
        raise GraphValidationError([Problem(f"YAML syntax error: {what}", source or "<yaml>", line)]) from exc
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:  # a tagged scalar: `!!int x`, `!!timestamp`
        raise GraphValidationError([Problem(f"YAML value error: {exc}", source or "<yaml>")]) from exc
    if overrides:
        apply_overrides(data, overrides, source or "<yaml>")
    return data


def _too_large() -> str:
    return (f"the graph is over {MAX_GRAPH_BYTES:,} bytes (MAX_GRAPH_BYTES): graphs are a few KB; put large prompt "
            "lists in a file (prompt.points / prompt.boxes `file`)")


if CParser is not None:

    class _FastLineLoader(CParser, LineLoader):
        """samflow.yamlio's LineLoader (the same LineMaps, lines, limits on nesting and aliases) on libyaml's parser:
        the events come from C, the composing (where the limits are) stays LineLoader's."""

        check_node = Composer.check_node
        get_node = Composer.get_node
        get_single_node = Composer.get_single_node

        def __init__(self, stream: str) -> None:
            LineLoader.__init__(self, stream)
            CParser.__init__(self, stream)


def _load(text: str) -> Any:
    """`load_with_lines(text)`, on libyaml's parser when there is one."""
    if CParser is None:
        return load_with_lines(text)
    loader = _FastLineLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read(data: Any, graph: Graph) -> Graph:
    """Fill the empty `graph` from YAML-shaped data and return it; every problem is reported, not only the first."""
    return _GraphReader(data, graph).read()


def to_data(graph: Graph) -> dict[str, Any]:
    """The graph as plain data in the YAML shape (params as set, not defaults)."""
    data: dict[str, Any] = {"samflow": FORMAT_VERSION}
    if graph.description:
        data["description"] = graph.description
    data["inputs"] = {name: payload.type_name for name, payload in graph.inputs.items()}
    nodes: dict[str, Any] = {}
    for name, spec in graph.nodes.items():
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
    data["outputs"] = {name: str(ref) for name, ref in graph.outputs.items()}
    return data


def dump(graph: Graph) -> str:
    """The graph as YAML text, which `parse` and `read` read back."""
    return yaml.safe_dump(to_data(graph), sort_keys=False, default_flow_style=None, width=110)


class _GraphReader:
    """Turns YAML-shaped data into a Graph, collecting problems with their lines."""

    def __init__(self, data: Any, graph: Graph) -> None:
        self.data = data
        self.file = graph.source or "<graph>"
        self.graph = graph
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
                self.problem(f"unknown top-level key '{key}'{hint(str(key), TOP_LEVEL_KEYS)} "
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
        self.problems += cycle_problems(self.graph, self.lines)
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
                self.problem(f"unknown payload type {type_name!r}{hint(str(type_name), PAYLOAD_TYPES)} "
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
                self.problem(f"unknown key '{key}'{hint(str(key), NODE_KEYS)} (allowed: {', '.join(NODE_KEYS)})",
                             entry, key, node=node)
        type_id = entry.get("type")
        if not isinstance(type_id, str):
            self.problem("missing 'type' (a registered node type; see `samflow nodes`)", entry, node=node)
            return
        cls = find_node_type(type_id)
        if cls is None:
            self.problem(f"unknown node type '{type_id}'{hint(type_id, node_types())}", entry, "type", node=node)
            return
        raw_params = entry.get("params") or {}
        if not isinstance(raw_params, dict):
            self.problem(f"'params' must be a mapping, got {type(raw_params).__name__}", entry, "params", node=node)
            return
        params, errors = parse_params(cls, plain(raw_params), with_locations=True)
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
            problem = wiring_problem(self.graph, spec.node_type, str(port), ref, spec.params)
            if problem:
                self.problem(problem, inputs, port, node=name, port=str(port))
            else:
                spec.inputs[str(port)] = ref
        for port in missing_inputs(spec.node_type, inputs):
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
            problem = resolve(self.graph, ref)[1]
            if problem and not self._node_already_reported(ref):
                self.problem(problem, outputs, name, port=str(name), port_kind="output")
            elif not problem:
                self.graph.outputs[str(name)] = ref

    def _node_already_reported(self, ref: Ref) -> bool:
        # A node whose type or params failed is absent; don't pile a second message on each reference to it.
        return ref.node in self.lines and ref.node not in self.graph.nodes

"""YAML reading that remembers where things are, so graph errors can name the file and line, and that bounds what a
small document can cost.

`load_with_lines` parses with a `yaml.SafeLoader` subclass (same tags, same safety as `yaml.safe_load`): every
mapping comes back as a `LineMap`, a dict that also knows its own line and the line of each of its keys.

Limits (a `YamlLimitError`: a `yaml.YAMLError` with the line and column, and a ValueError; the graph reader turns
it into a GraphValidationError naming the file and line, like any YAML error):
- nesting: at most `MAX_DEPTH` (100) levels of lists and mappings; deeper input (e.g. 100,000 `[`) is refused where
  it crosses the limit, instead of exhausting Python's stack;
- aliases ("billion laughs"): anchors and aliases may add at most `ALIAS_BUDGET` (100,000) units to the document
  once every alias is expanded (a list or mapping counts 1, a scalar 1 per 32 characters), so a few hundred bytes
  can no longer stand for gigabytes; recursive aliases are refused. `allow_aliases=False` (the service) refuses
  every anchor and alias.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent, ScalarEvent

MAX_DEPTH = 100  # nesting levels of lists and mappings
ALIAS_BUDGET = 100_000  # units that expanding aliases may add (a collection 1, a scalar 1 per 32 characters)
_SCALAR_UNIT = 32


class YamlLimitError(ComposerError, ValueError):
    """A YAML document over one of this module's limits (nesting depth, alias expansion), with its position."""


class LineMap(dict):
    """A dict from YAML with 1-based line numbers: `line` of the mapping, `key_lines[key]` of each key."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line: int | None = None
        self.key_lines: dict[Any, int] = {}
        self.duplicate_keys: list[tuple[Any, int]] = []

    def line_of(self, key: Any) -> int | None:
        return self.key_lines.get(key, self.line)


class LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are LineMaps; duplicate keys are recorded instead of silently overwritten; nesting
    depth and alias expansion are bounded (see the module's docstring)."""

    max_depth = MAX_DEPTH
    alias_budget = ALIAS_BUDGET
    allow_aliases = True

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded: dict[int, int] = {}  # id(node) -> its size with every alias expanded
        self._distinct = 0  # size of the nodes actually written in the document

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            if not self.allow_aliases:
                raise YamlLimitError(None, None, "YAML aliases (*name) are not accepted here", event.start_mark)
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self._expanded:
                raise YamlLimitError(None, None, f"recursive YAML alias *{event.anchor}: it refers to a list or "
                                                 "mapping that contains it", event.start_mark)
            return super().compose_node(parent, index)
        if event.anchor is not None and not self.allow_aliases:
            raise YamlLimitError(None, None, "YAML anchors (&name) are not accepted here", event.start_mark)
        if isinstance(event, ScalarEvent):
            node = super().compose_node(parent, index)
        else:
            self._depth += 1
            if self._depth > self.max_depth:
                raise YamlLimitError(None, None, f"YAML nested deeper than {self.max_depth} levels (the limit)",
                                     event.start_mark)
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
        self._measure(node)
        return node

    def _measure(self, node: yaml.Node) -> None:
        expanded = self._expanded
        if isinstance(node, yaml.ScalarNode):
            own = size = 1 + len(node.value) // _SCALAR_UNIT
        elif isinstance(node, yaml.SequenceNode):
            own, size = 1, 1 + sum(expanded[id(child)] for child in node.value)
        else:
            own, size = 1, 1 + sum(expanded[id(k)] + expanded[id(v)] for k, v in node.value)
        self._distinct += own
        expanded[id(node)] = size
        if size > self._distinct + self.alias_budget:
            raise YamlLimitError(None, None, f"YAML aliases expand this document past its limit ({self.alias_budget} "
                                             "units more than it is written with): a 'billion laughs' document?",
                                 node.start_mark)


def _construct_line_map(loader: LineLoader, node: yaml.MappingNode) -> LineMap:
    loader.flatten_mapping(node)  # resolve YAML merge keys (<<) as SafeLoader does
    mapping = LineMap()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                    "found an unhashable key", key_node.start_mark)
        line = key_node.start_mark.line + 1
        if key in mapping:
            mapping.duplicate_keys.append((key, line))
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = line
    return mapping


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_line_map)


def load_with_lines(text: str, source: str | None = None, *, allow_aliases: bool = True,
                    max_depth: int = MAX_DEPTH, alias_budget: int = ALIAS_BUDGET) -> Any:
    """Parse YAML text; mappings become LineMaps. Raises yaml.YAMLError (with `problem_mark`) on bad syntax, and
    YamlLimitError (a YAMLError and a ValueError) over the limits; `source` names the text in their marks."""
    loader = LineLoader(text)
    loader.allow_aliases = allow_aliases
    loader.max_depth = max_depth
    loader.alias_budget = alias_budget
    if source is not None:
        loader.name = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def safe_load(text: str, source: str | None = None) -> Any:
    """`yaml.safe_load` with this module's limits: plain dicts and lists."""
    return plain(load_with_lines(text, source))


def plain(value: Any) -> Any:
    """The same data with LineMaps turned into plain dicts (for pydantic and for dumping)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value

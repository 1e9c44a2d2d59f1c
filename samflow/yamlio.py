"""YAML reading that remembers where things are, so graph errors can name the file and line.

`load_with_lines` parses with a `yaml.SafeLoader` subclass (same tags, same safety as `yaml.safe_load`): every
mapping comes back as a `LineMap`, a dict that also knows its own line and the line of each of its keys.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml


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
    """SafeLoader whose mappings are LineMaps; duplicate keys are recorded instead of silently overwritten."""


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


def load_with_lines(text: str) -> Any:
    """Parse YAML text; mappings become LineMaps. Raises yaml.YAMLError (with `problem_mark`) on bad syntax."""
    return yaml.load(text, Loader=LineLoader)  # noqa: S506 - LineLoader is a SafeLoader


def plain(value: Any) -> Any:
    """The same data with LineMaps turned into plain dicts (for pydantic and for dumping)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value

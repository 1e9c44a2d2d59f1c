"""Node type ids -> node classes. Built-ins come from `samflow.nodes`; plugins from the entry-point group
`samflow.nodes` (a value naming a module that registers its nodes on import, or a Node class).

A type id is `family.name`, optionally `@vN` when a node's contract changes: `sam.decoder` is version 1 and stays
so, `sam.decoder@v2` is a separate node, so old graphs keep working.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pkgutil
import re
import sys
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import TypeVar

from samflow.engine.node import Input, Node, NodeParams
from samflow.engine.types import Payload

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "samflow.nodes"
TYPE_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+(@v[1-9][0-9]*)?$")

_NODES: dict[str, type[Node]] = {}
_loaded = False
_load_lock = threading.RLock()
N = TypeVar("N", bound=type[Node])


def canonical_id(type_id: str) -> str:
    """`sam.decoder@v1` and `sam.decoder` are one node: version 1 is written without a suffix."""
    return type_id[: -len("@v1")] if type_id.endswith("@v1") else type_id


def register(type_id: str) -> Callable[[N], N]:
    """Class decorator: register a Node subclass under `type_id` after checking its declaration."""
    if not TYPE_ID.match(type_id):
        raise ValueError(f"bad node type id {type_id!r}: use 'family.name' or 'family.name@v2' (lower case)")
    type_id = canonical_id(type_id)

    def decorate(cls: N) -> N:
        _check_declaration(type_id, cls)
        known = _NODES.get(type_id)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"node type {type_id!r} is already registered by {known.__module__}.{known.__qualname__}")
        cls.type_id = type_id
        _NODES[type_id] = cls
        return cls

    return decorate


def _check_declaration(type_id: str, cls: type) -> None:
    """Fail at import time, not when a graph runs, if a node's declaration is malformed."""
    where = f"node {type_id!r} ({cls.__module__}.{cls.__qualname__})"
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise TypeError(f"{where}: must subclass samflow.engine.node.Node")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, NodeParams)):
        raise TypeError(f"{where}: Params must subclass samflow.engine.node.NodeParams")
    for name, port in cls.inputs.items():
        if not isinstance(port, Input) or not issubclass(port.type, Payload):
            raise TypeError(f"{where}: input {name!r} must be Input(<Payload subclass>)")
    for name, payload in cls.outputs.items():
        if not (isinstance(payload, type) and issubclass(payload, Payload)):
            raise TypeError(f"{where}: output {name!r} must be a Payload subclass")


def find_node_type(type_id: str) -> type[Node] | None:
    """The class registered as `type_id`, or None. Loads built-ins and plugins on first use."""
    load_node_types()
    return _NODES.get(canonical_id(type_id))


def node_types() -> dict[str, type[Node]]:
    """Every registered node type, sorted by id."""
    load_node_types()
    return dict(sorted(_NODES.items()))




def load_node_types() -> None:
    """Import the built-in nodes and the entry-point plugins, once per process."""
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if _loaded:
            return
        _loaded = True
        _import_builtin_nodes()
        _import_plugins()


def _import_builtin_nodes() -> None:
    package = _builtin_package()
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        importlib.import_module(f"{package.__name__}.{info.name}")


def _builtin_package():  # -> ModuleType
    try:
        return importlib.import_module("samflow.nodes")
    except ModuleNotFoundError:
        pass
    # A source checkout used through PYTHONPATH: nodes/ sits beside samflow/ and is installed as samflow.nodes
    # only by pip (pyproject's package-dir). Mount it under that name so imports read the same either way.
    source = Path(__file__).resolve().parent.parent / "nodes" / "__init__.py"
    if not source.is_file():
        raise ModuleNotFoundError("samflow.nodes is not installed and no nodes/ folder sits beside samflow/")
    spec = importlib.util.spec_from_file_location("samflow.nodes", source,
                                                  submodule_search_locations=[str(source.parent)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["samflow.nodes"] = module
    spec.loader.exec_module(module)
    return module


def _import_plugins() -> None:
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
        except Exception as exc:  # a broken plugin must not take the built-ins down with it
            log.warning("could not load samflow node plugin %r (%s): %s", entry.name, entry.value, exc)
            continue
        if isinstance(loaded, type) and issubclass(loaded, Node) and loaded.type_id not in _NODES:
            if not loaded.type_id:
                log.warning("plugin %r names %s, which has no type_id; decorate it with @register",
                            entry.name, loaded.__qualname__)
                continue
            register(loaded.type_id)(loaded)

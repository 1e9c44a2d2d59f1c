"""The scheduler: runs a validated graph over one item or a stream of items.

Per item it walks the graph's dependency layers. In a layer, nodes are independent, so it may
- serve a node from the cache (a node with `cache_key`: equal key, equal outputs; e.g. an image embedding),
- fuse sibling calls (nodes of one class with equal `batch_key` go to that class's `run_batch` together),
- run groups concurrently (`max_workers > 1`); results are stored by name, so they never depend on the order.
Values are handed to consumers by reference and dropped after their last consumer (graph outputs are kept).
The scheduler knows nothing of particular models: caching and batching are the nodes' hooks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Hashable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samflow.engine.cache import EmbeddingCache
from samflow.engine.context import ItemContext
from samflow.engine.graph import Graph
from samflow.engine.node import Node
from samflow.engine.spec import GRAPH_INPUTS
from samflow.engine.types import Payload
from samflow.errors import InputError, NodeError, SamflowError
from samflow.pool import ModelPool, default_model_pool

log = logging.getLogger(__name__)

ValueKey = tuple[str, str]  # (node or "inputs", port)


@dataclass
class NodeStats:
    """Per node over a scheduler's life: computations, seconds spent, calls served by the cache, fused calls."""

    type: str
    runs: int = 0
    seconds: float = 0.0
    cache_hits: int = 0
    batched: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "runs": self.runs, "seconds": round(self.seconds, 6),
                "cache_hits": self.cache_hits, "batched": self.batched}


@dataclass
class ItemResult:
    """The outcome of one item: status 'ok' or 'failed', the graph outputs, or the error message."""

    item_id: str
    status: str
    outputs: dict[str, Payload] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class _Step:
    name: str
    node: Node
    inputs: tuple[tuple[str, ValueKey], ...]
    outputs: tuple[tuple[str, type[Payload]], ...]
    caches: bool
    batches: bool


class Scheduler:
    """Runs `graph` item after item. Models come from `models` (the process-wide pool by default) and cached
    outputs from `cache` (an in-memory EmbeddingCache by default); `max_workers > 1` runs independent branches
    on threads."""

    def __init__(self, graph: Graph, *, cache: EmbeddingCache | None = None, models: ModelPool | None = None,
                 max_workers: int = 1) -> None:
        self.graph = graph.validate()
        self.cache = cache if cache is not None else EmbeddingCache()
        self.models = models if models is not None else default_model_pool()
        self.max_workers = max_workers
        self.stats = {name: NodeStats(spec.type_id) for name, spec in graph.nodes.items()}
        self._layers = [[self._step(name) for name in layer] for layer in graph.generations()]
        self._output_keys = {(ref.node, ref.port) for ref in graph.outputs.values()}
        self._consumers: dict[ValueKey, int] = {}
        for layer in self._layers:
            for step in layer:
                for _, key in step.inputs:
                    self._consumers[key] = self._consumers.get(key, 0) + 1
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="samflow") if max_workers > 1 else None
        self._key_locks: dict[str, list] = {}  # key -> [lock, number of threads holding or waiting]
        self._locks_lock = threading.Lock()

    def _step(self, name: str) -> _Step:
        spec = self.graph.nodes[name]
        node = spec.node_type(spec.params)
        cls = type(node)
        return _Step(name, node, tuple((port, (ref.node, ref.port)) for port, ref in spec.inputs.items()),
                     tuple(cls.outputs.items()), caches=cls.cache_key is not Node.cache_key,
                     batches=cls.batch_key is not Node.batch_key)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------- running

    def run(self, inputs: Mapping[str, Any] | None = None, *, item_id: str = "item",
            output_dir: str | Path | None = None, **named_inputs: Any) -> dict[str, Payload]:
        """Run the graph on one item; return its outputs by name. Raises NodeError naming the failing node."""
        given = {**(inputs or {}), **named_inputs}
        values = self._bind_inputs(given)
        ctx = ItemContext(item_id, Path(output_dir) if output_dir is not None else None, self.models, self.cache)
        remaining = dict(self._consumers)
        for layer in self._layers:
            units = self._units(layer, values, ctx)
            if self._executor is not None and len(units) > 1:
                done = list(self._executor.map(lambda unit: self._run_unit(unit, ctx), units))
            else:
                done = [self._run_unit(unit, ctx) for unit in units]
            for results in done:
                for step, outputs in results:
                    self._store(step, outputs, values, ctx)
            for step in layer:  # release what no later node needs
                for _, key in step.inputs:
                    remaining[key] -= 1
                    if remaining[key] == 0 and key not in self._output_keys:
                        values.pop(key, None)
        return {name: values[(ref.node, ref.port)] for name, ref in self.graph.outputs.items()}

    def run_many(self, items: Iterable[tuple[str, Mapping[str, Any]]],
                 output_dir: str | Path | None = None) -> Iterator[ItemResult]:
        """Run every (item_id, inputs) pair; a failing item is reported in its result and the stream goes on."""
        for item_id, inputs in items:
            started = time.perf_counter()
            item_dir = Path(output_dir) / item_id if output_dir is not None else None
            try:
                outputs = self.run(inputs, item_id=item_id, output_dir=item_dir)
            except SamflowError as exc:
                log.debug("item %s failed", item_id, exc_info=True)
                yield ItemResult(item_id, "failed", error=str(exc), seconds=time.perf_counter() - started)
                continue
            yield ItemResult(item_id, "ok", outputs, seconds=time.perf_counter() - started)

    def _bind_inputs(self, given: Mapping[str, Any]) -> dict[ValueKey, Any]:
        unknown = sorted(set(given) - set(self.graph.inputs))
        if unknown:
            raise InputError(f"unknown graph input(s) {', '.join(unknown)}; the graph takes "
                             f"{', '.join(self.graph.inputs) or 'no inputs'}")
        values: dict[ValueKey, Any] = {}
        for name, payload_type in self.graph.inputs.items():
            if name not in given:
                raise InputError(f"missing graph input '{name}' ({payload_type.type_name})")
            try:
                values[(GRAPH_INPUTS, name)] = payload_type.coerce(given[name])
            except SamflowError as exc:
                raise InputError(f"graph input '{name}': {exc}") from exc
        return values

    def _units(self, layer: list[_Step], values: dict[ValueKey, Any], ctx: ItemContext
               ) -> list[list[tuple[_Step, dict[str, Payload]]]]:
        """The layer's calls grouped: a group of several is one fused `run_batch`."""
        groups: dict[Hashable, list[tuple[_Step, dict[str, Payload]]]] = {}
        units: list[list[tuple[_Step, dict[str, Payload]]]] = []
        for step in layer:
            kwargs = {port: values[key] for port, key in step.inputs}
            key = self._batch_key(step, kwargs, ctx) if step.batches else None
            if key is None:
                units.append([(step, kwargs)])
                continue
            group = groups.get((type(step.node), key))
            if group is None:
                group = groups[(type(step.node), key)] = []
                units.append(group)
            group.append((step, kwargs))
        return units

    def _batch_key(self, step: _Step, kwargs: dict[str, Payload], ctx: ItemContext) -> Hashable | None:
        try:
            return step.node.batch_key(ctx, **kwargs)
        except Exception as exc:
            raise _node_error([step], ctx, exc) from exc

    def _run_unit(self, unit: list[tuple[_Step, dict[str, Payload]]], ctx: ItemContext
                  ) -> list[tuple[_Step, Mapping[str, Payload]]]:
        started = time.perf_counter()
        try:
            if len(unit) == 1:
                step, kwargs = unit[0]
                outputs = self._run_cached(step, kwargs, ctx) if step.caches else step.node.run(ctx, **kwargs)
                if not isinstance(outputs, _CacheHit):
                    self._count(step, time.perf_counter() - started)
                return [(step, outputs)]
            cls = type(unit[0][0].node)
            outputs_list = cls.run_batch(ctx, [(step.node, kwargs) for step, kwargs in unit])
            if len(outputs_list) != len(unit):
                raise NodeError(f"{cls.type_id}.run_batch returned {len(outputs_list)} results for {len(unit)} calls")
        except Exception as exc:
            raise _node_error([step for step, _ in unit], ctx, exc) from exc
        share = (time.perf_counter() - started) / len(unit)
        for step, _ in unit:
            self._count(step, share, batched=True)
        return [(step, outputs) for (step, _), outputs in zip(unit, outputs_list, strict=True)]

    def _run_cached(self, step: _Step, kwargs: dict[str, Payload], ctx: ItemContext) -> Mapping[str, Payload]:
        key = step.node.cache_key(ctx, **kwargs)
        if key is None:
            return step.node.run(ctx, **kwargs)
        with self._key_lock(key):  # concurrent branches asking for one key compute it once
            entry = self.cache.get(key)
            if entry is not None:
                with self._locks_lock:
                    self.stats[step.name].cache_hits += 1
                return _CacheHit(step.node.restore(ctx, entry))
            outputs = step.node.run(ctx, **kwargs)
            self.cache.put(key, dict(outputs))
            return outputs

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        """Serialise work on one key; the entry is dropped when nobody holds or waits for it, so a long stream
        of distinct keys (video frames) does not accumulate locks."""
        with self._locks_lock:
            entry = self._key_locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._locks_lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._key_locks[key]

    def _count(self, step: _Step, seconds: float, batched: bool = False) -> None:
        with self._locks_lock:
            stats = self.stats[step.name]
            stats.runs += 1
            stats.seconds += seconds
            stats.batched += batched

    def _store(self, step: _Step, outputs: Mapping[str, Payload], values: dict[ValueKey, Any],
               ctx: ItemContext) -> None:
        for port, payload_type in step.outputs:
            try:
                value = outputs[port]
            except (KeyError, TypeError):
                raise NodeError(f"node '{step.name}' ({step.node.type_id}) did not return its output '{port}' "
                                f"on item '{ctx.item_id}'") from None
            if not isinstance(value, payload_type):
                raise NodeError(f"node '{step.name}' ({step.node.type_id}) returned {type(value).__name__} for "
                                f"output '{port}', declared {payload_type.type_name}")
            values[(step.name, port)] = value

    def stats_dict(self) -> dict[str, dict[str, Any]]:
        """Per-node stats as plain data (what run.json records)."""
        return {name: stats.as_dict() for name, stats in self.stats.items()}


class _CacheHit(dict):
    """Outputs served from the cache: counted as a hit, not as a run."""


def _node_error(steps: list[_Step], ctx: ItemContext, exc: Exception) -> NodeError:
    names = ", ".join(f"'{step.name}' ({step.node.type_id})" for step in steps)
    detail = str(exc) or type(exc).__name__
    if not isinstance(exc, SamflowError):
        detail = f"{type(exc).__name__}: {detail}"
        log.debug("node %s raised", names, exc_info=exc)
    error = NodeError(f"node {names} failed on item '{ctx.item_id}': {detail}")
    error.nodes = [step.name for step in steps]  # type: ignore[attr-defined]
    return error

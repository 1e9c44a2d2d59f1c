"""The engine's own cost per node per item: a graph of trivial nodes, timed against calling them directly.

    PYTHONPATH=. python benchmarks/graph_overhead.py [--items 2000] [--depth 20] [--width 5]

Prints microseconds of overhead per node per item for a chain (depth) and a fan-out (width siblings, which go
through the batching hook). Target: under 1000 us (1 ms).
"""

from __future__ import annotations

import argparse
import time

from samflow.engine.context import ItemContext
from samflow.engine.graph import Graph
from samflow.engine.node import Input, Node
from samflow.engine.registry import register
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import Boxes


@register("bench.passthrough")
class Passthrough(Node):
    """Hands its input on: all the time spent around it is the engine's."""

    inputs = {"boxes": Input(Boxes)}
    outputs = {"boxes": Boxes}

    def run(self, ctx: ItemContext, boxes: Boxes) -> dict[str, Boxes]:
        return {"boxes": boxes}


@register("bench.batched")
class Batched(Passthrough):
    """A passthrough whose siblings are fused by the batching hook."""

    def batch_key(self, ctx: ItemContext, boxes: Boxes) -> int:
        return id(boxes)


def chain(depth: int) -> Graph:
    g = Graph()
    value = g.input("boxes", Boxes)
    for _ in range(depth):
        value = g.add("bench.passthrough", boxes=value).boxes
    g.output("boxes", value)
    return g


def fan_out(width: int) -> Graph:
    g = Graph()
    value = g.input("boxes", Boxes)
    for index in range(width):
        g.output(f"boxes_{index}", g.add("bench.batched", boxes=value).boxes)
    return g


def overhead_us(graph: Graph, items: int) -> float:
    scheduler = Scheduler(graph)
    boxes = Boxes([[0, 0, 1, 1]])
    scheduler.run(boxes=boxes)  # warm up
    started = time.perf_counter()
    for _ in range(items):
        scheduler.run(boxes=boxes)
    engine = time.perf_counter() - started
    node, ctx = Passthrough(), ItemContext("x", None, scheduler.models, scheduler.cache)
    started = time.perf_counter()
    for _ in range(items * len(graph.nodes)):
        node.run(ctx, boxes=boxes)
    direct = time.perf_counter() - started
    return (engine - direct) / (items * len(graph.nodes)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=int, default=5)
    args = parser.parse_args()
    chain_us = overhead_us(chain(args.depth), args.items)
    fan_us = overhead_us(fan_out(args.width), args.items)
    print(f"graph overhead per node per item: chain of {args.depth}: {chain_us:.1f} us; "
          f"fan-out of {args.width} (batched): {fan_us:.1f} us  (target < 1000 us)")


if __name__ == "__main__":
    main()

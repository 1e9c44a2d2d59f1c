"""`samflow validate GRAPH.yaml ...`: check graphs without running them."""

from __future__ import annotations

import argparse
import sys

from samflow.engine.graph import Graph
from samflow.errors import GraphError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("validate", help="check graph files (types, wiring, params, cycles)",
                                   description="Check YAML graphs without running them. Exit 0 when all are "
                                               "valid; else print every problem (file:line: node, port, what) "
                                               "and exit 2.")
    parser.add_argument("graphs", nargs="+", metavar="GRAPH.yaml")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    status = 0
    for path in args.graphs:
        try:
            graph = Graph.load(path)
        except GraphError as exc:
            print(exc, file=sys.stderr)
            status = 2
            continue
        print(f"ok: {path} ({len(graph.nodes)} nodes)")
    return status

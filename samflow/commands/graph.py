"""`samflow graph GRAPH.yaml --format mermaid|dot`: the graph as diagram source."""

from __future__ import annotations

import argparse

from samflow.engine.diagram import to_dot, to_mermaid
from samflow.engine.graph import Graph


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("graph", help="print a graph as Mermaid or Graphviz DOT source",
                                   description="Print a YAML graph as diagram source (Mermaid renders in GitHub "
                                               "Markdown; DOT with Graphviz: samflow graph g.yaml --format dot | "
                                               "dot -Tpng > g.png).")
    parser.add_argument("graph", metavar="GRAPH.yaml")
    parser.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    graph = Graph.load(args.graph)
    print(to_mermaid(graph) if args.format == "mermaid" else to_dot(graph), end="")
    return 0

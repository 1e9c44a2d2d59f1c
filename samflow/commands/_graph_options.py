"""The options of the commands that run a graph over files (`samflow run`, `samflow video`): GRAPH.yaml,
--input NAME=PATH, --set NODE.PARAM=VALUE and --out DIR; the --out folder of `samflow demo-data` too; and reading
them back: the graph with its overrides applied, the inputs by name."""

from __future__ import annotations

import argparse

from samflow.engine.graph import Graph
from samflow.engine.overrides import name_value_pairs, yaml_overrides

SET_HELP = "override a node param; VALUE is read as YAML"


def add_graph_arguments(parser: argparse.ArgumentParser, *, input_help: str, set_help: str = SET_HELP) -> None:
    """GRAPH.yaml, --input/-i NAME=PATH (repeated, `args.input`), --set/-s NODE.PARAM=VALUE (repeated,
    `args.overrides`) and a required --out/-o DIR."""
    parser.add_argument("graph", metavar="GRAPH.yaml")
    parser.add_argument("--input", "-i", action="append", default=[], metavar="NAME=PATH", help=input_help)
    parser.add_argument("--set", "-s", action="append", default=[], metavar="NODE.PARAM=VALUE", dest="overrides",
                        help=set_help)
    add_out_argument(parser)


def add_out_argument(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """--out/-o: the output folder; required, unless a `default` is given (and named in the help)."""
    if default is None:
        parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    else:
        parser.add_argument("--out", "-o", default=default, help=f"folder (default {default})")


def load_graph(args: argparse.Namespace) -> Graph:
    """The GRAPH.yaml of the arguments, read and validated with its --set overrides."""
    return Graph.load(args.graph, overrides=yaml_overrides(args.overrides))


def graph_inputs(args: argparse.Namespace) -> dict[str, str]:
    """The --input options as {NAME: PATH}."""
    return name_value_pairs(args.input, "--input")

"""`samflow nodes`: every registered node type with its ports, types and params."""

from __future__ import annotations

import argparse
import json

from samflow.engine.registry import node_types


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("nodes", help="list node types with their ports and params",
                                   description="List every registered node type (built-in and plugins): inputs "
                                               "(? = optional) and outputs with their types, params with defaults.")
    parser.add_argument("types", nargs="*", metavar="TYPE", help="only these node types")
    parser.add_argument("--json", action="store_true", help="print as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    described = [cls.describe() for type_id, cls in node_types().items() if not args.types or type_id in args.types]
    if args.json:
        print(json.dumps(described, indent=2, default=str))
        return 0
    for info in described:
        print(f"{info['type']}  {info['doc']}")
        for name, port in info["inputs"].items():
            optional = "?" if port["optional"] else ""
            print(f"  in   {name}{optional}: {port['type']}" + (f"  {port['doc']}" if port["doc"] else ""))
        for name, type_name in info["outputs"].items():
            print(f"  out  {name}: {type_name}")
        for name, param in info["params"].items():
            default = "(required)" if param["required"] else f"= {json.dumps(param['default'], default=str)}"
            print(f"  param {name}: {param['type']} {default}" + (f"  {param['doc']}" if param["doc"] else ""))
        print()
    return 0

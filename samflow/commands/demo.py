"""`samflow demo [--image PATH] [--out DIR]`: segment a scene with the shipped `tiny` model and write overlays."""

from __future__ import annotations

import argparse

from samflow.demos.scenes import run_demo
from samflow.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="segment a synthetic scene (or --image) by clicks, boxes and automatic masks; write overlay PNGs",
        description="Render a synthetic scene (or read --image), segment it with the shipped tiny model through a "
        "graph (one encoder shared by decoders for clicks and for boxes and by the automatic mask generator) and "
        "write input.png, points.png, multimask.png, boxes.png and auto.png into --out.",
    )
    p.add_argument("--image", help="an image file instead of a synthetic scene")
    p.add_argument("--out", default="demo", help="output folder (default ./demo)")
    p.add_argument("--seed", type=int, default=7, help="synthetic scene seed (default 7)")
    p.add_argument("--model", default="tiny", help="preset (default tiny)")
    p.add_argument("--checkpoint", help="weights file instead of the shipped ones")
    p.add_argument("--auto-points", type=int, default=16,
                   help="automatic masks from a grid of this many points per side (default 16; 0: none)")
    p.add_argument("--text", help='also segment what a text names, e.g. "a red star" (prompt adapter and CLIP '
                                  "ranking): writes text_adapter.png and text_rank.png")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    image = None
    if args.image:
        from samflow.ops.image import load_image

        image = load_image(args.image)
    if args.auto_points < 0:
        raise InputError(f"--auto-points must be 0 or more, got {args.auto_points}")
    result = run_demo(args.out, image=image, seed=args.seed, model=args.model, checkpoint=args.checkpoint,
                      auto_points=args.auto_points)
    for name, path in result.files.items():
        print(f"{name:>10}: {path}")
    if args.text:
        from samflow.demos.text import run_text_demo

        for name, path in run_text_demo(args.out, args.text, image=image, seed=args.seed, model=args.model,
                                        checkpoint=args.checkpoint).items():
            print(f"{name:>10}: {path}")
    print(f"open the PNGs in {result.out_dir} to see the masks")
    return 0

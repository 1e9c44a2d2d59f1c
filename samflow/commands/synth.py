"""`samflow synth`: write a synthetic SA-1B style dataset of coloured shapes (see samflow.data.synthetic; with
`--style hard`, samflow.data.synthetic_hard, the evaluation-only style)."""

from __future__ import annotations

import argparse
import time

from samflow.data.synthetic import write_dataset
from samflow.data.synthetic_hard import write_hard_dataset
from samflow.errors import InputError


def _size(text: str) -> int | tuple[int, int]:
    """``256`` (square) or ``HxW`` (height x width)."""
    try:
        if "x" in text.lower():
            h, w = text.lower().split("x")
            return int(h), int(w)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW (height x width), got {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write synthetic training scenes (shapes with part/whole masks) in SA-1B layout",
        description="Render seeded scenes of coloured, overlapping shapes and write sa_XXXXXX.png + "
        "sa_XXXXXX.json (COCO RLE masks). Scene i depends only on (seed, i); existing scenes are skipped.",
    )
    p.add_argument("--n", type=int, required=True, help="number of scenes")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument(
        "--size", type=_size, default=256, help="image size: N or HxW, height x width (default 256)"
    )
    p.add_argument("--start", type=int, default=1, help="index of the first scene (default 1), for sharding")
    p.add_argument("--workers", type=int, default=1, help="processes rendering in parallel (default 1)")
    p.add_argument(
        "--style",
        choices=("plain", "hard"),
        default="plain",
        help="plain: the training scenes (default); hard: the evaluation-only style (occluded, thin and small "
        "objects, textured backgrounds, blur, noise, JPEG; samflow eval synthetic-hard:SEED:N renders the same)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.n < 0:
        raise InputError(f"--n must not be negative, got {args.n}")
    t0 = time.perf_counter()
    write = write_hard_dataset if args.style == "hard" else write_dataset
    stats = write(
        args.out,
        args.n,
        args.seed,
        size=args.size,
        progress=not args.no_progress,
        start=args.start,
        workers=args.workers,
    )
    elapsed = time.perf_counter() - t0
    print(
        f"wrote {stats.written} scenes, skipped {stats.skipped} existing, to {stats.out_dir} in {elapsed:.1f} s"
    )
    return 0

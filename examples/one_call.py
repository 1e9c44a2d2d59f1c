"""samflow.segment: masks in one call, models and embeddings kept between calls.

    python examples/one_call.py photo.jpg --point 200 150 --out overlay.png
    python examples/one_call.py photo.jpg --box 50 40 300 260 --text "a red mug"   # text needs the text models

The second call below reuses the image's embedding: it costs the mask decoder only. For clicking in a browser,
run `samflow serve` and open http://127.0.0.1:8000/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from samflow.errors import SamflowError
from samflow.predict.api import segment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image")
    parser.add_argument("--point", nargs=2, type=float, metavar=("X", "Y"))
    parser.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"))
    parser.add_argument("--text")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--out", default="overlay.png", help="overlay picture to write")
    args = parser.parse_args(argv)
    if not (args.point or args.box or args.text):
        args.point = (120, 80)
    try:
        started = time.perf_counter()
        result = segment(args.image, points=[args.point] if args.point else None, boxes=args.box, text=args.text,
                         model=args.model)
        first = time.perf_counter() - started
        started = time.perf_counter()
        segment(args.image, points=[args.point] if args.point else None, boxes=args.box, text=args.text,
                model=args.model)
        second = time.perf_counter() - started
    except SamflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result)
    print(f"first call {first * 1e3:.0f} ms (encoder + decoder), second {second * 1e3:.0f} ms (decoder only)")
    result.overlay().save(args.out)
    print(f"wrote {args.out}; COCO annotation: {json.dumps(result.to_coco()[0])[:120]}...")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`samflow serve`: the segmentation service and the browser app, on 127.0.0.1:8000 by default."""

from __future__ import annotations

import argparse

from samflow.errors import SamflowError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve interactive segmentation over HTTP, with the browser app at /",
        description="Start the segmentation service: upload an image once, then send clicks, boxes or text and get "
                    "masks (COCO RLE, PNG) from the cached embedding; run graphs; the browser app at / and the API "
                    "schema at /docs. Binds 127.0.0.1 (this machine only) unless --host says otherwise.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--model", default="tiny", help="SAM preset: tiny (default), vit_b, vit_l, vit_h")
    parser.add_argument("--checkpoint", help="weights file (.pth or .safetensors) for --model")
    parser.add_argument("--device", help="cpu, cuda, cuda:1... (default cuda when available)")
    parser.add_argument("--max-upload-mb", type=float, default=32, help="largest upload accepted (default 32)")
    parser.add_argument("--max-side", type=int, default=4096, help="largest image width or height (default 4096)")
    parser.add_argument("--image-cache-mb", type=float, default=512,
                        help="memory for uploaded images, least recently used dropped first (default 512)")
    parser.add_argument("--cache-mb", type=float, help="memory for embeddings (default: sized for the device)")
    parser.add_argument("--workers", type=int, default=2, help="model calls running at once (default 2)")
    parser.add_argument("--no-graphs", action="store_true", help="disable POST /api/graphs/run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from samflow.serve.app import create_app
        from samflow.serve.server import run as run_server
    except ImportError as exc:
        raise SamflowError(f"samflow serve needs FastAPI and uvicorn ({exc}): pip install fastapi uvicorn "
                           "python-multipart") from None
    from samflow.serve.settings import MiB, ServiceSettings

    settings = ServiceSettings(
        model=args.model, checkpoint=args.checkpoint, device=args.device,
        max_upload_bytes=int(args.max_upload_mb * MiB), max_side=args.max_side,
        image_cache_bytes=int(args.image_cache_mb * MiB),
        embedding_cache_bytes=int(args.cache_mb * MiB) if args.cache_mb is not None else None,
        model_workers=args.workers, graphs=not args.no_graphs)
    run_server(create_app(settings), host=args.host, port=args.port)
    return 0

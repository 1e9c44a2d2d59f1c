"""`samflow serve`: the segmentation service and the browser app, on 127.0.0.1:8000 by default."""

from __future__ import annotations

import argparse
import os

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
    parser.add_argument("--workers", type=int, default=2,
                        help="requests doing model work (decoding, encoder, decoder, mask encoding, graph runs) at "
                             "once (default 2)")
    parser.add_argument("--no-graphs", action="store_true", help="disable POST /api/graphs/run")
    access = parser.add_argument_group("access")
    access.add_argument("--token", help="access token clients must send (Authorization: Bearer TOKEN; browsers open "
                                        "/?token=TOKEN once); default: $SAMFLOW_TOKEN; required off loopback")
    access.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="also answer requests whose Host is NAME (repeatable; *.example.com patterns; '*' any); "
                             "loopback names, IP literals and --host are always answered")
    access.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="also let pages of ORIGIN (https://app.example.com) call the API (repeatable; default: "
                             "same origin only)")
    access.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                        help="graph runs may read files inside DIR (repeatable; default: no server file is read)")
    text = parser.add_argument_group("text prompts", "a text alone takes the first of these routes that is set, "
                                                     "else the model's prompt adapter (samflow.segment's order)")
    text.add_argument("--text-detector", metavar="DIR",
                      help="a local Hugging Face zero-shot detector folder (OWL-ViT, OWLv2, Grounding DINO) whose "
                           "boxes prompt SAM; needs samflow[detect]")
    text.add_argument("--text-clip", metavar="MODEL",
                      help="CLIP that ranks automatic masks against the text: clip_tiny, an open_clip config JSON "
                           "or a CLIP weights file")
    text.add_argument("--text-box-threshold", type=float, metavar="T",
                      help="the detector's box score threshold (default: the detector's own)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-pixels", type=int, default=2048 * 2048,
                        help="pixels segmented per image (width x height); larger uploads are downscaled to fit "
                             "(default 4194304 = 2048x2048)")
    limits.add_argument("--oversize", choices=("downscale", "refuse"), default="downscale",
                        help="what happens to an upload over --max-pixels (default downscale)")
    limits.add_argument("--max-points", type=int, default=64, help="points per request (default 64)")
    limits.add_argument("--max-boxes", type=int, default=64, help="boxes per request (default 64)")
    limits.add_argument("--max-masks", type=int, default=192, help="masks returned per request (default 192)")
    limits.add_argument("--graph-models", help="SAM presets graph runs may use, comma-separated (default: --model)")
    limits.add_argument("--max-connections", type=int, default=64,
                        help="connections served at once; more are answered 503 (default 64)")
    limits.add_argument("--max-models", type=int, default=4,
                        help="models loaded for graph runs at once, least recently used dropped first (default 4)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from samflow.serve.app import create_app
        from samflow.serve.server import run as run_server
    except ImportError as exc:
        raise SamflowError(f"samflow serve needs FastAPI and uvicorn ({exc}): pip install fastapi uvicorn "
                           "python-multipart") from None
    from samflow.serve.settings import MiB, ServiceSettings

    graph_models = tuple(m.strip() for m in args.graph_models.split(",") if m.strip()) if args.graph_models else None
    settings = ServiceSettings(
        model=args.model, checkpoint=args.checkpoint, device=args.device,
        host=args.host, allowed_hosts=tuple(args.allowed_host), cors_origins=tuple(args.cors_origin),
        token=args.token or os.environ.get("SAMFLOW_TOKEN") or None,
        max_upload_bytes=int(args.max_upload_mb * MiB), max_side=args.max_side,
        max_pixels=args.max_pixels, oversize=args.oversize,
        max_points=args.max_points, max_boxes=args.max_boxes, max_masks=args.max_masks,
        image_cache_bytes=int(args.image_cache_mb * MiB),
        embedding_cache_bytes=int(args.cache_mb * MiB) if args.cache_mb is not None else None,
        model_workers=args.workers, graphs=not args.no_graphs, graph_models=graph_models,
        allow_dirs=tuple(args.allow_dir), max_models=args.max_models,
        text_detector=args.text_detector, text_clip=args.text_clip,
        text_box_threshold=args.text_box_threshold,
        max_connections=args.max_connections)
    from samflow.serve.app import check_exposure

    check_exposure(settings)  # before the model loads: a missing token fails at once
    run_server(create_app(settings), host=args.host, port=args.port)
    return 0

"""The FastAPI application: routes over `Service`, JSON errors, body limits, the request guard (trusted hosts, same
origin, content types, access token: security.py), local API docs, and the browser app at `/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from samflow.errors import SamflowError
from samflow.predict.segmenter import Segmenter
from samflow.serve.browser import router as browser_router
from samflow.serve.docs import install_docs
from samflow.serve.errors import ErrorResponse, InternalErrorMiddleware, install_error_handlers
from samflow.serve.limits import BodyLimitMiddleware
from samflow.serve.schemas import (
    GraphRunRequest,
    GraphRunResponse,
    Health,
    ImageInfo,
    SegmentRequest,
    SegmentResponse,
)
from samflow.serve.security import RequestGuard, is_loopback
from samflow.serve.service import Service
from samflow.serve.settings import ServiceSettings
from samflow.serve.uploads import read_upload

APP_DIR = Path(__file__).resolve().parents[1] / "app"  # plain HTML/JS/CSS shipped in the package
UPLOAD_PATH = "/api/images"

DESCRIPTION = """Interactive segmentation with SAM. Upload an image once (`POST /api/images`, the body is the image
file); its embedding is computed once and kept. Then send prompts (`POST /api/images/{id}/segment`): each answer
costs the mask decoder only. Masks come as COCO RLE and PNG. Errors are JSON `{"error": {"code", "message"}}`.
The browser app is at `/`.

Only this service's own pages (same origin) may call it from a browser; the Host must be this machine's (or one the
operator allowed); uploads are `image/*` or `application/octet-stream` (or multipart), prompts `application/json`.
A service started with an access token takes it as `Authorization: Bearer TOKEN`. Every count that drives work is
limited (see `GET /api/health`); graph runs read no files on the server."""


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "the image file (PNG, JPEG, WebP, BMP, TIFF...) as the raw body, or a multipart `file`",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                               "properties": {"file": {"type": "string", "format": "binary"}}}},
        },
    }
}


def create_app(settings: ServiceSettings | None = None, *, segmenter: Segmenter | None = None) -> FastAPI:
    """The service as an ASGI app; the model is loaded now, so a bad --model or checkpoint fails at start.

    SamflowError when `settings.host` is not a loopback address and there is no access token."""
    from samflow import __version__

    settings = settings or ServiceSettings()
    check_exposure(settings)
    service = Service(settings, segmenter)
    app = FastAPI(title="samflow", version=__version__, description=DESCRIPTION, docs_url=None, redoc_url=None)
    app.state.service = service
    install_error_handlers(app)
    install_docs(app, "samflow")

    def body_limit(scope: dict[str, Any]) -> int:
        is_upload = scope.get("path") == UPLOAD_PATH and scope.get("method") == "POST"
        return settings.max_upload_bytes if is_upload else settings.max_json_bytes

    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    app.add_middleware(RequestGuard, settings=settings, upload_path=UPLOAD_PATH)  # added last: runs first

    @app.get("/api/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """The model, the device, whether text prompts are available, and the limits."""
        return service.health()

    @app.post(UPLOAD_PATH, response_model=ImageInfo, tags=["images"], openapi_extra=_UPLOAD_BODY,
              responses=_errors(400, 413, 415, 422))
    async def upload_image(request: Request) -> ImageInfo:
        """Upload an image; returns its id. The embedding is computed now (once: the same bytes again are free).

        413 `too_large` over the upload limit (refused as soon as it is known, without reading the rest),
        413 `image_too_large` over the size limit, 422 `bad_image` when it is not an image. Past max_pixels the
        picture is downscaled (`scale` < 1; prompts are in the downscaled pixels) or, per the settings, refused."""
        data = await read_upload(request)
        return await run_in_threadpool(service.add_image, data)

    @app.get(UPLOAD_PATH + "/{image_id}", response_model=ImageInfo, tags=["images"], responses=_errors(404))
    def image_info(image_id: str) -> ImageInfo:
        """Size of an uploaded image; 404 `unknown_image` when it is unknown or evicted."""
        return service.image_info(image_id)

    @app.get(UPLOAD_PATH + "/{image_id}/image.png", tags=["images"], responses=_errors(404),
             response_class=Response)
    def image_png(image_id: str) -> Response:
        """The pixels the service segments (decoded, EXIF-oriented, downscaled past max_pixels), as PNG."""
        return Response(service.image_png(image_id), media_type="image/png")

    @app.post(UPLOAD_PATH + "/{image_id}/segment", response_model=SegmentResponse, tags=["images"],
              responses=_errors(404, 413, 422))
    def segment(image_id: str, request: SegmentRequest) -> SegmentResponse:
        """Masks for prompts on an uploaded image: per object its candidate masks (COCO RLE, optional PNG), their
        predicted IoU and the best one. 422 `bad_prompt`, 422 `text_prompts_unavailable`, 404 `unknown_image`."""
        return service.segment(image_id, request)

    @app.post("/api/graphs/run", response_model=GraphRunResponse, tags=["graphs"],
              responses=_errors(403, 404, 413, 422))
    def run_graph(request: GraphRunRequest) -> GraphRunResponse:
        """Run a YAML graph once on uploaded images (by id) and JSON inputs, sharing the service's models and
        embeddings. 422 `bad_graph` (with file:line), `bad_input`, `node_failed`; 403 `server_path` (a param names
        a file on the server), `param_not_allowed` (a model or device the service does not offer); 413
        `over_limit` (a count over the service's limits)."""
        return service.run_graph(request)

    app.include_router(browser_router)  # decoding in the browser: embeddings, the decoder, the runtime

    if (APP_DIR / "index.html").is_file():
        app.mount("/app", StaticFiles(directory=APP_DIR), name="app")

        @app.get("/", include_in_schema=False)
        def index() -> FileResponse:
            return FileResponse(APP_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    return app


def check_exposure(settings: ServiceSettings) -> None:
    """An address other than loopback needs an access token: anyone who can reach it could use the service."""
    if not is_loopback(settings.host) and not settings.token:
        raise SamflowError(f"samflow serve on {settings.host or 'all addresses'} (not loopback) needs an access "
                           "token: pass --token TOKEN or set SAMFLOW_TOKEN")

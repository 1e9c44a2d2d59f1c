"""Decoding in the browser: what the app needs to run SAM's prompt encoder and mask decoder on the annotator's
machine, so a click costs the server nothing.

- `GET /api/decoder`: how to decode the served model in a browser (the model's sizes, the URLs below, whether
  the ONNX tools are installed), as `DecoderInfo`;
- `GET /api/models/{name}/decoder.onnx`: the served model's decoder with the official segment-anything ONNX
  interface, all four masks (`samflow.export.export_decoder(multimask=True)`), exported once per process and
  kept in memory; an ETag (the weights' fingerprint) lets browsers keep their copy; `?quantized=1`: that file
  with int8 dynamic quantisation (`samflow.export.quantize_decoder`, as the official export's --quantize-out and
  the paper's web demo): 3.3 times smaller, its masks within a few boundary pixels of the float32 one's;
- `GET /api/models/{name}/browser_decoder.onnx[?quantized=1]`: what the app itself runs
  (`samflow.export.export_browser_decoder`): the same inputs but `orig_im_size`, out only the three
  ambiguity-aware masks' low-res logits and scores; the page upscales the one mask it shows (decode.js, with
  `Sam.postprocess_masks`'s weights), which in onnxruntime-web saves about a quarter of each click;
- `GET /api/models/{name}/browser_products.onnx` and `.../browser_factored_decoder.onnx`: the browser decoder
  split at the image (`samflow.export.export_browser_factored`): the page runs the first once per image (its
  embedding -> the products of the image's tokens the factored decoder reads) and the second per click without a
  mask input (the point prompt and those products -> the browser decoder's outputs), about a third of the
  browser decoder's work per click; refinements with a mask input use the browser decoder;
- `GET /api/images/{id}/embedding[?dtype=float16]`: the image embedding as raw little-endian bytes, (1, C, h, w)
  C-order, with its shape, dtype, the image size (`orig_im_size`) and the resized size in headers;
- `GET /ort/{file}`: onnxruntime-web's WASM runtime, shipped in samflow/app/ort/ (the WebAssembly file gzipped,
  sent with `Content-Encoding: gzip`), so the app needs no network beyond this service: the classic script
  `ort.wasm.min.js` imports the Emscripten loader `ort-wasm-simd-threaded.mjs` (which also starts the runtime's
  worker threads, as module workers of that same file) and that loads `ort-wasm-simd-threaded.wasm` (one build,
  SIMD and threads; threads need a crossOriginIsolated page: security.py sends COOP/COEP).

Text prompts and graph runs stay on the server (`POST /api/images/{id}/segment`, `POST /api/graphs/run`); the app
falls back to the server for clicks too when the browser cannot decode.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from samflow.serve.errors import ApiError, ErrorResponse

log = logging.getLogger(__name__)

ORT_DIR = Path(__file__).resolve().parents[1] / "app" / "ort"
ORT_VERSION = "1.31.1"
ORT_SCRIPT = "ort.wasm.min.js"
# Served name -> (file in ORT_DIR, media type); a stored name ending in .gz is sent as gzip content encoding.
ORT_FILES = {
    "ort.wasm.min.js": ("ort.wasm.min.js", "text/javascript; charset=utf-8"),
    "ort-wasm-simd-threaded.mjs": ("ort-wasm-simd-threaded.mjs", "text/javascript; charset=utf-8"),
    "ort-wasm-simd-threaded.wasm": ("ort-wasm-simd-threaded.wasm.gz", "application/wasm"),
}
EMBEDDING_HEADERS = ("X-Embedding-Shape", "X-Embedding-Dtype", "X-Original-Size", "X-Input-Size",
                     "X-Image-Size", "X-Model-Key")
MAX_DECODERS = 4  # exported decoders kept (one per served model; more only when tests build many apps)
FACTORED_KINDS = ("products", "factored")
DECODER_KINDS = ("official", "browser", *FACTORED_KINDS)

router = APIRouter()


def _errors(*statuses: int) -> dict[int | str, dict]:
    return {status: {"model": ErrorResponse} for status in statuses}


class DecoderInfo(BaseModel):
    """How a browser decodes the served model (URLs relative to the service's root)."""

    model: str = Field(description="the served model (its preset name)")
    model_key: str = Field(description="fingerprint of its weights: the decoder's ETag and each embedding's "
                                       "X-Model-Key")
    decoder: str = Field(description="the decoder ONNX file (official interface, all masks: the single-mask "
                                     "output first, then the three ambiguity-aware ones)")
    decoder_int8: str = Field(description="the same decoder with int8 dynamic quantisation (smaller; masks "
                                          "within a few boundary pixels)")
    browser_decoder: str = Field(description="the decoder the app runs: no orig_im_size input; out the three "
                                             "ambiguity-aware masks' iou_predictions (1, 3) and low_res_masks "
                                             "(1, 3, 4h, 4w), which the page upscales")
    browser_decoder_int8: str = Field(description="that decoder with int8 dynamic quantisation")
    browser_products: str = Field(description="per image: image_embeddings -> image_product_0.. (what the "
                                              "factored decoder reads)")
    browser_factored_decoder: str = Field(description="per click without a mask input: point_coords, "
                                                      "point_labels and the image's products -> the browser "
                                                      "decoder's iou_predictions and low_res_masks")
    runtime: str = Field(description="onnxruntime-web's script (WASM backend)")
    wasm_paths: str = Field(description="where the runtime finds its .mjs and .wasm files")
    runtime_version: str
    available: bool = Field(description="whether the decoder can be exported here (the onnx package)")
    reason: str | None = Field(None, description="why not, when it cannot")
    image_size: int = Field(description="the long side images are resized to (point coordinates are scaled to it)")
    embedding_shape: list[int] = Field(description="(1, C, h, w)")
    low_res_size: list[int] = Field(description="(4h, 4w): the mask_input and low_res_masks size")
    mask_threshold: float
    multimask_outputs: list[int] = Field(description="the indices of the three ambiguity-aware masks")


# ------------------------------------------------------------------------------------------- the decoder file


class _Decoders:
    """Exported decoder files by model fingerprint: exported once per process (a few seconds), kept in memory."""

    def __init__(self) -> None:
        self._files: OrderedDict[tuple[str, bool, str], bytes | ApiError] = OrderedDict()
        self._lock = threading.RLock()  # the int8 file is made from the float32 one, under the same lock

    def get(self, model: torch.nn.Module, key: str, quantized: bool = False, kind: str = "official") -> bytes:
        """A decoder file of `kind` (DECODER_KINDS): the official-interface decoder, the app's low-res one
        (`export_browser_decoder`), or either half of the factored one (`export_browser_factored`)."""
        entry = (key, quantized, kind)
        with self._lock:  # one export at a time; later callers find it done (or failed: not tried again)
            data = self._files.get(entry)
            if data is None:
                try:
                    if quantized:
                        data = _quantize(self.get(model, key, kind=kind))
                    elif kind in FACTORED_KINDS:  # both halves come from one export
                        halves = _export_factored(model)
                        for other, half in halves.items():
                            self._files[(key, False, other)] = half
                        data = halves[kind]
                    else:
                        data = _export(model, kind == "browser")
                except ApiError as exc:
                    data = exc
                self._files[entry] = data
                while len(self._files) > 4 * MAX_DECODERS:
                    self._files.popitem(last=False)
            self._files.move_to_end(entry)
        if isinstance(data, ApiError):
            raise data
        return data


DECODERS = _Decoders()


def _export(model: torch.nn.Module, browser: bool) -> bytes:
    from samflow.export import export_browser_decoder, export_decoder

    def write(tmp: Path) -> dict[str, Path]:
        path = tmp / "decoder.onnx"
        if browser:
            export_browser_decoder(model, path, verify=False)
        else:
            export_decoder(model, path, multimask=True, verify=False)
        return {"decoder": path}
    return _exported("the decoder", write)["decoder"]


def _export_factored(model: torch.nn.Module) -> dict[str, bytes]:
    from samflow.export import export_browser_factored

    def write(tmp: Path) -> dict[str, Path]:
        files = {"products": tmp / "products.onnx", "factored": tmp / "decoder.onnx"}
        export_browser_factored(model, files["products"], files["factored"], verify=False)
        return files
    return _exported("the factored decoder", write)


def _exported(what: str, write: Callable[[Path], dict[str, Path]]) -> dict[str, bytes]:
    """The files `write` exports into a temporary folder, by name, read into memory; a model the export does not
    cover is a 503 (the app then decodes with what it has, or on the server)."""
    from samflow.export import ExportError

    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="samflow-decoder-") as tmp:
            data = {name: path.read_bytes() for name, path in write(Path(tmp)).items()}
    except ExportError as exc:
        log.warning("no %s for browsers: %s", what, exc)
        raise ApiError(503, "browser_decoding_unavailable", str(exc)) from exc
    log.info("exported %s for browsers in %.1f s (%s bytes)", what, time.perf_counter() - started,
             " + ".join(str(len(v)) for v in data.values()))
    return data


def _quantize(fp32: bytes) -> bytes:
    from samflow.export import ExportError, quantize_decoder

    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="samflow-decoder-") as tmp:
            source = Path(tmp) / "decoder.onnx"
            source.write_bytes(fp32)
            data = quantize_decoder(source, Path(tmp) / "decoder_int8.onnx").read_bytes()
    except ExportError as exc:  # no onnxruntime.quantization here: the app keeps the float32 decoder
        log.warning("no int8 decoder for browsers: %s", exc)
        raise ApiError(503, "browser_decoding_unavailable", str(exc)) from exc
    log.info("quantised the decoder for browsers in %.1f s (%d bytes)", time.perf_counter() - started, len(data))
    return data


def _onnx_missing() -> str | None:
    from importlib.util import find_spec

    if find_spec("onnx") is None:
        from samflow.export import INSTALL_HINT

        return f"exporting the decoder needs the onnx package, which is not installed: {INSTALL_HINT}"
    return None


def _not_modified(request: Request, etag: str) -> bool:
    given = request.headers.get("if-none-match", "")
    return etag in (tag.strip().removeprefix("W/") for tag in given.split(","))


# ------------------------------------------------------------------------------------------- endpoints


@router.get("/api/decoder", response_model=DecoderInfo, tags=["browser decoding"])
def decoder_info(request: Request) -> DecoderInfo:
    """What a browser needs to decode clicks itself: the decoder file, the runtime, the model's sizes."""
    from samflow.models.sam import model_fingerprint

    service = request.app.state.service
    model, name = service.model, service.settings.model
    config = model.config
    grid = config.embedding_size
    reason = _onnx_missing()
    return DecoderInfo(model=name, model_key=model_fingerprint(model), decoder=f"api/models/{name}/decoder.onnx",
                       decoder_int8=f"api/models/{name}/decoder.onnx?quantized=1",
                       browser_decoder=f"api/models/{name}/browser_decoder.onnx",
                       browser_decoder_int8=f"api/models/{name}/browser_decoder.onnx?quantized=1",
                       browser_products=f"api/models/{name}/browser_products.onnx",
                       browser_factored_decoder=f"api/models/{name}/browser_factored_decoder.onnx",
                       runtime=f"ort/{ORT_SCRIPT}", wasm_paths="ort/", runtime_version=ORT_VERSION,
                       available=reason is None, reason=reason, image_size=config.image_size,
                       embedding_shape=[1, config.prompt_embed_dim, grid, grid], low_res_size=[4 * grid, 4 * grid],
                       mask_threshold=float(model.mask_threshold),
                       multimask_outputs=list(range(1, model.mask_decoder.num_mask_tokens)))


@router.get("/api/models/{name}/decoder.onnx", tags=["browser decoding"], response_class=Response,
            responses={**_errors(404, 503), 200: {"content": {"application/octet-stream": {}}}})
def decoder_onnx(name: str, request: Request, quantized: bool = False) -> Response:
    """The served model's prompt encoder and mask decoder as ONNX, with segment-anything's interface (inputs
    `image_embeddings`, `point_coords` in the resized-longest-side frame, `point_labels`, `mask_input`,
    `has_mask_input`, `orig_im_size`; outputs `masks` (1, 4, H, W) logits, `iou_predictions`, `low_res_masks`).
    Exported on the first request (seconds), then kept. `quantized=1`: the same decoder with int8 dynamic
    quantisation (weights uint8, activations quantised at run time; made on its first request). 404
    `unknown_model` for a model this service does not serve, 503 `browser_decoding_unavailable` without the onnx
    package (or, for `quantized`, onnxruntime)."""
    return _decoder_file(name, request, quantized, "official")


@router.get("/api/models/{name}/browser_decoder.onnx", tags=["browser decoding"], response_class=Response,
            responses={**_errors(404, 503), 200: {"content": {"application/octet-stream": {}}}})
def browser_decoder_onnx(name: str, request: Request, quantized: bool = False) -> Response:
    """The decoder the app runs: inputs as decoder.onnx's but `orig_im_size`; outputs `iou_predictions` (1, 3)
    and `low_res_masks` (1, 3, 4h, 4w), the three ambiguity-aware masks as logits before the upscaling to the
    image (the page resizes the one it shows). `quantized` and the errors as for decoder.onnx."""
    return _decoder_file(name, request, quantized, "browser")


@router.get("/api/models/{name}/browser_products.onnx", tags=["browser decoding"], response_class=Response,
            responses={**_errors(404, 503), 200: {"content": {"application/octet-stream": {}}}})
def browser_products_onnx(name: str, request: Request) -> Response:
    """The per-image half of the factored browser decoder: input `image_embeddings` (1, C, h, w), outputs
    `image_product_0`, ...: the products of the image's tokens with the decoder's fixed matrices that
    browser_factored_decoder.onnx reads. The errors as for decoder.onnx."""
    return _decoder_file(name, request, False, "products")


@router.get("/api/models/{name}/browser_factored_decoder.onnx", tags=["browser decoding"],
            response_class=Response, responses={**_errors(404, 503), 200: {"content": {"application/octet-stream": {}}}})
def browser_factored_decoder_onnx(name: str, request: Request) -> Response:
    """The per-click half: inputs `point_coords`, `point_labels` (as decoder.onnx's) and the image's products
    (by name, from browser_products.onnx); outputs as browser_decoder.onnx's for a prompt without a mask input,
    with about a third of its work. The errors as for decoder.onnx."""
    return _decoder_file(name, request, False, "factored")


def _decoder_file(name: str, request: Request, quantized: bool, kind: str) -> Response:
    from samflow.models.sam import model_fingerprint

    service = request.app.state.service
    if name != service.settings.model:
        raise ApiError(404, "unknown_model", f"this service serves the model {service.settings.model!r}, not "
                                             f"{name!r}")
    key = model_fingerprint(service.model)
    etag = '"' + key + ("" if kind == "official" else f"-{kind}") + ("-int8" if quantized else "") + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    reason = _onnx_missing()
    if reason:
        raise ApiError(503, "browser_decoding_unavailable", reason)
    data = DECODERS.get(service.model, key, quantized, kind)
    return Response(data, media_type="application/octet-stream", headers=headers)


@router.get("/api/images/{image_id}/embedding", tags=["browser decoding"], response_class=Response,
            responses={**_errors(404), 200: {"content": {"application/octet-stream": {}}}})
def image_embedding(image_id: str, request: Request,
                    dtype: Literal["float32", "float16"] = "float32") -> Response:
    """The image's embedding as raw little-endian `dtype` bytes, shape (1, C, h, w) in C order (vit_b: 4 MiB
    as float32). Headers: `X-Embedding-Shape` (1,C,h,w), `X-Embedding-Dtype`, `X-Original-Size` (H,W: the decoder's
    `orig_im_size`, the pixels prompts are given in), `X-Input-Size` (h,w of the image resized to the long side),
    `X-Image-Size` (that long side), `X-Model-Key` (the weights that made it). Computed now if it was evicted.
    404 `unknown_image`."""
    from samflow.models.sam import model_fingerprint

    service = request.app.state.service
    image = service.image(image_id)
    with service._model_slot():  # an evicted embedding runs the encoder again: model work, bounded as the rest
        embedding, _ = service.segmenter.embed_status(service.model, image)
        features = embedding.features.detach().to("cpu", torch.float32).numpy()
        data = np.ascontiguousarray(features, dtype="<f4" if dtype == "float32" else "<f2").tobytes()
    h, w = embedding.original_size
    ih, iw = embedding.input_size
    headers = {
        "X-Embedding-Shape": ",".join(str(int(v)) for v in features.shape),
        "X-Embedding-Dtype": dtype,
        "X-Original-Size": f"{int(h)},{int(w)}",
        "X-Input-Size": f"{int(ih)},{int(iw)}",
        "X-Image-Size": str(int(service.model.config.image_size)),
        "X-Model-Key": model_fingerprint(service.model),
        "Cache-Control": "no-store",
        "Access-Control-Expose-Headers": ", ".join(EMBEDDING_HEADERS),
    }
    return Response(data, media_type="application/octet-stream", headers=headers)


@lru_cache(maxsize=len(ORT_FILES))
def _ort_file(name: str) -> tuple[bytes, str]:
    stored, _ = ORT_FILES[name]
    data = (ORT_DIR / stored).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


@router.get("/ort/{name}", include_in_schema=False)
def ort_file(name: str, request: Request) -> Response:
    """onnxruntime-web's files (samflow/app/ort/); the WebAssembly file as stored, gzipped."""
    if name not in ORT_FILES or not (ORT_DIR / ORT_FILES[name][0]).is_file():
        raise ApiError(404, "not_found", f"no runtime file {name!r} (this service ships {', '.join(ORT_FILES)})")
    stored, media_type = ORT_FILES[name]
    data, etag = _ort_file(name)
    headers = {"ETag": etag, "Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
    if _not_modified(request, etag) or _not_modified(request, etag[:-1] + '-plain"'):
        return Response(status_code=304, headers=headers)
    if stored.endswith(".gz"):
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            headers["Content-Encoding"] = "gzip"
        else:  # a client that takes no gzip gets the plain file, under a tag of its own
            data, headers["ETag"] = gzip.decompress(data), etag[:-1] + '-plain"'
    return Response(data, media_type=media_type, headers=headers)

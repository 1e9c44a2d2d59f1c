"""The service's work, apart from HTTP: uploads kept by id, prompts to masks, graph runs.

Uploads are held decoded in an LRU of bounded bytes (an EmbeddingCache keyed by the hash of the uploaded bytes);
embeddings live in the Segmenter's cache, also LRU by bytes. An image whose embedding was evicted is encoded again
on its next prompt; an image evicted itself is a 404 `unknown_image` (upload it again).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from samflow.devices import resolve_device
from samflow.engine.cache import EmbeddingCache, content_key
from samflow.engine.graph import Graph
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import FilePath, Image
from samflow.errors import GraphError, InputError, NodeError, SamflowError
from samflow.predict.prompts import Prompts
from samflow.predict.segmenter import Segmenter
from samflow.predict.textprompt import TextPromptsUnavailable, text_prompts_available
from samflow.serve.encode import masks_out, payload_json
from samflow.serve.errors import ApiError
from samflow.serve.schemas import (
    GraphRunRequest,
    GraphRunResponse,
    Health,
    ImageInfo,
    Limits,
    ObjectOut,
    SegmentRequest,
    SegmentResponse,
)
from samflow.serve.settings import ServiceSettings
from samflow.serve.uploads import decode_image

log = logging.getLogger(__name__)

IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")
UPLOAD_KEY = "samflow.serve.upload"


class Service:
    """One model, the uploads, and the Segmenter that keeps embeddings; safe to call from many threads."""

    def __init__(self, settings: ServiceSettings, segmenter: Segmenter | None = None) -> None:
        self.settings = settings
        self.segmenter = segmenter or Segmenter(cache=EmbeddingCache(max_bytes=settings.embedding_cache_bytes))
        self.device = resolve_device(settings.device)
        self.model = self.segmenter.model(settings.model, checkpoint=settings.checkpoint, device=self.device)
        self.images = EmbeddingCache(max_bytes=settings.image_cache_bytes)
        # CPU-bound model calls beyond a few at once only queue inside torch; bound them here.
        self._model_slots = threading.BoundedSemaphore(max(1, settings.model_workers))
        self._text_ready: bool | None = None

    @contextmanager
    def _model_slot(self) -> Iterator[None]:
        with self._model_slots:
            yield

    def health(self) -> Health:
        s = self.settings
        return Health(model=s.model, device=self.device, text_prompts=self.text_prompts_ready(),
                      images=len(self.images),
                      limits=Limits(max_upload_bytes=s.max_upload_bytes, max_side=s.max_side,
                                    max_points=s.max_points, max_boxes=s.max_boxes))

    def text_prompts_ready(self) -> bool | None:
        """Whether text prompts work here: False when samflow.predict.text is missing, else what the latest text
        prompt showed (None before one was tried: loading the text models is left to the first that needs them)."""
        if not text_prompts_available():
            return False
        return self._text_ready

    # ------------------------------------------------------------------------------------------- images

    def add_image(self, data: bytes) -> ImageInfo:
        """Keep an uploaded image under the hash of its bytes and compute its embedding (once)."""
        image_id = content_key(UPLOAD_KEY, data)
        entry = self.images.get(image_id)
        image = entry["image"] if entry is not None else decode_image(data, self.settings.max_side)
        if entry is None:
            if image.nbytes > (self.images.max_bytes or 0):
                raise ApiError(413, "image_too_large", f"the decoded image takes {image.nbytes} bytes, more than "
                                                       f"this service's image cache ({self.images.max_bytes})")
            self.images.put(image_id, {"image": image})
        started = time.perf_counter()
        with self._model_slot():
            _, computed = self.segmenter.embed_status(self.model, image)
        encode_ms = (time.perf_counter() - started) * 1e3 if computed else 0.0
        h, w = image.size
        log.info("image %s… %dx%d %s", image_id[:12], w, h, f"encoded in {encode_ms:.0f} ms" if computed else "cached")
        return ImageInfo(id=image_id, width=w, height=h, encoded=True, encode_ms=round(encode_ms, 3))

    def image(self, image_id: str) -> Image:
        entry = self.images.get(image_id) if IMAGE_ID.match(image_id) else None
        if entry is None:
            raise ApiError(404, "unknown_image", f"no image with id {image_id!r}: it was never uploaded here or "
                                                 "has been evicted from the cache; upload it again")
        return entry["image"]

    def image_info(self, image_id: str) -> ImageInfo:
        h, w = self.image(image_id).size
        return ImageInfo(id=image_id, width=w, height=h, encoded=True, encode_ms=None)

    # ------------------------------------------------------------------------------------------- prompts

    def segment(self, image_id: str, request: SegmentRequest) -> SegmentResponse:
        image = self.image(image_id)
        prompts = self._prompts(request, image)
        started = time.perf_counter()
        try:
            with self._model_slot():
                prediction = self.segmenter.predict(self.model, image, prompts, multimask=request.multimask)
        except TextPromptsUnavailable as exc:
            self._text_ready = False
            raise ApiError(422, "text_prompts_unavailable", str(exc)) from exc
        except SamflowError as exc:
            raise ApiError(422, "bad_prompt", str(exc)) from exc
        if prompts.texts is not None:
            self._text_ready = True
        decode_ms = (time.perf_counter() - started) * 1e3
        objects = [ObjectOut(label=prediction.labels[n], best=int(prediction.scores[n].argmax()),
                             masks=masks_out(prediction.masks[n], prediction.scores[n], request.png))
                   for n in range(prediction.masks.shape[0])]
        h, w = image.size
        return SegmentResponse(image_id=image_id, width=w, height=h, objects=objects, decode_ms=round(decode_ms, 3))

    def _prompts(self, request: SegmentRequest, image: Image) -> Prompts:
        s = self.settings
        h, w = image.size
        if len(request.points) > s.max_points or len(request.boxes) > s.max_boxes:
            raise ApiError(422, "bad_prompt", f"at most {s.max_points} points and {s.max_boxes} boxes per request")
        if request.labels is not None and len(request.labels) != len(request.points):
            raise ApiError(422, "bad_prompt", f"{len(request.labels)} labels for {len(request.points)} points: give "
                                              "one label per point (1 foreground, 0 background)")
        for x, y in request.points:
            if not (0 <= x <= w and 0 <= y <= h):
                raise ApiError(422, "bad_prompt", f"point ({x:g}, {y:g}) lies outside the {w}x{h} image")
        for box in request.boxes:
            if not (0 <= box[0] <= box[2] <= w and 0 <= box[1] <= box[3] <= h):
                raise ApiError(422, "bad_prompt", f"box {list(box)} is not x0 <= x1, y0 <= y1 inside the {w}x{h} "
                                                  "image")
        try:
            return Prompts.build(request.points or None, request.labels, request.boxes or None, request.text)
        except InputError as exc:
            raise ApiError(422, "bad_prompt", str(exc)) from exc

    # ------------------------------------------------------------------------------------------- graphs

    def run_graph(self, request: GraphRunRequest) -> GraphRunResponse:
        if not self.settings.graphs:
            raise ApiError(403, "graphs_disabled", "this service was started with --no-graphs")
        try:
            graph = Graph.from_yaml(request.graph, source="<request>", overrides=request.overrides or None)
        except GraphError as exc:
            raise ApiError(422, "bad_graph", str(exc)) from exc
        inputs = {name: self._graph_input(graph, name, value) for name, value in request.inputs.items()}
        started = time.perf_counter()
        with Scheduler(graph, cache=self.segmenter.cache, models=self.segmenter.models) as scheduler:
            try:
                with self._model_slot():
                    outputs = scheduler.run(inputs, item_id="request")
            except NodeError as exc:
                raise ApiError(422, "node_failed", str(exc)) from exc
            except SamflowError as exc:
                raise ApiError(422, "bad_input", str(exc)) from exc
            stats = scheduler.stats_dict()
        return GraphRunResponse(outputs={name: payload_json(value) for name, value in outputs.items()}, nodes=stats,
                                seconds=round(time.perf_counter() - started, 6))

    def _graph_input(self, graph: Graph, name: str, value: Any) -> Any:
        kind = graph.inputs.get(name)
        if kind is None:
            raise ApiError(422, "bad_input", f"the graph has no input {name!r}; its inputs: "
                                             f"{', '.join(graph.inputs) or 'none'}")
        if kind is Image:
            if not isinstance(value, str):
                raise ApiError(422, "bad_input", f"input {name!r} (Image) takes the id of an uploaded image")
            return self.image(value)
        if kind is FilePath or isinstance(value, str):
            # A string would be read as a path on the server: the service only takes uploads and JSON values.
            raise ApiError(422, "bad_input", f"input {name!r} ({kind.type_name}) takes a JSON value here, not a path "
                                             "or string; images are uploaded and passed by id")
        return value

"""The service's work, apart from HTTP: uploads kept by id, prompts to masks, graph runs.

Uploads are held decoded in an LRU of bounded bytes (an EmbeddingCache keyed by the hash of the uploaded bytes);
embeddings live in the Segmenter's cache, also LRU by bytes. An image whose embedding was evicted is encoded again
on its next prompt; an image evicted itself is a 404 `unknown_image` (upload it again).

Every request that does model work (an upload's encoder run, a prompt's decoder run and the encoding of its masks,
a whole graph run and the encoding of its outputs) holds one of `model_workers` slots, so that setting bounds the
work in progress and the memory it takes. Graph runs are checked against the policy in policy.py first.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml

from samflow.devices import resolve_device
from samflow.engine.cache import EmbeddingCache, content_key
from samflow.engine.graph import Graph
from samflow.engine.overrides import apply_overrides
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import Image
from samflow.errors import GraphError, InputError, NodeError, SamflowError
from samflow.pool import ModelPool
from samflow.predict.api import segment
from samflow.predict.prompts import Prompts
from samflow.predict.segmenter import Segmenter
from samflow.predict.textprompt import TextPromptsUnavailable, text_prompts_available
from samflow.serve.encode import masks_out, payload_json
from samflow.serve.errors import ApiError
from samflow.serve.models import BoundedModelPool
from samflow.serve.policy import GraphPolicy, json_depth, over_limit
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
from samflow.yamlio import load_with_lines

log = logging.getLogger(__name__)

IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")
UPLOAD_KEY = "samflow.serve.upload"
MAX_ORIGINALS = 4096  # downscaled uploads whose size as uploaded is remembered
T = TypeVar("T")


class Service:
    """One model, the uploads, and the Segmenter that keeps embeddings; safe to call from many threads."""

    def __init__(self, settings: ServiceSettings, segmenter: Segmenter | None = None) -> None:
        self.settings = settings
        if settings.text_detector is not None and not Path(settings.text_detector).is_dir():
            raise InputError(f"text detector {settings.text_detector} is not a folder: give a local Hugging Face "
                             "zero-shot object detection model folder (config.json and weights)")
        # The served model lives in a pool of its own (or the given segmenter's); graph runs load others into a
        # bounded pool on top of it.
        self.segmenter = segmenter or Segmenter(cache=EmbeddingCache(max_bytes=settings.embedding_cache_bytes),
                                                models=ModelPool())
        self.device = resolve_device(settings.device)
        self.model = self.segmenter.model(settings.model, checkpoint=settings.checkpoint, device=self.device)
        self.graph_models = BoundedModelPool(settings.max_models, parent=self.segmenter.models)
        self.policy = GraphPolicy(settings, self.device)
        self.images = EmbeddingCache(max_bytes=settings.image_cache_bytes)
        # CPU-bound model calls beyond a few at once only queue inside torch; bound them here. The work runs on
        # `model_workers` threads of its own, so the memory it leaves in the allocator's per-thread arenas is bounded
        # by that setting too (not by the number of request threads).
        self._model_slots = threading.BoundedSemaphore(max(1, settings.model_workers))
        self._workers = ThreadPoolExecutor(max(1, settings.model_workers), thread_name_prefix="samflow-model")
        weakref.finalize(self, self._workers.shutdown, wait=False)
        self._text_ready: bool | None = None
        self._originals: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._originals_lock = threading.Lock()

    @contextmanager
    def _model_slot(self) -> Iterator[None]:
        """Hold one of the `model_workers` slots (in the calling thread)."""
        with self._model_slots:
            yield

    def in_slot(self, work: Callable[[], T]) -> T:
        """`work()` on one of the service's model threads, holding a slot; its exceptions are raised here."""
        def call() -> T:
            with self._model_slots:
                return work()

        return self._workers.submit(call).result()

    def health(self) -> Health:
        s = self.settings
        return Health(model=s.model, device=self.device, text_prompts=self.text_prompts_ready(),
                      images=len(self.images),
                      limits=Limits(max_upload_bytes=s.max_upload_bytes, max_json_bytes=s.max_json_bytes,
                                    max_graph_bytes=s.max_graph_bytes, max_side=s.max_side,
                                    max_pixels=s.max_pixels, oversize=s.oversize, max_points=s.max_points,
                                    max_boxes=s.max_boxes, max_texts=s.max_texts, max_masks=s.max_masks,
                                    max_mask_pixels=s.max_mask_pixels, max_graph_nodes=s.max_graph_nodes))

    def text_prompts_ready(self) -> bool | None:
        """Whether text prompts work here: False when samflow.predict.text is missing, else what the latest text
        prompt showed (None before one was tried: loading the text models is left to the first that needs them)."""
        if not text_prompts_available():
            return False
        return self._text_ready

    # ------------------------------------------------------------------------------------------- images

    def add_image(self, data: bytes) -> ImageInfo:
        """Keep an uploaded image under the hash of its bytes and compute its embedding (once)."""
        s = self.settings
        image_id = content_key(UPLOAD_KEY, data)

        def work() -> tuple[Image, float]:  # decoding (up to max_side^2 pixels before downscaling), the encoder
            entry = self.images.get(image_id)
            if entry is None:
                image, original = decode_image(data, s.max_side, s.max_pixels, s.oversize)
                if image.nbytes > (self.images.max_bytes or 0):
                    raise ApiError(413, "image_too_large", f"the decoded image takes {image.nbytes} bytes, more "
                                                           f"than this service's image cache ({self.images.max_bytes})")
                entry = {"image": image}
                self.images.put(image_id, entry)
                if original != (image.size[1], image.size[0]):
                    with self._originals_lock:  # sizes as uploaded of the downscaled images (a bounded record)
                        self._originals[image_id] = original
                        while len(self._originals) > MAX_ORIGINALS:
                            self._originals.popitem(last=False)
            image = entry["image"]
            started = time.perf_counter()
            _, computed = self.segmenter.embed_status(self.model, image)
            return image, (time.perf_counter() - started) * 1e3 if computed else 0.0

        image, encode_ms = self.in_slot(work)
        h, w = image.size
        log.info("image %s… %dx%d %s", image_id[:12], w, h, f"encoded in {encode_ms:.0f} ms" if encode_ms else "cached")
        return self._info(image_id, image, encode_ms=round(encode_ms, 3))

    def image(self, image_id: str) -> Image:
        entry = self.images.get(image_id) if IMAGE_ID.match(image_id) else None
        if entry is None:
            raise ApiError(404, "unknown_image", f"no image with id {image_id!r}: it was never uploaded here or "
                                                 "has been evicted from the cache; upload it again")
        return entry["image"]

    def image_info(self, image_id: str) -> ImageInfo:
        return self._info(image_id, self.image(image_id), encode_ms=None)

    def _info(self, image_id: str, image: Image, encode_ms: float | None) -> ImageInfo:
        h, w = image.size
        ow, oh = self._originals.get(image_id) or (w, h)
        return ImageInfo(id=image_id, width=w, height=h, scale=round(w / ow, 6) if ow else 1.0, original_width=ow,
                         original_height=oh, encoded=True, encode_ms=encode_ms)

    def image_png(self, image_id: str) -> bytes:
        """The pixels the service segments as PNG (encoded in a model slot: it is work on a big array)."""
        import io

        from PIL import Image as PILImage

        image = self.image(image_id)

        def work() -> bytes:
            buffer = io.BytesIO()
            PILImage.fromarray(image.data).save(buffer, format="PNG", compress_level=1)
            return buffer.getvalue()

        return self.in_slot(work)

    # ------------------------------------------------------------------------------------------- prompts

    def segment(self, image_id: str, request: SegmentRequest) -> SegmentResponse:
        image = self.image(image_id)
        prompts = self._prompts(request, image)
        text_alone = prompts.texts is not None and prompts.coords is None and prompts.boxes is None

        def work() -> tuple[list[ObjectOut], float]:  # decoding and encoding the masks: big arrays, in a slot
            started = time.perf_counter()
            if text_alone:
                return self._text_objects(image, prompts.texts or [], request), (time.perf_counter() - started) * 1e3
            prediction = self.segmenter.predict(self.model, image, prompts, multimask=request.multimask)
            decode_ms = (time.perf_counter() - started) * 1e3
            return [ObjectOut(label=prediction.labels[n], best=int(prediction.scores[n].argmax()),
                              masks=masks_out(prediction.masks[n], prediction.scores[n], request.png))
                    for n in range(prediction.masks.shape[0])], decode_ms

        try:
            objects, decode_ms = self.in_slot(work)
        except TextPromptsUnavailable as exc:
            self._text_ready = False
            raise ApiError(422, "text_prompts_unavailable", str(exc)) from exc
        except SamflowError as exc:
            raise ApiError(422, "bad_prompt", str(exc)) from exc
        if prompts.texts is not None:
            self._text_ready = True
        h, w = image.size
        return SegmentResponse(image_id=image_id, width=w, height=h, objects=objects, decode_ms=round(decode_ms, 3))

    def _text_objects(self, image: Image, texts: list[str], request: SegmentRequest) -> list[ObjectOut]:
        """A text alone, through samflow.segment's routes (the operator's detector, else CLIP ranking with the
        operator's CLIP, else the prompt adapter with its presence check): absent objects give no object. Detections
        are capped so that the masks returned stay within this service's limits."""
        s = self.settings
        h, w = image.size
        candidates = 3 if request.multimask else 1
        cap = max(1, min(s.max_boxes, s.max_masks // candidates, s.max_mask_pixels // max(1, candidates * h * w)))
        result = segment(image, text=texts, model=self.model, segmenter=self.segmenter, device=self.device,
                         multimask=request.multimask, detector=s.text_detector, clip=s.text_clip,
                         box_threshold=s.text_box_threshold, max_detections=cap)
        best = result.best_index
        return [ObjectOut(label=result.labels[n], best=int(best[n]),
                          confidence=None if result.confidence is None else float(result.confidence[n]),
                          masks=masks_out(result.candidates[n], result.candidate_scores[n], request.png))
                for n in range(len(result))]

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
        objects = max(len(request.boxes), 1)
        single_click = len(request.points) == 1 and not request.boxes and request.text is None
        candidates = 3 if request.multimask or (request.multimask is None and single_click) else 1
        masks = objects * candidates
        if masks > s.max_masks or masks * h * w > s.max_mask_pixels:
            raise ApiError(422, "bad_prompt", f"{objects} objects x {candidates} candidate masks of {w}x{h} pixels "
                                              f"is over this service's limits ({s.max_masks} masks and "
                                              f"{s.max_mask_pixels} mask pixels per request): send fewer boxes "
                                              "or multimask false")
        try:
            return Prompts.build(request.points or None, request.labels, request.boxes or None, request.text)
        except InputError as exc:
            raise ApiError(422, "bad_prompt", str(exc)) from exc

    # ------------------------------------------------------------------------------------------- graphs

    def run_graph(self, request: GraphRunRequest) -> GraphRunResponse:
        s = self.settings
        if not s.graphs:
            raise ApiError(403, "graphs_disabled", "this service was started with --no-graphs")
        graph = self._read_graph(request)
        inputs = {name: self.policy.graph_input(graph, name, value, self.image)
                  for name, value in request.inputs.items()}
        self.policy.check(graph, inputs)
        started = time.perf_counter()
        with Scheduler(graph, cache=self.segmenter.cache, models=self.graph_models) as scheduler:
            def work() -> dict[str, Any]:  # the whole run and the encoding of its outputs
                try:
                    outputs = scheduler.run(inputs, item_id="request")
                except NodeError as exc:
                    raise ApiError(422, "node_failed", str(exc)) from exc
                except SamflowError as exc:
                    raise ApiError(422, "bad_input", str(exc)) from exc
                self.policy.check_outputs(outputs)
                return {name: payload_json(value) for name, value in outputs.items()}

            encoded = self.in_slot(work)
            stats = scheduler.stats_dict()
        return GraphRunResponse(outputs=encoded, nodes=stats, seconds=round(time.perf_counter() - started, 6))

    def _read_graph(self, request: GraphRunRequest) -> Graph:
        """The request's graph, read with the service's limits: its size, no YAML anchors or aliases, bounded
        nesting (samflow.yamlio), overrides applied; problems are 422 `bad_graph` with the line."""
        s, source = self.settings, "<request>"
        size = len(request.graph.encode("utf-8", "surrogatepass"))
        if size > s.max_graph_bytes:
            raise over_limit("bytes of graph YAML", size, s.max_graph_bytes, "max_graph_bytes")
        if len(request.overrides) > s.max_graph_nodes * 8:
            raise over_limit("overrides", len(request.overrides), s.max_graph_nodes * 8, "max_graph_nodes x 8")
        for name, value in request.overrides.items():
            json_depth(value, what=f"override {name!r}")
        try:
            data = load_with_lines(request.graph, source, allow_aliases=False)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{source}:{mark.line + 1}" if mark is not None else source
            what = getattr(exc, "problem", None) or str(exc)
            raise ApiError(422, "bad_graph", f"{where}: YAML: {what}") from exc
        try:
            if request.overrides:
                apply_overrides(data, request.overrides, source)
            return Graph.from_dict(data, source=source)
        except GraphError as exc:
            raise ApiError(422, "bad_graph", str(exc)) from exc

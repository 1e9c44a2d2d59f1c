"""Segmenter: interactive segmentation with models and image embeddings kept across calls, safe across threads.

What `samflow.segment` and `samflow serve` stand on. The encoder runs once per (model, image); every later prompt on
that image costs only the prompt encoder and mask decoder.

Models come from a ModelPool and embeddings live in an EmbeddingCache under the keys the `sam.encoder` node uses,
so a graph run with the same pool and cache (`samflow.Pipeline`, the service's graph endpoint) reuses them.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from samflow.devices import resolve_device, resolve_dtype
from samflow.engine.cache import EmbeddingCache
from samflow.engine.types import Image, ImageEmbedding
from samflow.errors import InputError
from samflow.models.sam import Sam, SamConfig, build_sam
from samflow.models.sam2 import Sam2, Sam2Config
from samflow.pool import ModelPool, default_model_pool
from samflow.predict.embeddings import (
    attach,
    encode,
    encoder_cache_key,
    predict_sets,
    predictor_for,
    to_payload,
)
from samflow.predict.predictor import POSTPROCESS_CHUNK, EncodedImage, SamPredictor
from samflow.predict.prompts import Prompts
from samflow.predict.textprompt import TextPromptsUnavailable, text_prompt_tokens

log = logging.getLogger(__name__)

# The cache-key namespace of SAM embeddings: the `sam.encoder` node's type id (see nodes/sam.py), so that graphs
# and the one-call API find each other's embeddings.
ENCODER_KEY = "sam.encoder"
# Locks serialising the encoder per image: a fixed set, striped by key, so a long-lived service never grows it.
_LOCK_STRIPES = 64


@dataclass
class SegmenterStats:
    """Counts over a Segmenter's life: encoder runs, embeddings served from the cache, decoder calls."""

    encodes: int = 0
    embedding_hits: int = 0
    decodes: int = 0
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class Prediction:
    """Masks for N prompt sets on one image.

    masks bool (N, K, H, W); scores float32 (N, K) predicted IoU; logits float32 (N, K, 4h, 4w) low-res (feed
    back as mask_input); labels: the text of each set or None. K = 3 with multimask, else 1.
    """

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    labels: list[str | None]
    prompts: Prompts = field(repr=False)


class Segmenter:
    """Models (from `models`, the process pool by default) and embeddings (in `cache`) shared by every call."""

    def __init__(self, cache: EmbeddingCache | None = None, models: ModelPool | None = None) -> None:
        self.cache = cache if cache is not None else EmbeddingCache()
        self.models = models if models is not None else default_model_pool()
        self.stats = SegmenterStats()
        self._stats_lock = threading.Lock()
        self._encode_locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    # ------------------------------------------------------------------------------------------- models

    def model(self, model: str | SamConfig | Sam2Config | Sam | Sam2 = "tiny", checkpoint: str | Path | None = None,
              device: str | torch.device | None = None, dtype: str | None = None) -> Sam | Sam2:
        """A model of the SAM family by preset name or config (loaded once per process; SAM 2 too:
        "sam2.1_hiera_tiny"... or a Sam2Config), or `model` itself when it is one."""
        if isinstance(model, (Sam, Sam2)):
            return model
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)  # "auto" -> what this device runs fastest
        spec = model if isinstance(model, str) else model.model_dump_json()
        checkpoint = str(Path(checkpoint).resolve()) if checkpoint else None
        # The same key as the sam.encoder node, so graphs and the API share one loaded model.
        key = ("sam", spec, checkpoint, device, dtype)

        def load() -> Sam | Sam2:
            if checkpoint and not Path(checkpoint).is_file():
                raise InputError(f"checkpoint not found: {checkpoint}")
            return build_sam(model, checkpoint=checkpoint, device=device, dtype=dtype)

        return self.models.get(key, load)

    # ------------------------------------------------------------------------------------------- images

    def embed(self, model: Sam | Sam2, image: Image) -> ImageEmbedding:
        """The embedding of `image` by `model`: from the cache, else computed once (concurrent callers wait)."""
        return self.embed_status(model, image)[0]

    def embed_status(self, model: Sam | Sam2, image: Image) -> tuple[ImageEmbedding, bool]:
        """`embed`, and whether this call ran the encoder (False: it came from the cache)."""
        key = encoder_cache_key(model, image)
        with self._encode_locks[zlib.crc32(key.encode()) % _LOCK_STRIPES]:
            entry = self.cache.get(key)
            if entry is not None and isinstance(entry.get("embedding"), ImageEmbedding):
                self._count(embedding_hits=1)
                return _attach(entry["embedding"], model), False
            started = time.perf_counter()
            encoded = encode(model, image.data)
            embedding = to_payload(encoded, model, image)
            self.cache.put(key, {"embedding": embedding})
            seconds = time.perf_counter() - started
            self._count(encodes=1, encode_seconds=seconds)
            log.debug("encoded %dx%d image in %.3f s", *image.size, seconds)
            return embedding, True

    # ------------------------------------------------------------------------------------------- prompts

    def predict(self, model: Sam | Sam2, image: Image | ImageEmbedding, prompts: Prompts,
                multimask: bool | None = None) -> Prediction:
        """Masks for `prompts` on `image` (embedded first when needed). multimask None: three masks for a single
        click, one otherwise (SAM's advice). The prompts go through the one rule (`Prompts.fit`): a point outside
        the image or a box wholly outside it is an InputError, boxes are clipped; `Prediction.prompts` holds them
        as used. A SAM 2 model takes points, boxes and mask_input (text prompts go into the original SAM decoder:
        TextPromptsUnavailable)."""
        # The prompt rule before any encoder run: points inside the image, boxes clipped to it.
        prompts = prompts.fit(tuple(image.original_size) if isinstance(image, ImageEmbedding) else image.size)
        embedding = image if isinstance(image, ImageEmbedding) else self.embed(model, image)
        if multimask is None:
            multimask = prompts.single_click
        started = time.perf_counter()
        if isinstance(model, Sam2):
            if prompts.texts is not None:
                raise TextPromptsUnavailable("text prompt tokens go into the original SAM decoder (through its prompt "
                                             "adapter); this is a sam2 model, which takes points, boxes and masks")
            # per call: a predictor holds state, calls may run at once; it refuses another family's embedding
            masks, scores, logits = predict_sets(predictor_for(embedding, model), prompts.coords, prompts.labels,
                                                 prompts.boxes, prompts.mask_input, multimask)
            self._count(decodes=1, decode_seconds=time.perf_counter() - started)
            return Prediction(masks, scores, logits, prompts.labels_per_set(), prompts)
        predictor = SamPredictor(model)  # per call: a predictor holds state, calls may run at once
        predictor.set_image_embedding(EncodedImage.of(embedding))  # refuses another family's embedding
        if prompts.texts is None:
            masks, scores, logits = predictor.predict(prompts.coords, prompts.labels, prompts.boxes,
                                                      prompts.mask_input, multimask_output=multimask)
            if masks.ndim == 3:  # the predictor drops the batch axis of a single unbatched prompt
                masks, scores, logits = masks[None], scores[None], logits[None]
        else:
            masks, scores, logits = _predict_with_text(predictor, prompts, multimask)
        self._count(decodes=1, decode_seconds=time.perf_counter() - started)
        return Prediction(masks, scores.astype(np.float32), logits.astype(np.float32), prompts.labels_per_set(),
                          prompts)

    def _count(self, **increments: float) -> None:
        with self._stats_lock:
            for name, value in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)


def _attach(embedding: ImageEmbedding, model: Sam | Sam2) -> ImageEmbedding:
    """An embedding read from a disk cache comes back on the CPU without its model: give both back."""
    return attach(embedding, model)


@torch.no_grad()
def _predict_with_text(predictor: SamPredictor, prompts: Prompts, multimask: bool
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SamPredictor.predict with text prompt tokens placed after the point and box tokens: one decoder call."""
    model = predictor.model
    p = prompts.broadcast()
    device, size = predictor.device, predictor.original_size
    points = None
    if p.coords is not None:
        coords = torch.as_tensor(predictor.transform.apply_coords(p.coords, size), dtype=torch.float, device=device)
        points = (coords, torch.as_tensor(p.labels, dtype=torch.int, device=device))
    boxes = None
    if p.boxes is not None:
        boxes = torch.as_tensor(predictor.transform.apply_boxes(p.boxes, size), dtype=torch.float, device=device)
    masks_in = torch.as_tensor(p.mask_input, dtype=torch.float, device=device) if p.mask_input is not None else None
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks_in)
    tokens = text_prompt_tokens(model, p.texts or [], image_embeddings=predictor.features)
    n = tokens.shape[0]
    sparse = torch.cat([sparse.expand(n, -1, -1), tokens.to(sparse.dtype)], dim=1)
    dense = dense.expand(n, -1, -1, -1)
    low_res, iou = model.mask_decoder(image_embeddings=predictor.features,
                                      image_pe=model.prompt_encoder.get_dense_pe(),
                                      sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                      multimask_output=multimask)
    chunks = [model.postprocess_masks(low_res[i : i + POSTPROCESS_CHUNK], predictor.input_size, size)
              > model.mask_threshold for i in range(0, n, POSTPROCESS_CHUNK)]
    return (torch.cat(chunks).cpu().numpy(), iou.float().cpu().numpy(), low_res.float().cpu().numpy())


_default: Segmenter | None = None
_default_lock = threading.Lock()


def default_segmenter() -> Segmenter:
    """The process-wide Segmenter of `samflow.segment` (models from the default pool, embeddings cached)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Segmenter()
        return _default


__all__ = ["Prediction", "Segmenter", "SegmenterStats", "default_segmenter"]


"""Image embeddings between the library and the graph: the encoder's cache key and the conversions between the
predictor's `EncodedImage` and the graph's `ImageEmbedding` payload, in one place for the `sam.encoder` node, the
Segmenter (`samflow.segment`, the service) and the automatic mask generator's crop cache.

The key names the model family as well as the weights' fingerprint, and the payload carries the family (and, for
HQ-SAM, the early encoder features), so an embedding is only ever served to, and decoded by, its own family.
"""

from __future__ import annotations

import dataclasses

from samflow.engine.cache import content_key
from samflow.engine.types import Image, ImageEmbedding
from samflow.models.sam.checkpoint import model_fingerprint
from samflow.models.sam.sam import Sam
from samflow.predict.predictor import EncodedImage

# The cache-key namespace of SAM embeddings: the `sam.encoder` node's type id (nodes/sam.py).
ENCODER_KEY = "sam.encoder"


def encoder_cache_key(model: Sam, image: Image) -> str:
    """The content key of `model`'s embedding of `image`: node id, model family, weights fingerprint, pixels."""
    return content_key(ENCODER_KEY, model.family, model_fingerprint(model), image)


def to_payload(encoded: EncodedImage, model: Sam, image: Image) -> ImageEmbedding:
    """The graph payload of an embedding `model` made of `image`."""
    return ImageEmbedding(encoded.features, encoded.original_size, encoded.input_size,
                          model_key=model_fingerprint(model), image_hash=image.content_hash, model=model,
                          family=model.family, interm=encoded.interm)


def attach(embedding: ImageEmbedding, model: Sam) -> ImageEmbedding:
    """An embedding on `model`'s device, in its dtype, referring to it (one read from a disk cache comes back on the
    CPU without its model). The early HQ-SAM features keep their dtype (fp32 with bfloat16 weights)."""
    if embedding.model is model and embedding.features.device == model.device:
        return embedding
    features = embedding.features.to(device=model.device, dtype=model.dtype)
    interm = None if embedding.interm is None else embedding.interm.to(device=model.device)
    return dataclasses.replace(embedding, features=features, interm=interm, model=model)


__all__ = ["ENCODER_KEY", "attach", "encoder_cache_key", "to_payload"]

"""Image embeddings between the library and the graph: the encoder's cache key, the conversions between the
predictors' encoded images (`EncodedImage`, SAM 2's `Sam2EncodedImage`) and the graph's `ImageEmbedding` payload,
and the predictor of an embedding's family, in one place for the `sam.encoder` / `sam.decoder` / `sam.auto`
nodes, the Segmenter (`samflow.segment`, the service) and the automatic mask generator's crop cache.

The key names the model family as well as the weights' fingerprint, and the payload carries the family (and, for
HQ-SAM, the early encoder features; for SAM 2, the high-resolution features its decoder's skip connections take,
as `extras`), so an embedding is only ever served to, and decoded by, its own family.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from samflow.engine.cache import content_key
from samflow.engine.types import Image, ImageEmbedding
from samflow.models.sam.checkpoint import model_fingerprint
from samflow.models.sam.sam import Sam
from samflow.models.sam2.model import Sam2
from samflow.predict.predictor import EncodedImage, SamPredictor
from samflow.predict.sam2_predictor import Sam2EncodedImage, Sam2Predictor

# The cache-key namespace of SAM embeddings: the `sam.encoder` node's type id (nodes/sam.py).
ENCODER_KEY = "sam.encoder"


def encoder_cache_key(model: Sam | Sam2, image: Image) -> str:
    """The content key of `model`'s embedding of `image`: node id, model family, weights fingerprint, pixels."""
    return content_key(ENCODER_KEY, model.family, model_fingerprint(model), image)


def encode(model: Sam | Sam2, image: np.ndarray) -> EncodedImage | Sam2EncodedImage:
    """`model`'s embedding of an RGB uint8 (H, W, 3) image, by the predictor of its family."""
    if isinstance(model, Sam2):
        return Sam2Predictor(model).encode(image)
    return SamPredictor(model).encode(image)


def to_payload(encoded: EncodedImage | Sam2EncodedImage, model: Sam | Sam2, image: Image) -> ImageEmbedding:
    """The graph payload of an embedding `model` made of `image` (SAM 2: the image embedding as `features`, the
    high-resolution features as `extras`)."""
    if isinstance(encoded, Sam2EncodedImage):
        return ImageEmbedding(encoded.features.image_embed, encoded.original_size, encoded.input_size,
                              model_key=model_fingerprint(model), image_hash=image.content_hash, model=model,
                              family=model.family, extras=encoded.extras)
    return ImageEmbedding(encoded.features, encoded.original_size, encoded.input_size,
                          model_key=model_fingerprint(model), image_hash=image.content_hash, model=model,
                          family=model.family, interm=encoded.interm)


def from_payload(embedding: ImageEmbedding) -> EncodedImage | Sam2EncodedImage:
    """The predictors' form of a graph embedding: a Sam2EncodedImage for SAM 2's, else an EncodedImage."""
    if embedding.family == "sam2" or (embedding.family is None and isinstance(embedding.model, Sam2)):
        return Sam2EncodedImage.of(embedding)
    return EncodedImage.of(embedding)


def attach(embedding: ImageEmbedding, model: Sam | Sam2) -> ImageEmbedding:
    """An embedding on `model`'s device, in its dtype, referring to it (one read from a disk cache comes back on the
    CPU without its model). The early HQ-SAM features keep their dtype (fp32 with bfloat16 weights)."""
    if embedding.model is model and embedding.features.device == model.device:
        return embedding
    features = embedding.features.to(device=model.device, dtype=model.dtype)
    interm = None if embedding.interm is None else embedding.interm.to(device=model.device)
    extras = {name: t.to(device=model.device, dtype=model.dtype) for name, t in embedding.extras.items()}
    return dataclasses.replace(embedding, features=features, interm=interm, extras=extras, model=model)


def predictor_for(embedding: ImageEmbedding | EncodedImage | Sam2EncodedImage,
                  model: Sam | Sam2 | None = None) -> SamPredictor | Sam2Predictor:
    """A predictor of `model`'s family (default: the embedding's model) with `embedding` made current; an
    embedding of another family is an InputError naming both."""
    model = model if model is not None else getattr(embedding, "model", None)
    if isinstance(model, Sam2):
        predictor: SamPredictor | Sam2Predictor = Sam2Predictor(model)
        predictor.set_image_embedding(embedding)
    else:
        predictor = SamPredictor(model)  # type: ignore[arg-type]
        predictor.set_image_embedding(EncodedImage.of(embedding))
    return predictor


def predict_sets(predictor: SamPredictor | Sam2Predictor, coords: np.ndarray | None, labels: np.ndarray | None,
                 boxes: np.ndarray | None, mask_input: np.ndarray | None,
                 multimask: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N prompt sets (already fitted to the image) on the predictor's current embedding, either family: masks bool
    (N, K, H, W), scores float32 (N, K), low-res logits float32 (N, K, 4h, 4w)."""
    masks, scores, logits = predictor.predict(point_coords=coords, point_labels=labels, box=boxes,
                                              mask_input=mask_input, multimask_output=multimask)
    if masks.ndim == 3:  # the predictors drop the batch axis of a single prompt set
        masks, scores, logits = masks[None], scores[None], logits[None]
    if masks.dtype != bool:  # SAM 2's predictor returns 0/1 floats, as the official one
        masks = masks > 0.5
    return masks, scores.astype(np.float32), logits.astype(np.float32)


def outputs_per_prompt(model: Sam | Sam2, multimask: bool) -> int:
    """K, the masks a decoder call gives per prompt set (HQ-SAM: 1 either way)."""
    decoder = model.sam_mask_decoder if isinstance(model, Sam2) else model.mask_decoder
    return decoder.outputs_per_prompt(multimask)


__all__ = ["ENCODER_KEY", "attach", "encode", "encoder_cache_key", "from_payload", "outputs_per_prompt",
           "predict_sets", "predictor_for", "to_payload"]

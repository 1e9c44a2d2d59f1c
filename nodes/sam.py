"""SAM as two nodes: `sam.encoder` (image -> embedding, the expensive step) and `sam.decoder` (embedding + prompts
-> masks, cheap). Thin adapters over samflow.models.sam / samflow.models.sam2 and their predictors (SamPredictor,
Sam2Predictor), for the whole family: SAM, MobileSAM, HQ-SAM and SAM 2 (images).

- The encoder gets its model from the scheduler's pool (one per weights/device/dtype) and declares a cache key
  (image content + model fingerprint), so an embedding is computed once per (model, image) and reruns can skip it.
- Decoders fed by one embedding with prompts of the same layout declare equal batch keys; the scheduler then hands
  them to `run_batch`, which decodes all their prompt sets in one forward pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from samflow.devices import resolve_device, resolve_dtype
from samflow.engine.context import ItemContext
from samflow.engine.node import Input, Node, NodeParams
from samflow.engine.registry import register
from samflow.engine.types import (
    Boxes,
    Image,
    ImageEmbedding,
    MaskLogits,
    Masks,
    Payload,
    Points,
    Scores,
    TextEmbedding,
)
from samflow.errors import InputError, NodeError
from samflow.models.sam.config import FAMILIES, PRESETS, SamConfig, presets_help
from samflow.models.sam2.config import PRESETS as SAM2_PRESETS
from samflow.models.sam2.config import Sam2Config
from samflow.models.sam2.model import FAMILY as SAM2_FAMILY

Family = Literal["sam", "mobile_sam", "sam_hq", "sam2"]
assert set(Family.__args__) == {*FAMILIES, SAM2_FAMILY}  # type: ignore[attr-defined]


def _all_presets_help() -> str:
    return f"{presets_help()}; {SAM2_FAMILY}: {', '.join(SAM2_PRESETS)}"


class EncoderParams(NodeParams):
    model: str | SamConfig | Sam2Config = Field(
        "tiny", description=f"a preset name ({_all_presets_help()}) or SamConfig (or Sam2Config) fields")
    checkpoint: str | None = Field(None, description="weights file (.pth or .safetensors); default: shipped or random")
    device: str | None = Field(None, description="cpu, cuda, cuda:1...; default cuda when available")
    dtype: Literal["float32", "float16", "bfloat16", "auto"] | None = Field(
        None, description="default float32; auto: bfloat16 where the device runs it faster (AMX / AVX512-BF16 CPUs, "
                          "GPUs), else float32")

    @field_validator("model")
    @classmethod
    def _known_preset(cls, value: str | SamConfig | Sam2Config) -> str | SamConfig | Sam2Config:
        if isinstance(value, str) and value not in PRESETS and value not in SAM2_PRESETS:
            raise ValueError(f"unknown SAM preset {value!r}; known: {', '.join(sorted(PRESETS))}; SAM 2: "
                             f"{', '.join(SAM2_PRESETS)} (or give a mapping of SamConfig or Sam2Config fields)")
        return value


def _family(model: str | SamConfig | Sam2Config) -> str:
    if isinstance(model, str):
        return (PRESETS.get(model) or SAM2_PRESETS[model]).family
    return model.family


@register("sam.encoder")
class SamEncoder(Node):
    """Embed an image with a SAM-family image encoder: SAM's ViT, MobileSAM's TinyViT, HQ-SAM's ViT with its early
    features, SAM 2's Hiera with its high-resolution features (once per model and image; shared by every decoder of
    that family)."""

    Params = EncoderParams
    inputs = {"image": Input(Image)}
    outputs = {"embedding": ImageEmbedding}

    def model(self, ctx: ItemContext) -> Any:
        """The SAM model these params name, from the process-wide pool."""

        p = self.params
        device = resolve_device(p.device)
        spec = p.model if isinstance(p.model, str) else p.model.model_dump_json()
        checkpoint = str(Path(p.checkpoint).resolve()) if p.checkpoint else None
        dtype = resolve_dtype(p.dtype, device)
        key = ("sam", spec, checkpoint, device, dtype)
        return ctx.models.get(key, lambda: self._build(device, dtype))

    def _build(self, device: str, dtype: str) -> Any:
        from samflow.models.sam import build_sam

        p = self.params
        if p.checkpoint and not Path(p.checkpoint).is_file():
            raise InputError(f"checkpoint not found: {p.checkpoint}")
        return build_sam(p.model, checkpoint=p.checkpoint, device=device, dtype=dtype)

    @classmethod
    def output_facts(cls, params: NodeParams, port: str) -> Mapping[str, str]:
        assert isinstance(params, EncoderParams)
        model = params.model if isinstance(params.model, str) else f"{type(params.model).__name__} fields"
        return {"family": _family(params.model), "model": model}

    @classmethod
    def summary(cls, params: NodeParams) -> str | None:
        assert isinstance(params, EncoderParams)
        return params.model if isinstance(params.model, str) else f"custom {params.model.family}"

    def cache_key(self, ctx: ItemContext, image: Image) -> str:
        # node id, model family, weights fingerprint, pixels (the library's key: samflow.predict.embeddings)
        from samflow.predict.embeddings import encoder_cache_key

        return encoder_cache_key(self.model(ctx), image)

    def run(self, ctx: ItemContext, image: Image) -> dict[str, ImageEmbedding]:
        from samflow.predict.embeddings import encode, to_payload

        model = self.model(ctx)
        return {"embedding": to_payload(encode(model, image.data), model, image)}

    def restore(self, ctx: ItemContext, outputs: Mapping[str, Payload]) -> dict[str, ImageEmbedding]:
        # From disk the features come back on the CPU and without their model: put both back.
        from samflow.predict.embeddings import attach

        embedding = outputs["embedding"]
        assert isinstance(embedding, ImageEmbedding)
        return {"embedding": attach(embedding, self.model(ctx))}


class DecoderParams(NodeParams):
    multimask: bool = Field(True, description="three masks per prompt (ambiguity) instead of one (HQ-SAM: one "
                                              "either way, the best of the three plus the HQ token's mask)")
    family: Family | None = Field(None, description="the model family this decoder is for (sam, mobile_sam, "
                                                    "sam_hq, sam2): an embedding of another family is an error (at "
                                                    "validation when its encoder's model says it); default: any, "
                                                    "decoded by the model that made it")
    hq_token_only: bool = Field(False, description="HQ-SAM only: the HQ token's mask alone (default: the SAM mask "
                                                   "plus the HQ token's, as HQ-SAM's predictor)")
    text_adapter: str | None = Field(None, description="prompt adapter for the text input (default: the one "
                                                       "shipped for tiny)")


@dataclasses.dataclass
class _Prompts:
    """One decoder call's prompts with a common batch size n (a set of 1 is repeated to n)."""

    n: int
    coords: np.ndarray | None
    labels: np.ndarray | None
    boxes: np.ndarray | None
    masks: np.ndarray | None
    text: np.ndarray | None = None


@register("sam.decoder")
class SamDecoder(Node):
    """Decode masks for point / box / mask prompts on an image embedding (the prompt encoder + mask decoder of the
    model that made it: SAM, MobileSAM, HQ-SAM or SAM 2)."""

    Params = DecoderParams
    inputs = {
        "embedding": Input(ImageEmbedding, doc="from sam.encoder"),
        "points": Input(Points, optional=True),
        "boxes": Input(Boxes, optional=True),
        "masks": Input(MaskLogits, optional=True, doc="low-res logits of an earlier decoder (refinement)"),
        "text": Input(TextEmbedding, optional=True, doc="from clip.text: prompt tokens via the text adapter"),
    }
    outputs = {"masks": Masks, "scores": Scores, "logits": MaskLogits}

    @classmethod
    def input_problem(cls, params: NodeParams, port: str, source: str, facts: Mapping[str, str]) -> str | None:
        assert isinstance(params, DecoderParams)
        family = facts.get("family")
        if port != "embedding" or family is None:
            return None
        made_by = f"{source} is a {family} embedding (sam.encoder model: {facts.get('model')})"
        if params.family is not None and params.family != family:
            return (f"{made_by} but this decoder is for {params.family} (param family): a decoder takes only "
                    f"embeddings of its own family")
        if params.hq_token_only and family != "sam_hq":
            return f"{made_by} but hq_token_only needs a sam_hq (HQ-SAM) embedding"
        return None

    def run(self, ctx: ItemContext, embedding: ImageEmbedding, points: Points | None = None,
            boxes: Boxes | None = None, masks: MaskLogits | None = None,
            text: TextEmbedding | None = None) -> dict[str, Payload]:
        return self.run_batch(ctx, [(self, {"embedding": embedding, "points": points, "boxes": boxes,
                                            "masks": masks, "text": text})])[0]

    def batch_key(self, ctx: ItemContext, embedding: ImageEmbedding, points: Points | None = None,
                  boxes: Boxes | None = None, masks: MaskLogits | None = None,
                  text: TextEmbedding | None = None) -> Hashable:
        # Fusable when the token layout matches: same embedding object, same point count, same prompt kinds.
        return (id(embedding), self.params.multimask, self.params.hq_token_only,
                None if points is None else points.coords.shape[1],
                boxes is not None, masks is not None,
                None if text is None else (text.model_key, self.params.text_adapter))

    @classmethod
    def run_batch(cls, ctx: ItemContext, calls: Sequence[tuple[Node, Mapping[str, Any]]]) -> list[dict[str, Payload]]:
        from samflow.predict.predictor import EncodedImage, SamPredictor

        embedding: ImageEmbedding = calls[0][1]["embedding"]
        params = calls[0][0].params
        multimask = params.multimask
        if embedding.model is None:
            raise NodeError("the embedding carries no model; produce it with sam.encoder")
        family = _check_family(embedding, params.family, params.hq_token_only)
        size = tuple(embedding.original_size)
        prompts = [_prompts(inputs, size) for _, inputs in calls]
        if sum(p.n for p in prompts) == 0:  # nothing to decode (a frame without gaze, an image without detections)
            return [_no_masks(embedding, multimask) for _ in calls]
        first = prompts[0]
        joined = {name: None if getattr(first, name) is None else np.concatenate([getattr(p, name) for p in prompts])
                  for name in ("coords", "labels", "boxes", "masks")}
        if family == SAM2_FAMILY:
            from samflow.predict.embeddings import predict_sets, predictor_for

            if first.text is not None:
                raise NodeError("the text input reaches the original SAM decoder (a sam embedding, through the prompt "
                                "adapter); this is a sam2 embedding: prompt SAM 2 with points or boxes")
            # per call: the predictor holds state, branches may run at once
            masks, scores, logits = predict_sets(predictor_for(embedding), joined["coords"], joined["labels"],
                                                 joined["boxes"], joined["masks"], multimask)
            return _split(prompts, masks, scores, logits)
        text_tokens = _text_tokens(ctx, calls, prompts)
        if text_tokens is not None:
            from samflow.predict.text import TextSamPredictor

            predictor = TextSamPredictor(embedding.model)
        else:
            predictor = SamPredictor(embedding.model)  # per call: the predictor holds state, branches may run at once
        predictor.set_image_embedding(EncodedImage.of(embedding))
        masks, scores, logits = predictor.predict(point_coords=joined["coords"], point_labels=joined["labels"],
                                                  box=joined["boxes"], mask_input=joined["masks"],
                                                  multimask_output=multimask,
                                                  **({"hq_token_only": True} if params.hq_token_only else {}),
                                                  **({} if text_tokens is None else {"text_tokens": text_tokens}))
        if masks.ndim == 3:  # the predictor drops the batch axis for a single unbatched prompt
            masks, scores, logits = masks[None], scores[None], logits[None]
        return _split(prompts, masks, scores, logits)


def _split(prompts: list[_Prompts], masks: np.ndarray, scores: np.ndarray,
           logits: np.ndarray) -> list[dict[str, Payload]]:
    """The outputs of each fused call: its rows of the joint decoder call's masks, scores and logits."""
    results = []
    start = 0
    for p in prompts:
        part = slice(start, start + p.n)
        start += p.n
        results.append({"masks": Masks(masks[part], scores[part]), "scores": Scores(scores[part]),
                        "logits": MaskLogits(logits[part], scores[part])})
    return results


def _check_family(embedding: ImageEmbedding, wanted: str | None, hq_token_only: bool) -> str:
    """The embedding's family; NodeError naming both families when it meets a decoder (or a model) of another."""
    model_family = embedding.model.family
    family = embedding.family or model_family
    if family != model_family:
        raise NodeError(f"the embedding is a {family} embedding but carries a {model_family} model: a decoder takes "
                        "only embeddings of its own family (produce it with sam.encoder)")
    if wanted is not None and wanted != family:
        raise NodeError(f"the embedding is a {family} embedding but this decoder is for {wanted} (param family): a "
                        "decoder takes only embeddings of its own family")
    if hq_token_only and family != "sam_hq":
        raise NodeError(f"hq_token_only needs a sam_hq (HQ-SAM) embedding; this one is {family}")
    return family


def _no_masks(embedding: ImageEmbedding, multimask: bool) -> dict[str, Payload]:
    """Outputs for zero prompt sets: (0, K, ...) arrays, as a batch of N prompt sets with N = 0 would give."""
    from samflow.predict.embeddings import outputs_per_prompt

    k = outputs_per_prompt(embedding.model, multimask)
    h, w = embedding.original_size
    low_res = tuple(4 * s for s in embedding.features.shape[-2:])
    scores = np.zeros((0, k), np.float32)
    return {"masks": Masks(np.zeros((0, k, h, w), bool), scores), "scores": Scores(scores),
            "logits": MaskLogits(np.zeros((0, k, *low_res), np.float32), scores)}


def _text_tokens(ctx: ItemContext, calls: Sequence[tuple[Node, Mapping[str, Any]]], prompts: list[_Prompts]
                 ) -> Any:
    """Prompt tokens (N, K, C) of the calls' text inputs (repeated like the other prompts), or None."""
    if prompts[0].text is None:
        return None
    from samflow.predict.text import get_adapter, text_tokens_for

    embedding: ImageEmbedding = calls[0][1]["embedding"]
    text: TextEmbedding = calls[0][1]["text"]
    adapter = get_adapter(calls[0][0].params.text_adapter or _default_adapter(), str(embedding.model.device),
                          pool=ctx.models)
    return text_tokens_for(adapter, np.concatenate([p.text for p in prompts]), text.model_key, embedding.model,
                           embedding.features)


def _default_adapter() -> str:
    from samflow.predict.text import default_adapter_path

    return str(default_adapter_path("tiny"))


def _prompts(inputs: Mapping[str, Any], size: tuple[int, int]) -> _Prompts:
    """One call's prompts, checked by the library's rule on an image of `size` (H, W): counts within the
    documented limits, points inside the image, boxes clipped to it (samflow.predict.prompts)."""
    from samflow.predict.prompts import MAX_POINTS_PER_SET, MAX_PROMPT_SETS, check_count, fit_to_image

    points: Points | None = inputs.get("points")
    boxes: Boxes | None = inputs.get("boxes")
    masks: MaskLogits | None = inputs.get("masks")
    text: TextEmbedding | None = inputs.get("text")
    sizes = {len(x) for x in (points, boxes, text) if x is not None} | (
        {masks.data.shape[0]} if masks is not None else set())
    n = max(sizes, default=1)
    if sizes - {1, n}:
        raise InputError(f"prompt set counts disagree: {sorted(sizes)} (points, boxes, masks and text need equal N, "
                         "or 1)")
    check_count(n, MAX_PROMPT_SETS, "prompt sets (objects)")
    if points is not None:
        check_count(points.coords.shape[1], MAX_POINTS_PER_SET, "points per set")
    coords, xyxy = fit_to_image(points.coords if points is not None else None,
                                boxes.xyxy if boxes is not None else None, size,
                                labels=points.labels if points is not None else None)

    def repeat(array: np.ndarray | None) -> np.ndarray | None:
        if array is None or array.shape[0] == n:
            return array
        return np.repeat(array, n, axis=0)

    return _Prompts(n, repeat(coords), repeat(points.labels if points is not None else None), repeat(xyxy),
                    repeat(masks.best() if masks is not None else None),
                    repeat(text.data if text is not None else None))

"""The official ONNX decoder interface over samflow's prompt encoder and mask decoder, as a traceable module.

Inputs and outputs are those of segment-anything's `SamOnnxModel` (scripts/export_onnx_model.py), so applications
written for the official export (its web demo among them) take samflow's unchanged:

- `image_embeddings` (1, C, h, w); `point_coords` (1, N, 2) float, in the resized-longest-side frame;
  `point_labels` (1, N) float: 1 positive, 0 negative, 2 and 3 a box's top-left and bottom-right corners, -1
  padding (the official padding point (0, 0) with label -1 goes with every prompt that has no box);
  `mask_input` (1, 1, 4h, 4w) low-res logits, used when `has_mask_input` (1,) is 1; `orig_im_size` (2,) float
  (H, W) of the original image.
- `masks` (1, K, H, W) logits at the original size (threshold at 0), `iou_predictions` (1, K), `low_res_masks`
  (1, K, 4h, 4w). K = 1 with `return_single_mask`, else all the decoder's mask tokens (4 for SAM: the single-mask
  output first, then the three ambiguity-aware ones), as the official export returns them.

With `return_single_mask` the mask is chosen as the official export chooses it, without control flow: mask 0's
score is shifted by 1000 * (N - 2.5), so one click (plus padding) or a lone box (two corners) gets the best of the
multimask outputs and anything with three or more points gets the single-mask output. With `use_stability_score`
the scores (and so the choice) are the low-res masks' stability scores instead of the predicted IoUs.

Unlike the official module, the crop to the resized image size is computed in the graph from `orig_im_size`
(the official one becomes a constant of the example image when traced), so masks are right for every image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samflow.models.sam import Sam
from samflow.models.sam.factored_tokens import ImageCache
from samflow.ops.amg import stability_score

DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input",
                  "orig_im_size")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
# The official selection weight: mask 0's score moves by this much per point above 2.5.
SINGLE_MASK_REWEIGHT = 1000.0
STABILITY_SCORE_OFFSET = 1.0


class OnnxDecoder(nn.Module):
    """Prompt encoder + mask decoder + postprocessing of a samflow `Sam`, with the official ONNX signature."""

    def __init__(self, model: Sam, *, return_single_mask: bool, use_stability_score: bool = False) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.img_size = model.config.image_size
        self.mask_threshold = float(model.mask_threshold)
        self.return_single_mask = return_single_mask
        self.use_stability_score = use_stability_score
        reweight = torch.zeros(1, model.mask_decoder.num_mask_tokens)
        reweight[0, 0] = SINGLE_MASK_REWEIGHT
        self.register_buffer("score_reweight", reweight, persistent=False)

    def embed_points(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """(1, N, 2) coordinates and (1, N) labels -> (1, N, C) sparse tokens, as samflow's prompt encoder embeds
        points (label -1: padding, 0/1: negative/positive) and box corners (labels 2 and 3)."""
        encoder = self.prompt_encoder
        coords = (point_coords + 0.5) / self.img_size  # the pixel centre, in [0, 1] of the (square) input frame
        embedding = encoder.pe_layer._pe_encoding(coords)
        labels = point_labels.unsqueeze(-1)
        embedding = torch.where(labels == -1, encoder.not_a_point_embed.weight.to(embedding.dtype), embedding)
        for i, point_embedding in enumerate(encoder.point_embeddings):
            embedding = embedding + torch.where(labels == i, point_embedding.weight, 0.0)
        return embedding

    def embed_masks(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """The mask prompt's dense embedding when `has_mask_input` is 1, the no-mask embedding when it is 0."""
        encoder = self.prompt_encoder
        dense = has_mask_input * encoder.mask_downscaling(mask_input)
        return dense + (1 - has_mask_input) * encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)

    def select_single(self, masks: torch.Tensor, scores: torch.Tensor,
                      num_points: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """The official single-mask choice (see the module docstring): (B, K, ...) -> (B, 1, ...)."""
        score = scores + (num_points - 2.5) * self.score_reweight
        best = torch.argmax(score, dim=1, keepdim=True)  # (B, 1)
        scores = torch.gather(scores, 1, best)
        index = best[:, :, None, None].expand(-1, -1, masks.shape[2], masks.shape[3])
        return torch.gather(masks, 1, index), scores

    def upscale(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """Low-res logits -> logits at `orig_im_size`: up to the padded input square, cropped to the resized image,
        then resized to the original (as `Sam.postprocess_masks`), every size computed in the graph."""
        size = self.img_size
        masks = F.interpolate(masks, (size, size), mode="bilinear", align_corners=False)
        # The resized image's size, rounded as ResizeLongestSide does (in float64, like its Python arithmetic).
        original = orig_im_size.to(torch.float64)
        scale = size / torch.max(original)
        resized = torch.floor(original * scale + 0.5).to(torch.int64)
        # index_select over a range keeps the crop dynamic; a slice would be traced to the example's constants.
        masks = torch.index_select(masks, 2, torch.arange(resized[0], device=masks.device))
        masks = torch.index_select(masks, 3, torch.arange(resized[1], device=masks.device))
        h_w = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(h_w[0], h_w[1]), mode="bilinear", align_corners=False)

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                mask_input: torch.Tensor, has_mask_input: torch.Tensor,
                orig_im_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sparse = self.embed_points(point_coords, point_labels)
        dense = self.embed_masks(mask_input, has_mask_input)
        low_res, scores = self.mask_decoder.predict_masks(image_embeddings, self.prompt_encoder.get_dense_pe(),
                                                          sparse, dense)
        if self.use_stability_score:
            scores = stability_score(low_res, self.mask_threshold, STABILITY_SCORE_OFFSET)
        if self.return_single_mask:
            low_res, scores = self.select_single(low_res, scores, point_coords.shape[1])
        # The interface has batch 1: fixed shapes here let the graph declare its outputs' sizes.
        k = 1 if self.return_single_mask else self.mask_decoder.num_mask_tokens
        low_res, scores = low_res.reshape(1, k, *self.prompt_encoder.mask_input_size), scores.reshape(1, k)
        return self.upscale(low_res, orig_im_size), scores, low_res


# The browser app's decoder: the official inputs but `orig_im_size`, and only low-res outputs.
BROWSER_DECODER_INPUTS = DECODER_INPUTS[:-1]
BROWSER_DECODER_OUTPUTS = ("iou_predictions", "low_res_masks")


class BrowserDecoder(OnnxDecoder):
    """The three ambiguity-aware masks as low-res logits (1, 3, 4h, 4w) with their IoU predictions (1, 3), for
    the browser app (samflow/app/decode.js): the upscaling to the image is left to the page, which resizes only
    the mask it shows, with the same separable weights as `Sam.postprocess_masks`. In onnxruntime-web the
    official graph's two full-size resizes of all four masks take about a quarter of a click."""

    def __init__(self, model: Sam) -> None:
        super().__init__(model, return_single_mask=False)

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sparse = self.embed_points(point_coords, point_labels)
        dense = self.embed_masks(mask_input, has_mask_input)
        low_res, scores = self.mask_decoder.predict_masks(image_embeddings, self.prompt_encoder.get_dense_pe(),
                                                          sparse, dense)
        k = self.mask_decoder.num_multimask_outputs
        return scores[:, 1:].reshape(1, k), low_res[:, 1:].reshape(1, k, *self.prompt_encoder.mask_input_size)


# The browser app's decoder split in two at the image (samflow.models.sam.factored_tokens): a per-image part from
# the embedding to the products of its tokens that the decoder reads, and a per-click part from those and the
# prompt to the same outputs as BrowserDecoder without a mask input. Per click it does about a third of the work.
FACTORED_PROMPT_INPUTS = ("point_coords", "point_labels")
IMAGE_PRODUCT_PREFIX = "image_product_"


# The prompt the per-image part is traced with (one click and the padding point): the products do not depend on it.
_ANY_CLICK = ((1.0, 1.0), (0.0, 0.0)), (1.0, -1.0)


class _FactoredBrowserDecoder(OnnxDecoder):
    """What both halves share: BrowserDecoder's outputs (no mask input) through the factored decoder on a cache."""

    def __init__(self, model: Sam) -> None:
        super().__init__(model, return_single_mask=False)
        grid = model.prompt_encoder.image_embedding_size
        self.image_shape = (grid[0] * grid[1], model.prompt_encoder.embed_dim)

    def factored_masks(self, cache: ImageCache, point_coords: torch.Tensor,
                       point_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        decoder, encoder = self.mask_decoder, self.prompt_encoder
        sparse = self.embed_points(point_coords, point_labels)
        tokens = torch.cat([decoder.output_token_weights().unsqueeze(0).to(sparse.dtype), sparse], dim=1)
        tokens_out, image_tokens = decoder.transformer.forward_factored(None, encoder.get_dense_pe(), tokens,
                                                                        cache=cache,
                                                                        outputs=decoder.num_mask_tokens + 1)
        low_res = decoder.masks_from_tokens(tokens_out, image_tokens, encoder.image_embedding_size)
        k = decoder.num_multimask_outputs
        scores = decoder.predict_iou(tokens_out)
        return scores[:, 1:].reshape(1, k), low_res[:, 1:].reshape(1, k, *encoder.mask_input_size)

    def image_cache(self, image_embeddings: torch.Tensor) -> ImageCache:
        """The cache of an image's products, filled by decoding one click on it (the shared image tokens are the
        embedding plus the no-mask dense embedding, as in MaskDecoder.attend)."""
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        cache = ImageCache((image_embeddings + no_mask).flatten(2).permute(0, 2, 1)[0])
        coords, labels = _ANY_CLICK
        self.factored_masks(cache, torch.tensor([coords]), torch.tensor([labels]))
        return cache


class BrowserImageProducts(_FactoredBrowserDecoder):
    """Per image: `image_embeddings` (1, C, h, w) -> the products its factored decoder reads (image_product_i)."""

    def __init__(self, model: Sam) -> None:
        super().__init__(model)
        with torch.no_grad():  # the entries it reads, in order (they do not depend on the image or the prompt)
            self.keys = list(self.image_cache(torch.zeros(1, self.image_shape[1], *model.prompt_encoder
                                                          .image_embedding_size)).image_keys)

    def forward(self, image_embeddings: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cache = self.image_cache(image_embeddings)
        return tuple(cache.value(k) for k in self.keys)


class BrowserFactoredDecoder(_FactoredBrowserDecoder):
    """Per click: `point_coords`, `point_labels` and the image's products -> BrowserDecoder's `iou_predictions`
    (1, 3) and `low_res_masks` (1, 3, 4h, 4w) for a prompt without a mask input."""

    def __init__(self, model: Sam, keys: list) -> None:
        super().__init__(model)
        self.keys = keys

    def forward(self, point_coords: torch.Tensor, point_labels: torch.Tensor,
                *products: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cache = ImageCache(None, dict(zip(self.keys, products)), shape=self.image_shape, dtype=point_coords.dtype,
                           device=point_coords.device)
        return self.factored_masks(cache, point_coords, point_labels)

"""SamAutomaticMaskGenerator: masks for a whole image from a grid of point prompts (SAM's data engine).

A drop-in for `segment_anything.SamAutomaticMaskGenerator`: the same parameters, defaults and records, and the same
masks. It does less work to get them:

- with samflow's decoder, the transformer and the IoU head run for every prompt, but the mask upscaling (the
  decoder's output stage) runs only for prompts with a candidate whose predicted IoU passes `pred_iou_thresh`, and
  only those candidates are brought to full resolution; the official upscales and resizes every candidate first
  and filters afterwards. IoU filtering needs no mask, so this changes no decision;
- the transformer, the upscaling and the full-resolution logits run in chunks (CHUNK_ELEMENTS), so peak memory
  does not grow with `points_per_batch`; a prompt's result does not depend on its batch-mates;
- on the CPU, where the model's resize to full resolution has blocks of at least MIN_BLOCK_AREA output pixels
  (SAM's 256 px low-res logits to a 1024 px image, tiny's to anything from ~800 px), the full-resolution logits
  are never made: `samflow.ops.thresholded_resize` bounds each block of pixels by its few low-res taps and counts
  pixel by pixel only along mask edges, for the stability counts and boxes; a crop's masks are made after its
  NMS, for the masks it keeps, from low-res logits kept until then (at most PENDING_BYTES);
- otherwise stability counts, binarisation and boxes of the full-resolution logits run in numpy on all cores
  (several times faster than torch's bool reductions); surviving masks are kept as run-length counts, never as a
  stack of dense full-size masks;
- small-region clean-up uses samflow's own connected components (no OpenCV).

Every decision (IoU and stability thresholds, crop-edge filter, NMS within and between crops, small-region
clean-up) is taken on the official numbers in the official order. The full-resolution logits are the official
bilinear resize summed in another order (~1e-7; by the model's `postprocess_masks` or by the blocks): a pixel whose
logit lies within rounding of a threshold may fall on the other side. tests/test_amg.py checks records for
equality with the official generator (and, through the blocks, for masks within such pixels).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torchvision.ops import batched_nms, box_area

from samflow.errors import InputError
from samflow.models.sam.mask_decoder import MaskDecoder
from samflow.models.sam2.model import Sam2
from samflow.ops import amg as ops
from samflow.ops import rle as rle_ops
from samflow.ops.image import to_rgb_uint8
from samflow.ops.thresholded_resize import ResizePlan, threshold_masks, threshold_stats
from samflow.ops.transforms import ResizeLongestSide
from samflow.predict.predictor import EncodedImage, SamPredictor, check_family
from samflow.predict.sam2_predictor import LOW_RES_CLAMP, Sam2EncodedImage, Sam2Predictor

log = logging.getLogger(__name__)

# Default chunk sizes keep the largest intermediate of each step near this many elements (64 MiB in float32):
# big enough for efficient kernels, small enough that peak memory does not grow with points_per_batch.
CHUNK_ELEMENTS = 2**24
# Through a resize plan (samflow.ops.thresholded_resize): masks counted at once; the most bytes of low-res logits a
# crop keeps for masks made after its NMS; the fewest output pixels per block for the plan to beat counting the
# full-resolution logits (SAM's 4x to a 1024 px image gives ~4: there it is about even).
PLAN_CHUNK = 128
PENDING_BYTES = 1 << 26
MIN_BLOCK_AREA = 8.0

OutputMode = Literal["binary_mask", "uncompressed_rle", "coco_rle"]
OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")

__all__ = ["GeneratedMasks", "Sam2AutomaticMaskGenerator", "SamAutomaticMaskGenerator", "cached_embedder"]
# The options SamAutomaticMaskGenerator and Sam2AutomaticMaskGenerator both take first, in the same order: the
# positional arguments a SAM 2 model may be given through SamAutomaticMaskGenerator.
_SHARED_POSITIONAL = 5


@dataclass
class GeneratedMasks:
    """Masks of one image as run-length counts, with their scores, in the order of the official records.

    counts: N int64 arrays (uncompressed COCO RLE counts, column-major); boxes: int64 (N, 4) XYXY inclusive;
    predicted_iou, stability_score: float32 (N,); points: float64 (N, 2) x, y; crop_boxes: int64 (N, 4) XYXY;
    size: (H, W) of the image.
    """

    counts: list[np.ndarray]
    boxes: np.ndarray
    predicted_iou: np.ndarray
    stability_score: np.ndarray
    points: np.ndarray
    crop_boxes: np.ndarray
    size: tuple[int, int]
    # Inside a crop only: low-res logits of masks whose counts are made after NMS (their `counts` entry is None).
    pending: list[torch.Tensor | None] | None = None

    def __len__(self) -> int:
        return len(self.counts)

    def rle(self, index: int) -> dict[str, Any]:
        """Uncompressed RLE of one mask: {"size": [H, W], "counts": [int, ...]}."""
        return {"size": list(self.size), "counts": self.counts[index].tolist()}

    def mask(self, index: int) -> np.ndarray:
        """bool (H, W)."""
        return rle_ops.decode({"size": list(self.size), "counts": self.counts[index]})

    def masks(self) -> np.ndarray:
        """bool (N, H, W): every mask, dense (large for big images and many masks)."""
        out = np.zeros((len(self), *self.size), dtype=bool)
        for i in range(len(self)):
            out[i] = self.mask(i)
        return out

    def area(self, index: int) -> int:
        return int(self.counts[index][1::2].sum())

    def records(self, output_mode: OutputMode = "binary_mask") -> list[dict[str, Any]]:
        """The official generator's records: segmentation, area, bbox (XYWH), predicted_iou, point_coords,
        stability_score, crop_box (XYWH)."""
        if output_mode not in OUTPUT_MODES:
            raise InputError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}; got {output_mode!r}")
        bboxes = ops.box_xyxy_to_xywh(self.boxes).tolist()
        crops = ops.box_xyxy_to_xywh(self.crop_boxes).tolist()
        out = []
        for i in range(len(self)):
            if output_mode == "binary_mask":
                segmentation: Any = self.mask(i)
            elif output_mode == "coco_rle":
                segmentation = rle_ops.uncompressed_to_compressed({"size": list(self.size), "counts": self.counts[i]})
            else:
                segmentation = self.rle(i)
            out.append({
                "segmentation": segmentation,
                "area": self.area(i),
                "bbox": bboxes[i],
                "predicted_iou": self.predicted_iou[i].item(),
                "point_coords": [self.points[i].tolist()],
                "stability_score": self.stability_score[i].item(),
                "crop_box": crops[i],
            })
        return out

    def select(self, keep: np.ndarray | torch.Tensor) -> GeneratedMasks:
        """The masks at `keep` (indices, in that order, or a bool mask)."""
        keep = keep.cpu().numpy() if isinstance(keep, torch.Tensor) else np.asarray(keep)
        index = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
        pending = None if self.pending is None else [self.pending[i] for i in index]
        return GeneratedMasks([self.counts[i] for i in index], self.boxes[index], self.predicted_iou[index],
                              self.stability_score[index], self.points[index], self.crop_boxes[index], self.size,
                              pending)

    @classmethod
    def concat(cls, parts: list[GeneratedMasks], size: tuple[int, int]) -> GeneratedMasks:
        if not parts:
            return cls.empty(size)
        pending = None
        if any(p.pending is not None for p in parts):
            pending = [x for p in parts for x in (p.pending if p.pending is not None else [None] * len(p))]
        return cls([c for p in parts for c in p.counts], np.concatenate([p.boxes for p in parts]),
                   np.concatenate([p.predicted_iou for p in parts]),
                   np.concatenate([p.stability_score for p in parts]),
                   np.concatenate([p.points for p in parts]), np.concatenate([p.crop_boxes for p in parts]), size,
                   pending)

    @classmethod
    def empty(cls, size: tuple[int, int]) -> GeneratedMasks:
        return cls([], np.zeros((0, 4), np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32),
                   np.zeros((0, 2)), np.zeros((0, 4), np.int64), size)


class SamAutomaticMaskGenerator:
    """Generate masks for a whole image: prompt SAM with a grid of points (on the image and, with
    `crop_n_layers > 0`, on overlapping crops), keep masks the model rates well (`pred_iou_thresh`) that are stable
    under a shift of the logit cutoff (`stability_score_thresh`), and remove duplicates by box NMS.

    Parameters and defaults are the official ones (see `segment_anything.SamAutomaticMaskGenerator`). Additions,
    keyword-only: `embed` maps an RGB crop (H, W, 3) to its `EncodedImage` (default: the model's encoder; pass a
    cache-backed function to reuse embeddings); the chunk sizes bound memory without changing results:
    `decoder_chunk` prompts go through the transformer at once, `upscale_chunk` prompts through the mask
    upscaling, `postprocess_chunk` masks are held at full resolution (default: sized so that each step's largest
    tensor holds about CHUNK_ELEMENTS floats). HQ-SAM models make one mask per point, as the reference HQ
    generator (`hq_token_only`: the HQ token's mask alone, off there and by default).

    Given a SAM 2 model (`samflow.build_sam("sam2.1_hiera_...")`) it is a `Sam2AutomaticMaskGenerator`, with SAM 2's
    options and defaults (options after `stability_score_offset` by keyword).
    """

    _points_dtype: type = np.float64  # the precision the official generator keeps the grid points in

    def __new__(cls, model: torch.nn.Module | None = None, *args: Any, **kwargs: Any) -> SamAutomaticMaskGenerator:
        if cls is SamAutomaticMaskGenerator and isinstance(model, Sam2):
            if len(args) > _SHARED_POSITIONAL:
                raise InputError("for a SAM 2 model give the generator's options after stability_score_offset by "
                                 "keyword (Sam2AutomaticMaskGenerator's order differs: it adds mask_threshold)")
            return super().__new__(Sam2AutomaticMaskGenerator)
        return super().__new__(cls)

    def __init__(self, model: torch.nn.Module, points_per_side: int | None = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7, crop_n_layers: int = 0,
                 crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1, point_grids: list[np.ndarray] | None = None,
                 min_mask_region_area: int = 0, output_mode: OutputMode = "binary_mask", *,
                 embed: Callable[[np.ndarray], EncodedImage] | None = None, postprocess_chunk: int | None = None,
                 decoder_chunk: int | None = None, upscale_chunk: int | None = None,
                 hq_token_only: bool = False) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise InputError("give exactly one of points_per_side and point_grids")
        if points_per_side is not None:
            if crop_n_points_downscale_factor < 1:
                raise InputError(f"crop_n_points_downscale_factor must be >= 1, got {crop_n_points_downscale_factor}")
            self.point_grids = ops.build_all_layer_point_grids(points_per_side, crop_n_layers,
                                                               crop_n_points_downscale_factor)
        else:
            self.point_grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(self.point_grids) < crop_n_layers + 1:
                raise InputError(f"point_grids has {len(self.point_grids)} grids; crop_n_layers={crop_n_layers} "
                                 f"needs {crop_n_layers + 1} (one per layer)")
        if output_mode not in OUTPUT_MODES:
            raise InputError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}; got {output_mode!r}")
        chunks = [c for c in (postprocess_chunk, decoder_chunk, upscale_chunk) if c is not None]
        if min([points_per_batch, *chunks]) < 1:
            raise InputError("points_per_batch and the chunk sizes must be at least 1")
        if crop_n_layers < 0:
            raise InputError(f"crop_n_layers must not be negative, got {crop_n_layers}")
        self.model = model
        self.mask_threshold = float(getattr(model, "mask_threshold", 0.0))
        self._bind(model, hq_token_only, min_mask_region_area)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.embed = embed
        self.postprocess_chunk = postprocess_chunk
        self.decoder_chunk = decoder_chunk
        self.upscale_chunk = upscale_chunk

    def _bind(self, model: torch.nn.Module, hq_token_only: bool, min_mask_region_area: int) -> None:
        """The model-specific parts: the predictor, the prompt transform, the small-region clean-up."""
        self.predictor = SamPredictor(model)
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        if hq_token_only and not getattr(model.mask_decoder, "is_hq", False):
            raise InputError("hq_token_only applies to HQ-SAM models only")
        self.hq_token_only = hq_token_only
        # SAM cleans masks up at full resolution after NMS (SAM 2 fills regions of its low-res logits instead)
        self._clean_small_regions = min_mask_region_area > 0

    # --- public -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, image: np.ndarray, embedding: EncodedImage | None = None) -> list[dict[str, Any]]:
        """Records for the masks of an RGB uint8 (H, W, 3) image, as the official `generate` returns them.

        `embedding`: the image's embedding when it is already computed (used for the whole-image crop).
        """
        return self.generate_masks(image, embedding).records(self.output_mode)

    @torch.no_grad()
    def generate_masks(self, image: np.ndarray, embedding: EncodedImage | None = None) -> GeneratedMasks:
        """The masks as run-length counts with their scores (what `generate` formats into records)."""
        image = to_rgb_uint8(image)
        size = (int(image.shape[0]), int(image.shape[1]))
        if embedding is not None and tuple(embedding.original_size) != size:
            raise InputError(f"the embedding is of a {embedding.original_size} image, not {size}")
        if embedding is not None:
            embedding = self._accept(embedding)
        crop_boxes, layers = ops.generate_crop_boxes(size, self.crop_n_layers, self.crop_overlap_ratio)
        parts = []
        for crop_box, layer in zip(crop_boxes, layers):
            given = embedding if crop_box == [0, 0, size[1], size[0]] else None
            parts.append(self._process_crop(image, crop_box, layer, size, given))
        data = GeneratedMasks.concat(parts, size)
        if len(crop_boxes) > 1 and len(data):
            # Duplicates between crops: prefer masks from smaller crops.
            crops = torch.as_tensor(data.crop_boxes)
            keep = batched_nms(torch.as_tensor(data.boxes).float(), 1 / box_area(crops), torch.zeros(len(data)),
                               iou_threshold=self.crop_nms_thresh)
            data = data.select(keep)
        if self._clean_small_regions and len(data):
            data = self._postprocess_small_regions(data, self.min_mask_region_area,
                                                   max(self.box_nms_thresh, self.crop_nms_thresh))
        return data

    # --- crops and batches --------------------------------------------------------------------------------------

    def _accept(self, embedding: Any) -> Any:
        """A given embedding in the form `_decode` takes; InputError naming both families for another family's."""
        check_family(getattr(embedding, "family", None), self.model)
        return embedding

    def _encode(self, crop: np.ndarray) -> EncodedImage:
        if self.embed is not None:
            return self.embed(crop)
        return self.predictor.encode(crop)

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer: int, size: tuple[int, int],
                      embedding: EncodedImage | None) -> GeneratedMasks:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        crop_size = (int(crop.shape[0]), int(crop.shape[1]))
        encoded = embedding if embedding is not None else self._encode(crop)
        points = self.point_grids[layer] * np.array(crop_size)[None, ::-1]
        shared = _CropKey()  # the batches of this crop share its embedding: its prompt-free work is done once
        plan = self._resize_plan(encoded)
        parts, pending_bytes = [], 0
        for start in range(0, len(points), self.points_per_batch):
            parts.append(self._process_batch(encoded, points[start : start + self.points_per_batch], crop_box, size,
                                             shared, plan))
            pending_bytes += sum(x.nbytes for x in parts[-1].pending or [] if x is not None)
            if pending_bytes > PENDING_BYTES:  # bound the logits kept for after NMS: make these masks now
                parts, pending_bytes = [self._made(part, plan, crop_box, size) for part in parts], 0
        data = GeneratedMasks.concat(parts, size)
        log.debug("crop %s: %d masks before NMS", crop_box, len(data))
        if len(data):
            # Duplicates within the crop: keep the best predicted IoU.
            keep = batched_nms(torch.as_tensor(data.boxes).float(), torch.as_tensor(data.predicted_iou),
                               torch.zeros(len(data)), iou_threshold=self.box_nms_thresh)
            data = data.select(keep)
        data = self._made(data, plan, crop_box, size)
        data.boxes = data.boxes + np.array([x0, y0, x0, y0])
        data.points = data.points + np.array([x0, y0])
        data.crop_boxes = np.tile(np.array(crop_box, dtype=np.int64), (len(data), 1))
        return data

    def _decode(self, encoded: EncodedImage, points: np.ndarray,
                shared: _CropKey | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predicted IoUs of all candidates (B * K,), point-major as the official flattens them; the indices of
        those passing `pred_iou_thresh` (n,); and their low-res logits (n, h, w).

        With samflow's decoder the transformer runs `decoder_chunk` prompts at a time (a prompt's result does not
        depend on its batch-mates) and masks are upscaled only for prompts with a passing candidate.
        """
        model = self.model
        device = encoded.features.device
        coords = torch.as_tensor(self.transform.apply_coords(points, encoded.original_size), device=device)
        labels = torch.ones(coords.shape[0], dtype=torch.int, device=device)
        sparse, dense = model.prompt_encoder(points=(coords[:, None, :], labels[:, None]), boxes=None, masks=None)
        decoder = model.mask_decoder
        image_pe = model.prompt_encoder.get_dense_pe()
        if not hasattr(decoder, "attend"):
            # A decoder without the split (e.g. the official one): everything at once, as the official does.
            low_res, iou = decoder(image_embeddings=encoded.features, image_pe=image_pe,
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                   multimask_output=True)
            index = self._passing(iou.flatten().float())
            k = iou.shape[1]
            return iou.flatten().float(), index, low_res[index // k, index % k].float()
        if getattr(decoder, "is_hq", False):
            return self._decode_hq(encoded, sparse, dense, image_pe, shared)
        return self._decode_split(decoder, encoded.features, image_pe, sparse, dense, shared)

    def _decode_split(self, decoder: torch.nn.Module, features: torch.Tensor, image_pe: torch.Tensor,
                      sparse: torch.Tensor, dense: torch.Tensor, shared: _CropKey | None,
                      **mask_arguments: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_decode` through the decoder's split (transformer, IoU head, then masks only for prompts with a passing
        candidate), `decoder_chunk` prompts at a time. `mask_arguments` go to `masks_from_tokens` (SAM 2: the
        high-resolution features)."""
        multimask = slice(1, None)  # the three ambiguity-aware masks, as with multimask_output=True
        ious, indices, logits = [], [], []
        grid = features.shape[-2:]
        tokens_per_prompt = int(grid[0] * grid[1]) * int(features.shape[1])
        decoder_chunk = self.decoder_chunk or max(1, CHUNK_ELEMENTS // tokens_per_prompt)
        # The upscaling makes 64 channels at 2x and 32 at 4x the grid per prompt.
        upscale_chunk = self.upscale_chunk or max(1, CHUNK_ELEMENTS // (768 * int(grid[0] * grid[1])))
        for start in range(0, sparse.shape[0], decoder_chunk):
            part = slice(start, start + decoder_chunk)
            keyword = {"image_key": shared} if isinstance(decoder, MaskDecoder) else {}
            tokens, image_tokens = decoder.attend(features, image_pe, sparse[part],
                                                  dense[part] if dense.shape[0] > 1 else dense, **keyword)
            iou = decoder.predict_iou(tokens)[:, multimask]
            k = iou.shape[1]
            iou = iou.flatten().float()
            index = self._passing(iou)
            prompts, which = torch.unique(index // k, return_inverse=True)
            for first in range(0, len(prompts), upscale_chunk):
                here = (which >= first) & (which < first + upscale_chunk)
                chosen, picked = which[here], index[here]
                low = decoder.masks_from_tokens(tokens, image_tokens, grid, prompts[first : first + upscale_chunk],
                                                **mask_arguments)[:, multimask]
                logits.append(low[chosen - first, picked % k].float())
            del tokens, image_tokens
            ious.append(iou)
            indices.append(index + start * k)
        if not logits:
            logits.append(torch.zeros(0, 4 * grid[0], 4 * grid[1], device=features.device))
        return torch.cat(ious), torch.cat(indices), torch.cat(logits)

    def _decode_hq(self, encoded: EncodedImage, sparse: torch.Tensor, dense: torch.Tensor, image_pe: torch.Tensor,
                   shared: _CropKey | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_decode` for HQ-SAM: one candidate per prompt, as the reference HQ generator (multimask: the best of the
        three SAM masks plus the HQ token's mask, with the best IoU; the HQ mask alone with `hq_token_only`); the
        fused features are made once per crop and masks only for prompts whose IoU passes."""
        decoder = self.model.mask_decoder
        if encoded.interm is None:
            raise InputError("an HQ-SAM generator needs the embedding's early encoder features (interm): encode the "
                             "image with the HQ-SAM model")
        grid = encoded.features.shape[-2:]
        hq_features = decoder.hq_features(encoded.features, encoded.interm)
        tokens_per_prompt = int(grid[0] * grid[1]) * int(encoded.features.shape[1])
        decoder_chunk = self.decoder_chunk or max(1, CHUNK_ELEMENTS // tokens_per_prompt)
        ious, indices, logits = [], [], []
        for start in range(0, sparse.shape[0], decoder_chunk):
            part = slice(start, start + decoder_chunk)
            tokens, image_tokens = decoder.attend(encoded.features, image_pe, sparse[part],
                                                  dense[part] if dense.shape[0] > 1 else dense, image_key=shared)
            iou, choice = decoder.select(decoder.predict_iou(tokens), True)
            iou = iou.flatten().float()
            index = self._passing(iou)
            if len(index):
                logits.append(decoder.hq_masks(tokens, image_tokens, grid, hq_features, choice, self.hq_token_only,
                                               index=index)[:, 0].float())
            ious.append(iou)
            indices.append(index + start)
        if not logits:
            logits.append(torch.zeros(0, 4 * grid[0], 4 * grid[1], device=encoded.features.device))
        return torch.cat(ious), torch.cat(indices), torch.cat(logits)

    def _passing(self, iou: torch.Tensor) -> torch.Tensor:
        if self.pred_iou_thresh > 0.0:
            return torch.nonzero(iou > self.pred_iou_thresh).flatten()
        return torch.arange(len(iou), device=iou.device)

    def _process_batch(self, encoded: EncodedImage, points: np.ndarray, crop_box: list[int],
                       size: tuple[int, int], shared: _CropKey | None = None,
                       plan: ResizePlan | None = None) -> GeneratedMasks:
        # Candidates are (point, mask) pairs in the official order: point-major.
        iou, index, low_res = self._decode(encoded, points, shared)
        k = len(iou) // max(len(points), 1)
        if index.numel() == 0:
            return GeneratedMasks.empty(size)
        if plan is not None:
            return self._process_planned(plan, iou, index, low_res, points, k, crop_box, size)

        counts: list[np.ndarray] = []
        kept, boxes, scores = [], [], []
        chunk_size = self.postprocess_chunk or max(1, CHUNK_ELEMENTS // self._elements_per_mask(size))
        for start in range(0, low_res.shape[0], chunk_size):
            logits = self._full_resolution(low_res[start : start + chunk_size], encoded)
            chosen, box, stability, masks = self._filter_chunk(logits, crop_box, size)
            del logits
            if len(chosen):
                counts.extend(_rle_counts(masks, crop_box, size))
            kept.append(chosen + start)
            boxes.append(box)
            scores.append(stability)
        chosen = torch.as_tensor(np.concatenate(kept), dtype=torch.int64, device=index.device)
        picked = index[chosen]
        return GeneratedMasks(
            counts,
            np.concatenate(boxes).astype(np.int64),
            iou[picked].cpu().numpy(),
            np.concatenate(scores).astype(np.float32),
            np.asarray(points, dtype=self._points_dtype).astype(np.float64)[(picked // k).cpu().numpy()],
            np.zeros((len(counts), 4), np.int64),
            size,
        )

    def _resize_plan(self, encoded: EncodedImage) -> ResizePlan | None:
        """The crop's full-resolution resize split into blocks (`samflow.ops.thresholded_resize`), where the model
        describes its resize as matrices, on the CPU, and blocks are big enough to pay; else None (the logits are
        made at full resolution and counted)."""
        matrices = getattr(self.model, "postprocess_matrices", None)
        if matrices is None or encoded.features.device.type != "cpu":
            return None
        low_size = (4 * int(encoded.features.shape[-2]), 4 * int(encoded.features.shape[-1]))
        key = (low_size, tuple(encoded.input_size), tuple(encoded.original_size))
        plans = self.__dict__.setdefault("_plans", {})
        if key not in plans:
            plan = ResizePlan.from_matrices(*matrices(low_size, encoded.input_size, encoded.original_size))
            plans[key] = plan if plan.mean_block_area >= MIN_BLOCK_AREA else None
        return plans[key]

    def _process_planned(self, plan: ResizePlan, iou: torch.Tensor, index: torch.Tensor, low_res: torch.Tensor,
                         points: np.ndarray, k: int, crop_box: list[int], size: tuple[int, int]) -> GeneratedMasks:
        """`_process_batch` through the blocks of `plan`: stability counts and boxes without the full-resolution
        logits; the surviving candidates keep their low-res logits (pending) until NMS has picked the masks."""
        threshold, offset = self.mask_threshold, self.stability_score_offset
        counts, boxes = [], []
        for start in range(0, len(low_res), PLAN_CHUNK):
            c, b = threshold_stats(plan, low_res[start : start + PLAN_CHUNK].cpu(), (threshold + offset,
                                   threshold - offset), threshold)
            counts.append(c)
            boxes.append(b)
        high, low = torch.cat(counts).numpy().T
        with np.errstate(divide="ignore", invalid="ignore"):
            stability = high.astype(np.float32) / low.astype(np.float32)  # 0 / 0 is NaN, as official
        box = torch.cat(boxes).numpy()
        if self.stability_score_thresh > 0.0:
            good = np.flatnonzero(stability >= self.stability_score_thresh)
        else:
            good = np.arange(len(stability))
        # Masks cut by a crop border are left to the crops that see them whole.
        inside = ~ops.boxes_near_crop_edge(torch.from_numpy(box[good]), crop_box, [0, 0, size[1], size[0]]).numpy()
        chosen = good[inside]
        rows, cols = plan.reads
        kept = low_res[torch.as_tensor(chosen, dtype=torch.int64, device=low_res.device), :rows, :cols].cpu()
        picked = index[torch.as_tensor(chosen, dtype=torch.int64, device=index.device)]
        return GeneratedMasks(
            [None] * len(chosen),
            box[chosen].astype(np.int64),
            iou[picked].cpu().numpy(),
            stability[chosen].astype(np.float32),
            np.asarray(points, dtype=self._points_dtype).astype(np.float64)[(picked // k).cpu().numpy()],
            np.zeros((len(chosen), 4), np.int64),
            size,
            list(kept.clone()),
        )

    def _made(self, data: GeneratedMasks, plan: ResizePlan | None, crop_box: list[int],
              size: tuple[int, int]) -> GeneratedMasks:
        """`data` with the counts of its pending masks made (from their low-res logits, by `plan`)."""
        if data.pending is None:
            return data
        waiting = [i for i, x in enumerate(data.pending) if x is not None]
        for start in range(0, len(waiting), PLAN_CHUNK):
            part = waiting[start : start + PLAN_CHUNK]
            masks = threshold_masks(plan, torch.stack([data.pending[i] for i in part]), self.mask_threshold)
            for i, counts in zip(part, _rle_counts(masks.numpy(), crop_box, size)):
                data.counts[i] = counts
        data.pending = None
        return data

    def _elements_per_mask(self, size: tuple[int, int]) -> int:
        """Floats one mask takes on its way to full resolution: the padded square, then the crop's size."""
        side = self.model.image_encoder.img_size
        return side * side + size[0] * size[1]

    def _full_resolution(self, low_res: torch.Tensor, encoded: EncodedImage) -> torch.Tensor:
        """Low-res logits (n, 4h, 4w) -> logits (n, H, W) of the crop, by the model's own post-processing."""
        return self.model.postprocess_masks(low_res[:, None], encoded.input_size, encoded.original_size)[:, 0]

    def _filter_chunk(self, logits: torch.Tensor, crop_box: list[int], size: tuple[int, int]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Stability filter, binarisation and crop-edge filter of full-resolution logits (n, h, w).

        Returns the kept rows, their boxes (crop frame), stability scores and bool masks (numpy). On the CPU the
        counting runs in numpy, several times faster than torch's bool reductions; the numbers are the same.
        """
        threshold = self.mask_threshold
        if logits.device.type == "cpu":
            values = logits.numpy()
            flat = values.reshape(len(values), -1)
            upper, lower = threshold + self.stability_score_offset, threshold - self.stability_score_offset
            counts = np.array(_map_rows(lambda i: (np.count_nonzero(flat[i] > upper),
                                                   np.count_nonzero(flat[i] > lower)), len(flat)),
                              dtype=np.int64).reshape(-1, 2)
            high, low = counts[:, 0], counts[:, 1]
            with np.errstate(divide="ignore", invalid="ignore"):
                stability = high.astype(np.float32) / low.astype(np.float32)  # 0 / 0 is NaN, as official
        else:
            values = logits
            stability = ops.stability_score(logits, threshold, self.stability_score_offset).cpu().numpy()
        if self.stability_score_thresh > 0.0:
            good = np.flatnonzero(stability >= self.stability_score_thresh)
        else:
            good = np.arange(len(stability))
        if isinstance(values, torch.Tensor):
            masks = (values[torch.as_tensor(good, device=values.device)] > threshold).cpu().numpy()
        else:  # row by row into one array: no copy of the chosen logits first
            masks = np.empty((len(good), *values.shape[1:]), dtype=bool)
            _map_rows(lambda j: np.greater(values[good[j]], threshold, out=masks[j]), len(good))
        box = ops.masks_to_boxes(masks)
        # Masks cut by a crop border are left to the crops that see them whole.
        inside = ~ops.boxes_near_crop_edge(torch.from_numpy(box), crop_box, [0, 0, size[1], size[0]]).numpy()
        return good[inside], box[inside], stability[good[inside]], masks[inside]

    # --- clean-up -----------------------------------------------------------------------------------------------

    @staticmethod
    def _postprocess_small_regions(data: GeneratedMasks, min_area: int, nms_thresh: float) -> GeneratedMasks:
        """Fill small holes and drop small islands, then NMS again preferring masks that needed no change."""
        new_counts, new_boxes, unchanged = [], [], []
        for i in range(len(data)):
            mask = data.mask(i)
            mask, holes = ops.remove_small_regions(mask, min_area, mode="holes")
            mask, islands = ops.remove_small_regions(mask, min_area, mode="islands")
            changed = holes or islands
            unchanged.append(float(not changed))
            new_boxes.append(torch.from_numpy(ops.masks_to_boxes(mask)))
            new_counts.append(_mask_counts(mask) if changed else data.counts[i])
        boxes = torch.stack(new_boxes)
        keep = batched_nms(boxes.float(), torch.as_tensor(unchanged), torch.zeros(len(boxes)),
                           iou_threshold=nms_thresh)
        data.counts = new_counts
        data.boxes = boxes.numpy()
        return data.select(keep)


T = TypeVar("T")
_ROW_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (workers, pool)


def _map_rows(fn: Callable[[int], T], n: int) -> list[T]:
    """[fn(0), ..., fn(n - 1)] on torch's thread count: numpy's comparisons and counts over a full-resolution mask
    release the GIL, so the rows of a chunk are counted on all cores, as torch's own work is."""
    global _ROW_POOL
    workers = min(n, torch.get_num_threads())
    if workers <= 1:
        return [fn(i) for i in range(n)]
    if _ROW_POOL is None or _ROW_POOL[0] < workers:
        _ROW_POOL = (workers, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="samflow-amg-rows"))
    return list(_ROW_POOL[1].map(fn, range(n)))


class Sam2AutomaticMaskGenerator(SamAutomaticMaskGenerator):
    """SamAutomaticMaskGenerator on a SAM 2 image model: a drop-in for the official
    `sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator` (its parameters, defaults, records and masks) on
    samflow's `Sam2`, through Sam2Predictor's prompt transform and SAM 2's split decoder.

    As the official: the grid points are normalised by the crop's size into the model's square; each candidate's
    full-resolution logits are the low-res ones resized bilinearly to the crop (stability scores, binarisation at
    `mask_threshold` and boxes come from them); `min_mask_region_area` is passed to the predictor as its
    `max_hole_area` and `max_sprinkle_area` (regions of the low-res mask, filled before upscaling: here on any
    device, where the official needs its CUDA extension) and there is no clean-up after NMS; `use_m2m` decodes each
    candidate once more from its point and its low-res logits (one mask each); `multimask_output=False` takes SAM
    2's single mask per point (dynamic multimask via stability). The keyword-only additions are those of
    SamAutomaticMaskGenerator (`embed` returns a Sam2EncodedImage, or an EncodedImage of family "sam2" with its
    high-resolution features as `extras`); IoU filtering happens before the upscaling, which changes no decision.
    """

    _points_dtype = np.float32

    def __init__(self, model: Sam2, points_per_side: int | None = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.8, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, mask_threshold: float = 0.0, box_nms_thresh: float = 0.7,
                 crop_n_layers: int = 0, crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1, point_grids: list[np.ndarray] | None = None,
                 min_mask_region_area: int = 0, output_mode: OutputMode = "binary_mask", use_m2m: bool = False,
                 multimask_output: bool = True, *, embed: Callable[[np.ndarray], Any] | None = None,
                 postprocess_chunk: int | None = None, decoder_chunk: int | None = None,
                 upscale_chunk: int | None = None, hq_token_only: bool = False) -> None:
        if not isinstance(model, Sam2):
            raise InputError(f"Sam2AutomaticMaskGenerator needs a SAM 2 model (samflow.build_sam('sam2.1_hiera_...'))"
                             f", not {type(model).__name__}; use SamAutomaticMaskGenerator for the SAM family")
        super().__init__(model, points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh,
                         stability_score_offset, box_nms_thresh, crop_n_layers, crop_nms_thresh, crop_overlap_ratio,
                         crop_n_points_downscale_factor, point_grids, min_mask_region_area, output_mode, embed=embed,
                         postprocess_chunk=postprocess_chunk, decoder_chunk=decoder_chunk,
                         upscale_chunk=upscale_chunk, hq_token_only=hq_token_only)
        self.mask_threshold = mask_threshold
        self.use_m2m = use_m2m
        self.multimask_output = multimask_output

    def _bind(self, model: torch.nn.Module, hq_token_only: bool, min_mask_region_area: int) -> None:
        if hq_token_only:
            raise InputError("hq_token_only applies to HQ-SAM models only; this is a sam2 model")
        self.hq_token_only = False
        self.predictor = Sam2Predictor(model, max_hole_area=min_mask_region_area,
                                       max_sprinkle_area=min_mask_region_area)
        self._clean_small_regions = False  # the predictor fills small regions of the low-res masks instead

    def _accept(self, embedding: Any) -> Sam2EncodedImage:
        return Sam2EncodedImage.of(embedding)  # refuses another family's embedding, naming both

    def _encode(self, crop: np.ndarray) -> Sam2EncodedImage:
        if self.embed is not None:
            return Sam2EncodedImage.of(self.embed(crop))
        return self.predictor.encode(crop)

    def _decode(self, encoded: Sam2EncodedImage, points: np.ndarray,
                shared: _CropKey | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model: Sam2 = self.model  # type: ignore[assignment]
        features = encoded.features
        device = features.image_embed.device
        coords = self.predictor._transform_coords(torch.as_tensor(points, dtype=torch.float32, device=device), True,
                                                  tuple(encoded.original_size))
        labels = torch.ones(coords.shape[0], dtype=torch.int, device=device)
        if self.multimask_output and not self.use_m2m:
            sparse, dense = model.sam_prompt_encoder(points=(coords[:, None], labels[:, None]), boxes=None,
                                                     masks=None)
            return self._decode_split(model.sam_mask_decoder, features.image_embed,
                                      model.sam_prompt_encoder.get_dense_pe(), sparse, dense, shared,
                                      high_res=list(features.high_res_feats))
        low_res, iou = self._decode_all(features, coords, labels, None, self.multimask_output)
        if self.use_m2m:  # once more from each candidate's point and its (clamped) low-res logits, one mask each
            k = iou.shape[1]
            low = torch.clamp(low_res, -LOW_RES_CLAMP, LOW_RES_CLAMP).flatten(0, 1)[:, None]
            low_res, iou = self._decode_all(features, coords.repeat_interleave(k, dim=0),
                                            labels.repeat_interleave(k, dim=0), low, False)
        iou = iou.flatten().float()
        index = self._passing(iou)
        return iou, index, low_res.flatten(0, 1)[index].float()

    def _decode_all(self, features: Any, coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None,
                    multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Every candidate's low-res logits (B, K, 4h, 4w) and IoUs (B, K), `points_per_batch` prompts at a time."""
        step = self.points_per_batch
        outs = [self.model.decode(features, (coords[i : i + step, None], labels[i : i + step, None]), None,
                                  None if mask_input is None else mask_input[i : i + step], multimask)
                for i in range(0, coords.shape[0], step)]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def _elements_per_mask(self, size: tuple[int, int]) -> int:
        return 2 * size[0] * size[1]

    def _full_resolution(self, low_res: torch.Tensor, encoded: Sam2EncodedImage) -> torch.Tensor:
        logits = self.predictor._fill_regions(low_res[:, None].float())  # max_hole_area / max_sprinkle_area
        return self.model.postprocess_masks(logits, tuple(encoded.original_size))[:, 0]


class _CropKey:
    """Names one crop's (embedding, no-mask prompt) pair for the decoder's caches: a fresh object per crop, equal
    only to itself, so a later crop (or image) can never match it."""

    __slots__ = ()


def cached_embedder(model: torch.nn.Module, cache: Any) -> Callable[[np.ndarray], EncodedImage | Sam2EncodedImage]:
    """An `embed` function that looks crops up in an EmbeddingCache before running the encoder (SAM family or SAM 2).

    Keys are those of the `sam.encoder` node (node id, model family and fingerprint, pixels), so an embedding computed by a
    graph, or by an earlier run with an on-disk cache, is reused, and one computed here serves them in turn.
    """
    from samflow.engine.types import Image, ImageEmbedding
    from samflow.predict.embeddings import attach, encode, encoder_cache_key, from_payload, to_payload

    def embed(crop: np.ndarray) -> EncodedImage | Sam2EncodedImage:
        image = Image(np.ascontiguousarray(crop))
        key = encoder_cache_key(model, image)
        entry = cache.get(key)
        if entry is not None and isinstance(entry.get("embedding"), ImageEmbedding):
            return from_payload(attach(entry["embedding"], model))
        encoded = encode(model, image.data)
        cache.put(key, {"embedding": to_payload(encoded, model, image)})
        return encoded

    return embed


def _mask_counts(mask: np.ndarray) -> np.ndarray:
    counts, _ = rle_ops._run_counts(mask[None])
    return counts


def _rle_counts(masks: np.ndarray, crop_box: list[int], size: tuple[int, int]) -> list[np.ndarray]:
    """RLE counts of crop-frame bool masks (n, h, w) in the image frame (H, W)."""
    x0, y0, x1, y1 = crop_box
    h, w = size
    if (x0, y0, x1, y1) != (0, 0, w, h):
        full = np.zeros((len(masks), h, w), dtype=bool)
        full[:, y0:y1, x0:x1] = masks
        masks = full
    counts, offsets = rle_ops._run_counts(masks)
    return [counts[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]

"""Sam2Predictor: SAM 2's image predictor (the API of the official SAM2ImagePredictor, drop-in) on samflow's Sam2.

The image is resized to the model's square (image_size x image_size, bilinear with antialiasing, as SAM2Transforms)
and embedded once (`set_image`); every prompt then runs only the prompt encoder and the mask decoder. Besides the
official options (multimask_output, return_logits, normalize_coords, mask_input, mask_threshold, max_hole_area,
max_sprinkle_area) it can return the object score (`return_object_score=True`: logits > 0 mean the prompt hits an
object; the official predictor computes them and drops them), checks its inputs with errors that say what was
expected, broadcasts a batch of 1 against the others, and lets embeddings be taken out and put back (`encode`,
`set_image_embedding`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from samflow.errors import InputError
from samflow.models.sam2.model import Sam2, Sam2Features
from samflow.models.sam2.prompt_encoder import SAM2_POINT_LABELS
from samflow.ops.amg import connected_components
from samflow.ops.arrays import finite_array
from samflow.ops.image import to_rgb_uint8
from samflow.predict.predictor import check_family

# Prompts are post-processed to full resolution this many at a time, so a large batch stays in bounded memory.
POSTPROCESS_CHUNK = 2
# The official predictor returns low-res logits clamped to this range (the full-size masks are not).
LOW_RES_CLAMP = 32.0
# The names of the high-resolution features (after conv_s0 / conv_s1, finest first) among an embedding's `extras`
# (the graph's ImageEmbedding, EncodedImage): a SAM 2 embedding there is the image embedding plus these two.
HIGH_RES_KEYS = ("high_res_s0", "high_res_s1")
FAMILY = "sam2"


@dataclass(frozen=True)
class Sam2EncodedImage:
    """The features of one image (batch 1, on the model's device) and its original (H, W)."""

    features: Sam2Features
    original_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.features.nbytes

    @property
    def family(self) -> str:
        return FAMILY

    @property
    def input_size(self) -> tuple[int, int]:
        """(S, S): SAM 2 resizes every image to its square."""
        side = int(self.features.image_embed.shape[-1]) * 16
        return side, side

    @property
    def extras(self) -> dict[str, torch.Tensor]:
        """The high-resolution features by name (HIGH_RES_KEYS), as an ImageEmbedding carries them."""
        return dict(zip(HIGH_RES_KEYS, self.features.high_res_feats))

    @classmethod
    def of(cls, embedding: object) -> Sam2EncodedImage:
        """The Sam2EncodedImage of a SAM 2 embedding in the shared form (the graph's ImageEmbedding, an
        EncodedImage: `features` is the image embedding, `extras` hold HIGH_RES_KEYS). InputError naming both
        families for another family's embedding, and for one without the high-resolution features."""
        if isinstance(embedding, Sam2EncodedImage):
            return embedding
        family = getattr(embedding, "family", None)
        check_family(family, _FamilyOnly())
        extras: Mapping[str, torch.Tensor] = getattr(embedding, "extras", None) or {}
        missing = [k for k in HIGH_RES_KEYS if k not in extras]
        if missing:
            raise InputError(f"this embedding lacks SAM 2's high-resolution features ({', '.join(missing)}): encode "
                             "the image with the SAM 2 model (sam.encoder with a sam2 preset, Sam2Predictor.encode)")
        features = Sam2Features(embedding.features, tuple(extras[k] for k in HIGH_RES_KEYS))  # type: ignore
        return cls(features, tuple(embedding.original_size))  # type: ignore[attr-defined]


class _FamilyOnly:
    """What `check_family` reads of a model: its family."""

    family = FAMILY


def resize_to_square(image: np.ndarray, size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, size, size) on the 0..1 scale: ToTensor then Resize((size, size)) with
    antialiasing, as SAM2Transforms."""
    pixels = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)), device=device)
    pixels = pixels.to(torch.float32).div(255)[None]
    return F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class Sam2Predictor:
    def __init__(self, sam_model: Sam2, mask_threshold: float = 0.0, max_hole_area: float = 0.0,
                 max_sprinkle_area: float = 0.0) -> None:
        """mask_threshold: where logits become mask pixels. max_hole_area / max_sprinkle_area (pixels of the low-res
        mask): fill background regions / drop foreground regions up to that area (8-connected) before upscaling,
        as the official predictor does with its CUDA extension (which it skips, with a warning, where that is not
        built, e.g. on CPUs); here it runs on any device."""
        if not isinstance(sam_model, Sam2):
            raise InputError(f"Sam2Predictor needs a SAM 2 model (samflow.build_sam('sam2.1_hiera_...')), not "
                             f"{type(sam_model).__name__}; use SamPredictor for the original SAM")
        self.model = sam_model
        self.mask_threshold = mask_threshold
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        self.reset_predictor()

    # --- images -------------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def is_image_set(self) -> bool:
        return self._is_image_set

    @property
    def _features(self) -> dict[str, object] | None:
        """The official predictor's feature dict ({"image_embed", "high_res_feats"}), for code that reads it."""
        if self.features is None:
            return None
        return {"image_embed": self.features.image_embed, "high_res_feats": list(self.features.high_res_feats)}

    def _prepare(self, image: object, image_format: str) -> tuple[torch.Tensor, tuple[int, int]]:
        if image_format not in ("RGB", "BGR"):
            raise InputError(f"image_format must be 'RGB' or 'BGR', not {image_format!r}")
        arr = to_rgb_uint8(image)
        if image_format != self.model.image_format:
            arr = arr[..., ::-1]
        pixels = resize_to_square(arr, self.model.image_size, self.device)
        return self.model.preprocess(pixels).to(self.model.dtype), (int(arr.shape[0]), int(arr.shape[1]))

    @torch.no_grad()
    def set_image(self, image: object, image_format: str = "RGB") -> None:
        """Compute and keep the features of an image: uint8 (H, W, 3) numpy or PIL (RGB), grayscale, RGBA, uint16,
        float (see `samflow.ops.image.to_rgb_uint8`); image_format "BGR" for OpenCV arrays."""
        pixels, original_size = self._prepare(image, image_format)
        self.reset_predictor()
        self._set_features(self.model.encode_image(pixels), [original_size])

    @torch.no_grad()
    def set_image_batch(self, image_list: list[object], image_format: str = "RGB") -> None:
        """Embed several images in one encoder pass; then `predict_batch` takes one prompt set per image."""
        if not isinstance(image_list, list) or not image_list:
            raise InputError("set_image_batch takes a non-empty list of images")
        prepared = [self._prepare(image, image_format) for image in image_list]
        self.reset_predictor()
        self._set_features(self.model.encode_image(torch.cat([p for p, _ in prepared])), [s for _, s in prepared])
        self._is_batch = True

    @torch.no_grad()
    def encode(self, image: object, image_format: str = "RGB") -> Sam2EncodedImage:
        """The features of an image, without changing the predictor's current image."""
        pixels, original_size = self._prepare(image, image_format)
        return Sam2EncodedImage(self.model.encode_image(pixels), original_size)

    def set_image_embedding(self, encoded: object) -> None:
        """Make previously computed features current (no encoder run): a Sam2EncodedImage, or a SAM 2 embedding in
        the shared form (the graph's ImageEmbedding, an EncodedImage; see `Sam2EncodedImage.of`). Another family's
        embedding is an InputError naming both."""
        encoded = Sam2EncodedImage.of(encoded)
        grid = self.model.config.embedding_size
        shape = tuple(encoded.features.image_embed.shape)
        d = self.model.config.d_model
        if shape != (1, d, grid, grid):
            raise InputError(f"image embedding has shape {shape}; this model expects {(1, d, grid, grid)}")
        expected = [(1, d // 8, 4 * grid, 4 * grid), (1, d // 4, 2 * grid, 2 * grid)]
        got = [tuple(f.shape) for f in encoded.features.high_res_feats]
        if got != expected:
            raise InputError(f"the high-resolution features have shapes {got}; this model expects {expected}")
        self.reset_predictor()
        feats = encoded.features
        self._set_features(Sam2Features(feats.image_embed.to(self.device),
                                        tuple(f.to(self.device) for f in feats.high_res_feats)),  # type: ignore[arg-type]
                           [tuple(encoded.original_size)])

    def _set_features(self, features: Sam2Features, sizes: list[tuple[int, int]]) -> None:
        self.features = features
        # One view per image, made once: the decoder keeps work derived from an image embedding for as long as it
        # is handed the same tensor.
        self._per_image = [features] if len(features) == 1 else [features[i] for i in range(len(features))]
        self._orig_hw = sizes
        self._is_image_set = True

    def get_encoded(self) -> Sam2EncodedImage:
        self._require_image()
        if self._is_batch:
            raise RuntimeError("get_encoded takes one image: the predictor holds a batch (set_image_batch)")
        return Sam2EncodedImage(self.features, self._orig_hw[0])

    def get_image_embedding(self) -> torch.Tensor:
        """The image embedding (B, C, h, w) of the current image(s), no_mem_embed included (as the official)."""
        if not self._is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) to generate an embedding.")
        return self.features.image_embed

    def reset_predictor(self) -> None:
        self._is_image_set = False
        self._is_batch = False
        self.features: Sam2Features | None = None
        self._per_image: list[Sam2Features] = []
        self._orig_hw: list[tuple[int, int]] | None = None

    reset_image = reset_predictor  # SamPredictor's name

    def _require_image(self) -> None:
        if not self._is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    # --- prompts ------------------------------------------------------------------------------------------------

    def predict(self, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                box: np.ndarray | None = None, mask_input: np.ndarray | None = None, multimask_output: bool = True,
                return_logits: bool = False, normalize_coords: bool = True,
                return_object_score: bool = False) -> tuple[np.ndarray, ...]:
        """Masks for prompts on the current image, as SAM2ImagePredictor.predict.

        point_coords (P, 2) in original-image pixels (or in 0..1 with normalize_coords=False) with point_labels
        (P,) (1 foreground, 0 background, -1 padding; 2 / 3 box corners); box (4,) XYXY; mask_input (1, 4h, 4w)
        low-res logits from a previous call. Returns masks (K, H, W) as float32 0/1 (logits with return_logits),
        scores (K,), low-res logits (K, 4h, 4w) clamped to +-32, K = 3 with multimask_output else 1; with
        return_object_score also the object-score logits (1,). Batched: point_coords (N, P, 2), box (N, 4),
        mask_input (N, 1, 4h, 4w) give (N, K, H, W), (N, K), (N, K, 4h, 4w), (N, 1).
        """
        self._require_image()
        if self._is_batch:
            raise RuntimeError("the predictor holds a batch of images (set_image_batch): use predict_batch")
        return self._predict_numpy(point_coords, point_labels, box, mask_input, multimask_output, return_logits,
                                   normalize_coords, return_object_score, 0)

    def predict_batch(self, point_coords_batch: list[np.ndarray] | None = None,
                      point_labels_batch: list[np.ndarray] | None = None, box_batch: list[np.ndarray] | None = None,
                      mask_input_batch: list[np.ndarray] | None = None, multimask_output: bool = True,
                      return_logits: bool = False, normalize_coords: bool = True,
                      return_object_score: bool = False) -> tuple[list[np.ndarray], ...]:
        """`predict` for each image of `set_image_batch`, one prompt set per image; lists of its outputs."""
        if not self._is_batch:
            raise RuntimeError("predict_batch needs a batch of images: set them with .set_image_batch(...)")
        self._require_image()
        n = len(self._orig_hw)
        batches = [point_coords_batch, point_labels_batch, box_batch, mask_input_batch]
        for batch in batches:
            if batch is not None and len(batch) != n:
                raise InputError(f"{len(batch)} prompt sets for {n} images: give one per image (or None)")
        outputs: list[list[np.ndarray]] = []
        for i in range(n):
            coords, labels, box, mask = (None if batch is None else batch[i] for batch in batches)
            result = self._predict_numpy(coords, labels, box, mask, multimask_output, return_logits,
                                         normalize_coords, return_object_score, i)
            outputs.append(list(result))
        return tuple(list(column) for column in zip(*outputs))

    def _predict_numpy(self, point_coords, point_labels, box, mask_input, multimask_output, return_logits,
                       normalize_coords, return_object_score, img_idx) -> tuple[np.ndarray, ...]:
        coords, labels, boxes, masks_in = self._prep_prompts(point_coords, point_labels, box, mask_input,
                                                             normalize_coords, img_idx)
        result = self.predict_torch(coords, labels, boxes, masks_in, multimask_output, return_logits, img_idx)
        arrays = [t.squeeze(0).float().cpu().numpy() for t in result]
        return tuple(arrays if return_object_score else arrays[:3])

    def _prep_prompts(self, point_coords, point_labels, box, mask_input, normalize_coords: bool,
                      img_idx: int) -> tuple[torch.Tensor | None, ...]:
        """Checked prompts as tensors in the model's square frame, batched and broadcast to one batch size."""
        orig_hw = self._orig_hw[img_idx]
        coords_t = labels_t = boxes_t = masks_t = None
        coords, labels = self._check_points(point_coords, point_labels)
        if coords is not None:
            coords_t = self._transform_coords(torch.as_tensor(coords, dtype=torch.float, device=self.device),
                                              normalize_coords, orig_hw)
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)
        boxes = self._check_boxes(box)
        if boxes is not None:
            boxes_t = self._transform_coords(torch.as_tensor(boxes, dtype=torch.float, device=self.device)
                                             .reshape(-1, 2, 2), normalize_coords, orig_hw).reshape(-1, 4)
        masks = self._check_mask_input(mask_input)
        if masks is not None:
            masks_t = torch.as_tensor(masks, dtype=torch.float, device=self.device)
        return _broadcast_batch(coords_t, labels_t, boxes_t, masks_t)

    def _transform_coords(self, coords: torch.Tensor, normalize: bool, orig_hw: tuple[int, int]) -> torch.Tensor:
        """Original-image pixels (or 0..1 with normalize False) -> the model's square frame, as SAM2Transforms."""
        if normalize:
            h, w = orig_hw
            coords = coords.clone()
            coords[..., 0] = coords[..., 0] / w
            coords[..., 1] = coords[..., 1] / h
        return coords * self.model.image_size

    @torch.no_grad()
    def predict_torch(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                      boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
                      multimask_output: bool = True, return_logits: bool = False,
                      img_idx: int = -1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompts already in the model's square frame, batch B: point_coords (B, P, 2), point_labels (B, P),
        boxes (B, 4), mask_input (B, 1, 4h, 4w). Returns masks (B, K, H, W) (bool, or logits), IoU predictions
        (B, K), low-res logits (B, K, 4h, 4w) clamped to +-32, object-score logits (B, 1)."""
        self._require_image()
        points = (point_coords, point_labels) if point_coords is not None else None
        low_res, iou, object_score = self.model.decode(self._per_image[img_idx], points, boxes, mask_input,
                                                       multimask_output)
        orig_hw = self._orig_hw[img_idx]
        chunks = []
        for start in range(0, low_res.shape[0], POSTPROCESS_CHUNK):
            logits = self._fill_regions(low_res[start : start + POSTPROCESS_CHUNK].float())
            full = self.model.postprocess_masks(logits, orig_hw)
            chunks.append(full if return_logits else full > self.mask_threshold)
        masks = torch.cat(chunks, dim=0)
        return masks, iou, torch.clamp(low_res, -LOW_RES_CLAMP, LOW_RES_CLAMP), object_score

    def _fill_regions(self, logits: torch.Tensor) -> torch.Tensor:
        """Holes (background regions of at most max_hole_area pixels) to threshold + 10 and sprinkles (foreground
        regions of at most max_sprinkle_area) to threshold - 10, both found on the masks as they came (as the
        official SAM2Transforms.postprocess_masks)."""
        if self.max_hole_area <= 0 and self.max_sprinkle_area <= 0:
            return logits
        flat = logits.reshape(-1, *logits.shape[-2:])
        masks = flat.cpu().numpy()
        out = masks.copy()
        thr = self.mask_threshold
        for i, mask in enumerate(masks):
            if self.max_hole_area > 0:
                out[i][_small_regions(mask <= thr, self.max_hole_area)] = thr + 10.0
            if self.max_sprinkle_area > 0:
                out[i][_small_regions(mask > thr, self.max_sprinkle_area)] = thr - 10.0
        return torch.as_tensor(out, device=logits.device).view_as(logits)

    # --- checks -------------------------------------------------------------------------------------------------

    def _check_points(self, coords: object, labels: object) -> tuple[np.ndarray | None, np.ndarray | None]:
        if coords is None:
            if labels is not None:
                raise InputError("point_labels given without point_coords")
            return None, None
        if labels is None:
            raise InputError("point_labels must be supplied if point_coords is supplied.")
        c = finite_array(coords, "point_coords")
        if c.ndim not in (2, 3) or c.shape[-1] != 2 or c.shape[-2] == 0:
            raise InputError(f"point_coords must have shape (P, 2) or (N, P, 2) with P >= 1; got {c.shape}")
        lab = np.asarray(labels)
        if lab.shape != c.shape[:-1]:
            raise InputError(f"point_labels must have shape {c.shape[:-1]} to match point_coords {c.shape}; "
                             f"got {lab.shape}")
        if lab.size and not np.isin(lab, SAM2_POINT_LABELS).all():
            bad = sorted(set(np.unique(lab).tolist()) - set(SAM2_POINT_LABELS))
            raise InputError(f"point_labels must be 1 (foreground), 0 (background), -1 (padding) or 2 / 3 (box "
                             f"corners); got {bad}")
        return (c if c.ndim == 3 else c[None]), (lab if lab.ndim == 2 else lab[None])

    def _check_boxes(self, box: object) -> np.ndarray | None:
        if box is None:
            return None
        b = finite_array(box, "box")
        if b.ndim == 1:
            b = b[None]
        if b.ndim != 2 or b.shape[1] != 4 or b.shape[0] == 0:
            raise InputError(f"box must have shape (4,) or (N, 4) as XYXY; got {np.shape(box)}")
        bad = np.nonzero((b[:, 0] > b[:, 2]) | (b[:, 1] > b[:, 3]))[0]
        if bad.size:
            raise InputError(f"box {bad[0]} is {b[bad[0]].tolist()}: expected x0 <= x1 and y0 <= y1 (XYXY)")
        return b

    def _check_mask_input(self, mask_input: object) -> np.ndarray | None:
        if mask_input is None:
            return None
        m = finite_array(mask_input, "mask_input")
        size = self.model.sam_prompt_encoder.mask_input_size
        if m.ndim == 3 and m.shape == (1, *size):
            return m[None]
        if m.ndim == 4 and m.shape[1:] == (1, *size):
            return m
        raise InputError(f"mask_input must have shape (1, {size[0]}, {size[1]}) or (N, 1, {size[0]}, {size[1]}) "
                         f"(low-res logits); got {m.shape}")


def _small_regions(mask: np.ndarray, max_area: float) -> np.ndarray:
    """Pixels of the 8-connected regions of a bool (H, W) mask with at most `max_area` pixels."""
    component, sizes, (rows, starts, ends) = connected_components(mask)
    small = (sizes <= max_area)[component]
    out = np.zeros(mask.shape, dtype=bool)
    for row, start, end in zip(rows[small], starts[small], ends[small]):
        out[row, start:end] = True
    return out


def _broadcast_batch(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Give every prompt tensor the same batch size; a batch of 1 is repeated, any other mismatch is an error."""
    sizes = {t.shape[0] for t in tensors if t is not None}
    n = max(sizes, default=1)
    if sizes - {1, n}:
        raise InputError(f"prompt batch sizes disagree: {sorted(sizes)} (points, boxes and masks must have the "
                         "same N, or 1)")
    return tuple(t.expand(n, *t.shape[1:]) if t is not None and t.shape[0] != n else t for t in tensors)

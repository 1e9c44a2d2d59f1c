"""SamPredictor: the official predictor's API (drop-in), plus batched prompts, embedding reuse and checks.

The image embedding is computed once per image (`set_image`) and reused for every prompt; it can be taken out
(`encode`, `get_encoded`) and put back (`set_image_embedding`), which is how the graph cache shares it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from samflow.errors import InputError
from samflow.models.sam.prompt_encoder import POINT_LABELS
from samflow.models.sam.sam import Sam
from samflow.ops.arrays import finite_array
from samflow.ops.image import to_rgb_uint8
from samflow.ops.transforms import ResizeLongestSide
from samflow.predict.prompts import fit_to_image

# Prompts are post-processed to full resolution in chunks of this many, so a large batch stays in bounded memory.
POSTPROCESS_CHUNK = 2


@dataclass(frozen=True)
class EncodedImage:
    """An image embedding with the sizes needed to map prompts and masks.

    features: (1, C, h, w) on the model's device; original_size: (H, W) of the user's image; input_size: (h, w)
    after resizing the longest side to the model's image_size (before padding). interm: HQ-SAM only, the early
    encoder features its decoder fuses (1, h, w, C') channels-last. family: the model family that made it ("sam",
    "mobile_sam", "sam_hq", "sam2"; None: unknown, not checked); a predictor refuses an embedding of another
    family. extras: further named tensors a family's decoder needs (SAM 2: its high-resolution features; see
    `samflow.predict.sam2_predictor.Sam2EncodedImage.of`).
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    interm: torch.Tensor | None = None
    family: str | None = None
    extras: Mapping[str, torch.Tensor] | None = None

    @property
    def nbytes(self) -> int:
        tensors = [self.features, *([] if self.interm is None else [self.interm]), *(self.extras or {}).values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    @classmethod
    def of(cls, embedding: object) -> EncodedImage:
        """The EncodedImage of anything shaped like one (e.g. the graph's ImageEmbedding payload)."""
        return cls(embedding.features, tuple(embedding.original_size), tuple(embedding.input_size),  # type: ignore
                   getattr(embedding, "interm", None), getattr(embedding, "family", None),
                   getattr(embedding, "extras", None) or None)


class SamPredictor:
    def __init__(self, sam_model: Sam) -> None:
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self._fitted = False  # True while `predict` calls `predict_torch` with prompts it has already fitted
        self.reset_image()

    # --- images -------------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _prepare(self, image: object, image_format: str) -> tuple[torch.Tensor, tuple[int, int]]:
        if image_format not in ("RGB", "BGR"):
            raise InputError(f"image_format must be 'RGB' or 'BGR', not {image_format!r}")
        arr = to_rgb_uint8(image)
        if image_format != self.model.image_format:
            arr = arr[..., ::-1]
        resized = self.transform.apply_image(np.ascontiguousarray(arr))
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        return tensor, (arr.shape[0], arr.shape[1])

    def set_image(self, image: object, image_format: str = "RGB") -> None:
        """Compute and keep the embedding of an image: uint8 (H, W, 3) numpy, or PIL, grayscale, RGBA, uint16,
        float (see `samflow.ops.image.to_rgb_uint8` for the conversion rules)."""
        tensor, original_size = self._prepare(image, image_format)
        self.set_torch_image(tensor, original_size)

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """Embed an image already resized with `transform.apply_image`: (1, 3, h, w), long side = image_size."""
        size = self.model.image_encoder.img_size
        if transformed_image.ndim != 4 or transformed_image.shape[1] != 3 or max(transformed_image.shape[2:]) != size:
            raise InputError(
                f"set_torch_image expects a (B, 3, h, w) tensor whose long side is {size}; "
                f"got shape {tuple(transformed_image.shape)}"
            )
        self.reset_image()
        self.original_size = (int(original_image_size[0]), int(original_image_size[1]))
        self.input_size = (int(transformed_image.shape[-2]), int(transformed_image.shape[-1]))
        pixels = transformed_image.to(self.model.dtype)
        self.features, self.interm_features = self.model.encode_image(self.model.preprocess(pixels))
        self.is_image_set = True

    def encode(self, image: object, image_format: str = "RGB") -> EncodedImage:
        """The embedding of an image, without changing the predictor's current image."""
        return self.encode_batch([image], image_format)[0]

    @torch.no_grad()
    def encode_batch(self, images: list[object], image_format: str = "RGB",
                     batch_size: int | None = None) -> list[EncodedImage]:
        """Embed several images, `batch_size` at a time (all at once by default) in one encoder pass each."""
        prepared = [self._prepare(image, image_format) for image in images]
        step = batch_size or max(1, len(prepared))
        encoded: list[EncodedImage] = []
        for start in range(0, len(prepared), step):
            chunk = prepared[start : start + step]
            pixels = torch.cat([self.model.preprocess(t.to(self.model.dtype)) for t, _ in chunk], dim=0)
            features, interms = self.model.encode_image(pixels)
            for i, ((tensor, original), feat) in enumerate(zip(chunk, features)):
                input_size = (int(tensor.shape[-2]), int(tensor.shape[-1]))
                interm = None if interms is None else interms[i : i + 1]
                encoded.append(EncodedImage(feat[None], original, input_size, interm, self.model.family))
        return encoded

    def set_images(self, images: list[object], image_format: str = "RGB",
                   batch_size: int | None = None) -> list[EncodedImage]:
        """Embed several images in batches and make the first one current; returns all embeddings
        (switch between them with `set_image_embedding`)."""
        encoded = self.encode_batch(images, image_format, batch_size)
        if encoded:
            self.set_image_embedding(encoded[0])
        return encoded

    def set_image_embedding(self, encoded: EncodedImage) -> None:
        """Make a previously computed embedding current (no encoder run)."""
        check_family(getattr(encoded, "family", None), self.model)  # before the shapes: it names both families
        grid = self.model.prompt_encoder.image_embedding_size
        expected = (1, self.model.prompt_encoder.embed_dim, *grid)
        if tuple(encoded.features.shape) != expected:
            raise InputError(f"embedding has shape {tuple(encoded.features.shape)}; this model expects {expected}")
        if self.model.config.hq and encoded.interm is None:
            raise InputError("this HQ-SAM model needs the embedding's early encoder features (interm), which it "
                             "lacks: encode the image with the HQ-SAM model itself")
        self.reset_image()
        self.features = encoded.features.to(self.device)
        if self.model.config.hq:
            self.interm_features = encoded.interm.to(self.device)
        self.original_size = tuple(encoded.original_size)
        self.input_size = tuple(encoded.input_size)
        self.is_image_set = True

    def get_encoded(self) -> EncodedImage:
        self._require_image()
        return EncodedImage(self.features, self.original_size, self.input_size, self.interm_features,
                            self.model.family)

    def get_image_embedding(self) -> torch.Tensor:
        """The current image embedding, (1, C, h, w)."""
        self._require_image()
        return self.features

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features = None
        self.interm_features = None  # HQ-SAM: the early encoder features (1, h, w, C')
        self.orig_h = self.orig_w = self.input_h = self.input_w = None
        self.original_size = None
        self.input_size = None

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    # --- prompts ------------------------------------------------------------------------------------------------

    def predict(self, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                box: np.ndarray | None = None, mask_input: np.ndarray | None = None, multimask_output: bool = True,
                return_logits: bool = False, hq_token_only: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for prompts on the current image, in original-image pixel coordinates.

        point_coords (P, 2) with point_labels (P,) (1 foreground, 0 background, -1 padding); box (4,) XYXY;
        mask_input (1, 4h, 4w) low-res logits from a previous call. Points must lie in the image ([0, W] x [0, H]);
        boxes are clipped to it, and refused when they lie wholly outside it or have no width or height
        (samflow.predict.prompts.fit_to_image). Returns masks (K, H, W), scores (K,), low-res
        logits (K, 4h, 4w), K = 3 with multimask_output else 1 — as the official predictor.
        Batched: point_coords (N, P, 2) / point_labels (N, P), box (N, 4), mask_input (N, 1, 4h, 4w) decode N
        prompts in one call and return (N, K, H, W), (N, K), (N, K, 4h, 4w). A batch of 1 broadcasts.
        HQ-SAM models, as the reference HQ predictor: K = 1 either way (with multimask_output, the best of the three
        SAM masks plus the HQ token's mask; `hq_token_only`: the HQ token's mask alone).
        """
        self._require_image()
        coords, labels, batched_points = self._check_points(point_coords, point_labels)
        boxes, batched_boxes = self._check_boxes(box)
        masks_in, batched_masks = self._check_mask_input(mask_input)
        batched = batched_points or batched_boxes or batched_masks
        _batch_size(coords, boxes, masks_in)
        coords, boxes = fit_to_image(coords, boxes, self.original_size, labels=labels)

        coords_t = labels_t = boxes_t = masks_t = None
        if coords is not None:
            coords_t = torch.as_tensor(self.transform.apply_coords(coords, self.original_size), dtype=torch.float,
                                       device=self.device)
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)
        if boxes is not None:
            boxes_t = torch.as_tensor(self.transform.apply_boxes(boxes, self.original_size), dtype=torch.float,
                                      device=self.device)
        if masks_in is not None:
            masks_t = torch.as_tensor(masks_in, dtype=torch.float, device=self.device)
        coords_t, labels_t, boxes_t, masks_t = _broadcast_batch(coords_t, labels_t, boxes_t, masks_t)

        self._fitted = True
        try:
            masks, iou, low_res = self.predict_torch(coords_t, labels_t, boxes_t, masks_t, multimask_output,
                                                     return_logits, hq_token_only=hq_token_only)
        finally:
            self._fitted = False
        masks_np = masks.float().cpu().numpy() if return_logits else masks.cpu().numpy()
        iou_np, low_np = iou.float().cpu().numpy(), low_res.float().cpu().numpy()
        if not batched:
            return masks_np[0], iou_np[0], low_np[0]
        return masks_np, iou_np, low_np

    @torch.no_grad()
    def predict_torch(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                      boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
                      multimask_output: bool = True, return_logits: bool = False,
                      hq_token_only: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Official batched interface: inputs already in the resized frame, with batch dimension B.

        point_coords (B, P, 2), point_labels (B, P), boxes (B, 4), mask_input (B, 1, 4h, 4w). Returns masks
        (B, K, H, W), IoU predictions (B, K), low-res logits (B, K, 4h, 4w). The prompt rule of `predict` holds in
        this frame: points in [0, w] x [0, h] of `input_size`, boxes clipped to it.
        """
        self._require_image()
        if not self._fitted:
            boxes = self._fit_input_frame(point_coords, point_labels, boxes)
        points = (point_coords, point_labels) if point_coords is not None else None
        model = self.model
        sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        low_res, iou = model.mask_decoder(
            image_embeddings=self.features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            **hq_arguments(model, self.interm_features, hq_token_only),
        )
        chunks = []
        for start in range(0, low_res.shape[0], POSTPROCESS_CHUNK):
            full = model.postprocess_masks(low_res[start : start + POSTPROCESS_CHUNK], self.input_size,
                                           self.original_size)
            chunks.append(full if return_logits else full > model.mask_threshold)
        # One chunk (the usual case) is returned as is: concatenating would copy every full-size mask once more.
        return (chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=0)), iou, low_res

    # --- checks -------------------------------------------------------------------------------------------------

    def _fit_input_frame(self, coords: torch.Tensor | None, labels: torch.Tensor | None,
                         boxes: torch.Tensor | None) -> torch.Tensor | None:
        """`fit_to_image` in predict_torch's frame (the resized image before padding); the boxes, clipped."""
        if coords is None and boxes is None:
            return boxes
        c = None if coords is None else coords.detach().float().cpu().numpy()
        lab = None if labels is None else labels.detach().cpu().numpy()
        b = None if boxes is None else boxes.detach().float().cpu().numpy()
        _, clipped = fit_to_image(c, b, self.input_size, labels=lab,
                                  frame="input frame (predict_torch takes coordinates after transform.apply_coords)")
        if boxes is None:
            return None
        return torch.as_tensor(clipped, dtype=boxes.dtype, device=boxes.device).reshape(boxes.shape)

    def _check_points(self, coords: object, labels: object) -> tuple[np.ndarray | None, np.ndarray | None, bool]:
        if coords is None:
            if labels is not None:
                raise InputError("point_labels given without point_coords")
            return None, None, False
        if labels is None:
            raise InputError("point_labels must be supplied with point_coords")
        c = finite_array(coords, "point_coords")
        if c.ndim not in (2, 3) or c.shape[-1] != 2 or c.shape[-2] == 0:
            raise InputError(f"point_coords must have shape (P, 2) or (N, P, 2) with P >= 1; got {c.shape}")
        lab = np.asarray(labels)
        if lab.shape != c.shape[:-1]:
            raise InputError(f"point_labels must have shape {c.shape[:-1]} to match point_coords {c.shape}; "
                             f"got {lab.shape}")
        if lab.size and not np.isin(lab, POINT_LABELS).all():
            bad = sorted(set(np.unique(lab).tolist()) - set(POINT_LABELS))
            raise InputError(f"point_labels must be 1 (foreground), 0 (background) or -1 (padding); got {bad}")
        batched = c.ndim == 3
        return (c if batched else c[None]), (lab if batched else lab[None]), batched

    def _check_boxes(self, box: object) -> tuple[np.ndarray | None, bool]:
        if box is None:
            return None, False
        b = finite_array(box, "box")
        if b.ndim == 1:
            b = b[None]
        if b.ndim != 2 or b.shape[1] != 4 or b.shape[0] == 0:
            raise InputError(f"box must have shape (4,) or (N, 4) as XYXY; got {np.shape(box)}")
        return b, b.shape[0] > 1  # the order and the image are checked by fit_to_image

    def _check_mask_input(self, mask_input: object) -> tuple[np.ndarray | None, bool]:
        if mask_input is None:
            return None, False
        m = finite_array(mask_input, "mask_input")
        size = self.model.prompt_encoder.mask_input_size
        if m.ndim == 3 and m.shape == (1, *size):
            return m[None], False
        if m.ndim == 4 and m.shape[1:] == (1, *size):
            return m, m.shape[0] > 1
        raise InputError(f"mask_input must have shape (1, {size[0]}, {size[1]}) or (N, 1, {size[0]}, {size[1]}) "
                         f"(low-res logits); got {m.shape}")


def check_family(family: str | None, model: Sam) -> None:
    """InputError when an embedding of `family` (None: unknown) is given to a model of another family: the shapes
    of SAM, MobileSAM, HQ-SAM and SAM 2 embeddings agree but their encoders differ, so a mix decodes noise."""
    if family is not None and family != model.family:
        raise InputError(f"this embedding was made by a {family} model; this {model.family} model cannot decode it "
                         f"(embeddings are decoded only by their own family: encode the image with this model)")


def hq_arguments(model: Sam, interm: torch.Tensor | None, hq_token_only: bool) -> dict[str, object]:
    """The extra mask-decoder arguments of an HQ-SAM model ({} for the others; hq_token_only there is an error)."""
    if model.config.hq:
        return {"hq_token_only": hq_token_only, "interm_embeddings": interm}
    if hq_token_only:
        raise InputError(f"hq_token_only applies to HQ-SAM models only; this is a {model.family} model")
    return {}


def _batch_size(*arrays: np.ndarray | torch.Tensor | None) -> int:
    """The common batch size of prompt arrays (a batch of 1 broadcasts); InputError when they disagree."""
    sizes = {int(a.shape[0]) for a in arrays if a is not None}
    n = max(sizes, default=1)
    if sizes - {1, n}:
        raise InputError(f"prompt batch sizes disagree: {sorted(sizes)} (points, boxes and masks must have the "
                         "same N, or 1)")
    return n


def _broadcast_batch(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Give every prompt tensor the same batch size; a batch of 1 is repeated, any other mismatch is an error."""
    n = _batch_size(*tensors)
    return tuple(t.expand(n, *t.shape[1:]) if t is not None and t.shape[0] != n else t for t in tensors)

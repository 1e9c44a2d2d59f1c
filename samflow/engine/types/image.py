"""Pictures on graph edges: an RGB image and the SAM image embedding computed from it."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from samflow.engine.types.base import FilePath, Payload, payload_type
from samflow.errors import InputError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# How `ImageEmbedding.extras` are named among its tensors on disk ("extra.<name>").
EXTRA_PREFIX = "extra."


@payload_type
@dataclass(eq=False)
class Image(Payload):
    """An RGB picture. `data: uint8 (H, W, 3)`; `path`: where it was read from, if anywhere."""

    data: np.ndarray
    path: Path | None = None
    _hash: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        data = self.data
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 3 or data.shape[2] != 3:
            shape = getattr(data, "shape", None)
            dtype = getattr(data, "dtype", type(data).__name__)
            raise InputError(f"Image.data must be uint8 (H, W, 3) RGB, got {dtype} {shape}")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.data.shape[0]), int(self.data.shape[1])

    @property
    def content_hash(self) -> str:
        """sha256 of the decoded pixels and their shape: the same picture in PNG or BMP hashes the same."""
        if self._hash is None:
            digest = hashlib.sha256(repr(self.data.shape).encode())
            digest.update(np.ascontiguousarray(self.data).tobytes())
            self._hash = digest.hexdigest()
        return self._hash

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    @classmethod
    def load(cls, path: str | Path) -> Image:
        """Read an image file as RGB (`samflow.ops.image.load_image`: InputError naming a missing or bad file)."""
        from samflow.ops.image import load_image

        return cls(load_image(path), path=Path(path))

    @classmethod
    def coerce(cls, value: Any) -> Image:
        if isinstance(value, Image):
            return value
        if isinstance(value, (str, Path)):
            return cls.load(value)
        if isinstance(value, FilePath):
            return cls.load(value.path)
        if isinstance(value, np.ndarray):
            return cls(value)
        raise InputError(f"expected an Image, a path or a uint8 (H, W, 3) array, got {type(value).__name__}")

    def to_record(self) -> dict[str, Any]:
        h, w = self.size
        return {"type": self.type_name, "height": h, "width": w, "path": str(self.path) if self.path else None}

    def save(self, directory: Path, name: str) -> list[Path]:
        from PIL import Image as PILImage

        path = directory / f"{name}.png"
        PILImage.fromarray(self.data).save(path)
        return [path]


@payload_type
@dataclass(eq=False)
class ImageEmbedding(Payload):
    """An image encoder's output for one image.

    `features: float (1, C, h, w)` on the model's device; `original_size` (H, W) of the image; `input_size` (h, w)
    of the resized image inside the encoder's square input; `model_key`: fingerprint of the weights that made it;
    `image_hash`: `Image.content_hash` of its image. `model` refers to the model object itself so a decoder can
    use the very weights that made it; it is never serialised. `family`: the model family that made it ("sam",
    "mobile_sam", "sam_hq"; None: unknown): decoders refuse an embedding of another family than theirs (the
    shapes agree, the encoders do not). `interm`: HQ-SAM only, the early encoder features its decoder fuses,
    float (1, h, w, C') channels-last, on the model's device. `extras`: further named tensors (batch 1, on the
    model's device) that the family's decoder needs besides `features` (SAM 2: its two high-resolution feature
    maps); the engine only counts, moves and stores them.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    model_key: str
    image_hash: str
    model: Any = field(default=None, repr=False)
    family: str | None = None
    interm: torch.Tensor | None = field(default=None, repr=False)
    extras: Mapping[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def nbytes(self) -> int:
        tensors = [self.features, *([] if self.interm is None else [self.interm]), *self.extras.values()]
        return int(sum(t.numel() * t.element_size() for t in tensors))

    def to_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        meta = {"original_size": list(self.original_size), "input_size": list(self.input_size),
                "model_key": self.model_key, "image_hash": self.image_hash, "family": self.family}
        tensors = {"features": self.features}
        if self.interm is not None:
            tensors["interm"] = self.interm
        tensors.update({f"{EXTRA_PREFIX}{name}": tensor for name, tensor in self.extras.items()})
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> ImageEmbedding:
        extras = {name[len(EXTRA_PREFIX):]: tensor for name, tensor in tensors.items() if name.startswith(EXTRA_PREFIX)}
        return cls(features=tensors["features"], original_size=tuple(meta["original_size"]),
                   input_size=tuple(meta["input_size"]), model_key=meta["model_key"], image_hash=meta["image_hash"],
                   family=meta.get("family"), interm=tensors.get("interm"), extras=extras)

    def to_record(self) -> dict[str, Any]:
        record = {"type": self.type_name, "shape": list(self.features.shape), "model_key": self.model_key,
                  "image_hash": self.image_hash, "family": self.family}
        if self.extras:
            record["extras"] = {name: list(tensor.shape) for name, tensor in self.extras.items()}
        return record

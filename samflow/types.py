"""The payloads that travel on graph edges: small typed containers with their shapes stated.

Every payload derives from `Payload` and is registered by class name (`Image`, `Points`...): that name is what a
YAML graph writes in `inputs:`, and it is the only thing a YAML file can name (never an import path).

Conventions shared by all payloads:
- `N` is the number of prompt sets (one decoder call per set, batched), `K` the masks per set (1 or 3 for SAM).
- Coordinates are pixels of the *original* image, x before y; boxes are `x0, y0, x1, y1`.
- Arrays are numpy on the host; only `ImageEmbedding` holds a torch tensor, and keeps it on its model's device.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from samflow.errors import InputError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PAYLOAD_TYPES: dict[str, type[Payload]] = {}
P = TypeVar("P", bound="type[Payload]")


def payload_type(cls: P) -> P:
    """Register a payload class under its class name, so YAML graphs can name it."""
    name = cls.__name__
    known = PAYLOAD_TYPES.get(name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise TypeError(f"payload type name {name!r} is taken by {known.__module__}.{known.__qualname__}")
    PAYLOAD_TYPES[name] = cls
    return cls


class Payload:
    """Base of every edge payload. Subclasses are dataclasses with their array shapes in the docstring."""

    type_name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_name = cls.__name__

    @classmethod
    def coerce(cls, value: Any) -> Payload:
        """Turn a user-supplied value (a graph input) into this payload; subclasses accept more (paths, lists)."""
        if isinstance(value, cls):
            return value
        raise InputError(f"expected {cls.type_name}, got {type(value).__name__}")

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays of this payload (what a cache budget counts)."""
        return 0

    def to_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and JSON metadata for an on-disk cache; `from_state` reverses it."""
        raise NotImplementedError(f"{self.type_name} cannot be stored on disk")

    @classmethod
    def from_state(cls, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Payload:
        raise NotImplementedError(f"{cls.type_name} cannot be read from disk")

    def to_record(self) -> dict[str, Any]:
        """A small JSON-able summary (for manifests and `samflow run` outputs)."""
        return {"type": self.type_name}

    def save(self, directory: Path, name: str) -> list[Path]:
        """Write this payload under `directory` with file names starting with `name`; return the files."""
        path = directory / f"{name}.json"
        path.write_text(json.dumps(self.to_record(), indent=2))
        return [path]


def _read_json_file(value: Any, what: str) -> Any:
    """The content of a JSON file when `value` is a path; otherwise `value` unchanged."""
    if not isinstance(value, (str, Path, FilePath)):
        return value
    path = value.path if isinstance(value, FilePath) else Path(value)
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} file {path} is not valid JSON: {exc}") from exc


def _as_array(value: Any, dtype: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: cannot read {type(value).__name__} as numbers ({exc})") from exc


@payload_type
@dataclass(eq=False)
class FilePath(Payload):
    """A path on disk (what `image.load` reads). `path: Path`."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @classmethod
    def coerce(cls, value: Any) -> FilePath:
        if isinstance(value, FilePath):
            return value
        if isinstance(value, (str, Path)):
            return cls(Path(value))
        raise InputError(f"expected a path, got {type(value).__name__}")

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "path": str(self.path)}


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
        """Read an image file as RGB; raise InputError naming the file when it is missing or not an image."""
        from PIL import Image as PILImage
        from PIL import UnidentifiedImageError

        path = Path(path)
        if not path.is_file():
            raise InputError(f"image file not found: {path}")
        try:
            with PILImage.open(path) as picture:
                data = np.asarray(picture.convert("RGB"))
        except UnidentifiedImageError as exc:
            raise InputError(f"cannot read image {path}: not a recognised image format") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            # Truncated or corrupt files surface as OSError/SyntaxError from the decoders.
            raise InputError(f"cannot read image {path}: {exc}") from exc
        return cls(np.ascontiguousarray(data), path=path)

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
    use the very weights that made it; it is never serialised.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    model_key: str
    image_hash: str
    model: Any = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return int(self.features.numel() * self.features.element_size())

    def to_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        meta = {"original_size": list(self.original_size), "input_size": list(self.input_size),
                "model_key": self.model_key, "image_hash": self.image_hash}
        return {"features": self.features}, meta

    @classmethod
    def from_state(cls, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> ImageEmbedding:
        return cls(features=tensors["features"], original_size=tuple(meta["original_size"]),
                   input_size=tuple(meta["input_size"]), model_key=meta["model_key"], image_hash=meta["image_hash"])

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "shape": list(self.features.shape), "model_key": self.model_key,
                "image_hash": self.image_hash}


@payload_type
@dataclass(eq=False)
class Points(Payload):
    """Point prompts. `coords: float32 (N, P, 2)` x, y in image pixels; `labels: int32 (N, P)`, 1 foreground,
    0 background. A (P, 2) / (P,) pair is read as one set (N = 1)."""

    coords: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        coords = _as_array(self.coords, np.float32, "Points.coords")
        labels = _as_array(self.labels, np.int32, "Points.labels")
        if coords.ndim == 2:
            coords = coords[None]
        if labels.ndim == 1:
            labels = labels[None]
        if coords.ndim != 3 or coords.shape[-1] != 2 or labels.shape != coords.shape[:2]:
            raise InputError(f"Points need coords (N, P, 2) and labels (N, P); got {coords.shape} and {labels.shape}")
        self.coords, self.labels = coords, labels

    @classmethod
    def coerce(cls, value: Any) -> Points:
        """Accept Points, `[[x, y], ...]` (all foreground), `{"points": [[x, y]...], "labels": [...]}`, or a JSON
        file holding either."""
        if isinstance(value, Points):
            return value
        value = _read_json_file(value, "points")
        if isinstance(value, Mapping):
            coords = value.get("points", value.get("coords"))
            if coords is None:
                raise InputError("a points mapping needs a 'points' list of [x, y]")
            labels = value.get("labels")
        else:
            coords, labels = value, None
        coords = _as_array(coords, np.float32, "points")
        if labels is None:
            labels = np.ones(coords.shape[:-1], dtype=np.int32)
        return cls(coords, labels)

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.coords.nbytes + self.labels.nbytes)

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "points": self.coords.tolist(), "labels": self.labels.tolist()}


@payload_type
@dataclass(eq=False)
class Boxes(Payload):
    """Box prompts or detections. `xyxy: float32 (N, 4)` in image pixels."""

    xyxy: np.ndarray

    def __post_init__(self) -> None:
        xyxy = _as_array(self.xyxy, np.float32, "Boxes.xyxy")
        if xyxy.ndim == 1:
            xyxy = xyxy[None]
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise InputError(f"Boxes need xyxy (N, 4), got {xyxy.shape}")
        self.xyxy = xyxy

    @classmethod
    def coerce(cls, value: Any) -> Boxes:
        if isinstance(value, Boxes):
            return value
        value = _read_json_file(value, "boxes")
        if isinstance(value, Mapping):
            value = value.get("boxes")
        return cls(_as_array(value, np.float32, "boxes"))

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.xyxy.nbytes)

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "boxes": self.xyxy.tolist()}


@payload_type
@dataclass(eq=False)
class Scores(Payload):
    """Predicted quality per mask. `values: float32 (N, K)`."""

    values: np.ndarray

    def __post_init__(self) -> None:
        self.values = _as_array(self.values, np.float32, "Scores.values")

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "scores": self.values.tolist()}


@payload_type
@dataclass(eq=False)
class MaskLogits(Payload):
    """Low-resolution mask logits (SAM's 256 x 256), fit to feed a decoder's `masks` input.

    `data: float32 (N, K, h, w)`; `scores: float32 (N, K)` or None. With K > 1, a consumer takes the best-scoring.
    """

    data: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.data = _as_array(self.data, np.float32, "MaskLogits.data")
        if self.data.ndim != 4:
            raise InputError(f"MaskLogits.data must be (N, K, h, w), got {self.data.shape}")

    def best(self) -> np.ndarray:
        """(N, 1, h, w): the best-scoring logits of each set (the first when there are no scores)."""
        if self.data.shape[1] == 1 or self.scores is None:
            return self.data[:, :1]
        index = np.argmax(self.scores, axis=1)
        return self.data[np.arange(self.data.shape[0]), index][:, None]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "shape": list(self.data.shape)}

    def save(self, directory: Path, name: str) -> list[Path]:
        path = directory / f"{name}.npy"
        np.save(path, self.data)
        return [path]


@payload_type
@dataclass(eq=False)
class Masks(Payload):
    """Binary masks. `data: bool (N, K, H, W)` at the image's resolution; `scores: float32 (N, K)` or None."""

    data: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim == 3:
            data = data[:, None]
        if data.ndim != 4:
            raise InputError(f"Masks.data must be (N, K, H, W), got {data.shape}")
        self.data = data.astype(bool, copy=False)
        if self.scores is not None:
            self.scores = _as_array(self.scores, np.float32, "Masks.scores").reshape(data.shape[:2])

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def best(self) -> np.ndarray:
        """bool (N, H, W): the best-scoring mask of each set (the first when there are no scores)."""
        if self.data.shape[1] == 1 or self.scores is None:
            return self.data[:, 0]
        index = np.argmax(self.scores, axis=1)
        return self.data[np.arange(self.data.shape[0]), index]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + (self.scores.nbytes if self.scores is not None else 0))

    def records(self, file_name: Callable[[int, int], str] | None = None) -> list[dict[str, Any]]:
        """One JSON-able record per mask: set index, mask index, score, area and bounding box."""
        out = []
        for n in range(self.data.shape[0]):
            for k in range(self.data.shape[1]):
                mask = self.data[n, k]
                ys, xs = np.nonzero(mask)
                bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if xs.size else None
                record: dict[str, Any] = {"set": n, "index": k, "area": int(xs.size), "bbox_xyxy": bbox,
                                          "score": float(self.scores[n, k]) if self.scores is not None else None}
                if file_name is not None:
                    record["file"] = file_name(n, k)
                out.append(record)
        return out

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "shape": list(self.data.shape), "masks": self.records()}

    def save(self, directory: Path, name: str) -> list[Path]:
        """A PNG per mask (`NAME_n_k.png`, 0/255) and `NAME.json` with one record per mask."""
        from PIL import Image as PILImage

        def file_name(n: int, k: int) -> str:
            return f"{name}_{n}_{k}.png"

        written = []
        for n in range(self.data.shape[0]):
            for k in range(self.data.shape[1]):
                path = directory / file_name(n, k)
                PILImage.fromarray(self.data[n, k].astype(np.uint8) * 255).save(path)
                written.append(path)
        record_path = directory / f"{name}.json"
        record_path.write_text(json.dumps(self.records(file_name), indent=2))
        return [*written, record_path]


def get_payload_type(name: str) -> type[Payload] | None:
    """The payload class registered under `name`, or None."""
    return PAYLOAD_TYPES.get(name)


# The payloads of the detector, video/gaze and 3D nodes live in modules of their own, built on the classes above.
# Importing them here registers their names, so a YAML graph can declare `inputs: {frame: Frame}` before any node
# module is loaded.
from samflow import types_3d, types_detect, types_video  # noqa: E402, F401, I001


@payload_type
@dataclass(eq=False)
class TextEmbedding(Payload):
    """CLIP embeddings of text prompts, one prompt set per text.

    `data: float32 (N, D)` L2-normalised; `texts`: the N strings; `model_key`: fingerprint of the CLIP weights that
    made them; `model` refers to the CLIP model itself (`samflow.models.text.ClipModel`) so consumers (a prompt
    adapter, `clip.rank`) can check and reuse it; it is never serialised.
    """

    data: np.ndarray
    texts: list[str]
    model_key: str
    model: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.data = _as_array(self.data, np.float32, "TextEmbedding.data")
        if self.data.ndim == 1:
            self.data = self.data[None]
        if self.data.ndim != 2 or len(self.texts) != self.data.shape[0]:
            raise InputError(f"TextEmbedding needs data (N, D) and N texts; got {self.data.shape} and "
                             f"{len(self.texts)} texts")

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def to_record(self) -> dict[str, Any]:
        return {"type": self.type_name, "texts": list(self.texts), "dim": int(self.data.shape[1]),
                "model_key": self.model_key}

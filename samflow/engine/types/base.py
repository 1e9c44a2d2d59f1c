"""The payloads that travel on graph edges: small typed containers with their shapes stated.

Every payload derives from `Payload` and is registered by class name (`Image`, `Points`...): that name is what a
YAML graph writes in `inputs:`, and it is the only thing a YAML file can name (never an import path).

Conventions shared by all payloads:
- `N` is the number of prompt sets (one decoder call per set, batched), `K` the masks per set (1 or 3 for SAM).
- Coordinates are pixels of the *original* image, x before y; boxes are `x0, y0, x1, y1`.
- Arrays are numpy on the host; only `ImageEmbedding` holds a torch tensor, and keeps it on its model's device.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
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


def read_json_file(value: Any, what: str) -> Any:
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


def as_array(value: Any, dtype: Any, what: str) -> np.ndarray:
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


def get_payload_type(name: str) -> type[Payload] | None:
    """The payload class registered under `name`, or None."""
    return PAYLOAD_TYPES.get(name)


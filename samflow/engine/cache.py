"""Content-addressed cache of node outputs (image embeddings above all), LRU with a byte budget, and an optional
on-disk tier so a rerun over the same images skips the encoder.

Keys come from `content_key(...)`: a sha256 over the content of its parts (image pixels, a model fingerprint, a
node id). A part it cannot hash by content is an error, never a constant key: a constant key would hand one
image's embedding to another.

Values are mappings of port -> Payload. In memory they are kept as they are (tensors stay on their device and are
handed out by reference); on disk each entry is one safetensors file holding the payloads' tensors, with their
types and metadata in the header (no pickle anywhere).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samflow.engine.types import Payload, get_payload_type
from samflow.errors import InputError

log = logging.getLogger(__name__)

Entry = Mapping[str, Payload]


def content_key(*parts: Any) -> str:
    """A hex sha256 over the content of `parts`; raises InputError for a part it cannot hash by content."""
    digest = hashlib.sha256()
    for part in parts:
        _feed(digest, part)
    return digest.hexdigest()


def _feed(digest: Any, part: Any) -> None:
    # Each part is tagged with its kind and length so ("ab", "c") and ("a", "bc") differ.
    if part is None or isinstance(part, (bool, int, float)):
        _tagged(digest, b"s", repr(part).encode())
    elif isinstance(part, str):
        _tagged(digest, b"t", part.encode())
    elif isinstance(part, (bytes, bytearray, memoryview)):
        _tagged(digest, b"b", bytes(part))
    elif isinstance(part, np.ndarray):
        _tagged(digest, b"a", f"{part.dtype.str}{part.shape}".encode())
        _tagged(digest, b"d", np.ascontiguousarray(part).tobytes())
    elif _is_tensor(part):
        import torch

        tensor = part.detach().cpu().contiguous()
        _tagged(digest, b"T", str(tensor.dtype).encode())
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.view(torch.int16)  # numpy has no bfloat16; the bits are what matter
        _feed(digest, tensor.numpy())
    elif isinstance(part, (list, tuple)):
        _tagged(digest, b"l", str(len(part)).encode())
        for item in part:
            _feed(digest, item)
    elif isinstance(part, dict):
        _tagged(digest, b"m", str(len(part)).encode())
        for key in sorted(part, key=repr):
            _feed(digest, key)
            _feed(digest, part[key])
    elif isinstance(getattr(part, "content_hash", None), str):
        _tagged(digest, b"h", part.content_hash.encode())
    else:
        raise InputError(f"cannot build a cache key from a {type(part).__name__}: it has no content hash "
                         "(give it a `content_hash` property, or pass its bytes)")


def _tagged(digest: Any, tag: bytes, data: bytes) -> None:
    digest.update(tag + struct.pack("<Q", len(data)) + data)


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def default_budget(device: Any = None) -> int:
    """A memory budget fitting the device the entries live on: a quarter of a GPU, else 1/8 of RAM (<= 4 GiB)."""
    text = str(device or "cpu")
    if text.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(torch.device(text)).total_memory // 4
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return min(ram // 8, 4 << 30)


@dataclass
class CacheStats:
    hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    evictions: int = 0


class EmbeddingCache:
    """LRU of node outputs keyed by `content_key`, within `max_bytes`, with an optional directory behind it.

    `max_bytes=None` sizes the budget for the device of the first entry stored (see `default_budget`).
    Thread-safe: branches running concurrently may share it.
    """

    def __init__(self, max_bytes: int | None = None, disk_dir: str | Path | None = None) -> None:
        self.max_bytes = max_bytes
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        if self.disk_dir is not None:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
        self.stats = CacheStats()
        self._entries: OrderedDict[str, tuple[Entry, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries or (self._disk_path(key) is not None and self._disk_path(key).is_file())

    @property
    def nbytes(self) -> int:
        """Bytes held in memory now."""
        return self._bytes

    def get(self, key: str) -> Entry | None:
        """The entry for `key` from memory, else from disk (then kept in memory), else None."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return found[0]
        entry = self._read_disk(key)
        if entry is None:
            with self._lock:
                self.stats.misses += 1
            return None
        with self._lock:
            self.stats.disk_hits += 1
            self._remember(key, entry)
        return entry

    def put(self, key: str, entry: Entry) -> None:
        """Store an entry in memory (evicting least recently used ones) and on disk when there is a disk tier."""
        _check_key(key)
        with self._lock:
            self._remember(key, entry)
        if self.disk_dir is not None:
            self._write_disk(key, entry)

    def clear(self) -> None:
        """Forget everything held in memory (the disk tier stays)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _remember(self, key: str, entry: Entry) -> None:
        size = sum(payload.nbytes for payload in entry.values())
        if self.max_bytes is None:
            self.max_bytes = default_budget(_device_of(entry))
            log.debug("embedding cache budget: %.0f MiB", self.max_bytes / 2**20)
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        if size > self.max_bytes:
            log.debug("cache entry of %d bytes exceeds the budget; not kept in memory", size)
            return
        self._entries[key] = (entry, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted
            self.stats.evictions += 1

    # ----------------------------------------------------------------- disk tier

    def _disk_path(self, key: str) -> Path | None:
        return self.disk_dir / f"{key}.safetensors" if self.disk_dir is not None else None

    def _write_disk(self, key: str, entry: Entry) -> None:
        from safetensors.torch import save_file

        path = self._disk_path(key)
        assert path is not None
        if path.is_file():
            return
        tensors: dict[str, Any] = {}
        header: dict[str, Any] = {}
        try:
            for port, payload in entry.items():
                port_tensors, meta = payload.to_state()
                header[port] = {"type": payload.type_name, "meta": meta, "tensors": sorted(port_tensors)}
                for name, tensor in port_tensors.items():
                    tensors[f"{port}.{name}"] = tensor.detach().contiguous().cpu()
        except NotImplementedError as exc:
            log.debug("not caching on disk: %s", exc)
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            save_file(tensors, str(tmp), metadata={"samflow": json.dumps(header)})
            os.replace(tmp, path)  # readers never see a half-written file
        except OSError as exc:
            log.warning("could not write cache entry %s: %s", path, exc)
            tmp.unlink(missing_ok=True)

    def _read_disk(self, key: str) -> Entry | None:
        path = self._disk_path(key)
        if path is None or not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as file:
                header = json.loads(file.metadata()["samflow"])
                entry: dict[str, Payload] = {}
                for port, info in header.items():
                    payload_type = get_payload_type(info["type"])
                    if payload_type is None:
                        raise ValueError(f"unknown payload type {info['type']!r}")
                    tensors = {name: file.get_tensor(f"{port}.{name}") for name in info["tensors"]}
                    entry[port] = payload_type.from_state(tensors, info["meta"])
        except Exception as exc:  # a damaged entry is a miss, not a failure of the run
            log.warning("ignoring unreadable cache entry %s: %s", path, exc)
            return None
        return entry


def _check_key(key: Any) -> None:
    if not isinstance(key, str) or len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise InputError(f"cache keys are content_key() digests (64 hex characters), got {key!r}")


def _device_of(entry: Entry) -> Any:
    for payload in entry.values():
        for value in vars(payload).values():
            if _is_tensor(value):
                return value.device
    return None

"""A process-wide pool of loaded models, keyed by what makes two models the same (weights, device, dtype).

Nodes ask the pool instead of loading weights themselves, so every node naming the same checkpoint on the same
device and dtype shares one model object, loaded once per process however many graphs or items use it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelPool:
    """Loaded models by key; `get(key, load)` calls `load()` only the first time a key is asked for."""

    def __init__(self) -> None:
        self._models: dict[Hashable, Any] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self.loads = 0  # how many times a loader ran (tests and manifests read it)

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        model = self._models.get(key)
        if model is not None:
            return model
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # two branches asking for one model at once load it once
            model = self._models.get(key)
            if model is None:
                started = time.perf_counter()
                model = load()
                self._models[key] = model
                self.loads += 1
                log.debug("loaded model %s in %.2f s", key, time.perf_counter() - started)
        return model

    def __contains__(self, key: Hashable) -> bool:
        return key in self._models

    def __len__(self) -> int:
        return len(self._models)

    def clear(self) -> None:
        """Drop every model (their memory is freed once no graph holds them)."""
        with self._lock:
            self._models.clear()
            self._key_locks.clear()


_default_pool = ModelPool()


def default_model_pool() -> ModelPool:
    """The pool shared by every Scheduler of this process that is not given its own."""
    return _default_pool

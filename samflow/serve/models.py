"""The service's model pool for graph runs: at most `max_models` models, the least recently used evicted first.

Models already in the `parent` pool (the served model, loaded at start) are shared, not counted and never evicted,
so a graph naming the served model reuses it and its cached embeddings.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from samflow.pool import ModelPool

log = logging.getLogger(__name__)
T = TypeVar("T")


class BoundedModelPool(ModelPool):
    """A ModelPool holding at most `max_models` models of its own (LRU), on top of a `parent` pool."""

    def __init__(self, max_models: int, parent: ModelPool | None = None) -> None:
        super().__init__()
        self.max_models = max(1, max_models)
        self.parent = parent
        self._models: OrderedDict[Hashable, Any] = OrderedDict()
        self._load_lock = threading.RLock()  # one load at a time: the pool never holds more than its bound
        self.evictions = 0

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        if self.parent is not None and key in self.parent:
            return self.parent.get(key, load)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
        with self._load_lock:
            with self._lock:
                model = self._models.get(key)
                if model is not None:
                    self._models.move_to_end(key)
                    return model
                while len(self._models) >= self.max_models:  # make room before loading, not after
                    evicted, _ = self._models.popitem(last=False)
                    self.evictions += 1
                    log.info("model pool: evicted %s (holds at most %d)", evicted, self.max_models)
            started = time.perf_counter()
            model = load()
            with self._lock:
                self._models[key] = model
                self.loads += 1
            log.debug("loaded model %s in %.2f s", key, time.perf_counter() - started)
        return model

    def __contains__(self, key: Hashable) -> bool:
        return key in self._models or (self.parent is not None and key in self.parent)

    def __len__(self) -> int:
        return len(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

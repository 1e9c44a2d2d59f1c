"""Helpers of the service and browser-app tests: scene pictures as files and a live service on loopback."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image as PILImage

from samflow.engine.cache import EmbeddingCache
from samflow.predict.segmenter import Segmenter


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_segmenter() -> Segmenter:
    """A Segmenter of its own (own embedding cache), sharing the process's loaded models."""
    return Segmenter(cache=EmbeddingCache(max_bytes=1 << 27))


@contextmanager
def live_service(settings=None, segmenter: Segmenter | None = None) -> Iterator[tuple[str, object]]:
    """(base URL, FastAPI app) of the service running on a free 127.0.0.1 port."""
    from samflow.serve import ServiceSettings, create_app
    from samflow.serve.server import BackgroundServer

    app = create_app(settings or ServiceSettings(), segmenter=segmenter or make_segmenter())
    with BackgroundServer(app) as url:
        yield url, app

"""Settings of the segmentation service: the model, the limits on what clients send, the cache budgets."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 2**20


@dataclass(frozen=True)
class ServiceSettings:
    """What `samflow serve` runs with. Sizes are bytes; `embedding_cache_bytes=None` sizes it for the device."""

    model: str = "tiny"
    checkpoint: str | None = None
    device: str | None = None
    max_upload_bytes: int = 32 * MiB  # an image upload (the whole request body)
    max_json_bytes: int = 1 * MiB  # any other request body (prompts, graphs)
    max_side: int = 4096  # largest width or height accepted, checked from the header before decoding
    max_points: int = 64
    max_boxes: int = 64
    image_cache_bytes: int = 512 * MiB  # decoded uploads, least recently used evicted first
    embedding_cache_bytes: int | None = None
    model_workers: int = 2  # model calls (encoder or decoder) running at once
    graphs: bool = True  # offer POST /api/graphs/run

"""Settings of the segmentation service: the model, who may call it, the limits on what clients send, the caches.

Every count that drives work has a limit here, applied on every endpoint (graph runs included): points, boxes,
texts, masks returned, the pixels of an image, the nodes of a graph, the size of the YAML text. The defaults bound a
request to a few hundred MB (masks are bools: `max_mask_pixels` bytes at most per answer) and the service to
`image_cache_bytes` + `embedding_cache_bytes` + `max_models` models + `model_workers` requests at work +
`max_connections` request bodies (each at most `max_upload_bytes`) being received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MiB = 2**20


@dataclass(frozen=True)
class ServiceSettings:
    """What `samflow serve` runs with. Sizes are bytes; `embedding_cache_bytes=None` sizes it for the device."""

    model: str = "tiny"
    checkpoint: str | None = None
    device: str | None = None
    # who may call
    host: str = "127.0.0.1"  # the address bound; with the loopback names and IP literals, the Host headers accepted
    allowed_hosts: tuple[str, ...] = ()  # more Host names accepted ("*": any)
    cors_origins: tuple[str, ...] = ()  # origins other than the service's own that browsers may call it from
    token: str | None = None  # access token; required when `host` is not a loopback address
    # request sizes
    max_upload_bytes: int = 32 * MiB  # an image upload (the whole request body)
    max_json_bytes: int = 1 * MiB  # any other request body (prompts, graphs)
    max_graph_bytes: int = 64 * 1024  # the YAML text of a graph run
    # pixels
    max_side: int = 4096  # largest width or height accepted, checked from the header before decoding
    max_pixels: int = 2048 * 2048  # largest width x height segmented; larger uploads are downscaled or refused
    oversize: Literal["downscale", "refuse"] = "downscale"  # what happens to an upload over max_pixels
    # counts per request (segment and graph runs alike)
    max_points: int = 64
    max_boxes: int = 64
    max_texts: int = 8  # text prompts (clip.text texts, clip.rank negatives)
    max_masks: int = 192  # masks returned (objects x candidates)
    max_mask_pixels: int = 256 * MiB  # masks returned x their pixels (bool masks: bytes)
    max_graph_nodes: int = 32
    max_auto_prompts: int = 1024  # sam.auto grid prompts over all crops (32 x 32 without crops)
    # graph runs
    graphs: bool = True  # offer POST /api/graphs/run
    graph_models: tuple[str, ...] | None = None  # SAM presets a graph may name (None: `model` only)
    allow_dirs: tuple[str, ...] = ()  # folders whose files graph params may name (none: no server file is read)
    # text prompts (POST /segment with a text alone), in the order samflow.segment takes its routes: the operator's
    # open-vocabulary detector folder, else CLIP ranking of automatic masks with this CLIP, else the prompt adapter
    text_detector: str | None = None
    text_clip: str | None = None
    text_box_threshold: float | None = None  # the detector's box threshold (None: the detector's default)
    # caches and concurrency
    image_cache_bytes: int = 512 * MiB  # decoded uploads, least recently used evicted first
    embedding_cache_bytes: int | None = None
    max_models: int = 4  # models loaded for graph runs besides the served one, least recently used evicted
    model_workers: int = 2  # requests doing model work (decoding, encoder, decoder, mask encoding, graphs) at once
    max_connections: int = 64  # connections served at once (more are answered 503): bounds bodies being read

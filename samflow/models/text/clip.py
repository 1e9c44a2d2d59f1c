"""`ClipModel`: an open_clip model ready for inference, from local files only (see `clip_config` for which model and
`clip_loading` for its weights; Hugging Face text towers and tokenizers are refused, nothing is downloaded).

It bundles the open_clip model, its offline tokenizer (open_clip's `SimpleTokenizer`, whose BPE vocabulary ships
inside the package) and its pixel statistics; it returns L2-normalised embeddings and caches text embeddings.
`get_clip` (in `clip_loading`) loads one per (config, weights, device) per process, through samflow's model pool.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samflow.errors import InputError
from samflow.models.text.clip_config import ClipConfig

TEXT_CACHE_SIZE = 4096


class ClipModel:
    """An open_clip model ready for inference: offline tokenizer, pixel statistics, normalised embeddings.

    `embed_text(texts) -> float (N, D)` and `embed_images(pixels) -> float (N, D)` are L2-normalised;
    text embeddings are cached per string (LRU), so a repeated prompt costs a dictionary lookup.
    `rank_threshold`: the absolute cosine threshold calibrated for this model (from its checkpoint), or None.
    """

    def __init__(self, model: nn.Module, config: ClipConfig, rank_threshold: float | None = None,
                 source: str = "") -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.model = model.eval()
        self.config = config
        self.rank_threshold = rank_threshold
        self.source = source
        self.tokenizer = SimpleTokenizer(context_length=config.context_length)  # BPE vocab ships with open_clip
        device, dtype = self.device, self.dtype
        self._mean = torch.tensor(config.mean, device=device, dtype=dtype).view(1, 3, 1, 1)
        self._std = torch.tensor(config.std, device=device, dtype=dtype).view(1, 3, 1, 1)
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self._fingerprint: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def embed_dim(self) -> int:
        return int(self.config.model_cfg["embed_dim"])

    @property
    def fingerprint(self) -> str:
        """A stable hash of the config and weights (cache keys; adapters record which CLIP they were trained on)."""
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=16)
            digest.update(json.dumps(self.config.model_cfg, sort_keys=True).encode())
            for key, value in sorted(self.model.state_dict().items()):
                digest.update(key.encode())
                digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids (N, context_length) on the model's device; over-long texts are truncated (end token kept)."""
        return self.tokenizer(list(texts)).to(self.device)

    @torch.no_grad()
    def embed_text(self, texts: str | Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings, float32 (N, D); cached per string (LRU)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = [str(t) for t in texts]
        if not texts or any(not t.strip() for t in texts):
            raise InputError("text prompts must be non-empty strings")
        with self._lock:
            found = {t: self._text_cache[t] for t in texts if t in self._text_cache}
            for t in found:
                self._text_cache.move_to_end(t)
        todo = [t for t in dict.fromkeys(texts) if t not in found]
        if todo:
            features = self.model.encode_text(self.tokenize(todo), normalize=True).float()
            fresh = dict(zip(todo, features))
            found.update(fresh)
            with self._lock:
                self._text_cache.update(fresh)
                while len(self._text_cache) > TEXT_CACHE_SIZE:
                    self._text_cache.popitem(last=False)
        return torch.stack([found[t] for t in texts])

    def normalize_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) floats in [0, 1] -> the model's input (its mean / std, its dtype and device)."""
        pixels = pixels.to(device=self.device, dtype=self.dtype)
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            pixels = F.interpolate(pixels, (self.image_size, self.image_size), mode="bilinear", antialias=True,
                                   align_corners=False)
        return (pixels - self._mean) / self._std

    def embed_images(self, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """L2-normalised image embeddings, float32 (N, D), of (N, 3, S, S) pixels in [0, 1]."""
        out = []
        with torch.no_grad():
            for start in range(0, pixels.shape[0], batch_size):
                chunk = self.normalize_pixels(pixels[start : start + batch_size])
                out.append(self.model.encode_image(chunk, normalize=True).float())
        if not out:
            return torch.zeros((0, self.embed_dim), device=self.device)
        return torch.cat(out)

    def embed_crops(self, image: np.ndarray, masks: np.ndarray, **crop_options: Any) -> torch.Tensor:
        """Embeddings (N, D) of the masked crops of `masks` bool (N, H, W) in `image` uint8 (H, W, 3)."""
        from samflow.models.text.crops import masked_crops

        return self.embed_images(masked_crops(image, masks, self.image_size, **crop_options))

"""A trained presence score for the prompt-adapter route: is this candidate mask the object the text names?

CLIP's cosine between a text and a masked crop decides presence well for colours and poorly for shapes with a small
CLIP (clip_tiny names a crop's shape 70% of the time), so "a purple star" where only a purple circle is often passed.
The head reads, per candidate, CLIP's cosine, SAM's predicted IoU, the mask's class-agnostic descriptors
(samflow.ops.mask_descriptors: how it fills its box and hull, how round and elongated it is, its colours) and the
text's CLIP embedding, and says how likely the candidate is a right answer (a small MLP, trained with a logistic
loss on training scenes by samflow.train.text_presence.fit_presence_head; candidates of absent captions and wrong
masks are its negatives). A text is present when its best candidate's probability reaches the calibrated threshold.

It is saved in the adapter's file (tensors under `presence_head.`, its config in the metadata), as it belongs to
one CLIP + adapter pair.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from samflow.errors import InputError
from samflow.ops.mask_descriptors import DESCRIPTORS

HEAD_KEY = "samflow_text_presence_head"  # safetensors metadata key of its config in the adapter file
HEAD_PREFIX = "presence_head."  # its tensors' prefix there
SCORES = ("cosine", "predicted_iou")


class PresenceHeadConfig(BaseModel):
    """Sizes of a presence head and the inputs it reads, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_dim: int = Field(gt=0, description="width of the CLIP text embeddings")
    hidden: int = Field(32, gt=0)
    descriptors: tuple[str, ...] = Field(DESCRIPTORS, description="samflow.ops.mask_descriptors names it reads")

    @property
    def inputs(self) -> int:
        return len(SCORES) + len(self.descriptors) + self.text_dim


class PresenceHead(nn.Module):
    """Probability (N, K) that each of K candidate masks of N texts is the text's object."""

    def __init__(self, config: PresenceHeadConfig) -> None:
        super().__init__()
        if tuple(config.descriptors) != DESCRIPTORS:
            raise InputError(f"this presence head reads descriptors {list(config.descriptors)}; this samflow makes "
                             f"{list(DESCRIPTORS)}: retrain it (recipes/calibrate_text_presence.py)")
        self.config = config
        # Inputs are standardised with the training data's mean and spread, kept with the weights.
        self.register_buffer("mean", torch.zeros(config.inputs))
        self.register_buffer("scale", torch.ones(config.inputs))
        self.net = nn.Sequential(nn.Linear(config.inputs, config.hidden), nn.GELU(), nn.Linear(config.hidden, 1))

    @staticmethod
    def features(cosine: np.ndarray, quality: np.ndarray, descriptors: np.ndarray,
                 text_embeddings: np.ndarray) -> torch.Tensor:
        """Raw inputs (N, K, F): cosine and predicted IoU (N, K), descriptors (N, K, D), text embeddings (N, E).
        A candidate CLIP never scores (cosine -inf: too small to rank) gets cosine -1."""
        cosine = np.where(np.isfinite(cosine), cosine, -1.0)
        n, k = cosine.shape
        text = np.broadcast_to(np.asarray(text_embeddings, np.float32)[:, None], (n, k, text_embeddings.shape[-1]))
        parts = [np.stack([cosine, quality], -1), np.asarray(descriptors), text]
        return torch.from_numpy(np.concatenate([p.astype(np.float32) for p in parts], -1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.to(self.mean.device, self.mean.dtype) - self.mean) / self.scale
        return torch.sigmoid(self.net(x)[..., 0])

    @torch.no_grad()
    def probabilities(self, cosine: np.ndarray, quality: np.ndarray, descriptors: np.ndarray,
                      text_embeddings: np.ndarray) -> np.ndarray:
        """float64 (N, K); 0 for candidates CLIP never scores (as rank_masks never keeps them)."""
        if cosine.shape[:2] != descriptors.shape[:2] or len(text_embeddings) != len(cosine) \
                or text_embeddings.shape[-1] != self.config.text_dim:
            raise InputError(f"the presence head needs cosines (N, K), descriptors (N, K, D) and text embeddings "
                             f"(N, {self.config.text_dim}); got {cosine.shape}, {descriptors.shape}, "
                             f"{text_embeddings.shape}")
        if not cosine.size:
            return np.zeros(cosine.shape)
        self.eval()
        p = self(self.features(cosine, quality, descriptors, text_embeddings)).double().cpu().numpy()
        return np.where(np.isfinite(cosine), p, 0.0)


__all__ = ["HEAD_KEY", "HEAD_PREFIX", "PresenceHead", "PresenceHeadConfig"]

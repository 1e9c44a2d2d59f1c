"""Training batches: images resized and padded to the model's input size, with a few object masks each."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from samflow.data.samples import Sample
from samflow.data.synthetic import render_scene, scene_rng
from samflow.errors import InputError
from samflow.ops.transforms import ResizeLongestSide
from samflow.train.config import DataConfig

log = logging.getLogger(__name__)


class SceneSource:
    """Indexable images with masks: synthetic scenes rendered on demand, or an SA-1B / COCO dataset."""

    def __init__(self, config: DataConfig) -> None:
        self.config = config
        self.dataset: Sequence[Sample] | None = None
        if config.kind == "sa1b":
            from samflow.data.sa1b import SA1BDataset

            self.dataset = SA1BDataset(config.path or "")
        elif config.kind == "coco":
            from samflow.data.coco import CocoDataset

            self.dataset = CocoDataset(config.annotations or "", config.path or "")
        if self.dataset is not None and len(self.dataset) == 0:
            raise InputError(f"training data {config.path} holds no images")

    def __len__(self) -> int:
        if self.dataset is not None:
            return len(self.dataset)
        return self.config.num_scenes or 2**62

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (H, W, 3) image and bool (N, H, W) masks of item `index` (wrapping around)."""
        index %= len(self)
        if self.dataset is None:
            # Scene indices are 1-based in `samflow synth` files; render the same scenes.
            scene = render_scene(scene_rng(self.config.seed, index + 1), self.config.scene_size)
            return scene.image, scene.masks
        sample = self.dataset[index]
        return sample.image, sample.masks


def to_model_input(image: np.ndarray, masks: np.ndarray, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize the longest side to `image_size`: float (3, h, w) pixels and bool (N, S, S) masks padded bottom-right.

    Pixels stay 0..255 and unpadded: Sam.preprocess normalises, then pads (so padding is zero after normalising).
    """
    h, w = image.shape[:2]
    if max(h, w) != image_size:
        image = ResizeLongestSide(image_size).apply_image(image)
    nh, nw = image.shape[:2]
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    m = torch.from_numpy(masks)
    if (nh, nw) != (h, w):
        m = F.interpolate(m[None].float(), (nh, nw), mode="nearest")[0] > 0.5
    m = F.pad(m, (0, image_size - nw, 0, image_size - nh))
    return img, m


class BatchSampler:
    """Deterministic batches: batch `step` depends only on (seed, step), so a resumed run sees the same data."""

    def __init__(self, source: SceneSource, images_per_batch: int, objects_per_image: int, image_size: int,
                 seed: int) -> None:
        self.source = source
        self.images_per_batch = images_per_batch
        self.objects_per_image = objects_per_image
        self.image_size = image_size
        self.seed = seed

    def batch(self, step: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Images: list of B float (3, h, w) tensors (unpadded); masks: bool (B*K, S, S), K per image in order."""
        rng = np.random.default_rng([self.seed, step])
        n = len(self.source)
        endless_synthetic = self.source.dataset is None and self.source.config.num_scenes is None
        images: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        attempt = 0
        while len(images) < self.images_per_batch:
            if endless_synthetic:
                index = step * self.images_per_batch + len(images) + attempt * 7919
            else:
                index = int(rng.integers(n))
            attempt += 1
            image, item_masks = self.source.get(index)
            if item_masks.shape[0] == 0:
                continue
            img, m = to_model_input(image, item_masks, self.image_size)
            m = m[m.flatten(1).any(dim=1)]  # an object can vanish when downscaled
            if m.shape[0] == 0:
                continue
            k = self.objects_per_image
            pick = rng.choice(m.shape[0], size=k, replace=m.shape[0] < k)
            images.append(img)
            masks.append(m[torch.from_numpy(pick)])
            if attempt > 50 * self.images_per_batch:
                raise InputError("training data: too many images without usable masks")
        return images, torch.cat(masks, dim=0)


class _StepBatches(torch.utils.data.Dataset):
    """Batches `start`..`stop`-1 of a BatchSampler as a dataset, so DataLoader workers can prepare them ahead."""

    def __init__(self, sampler: BatchSampler, start: int, stop: int) -> None:
        self.sampler, self.start, self.stop = sampler, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self.sampler.batch(self.start + i)


def batch_stream(sampler: BatchSampler, start: int, stop: int, workers: int = 0, pin_memory: bool = False
                 ) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
    """Batches of steps `start`..`stop`-1 in order; with `workers` > 0 they are rendered in that many processes
    ahead of use (a GPU outruns one CPU core rendering scenes). Each batch depends only on its step, so the data
    is the same either way."""
    if workers == 0:
        for step in range(start, stop):
            yield sampler.batch(step)
        return
    loader = torch.utils.data.DataLoader(_StepBatches(sampler, start, stop), batch_size=None, shuffle=False,
                                         num_workers=workers, pin_memory=pin_memory, prefetch_factor=4)
    yield from loader

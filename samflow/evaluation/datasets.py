"""Evaluation datasets from a command-line spec: what `samflow eval DATASET` accepts.

- `synthetic:SEED:N[:SIZE]`: N synthetic scenes of dataset SEED, rendered on the fly (scene i as `samflow synth`
  writes it);
- `synthetic-hard:SEED:N[:SIZE]`: the same for the evaluation-only hard style (samflow.data.synthetic_hard: occluded,
  thin and small objects, textured backgrounds, JPEG; scene i as `samflow synth --style hard` writes it);
- a folder with `images/` and `masks/`: instance-mask PNGs (samflow.data.instance_folders);
- any other folder: SA-1B layout (`NAME.json` beside `NAME.jpg`);
- a `.json` file: COCO instances (images beside it, or in `images`); for instance and proposal evaluation also LVIS
  (samflow.data.lvis).

For the edge task, `load_boundary_dataset` also reads BSDS500 folders (samflow.data.bsds) and draws the boundaries
of any other dataset from its instance masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from samflow.data.bsds import BoundarySample
from samflow.data.samples import Sample
from samflow.errors import InputError

__all__ = ["SYNTHETIC_STYLES", "SyntheticScenes", "load_boundary_dataset", "load_dataset", "parse_synthetic",
           "synthetic_scenes"]

# Spec prefix -> scene style: samflow.data.synthetic (what the shipped models were trained on) and
# samflow.data.synthetic_hard (for evaluation only).
SYNTHETIC_STYLES = {"synthetic": "plain", "synthetic-hard": "hard"}
# Scene sizes a spec may ask for (pixels per side): big enough for objects, small enough to render in memory.
MIN_SCENE_SIZE, MAX_SCENE_SIZE = 32, 4096


class SyntheticScenes(Sequence[Sample]):
    """`n` synthetic scenes of dataset `seed` (scene i as `samflow synth --seed` writes sa_{i:06d}), rendered lazily;
    `style` "plain" (samflow.data.synthetic) or "hard" (samflow.data.synthetic_hard, `samflow synth --style hard`)."""

    def __init__(self, seed: int, n: int, size: int = 256, start: int = 1, style: str = "plain") -> None:
        if style not in SYNTHETIC_STYLES.values():
            raise InputError(f"synthetic scene style must be one of {sorted(SYNTHETIC_STYLES.values())}, "
                             f"got {style!r}")
        self.seed, self.n, self.size, self.start, self.style = seed, n, size, start, style

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        from samflow.data.synthetic import render_scene, scene_file_stem, scene_rng

        if not 0 <= index < self.n:
            raise IndexError(index)
        if self.style == "hard":
            from samflow.data.synthetic_hard import hard_scene_rng, render_hard_scene

            scene = render_hard_scene(hard_scene_rng(self.seed, self.start + index), self.size)
        else:
            scene = render_scene(scene_rng(self.seed, self.start + index), self.size)
        return Sample(image=scene.image, masks=scene.masks, annotations=scene.annotations,
                      file_name=scene_file_stem(self.start + index) + ".png")


def synthetic_scenes(seed: int, n: int, size: int = 256, style: str = "plain") -> SyntheticScenes:
    return SyntheticScenes(seed, n, size, style=style)


def parse_synthetic(spec: str) -> SyntheticScenes:
    """`synthetic:SEED:N[:SIZE]` or `synthetic-hard:SEED:N[:SIZE]` -> the scenes; an InputError naming the form
    otherwise."""
    parts = spec.split(":")
    prefix = parts[0] if parts[0] in SYNTHETIC_STYLES else "synthetic"
    try:
        if parts[0] not in SYNTHETIC_STYLES or len(parts) > 4:
            raise ValueError
        seed, n = int(parts[1]), int(parts[2])
        size = int(parts[3]) if len(parts) > 3 else 256
    except (IndexError, ValueError):
        raise InputError(f"expected {prefix}:SEED:N[:SIZE], got {spec!r}") from None
    if n < 1 or seed < 0:
        raise InputError(f"{prefix}:SEED:N needs SEED >= 0 and N >= 1, got {spec!r}")
    if not MIN_SCENE_SIZE <= size <= MAX_SCENE_SIZE:
        raise InputError(f"{prefix}:SEED:N:SIZE needs {MIN_SCENE_SIZE} <= SIZE <= {MAX_SCENE_SIZE} (pixels), "
                         f"got {spec!r}")
    return SyntheticScenes(seed, n, size, style=SYNTHETIC_STYLES[parts[0]])


def load_dataset(spec: str, images: str | None = None) -> tuple[str, Sequence[Sample]]:
    """A dataset of `Sample`s from a command-line spec (see the module doc); returns (name, samples)."""
    if spec.startswith(tuple(f"{prefix}:" for prefix in SYNTHETIC_STYLES)):
        return spec, parse_synthetic(spec)
    path = Path(spec)
    if path.is_dir():
        from samflow.data.bsds import is_bsds_folder
        from samflow.data.instance_folders import InstanceFolderDataset, is_instance_folder

        if is_bsds_folder(path) and not (path / "masks").is_dir():
            raise InputError(f"{path} is a BSDS500 boundary folder (images/ + groundTruth/), which has no instance "
                             "masks: evaluate it with --task edges")

        if is_instance_folder(path) or (path / "masks").is_dir() or (path / "images").is_dir():
            return path.name, InstanceFolderDataset(path)  # its errors name what is missing
        from samflow.data.sa1b import SA1BDataset

        dataset = SA1BDataset(path)
        if len(dataset) == 0:
            raise InputError(f"dataset folder {path} has no SA-1B *.json files and no images/ + masks/ folders "
                             "(instance-mask PNGs)")
        return path.name, dataset
    if path.suffix == ".json" and path.is_file():
        from samflow.data.coco import CocoDataset

        return path.stem, CocoDataset(path, images or path.parent, skip_empty=True)
    raise InputError(f"dataset {spec!r} is not an SA-1B folder, a folder with images/ and masks/, a COCO .json file, "
                     "synthetic:SEED:N or synthetic-hard:SEED:N")


class _MaskBoundaries(Sequence[BoundarySample]):
    """Boundary ground truth derived from instance masks (one annotator): samflow.evaluation.boundaries."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> BoundarySample:  # type: ignore[override]
        from samflow.evaluation.boundaries import mask_boundaries

        sample = self.samples[index]
        h, w = sample.image.shape[:2]
        masks = sample.masks if len(sample.masks) else np.zeros((0, h, w), bool)
        return BoundarySample(sample.image, mask_boundaries(masks)[None], sample.file_name)


def load_boundary_dataset(spec: str, images: str | None = None, split: str = "test"
                          ) -> tuple[str, Sequence[BoundarySample]]:
    """A BSDS500-layout folder (samflow.data.bsds; `split` chooses test, val or train), or any dataset of
    `load_dataset` with boundaries drawn from its instance masks."""
    from samflow.data.bsds import BSDSDataset, is_bsds_folder

    path = Path(spec)
    if path.is_dir() and is_bsds_folder(path):
        dataset = BSDSDataset(path, split)
        return dataset.name, dataset
    name, samples = load_dataset(spec, images)
    return name, _MaskBoundaries(samples)

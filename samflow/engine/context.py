"""What a node sees of a run besides its inputs (the item, where to write, the model pool, the cache)."""

from __future__ import annotations

from pathlib import Path, PurePath

from samflow.engine.cache import EmbeddingCache
from samflow.errors import NodeError
from samflow.pool import ModelPool


class ItemContext:
    """What a node sees of the run besides its inputs: the item, where to write, the model pool and the cache."""

    __slots__ = ("item_id", "output_dir", "models", "cache")

    def __init__(self, item_id: str, output_dir: Path | None, models: ModelPool, cache: EmbeddingCache) -> None:
        self.item_id, self.output_dir, self.models, self.cache = item_id, output_dir, models, cache

    def output_path(self, relative: str | Path, who: str = "this node") -> Path:
        """A path inside the item's output folder (parents created); NodeError when the run writes nothing, or when
        `relative` would leave the folder (absolute, `..`): writes outside it would escape the staging that makes
        an item all-or-nothing, and a graph file must not write wherever it likes."""
        if self.output_dir is None:
            raise NodeError(f"{who} writes files, but this run has no output folder "
                            "(use `samflow run --out DIR`, or Scheduler.run(..., output_dir=DIR))")
        inner = PurePath(relative)
        if inner.is_absolute() or ".." in inner.parts or inner.drive:
            raise NodeError(f"{who}: output path {str(relative)!r} must be relative to the item's output folder, "
                            "without '..' (e.g. 'masks' or 'overlay.png')")
        path = self.output_dir / inner
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

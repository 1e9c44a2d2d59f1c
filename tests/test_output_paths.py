"""A graph's writers stay inside the item's output folder: absolute paths and '..' are refused, by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from samflow.engine.cache import EmbeddingCache
from samflow.engine.context import ItemContext
from samflow.errors import NodeError
from samflow.pool import ModelPool


def _context(tmp_path: Path) -> ItemContext:
    return ItemContext("item", tmp_path / "out" / "item", ModelPool(), EmbeddingCache())


@pytest.mark.parametrize("escape", ["../../x.png", "/tmp/elsewhere", "masks/../../x.png", ".."])
def test_escaping_output_paths_are_refused(tmp_path: Path, escape: str) -> None:
    with pytest.raises(NodeError, match=r"masks\.overlay: output path .* must be relative"):
        _context(tmp_path).output_path(escape, who="masks.overlay")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "out" / "x.png").exists()


def test_inner_paths_are_made_inside_the_item_folder(tmp_path: Path) -> None:
    path = _context(tmp_path).output_path("masks/a/overlay.png", who="masks.overlay")
    assert path == tmp_path / "out" / "item" / "masks" / "a" / "overlay.png" and path.parent.is_dir()


def test_a_graph_whose_overlay_escapes_fails_its_item_and_writes_nothing_outside(tmp_path: Path) -> None:
    import numpy as np

    from samflow.engine.graph import Graph
    from samflow.engine.scheduler import Scheduler
    from samflow.engine.types import Image

    g = Graph()
    image = g.input("image", Image)
    encoder = g.add("sam.encoder", "encoder", params={"model": "tiny"}, image=image)
    clicks = g.add("prompt.points", "clicks", params={"points": [[30, 30]], "labels": [1]})
    segment = g.add("sam.decoder", "segment", embedding=encoder.embedding, points=clicks.points)
    g.add("masks.overlay", "overlay", params={"file": "../../escaped.png"}, image=image, masks=segment.masks)
    picture = np.zeros((64, 64, 3), np.uint8)
    with Scheduler(g) as scheduler, pytest.raises(NodeError, match="overlay|masks.overlay"):
        scheduler.run({"image": picture}, output_dir=tmp_path / "out" / "item")
    assert not list(tmp_path.rglob("escaped.png"))

"""Planning a distributed run: the items (item id, {input: path}) it processes, listed on the driver by the rules
of `samflow run` (graphs) and `samflow annotate` (the data engine), for local paths and URIs alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from samflow.errors import InputError
from samflow.scale import sources

if TYPE_CHECKING:
    from samflow.engine.graph import Graph

Item = tuple[str, dict[str, str]]


def plan_images(specs: Sequence[str | Path], out: str | Path) -> list[Item]:
    """(stem, {image, image_id}) per image, as `samflow annotate` lists them: local files deduplicated and sorted
    as the command does, then URIs; ids from (and added to) `out/image_ids.json`."""
    from samflow.ops.image import IMAGE_SUFFIXES
    from samflow.scale.annotate import image_ids
    from samflow.scale.runner import expand_paths, unique_stems

    local = [spec for spec in specs if not sources.is_uri(spec)]
    remote = [str(spec) for spec in specs if sources.is_uri(spec)]
    paths = [str(p) for p in sorted({p.resolve(): p for spec in local
                                     for p in expand_paths(spec, IMAGE_SUFFIXES)}.values())]
    paths += sorted({uri for spec in remote for uri in sources.list_files(spec, IMAGE_SUFFIXES)})
    if not paths:
        raise InputError(f"no images found in {' '.join(str(spec) for spec in specs)}")
    Path(out).mkdir(parents=True, exist_ok=True)
    stems = unique_stems(paths, fallback="image")
    ids = image_ids(Path(out), stems)
    return [(stem, {"image": path, "image_id": str(image_id)}) for stem, path, image_id in zip(stems, paths, ids)]


def plan_items(graph: Graph, specs: Mapping[str, str | Path]) -> list[Item]:
    """(item id, {input: path}) per item, by `samflow run`'s rules, for local paths and URIs alike."""
    from samflow.scale import runner

    return runner.plan_items(graph, specs, list_files=sources.list_files)

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
    as the command does, then URIs; stems and ids from (and added to) `out/image_ids.json`, so a stem recorded
    for another file is not reused (`annotate.assign_images`)."""
    from samflow.ops.image import IMAGE_SUFFIXES
    from samflow.scale.annotate import assign_images
    from samflow.scale.runner import expand_paths

    local = [spec for spec in specs if not sources.is_uri(spec)]
    remote = [str(spec) for spec in specs if sources.is_uri(spec)]
    paths = [str(p) for p in sorted({p.resolve(): p for spec in local
                                     for p in expand_paths(spec, IMAGE_SUFFIXES)}.values())]
    paths += sorted({uri for spec in remote for uri in sources.list_files(spec, IMAGE_SUFFIXES)})
    if not paths:
        raise InputError(f"no images found in {' '.join(str(spec) for spec in specs)}")
    Path(out).mkdir(parents=True, exist_ok=True)
    return [(stem, {"image": path, "image_id": str(image_id)})
            for (stem, image_id), path in zip(assign_images(Path(out), paths), paths)]


def plan_items(graph: Graph, specs: Mapping[str, str | Path]) -> list[Item]:
    """(item id, {input: path}) per item, by `samflow run`'s rules, for local paths and URIs alike."""
    from samflow.scale import runner

    return runner.plan_items(graph, specs, list_files=sources.list_files)

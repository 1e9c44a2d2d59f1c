"""Pipeline: any graph, run from application code as a function.

    pipeline = samflow.Pipeline.from_yaml("graphs/point_prompt.yaml", overrides={"clicks.points": [[40, 60]]})
    outputs = pipeline(image="photo.jpg")          # {"masks": Masks, "scores": Scores}

It shares models and image embeddings with `samflow.segment` (the process-wide Segmenter's pool and cache), so an
image already segmented is not encoded again. Calls may come from several threads at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from samflow.engine.graph import Graph
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import Image, Payload
from samflow.ops.image import to_rgb_uint8
from samflow.predict.segmenter import Segmenter, default_segmenter


class Pipeline:
    """A validated graph with its scheduler; call it with the graph's inputs, get its outputs by name."""

    def __init__(self, graph: Graph, *, segmenter: Segmenter | None = None, max_workers: int = 1) -> None:
        segmenter = segmenter or default_segmenter()
        self.graph = graph
        self.scheduler = Scheduler(graph, cache=segmenter.cache, models=segmenter.models, max_workers=max_workers)

    @classmethod
    def from_yaml(cls, source: str | Path, overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> Pipeline:
        """From a YAML graph file, or YAML text (a str with a line break); `overrides` set node params
        ({"encoder.model": "vit_b"})."""
        if isinstance(source, str) and "\n" in source:
            return cls(Graph.from_yaml(source, overrides=overrides), **kwargs)
        return cls(Graph.load(source, overrides=overrides), **kwargs)

    @property
    def inputs(self) -> dict[str, str]:
        """Input name -> payload type name."""
        return {name: t.type_name for name, t in self.graph.inputs.items()}

    @property
    def outputs(self) -> list[str]:
        return list(self.graph.outputs)

    def __call__(self, inputs: Mapping[str, Any] | None = None, *, output_dir: str | Path | None = None,
                 **named: Any) -> dict[str, Payload]:
        """Run once: inputs by name (an Image input also takes a PIL image); nodes that write files need
        `output_dir`. Raises InputError for bad inputs, NodeError naming the node that failed."""
        given = {**(inputs or {}), **named}
        for name, value in given.items():
            if self.graph.inputs.get(name) is Image and _is_pil(value):
                given[name] = Image(to_rgb_uint8(value))
        return self.scheduler.run(given, output_dir=output_dir)

    def close(self) -> None:
        self.scheduler.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pipeline(inputs={self.inputs}, outputs={self.outputs})"


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.")

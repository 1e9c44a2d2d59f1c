"""Node: one step of a graph, declared once (typed ports + a pydantic params model) and run per item.

The same declaration serves implementing, wiring, validating and documenting (`samflow nodes`):

    @register("demo.threshold")
    class Threshold(Node):
        '''Keep masks whose score passes a bar.'''

        class Params(NodeParams):
            min_score: float = 0.5

        inputs = {"masks": Input(Masks)}
        outputs = {"masks": Masks}

        def run(self, ctx, masks):
            keep = masks.scores.max(axis=1) >= self.params.min_score
            return {"masks": Masks(masks.data[keep], masks.scores[keep])}

Two optional hooks let the scheduler do generic work without knowing what a node computes:
- `cache_key(ctx, **inputs)`: a content key; equal keys mean equal outputs, so the scheduler may serve them from
  its cache (`restore` then re-attaches whatever is not cached, such as a model reference).
- `batch_key(ctx, **inputs)` + `run_batch(ctx, calls)`: sibling calls of one node class with equal keys are
  handed to `run_batch` together, so a node can fuse them (one decoder forward for several prompt sets).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from samflow.engine.types import Payload

if TYPE_CHECKING:
    from samflow.engine.context import ItemContext


class NodeParams(BaseModel):
    """Base of node params models: unknown fields are errors, so a typo in YAML never passes silently."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Input:
    """An input port: the payload type it accepts (or a subclass of it), and whether it may be left unwired."""

    type: type[Payload]
    optional: bool = False
    doc: str = ""


class Node:
    """Base of every node type. Subclasses set `Params`, `inputs`, `outputs` and implement `run`."""

    type_id: ClassVar[str] = ""  # set by @register
    Params: ClassVar[type[NodeParams]] = NodeParams
    inputs: ClassVar[Mapping[str, Input]] = {}
    outputs: ClassVar[Mapping[str, type[Payload]]] = {}

    def __init__(self, params: NodeParams | Mapping[str, Any] | None = None) -> None:
        self.params = self.parse_params(params)

    @classmethod
    def parse_params(cls, params: NodeParams | Mapping[str, Any] | None) -> NodeParams:
        """Validate raw params (raises pydantic.ValidationError); an instance of `Params` passes as it is."""
        if isinstance(params, cls.Params):
            return params
        if isinstance(params, BaseModel):
            params = params.model_dump(exclude_unset=True)
        return cls.Params.model_validate(dict(params or {}))

    def run(self, ctx: ItemContext, **inputs: Payload) -> Mapping[str, Payload]:
        """Compute this node's outputs for one item: a mapping with every declared output port."""
        raise NotImplementedError

    def cache_key(self, ctx: ItemContext, **inputs: Payload) -> str | None:
        """A content key for these inputs (see samflow.engine.cache.content_key), or None to never cache."""
        return None

    def restore(self, ctx: ItemContext, outputs: Mapping[str, Payload]) -> Mapping[str, Payload]:
        """Adapt outputs served from the cache (e.g. move to this node's device); identity by default."""
        return outputs

    def batch_key(self, ctx: ItemContext, **inputs: Payload) -> Hashable | None:
        """Calls of one class whose keys are equal (and not None) may be fused by `run_batch`."""
        return None

    @classmethod
    def run_batch(cls, ctx: ItemContext, calls: Sequence[tuple[Node, Mapping[str, Payload]]]
                  ) -> list[Mapping[str, Payload]]:
        """Run several calls at once; one outputs mapping per call, in order. Default: one by one."""
        return [node.run(ctx, **inputs) for node, inputs in calls]

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Ports and params as plain data (what `samflow nodes` prints)."""
        params = {}
        for name, info in cls.Params.model_fields.items():
            default = None if info.is_required() else info.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
            params[name] = {"type": _annotation_name(info.annotation), "required": info.is_required(),
                            "default": default, "doc": info.description or ""}
        return {
            "type": cls.type_id,
            "doc": (cls.__doc__ or "").strip().split("\n\n")[0],
            "inputs": {name: {"type": port.type.type_name, "optional": port.optional, "doc": port.doc}
                       for name, port in cls.inputs.items()},
            "outputs": {name: payload.type_name for name, payload in cls.outputs.items()},
            "params": params,
        }


def _annotation_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", str(annotation))  # typing.X, pkg.mod.X -> X

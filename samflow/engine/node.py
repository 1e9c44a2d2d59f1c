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

Optional hooks let the engine do generic work without knowing what a node computes:
- `cache_key(ctx, **inputs)`: a content key; equal keys mean equal outputs, so the scheduler may serve them from
  its cache (`restore` then re-attaches whatever is not cached, such as a model reference).
- `batch_key(ctx, **inputs)` + `run_batch(ctx, calls)`: sibling calls of one node class with equal keys are
  handed to `run_batch` together, so a node can fuse them (one decoder forward for several prompt sets).
- `output_facts(params, port)` + `input_problem(params, port, source, facts)`: validation beyond types, from
  params alone (a decoder refusing another model family's embeddings); `summary(params)` for diagrams.
"""

from __future__ import annotations

import math
import numbers
import re
import typing
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from samflow.engine.types import Payload

if TYPE_CHECKING:
    from samflow.engine.context import ItemContext


class NodeParams(BaseModel):
    """Base of node params models: unknown fields are errors, so a typo in YAML never passes silently; numbers must
    be finite (NaN and infinity are errors in every field, nested lists and mappings included: a NaN threshold
    would silently disable its filter, an infinite coordinate means nothing)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="after")
    def _finite_numbers(self) -> NodeParams:
        # Float fields are checked by pydantic (allow_inf_nan=False, with the field's location); this catches the
        # rest: numbers inside `Any` values (dict[str, Any]...) and inside nested models with their own config.
        for name in _fields_to_walk(type(self)) & self.model_fields_set:
            where = _non_finite(getattr(self, name))
            if where is not None:
                raise ValueError(f"'{name}{where}' must be a finite number (NaN and infinity are not accepted)")
        return self


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
    def output_facts(cls, params: NodeParams, port: str) -> Mapping[str, str]:
        """What `params` alone tell about the value of output `port` before anything runs (e.g. the model family of
        an embedding), for the consumers' `input_problem`; nothing by default."""
        return {}

    @classmethod
    def input_problem(cls, params: NodeParams, port: str, source: str, facts: Mapping[str, str]) -> str | None:
        """Why the value `source` ('$node.port'), of which its producer's `output_facts` tell `facts`, cannot go
        into input `port` of a node with `params` (a validation problem), or None. Types are checked already."""
        return None

    @classmethod
    def summary(cls, params: NodeParams) -> str | None:
        """A few words on `params` for diagrams (`samflow graph`), e.g. the model a node runs; None by default."""
        return None

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


_WALKED: dict[type, frozenset[str]] = {}


def _fields_to_walk(cls: type[BaseModel]) -> frozenset[str]:
    """The fields of `cls` whose values pydantic's float check may not reach: typed with Any, object or a model."""
    found = _WALKED.get(cls)
    if found is None:
        found = _WALKED[cls] = frozenset(name for name, info in cls.model_fields.items()
                                         if _may_hide_numbers(info.annotation))
    return found


def _may_hide_numbers(annotation: Any) -> bool:
    stack = [annotation]
    while stack:
        item = stack.pop()
        if item is Any or item is object or (isinstance(item, type) and issubclass(item, BaseModel)):
            return True
        if isinstance(item, type) and issubclass(item, (dict, list, tuple, set, frozenset)):
            return True  # a bare container (list, dict): Any inside
        stack.extend(typing.get_args(item))
    return False


def _non_finite(value: Any) -> str | None:
    """Where in `value` a NaN or infinite number sits ('', '.key', '.0.1'...), or None; walks lists, tuples,
    mappings, models and arrays without recursion."""
    stack = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, (bool, int, str, bytes)) or item is None:
            continue
        if isinstance(item, numbers.Real):
            if not math.isfinite(float(item)):
                return where
        elif isinstance(item, np.ndarray):
            if item.dtype.kind in "fc" and not np.isfinite(item).all():
                return where
        elif isinstance(item, BaseModel):
            stack.extend((getattr(item, key), f"{where}.{key}") for key in type(item).model_fields)
        elif isinstance(item, Mapping):
            stack.extend((child, f"{where}.{key}") for key, child in item.items())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend((child, f"{where}.{i}") for i, child in enumerate(item))
    return None


def _annotation_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", str(annotation))  # typing.X, pkg.mod.X -> X

"""What a graph run over HTTP may do: the service's policy, checked on the parsed graph before anything runs.

- **No server files.** Params that name a file on the server (prompt files, checkpoints, weights, detection and gaze
  files, intrinsics files, CLIP configs, text adapters, text detector folders: `PATH_PARAMS`, and for plugin nodes
  any param whose name looks like a path) are refused with 403 `server_path`, naming the node and the param, without
  looking at the file system: the answer is the same whether the file exists or not. An operator may allow folders
  (`allow_dirs`, `samflow serve --allow-dir DIR`): a path whose resolved location is a regular file inside one is
  accepted (a relative path is taken inside the first folder) and handed to the node as that resolved path (a text
  detector's model folder is named by its config.json there).
- **Only the models the operator chose.** `sam.encoder model` must be a preset name the service allows (a SamConfig
  mapping builds any model size: refused); `clip.text` takes the shipped CLIP, or other weights from an allowed
  folder; `device` params must be the service's device; `detect.torchvision model_kwargs` are refused.
- **Bounded work.** Counts in params and inputs (points, boxes, texts, detections, sam.auto prompts, nodes, masks
  the graph computes) are held to the service's limits: 413 `over_limit`, naming the limit.
- **Inputs are uploads or small JSON values.** An Image takes an uploaded image's id; Points, Boxes, Detections and
  Intrinsics their JSON form; nothing else (no paths, no arrays of pixels).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from samflow.devices import resolve_device
from samflow.engine.graph import Graph
from samflow.engine.spec import GRAPH_INPUTS, NodeSpec
from samflow.engine.types import Boxes, Image, Masks, Payload, Points
from samflow.engine.types.detect import Detections
from samflow.engine.types.geometry import Intrinsics
from samflow.errors import SamflowError
from samflow.models.sam.config import SamConfig
from samflow.serve.errors import ApiError
from samflow.serve.settings import ServiceSettings

# Params of the built-in nodes that name a file on the server to read (every built-in type is listed, so a new node
# or param shows up in tests/serve/test_policy.py). Output params (masks.write dir...) are not here: they name
# places inside a run's output folder, and a graph run over HTTP has none (those nodes fail with a clear message).
PATH_PARAMS: dict[str, tuple[str, ...]] = {
    "image.load": (),
    "prompt.points": ("file",),
    "prompt.boxes": ("file",),
    "sam.encoder": ("checkpoint",),
    "sam.decoder": ("text_adapter",),
    "sam.auto": (),
    "masks.write": (),
    "masks.overlay": (),
    "clip.text": ("checkpoint",),  # and `model` when it is not a name (a config JSON): see _check_clip
    "clip.rank": (),
    "detect.torchvision": ("weights",),
    "detect.file": ("file", "images"),
    "detect.callable": (),
    "detect.text": ("detector",),  # a model folder: given over HTTP as its config.json (a regular file)
    "detect.segment": (),
    "gaze.points": ("file", "intrinsics"),
    "gaze.simulated": (),
    "lift.depth": ("intrinsics",),
    "lift.write": (),
    "mcc.export": ("intrinsics",),
}
# For node types not in the table (plugins): params with names like these are taken as paths.
PATHLIKE_NAME = re.compile(r"(^|_)(file|files|path|paths|dir|dirs|folder|checkpoint|weights|adapter|config|"
                           r"images|root|intrinsics|csv|json)(_|$)")
DETECTORS = ("detect.torchvision", "detect.file", "detect.callable", "detect.text")
MAX_AUTO_CROP_LAYERS = 1  # sam.auto: at most 1 + 4 encoder runs per image
MAX_AUTO_BATCH = 64  # sam.auto points_per_batch: prompts decoded at once
MAX_JSON_DEPTH = 16  # nesting of a graph input's or an override's JSON value


def refuse_path(node: str, type_id: str, param: str) -> ApiError:
    return ApiError(403, "server_path", f"node '{node}' ({type_id}): param '{param}' names a file on the server; "
                                        "graph runs over HTTP read no server files (send prompts as params or "
                                        "inputs, images as uploads; the operator may allow a folder with "
                                        "`samflow serve --allow-dir DIR`)")


def not_allowed(node: str, type_id: str, param: str, why: str) -> ApiError:
    return ApiError(403, "param_not_allowed", f"node '{node}' ({type_id}): param '{param}' {why}")


def over_limit(what: str, count: int, limit: int, setting: str) -> ApiError:
    return ApiError(413, "over_limit", f"{what}: {count}, more than this service's limit of {limit} "
                                       f"(setting {setting})")


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH, what: str = "value") -> None:
    """Refuse JSON values nested deeper than `limit` (iteratively: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                raise ApiError(413, "over_limit", f"{what} is nested deeper than {limit} levels (the limit)")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


class GraphPolicy:
    """Checks (and where a limit caps rather than refuses, adjusts) a parsed graph against the service's policy."""

    def __init__(self, settings: ServiceSettings, device: str) -> None:
        self.settings = settings
        self.device = device
        self.presets = set(settings.graph_models if settings.graph_models is not None else (settings.model,))
        self.allow_dirs = [os.path.realpath(d) for d in settings.allow_dirs]

    # ------------------------------------------------------------------------------------------- paths

    def allowed_path(self, node: str, type_id: str, param: str, value: Any) -> str:
        """The resolved path of `value` when it lies in an allowed folder as a regular file; else ApiError 403."""
        if not self.allow_dirs or not isinstance(value, (str, Path)) or not str(value) or "\0" in str(value):
            raise refuse_path(node, type_id, param)  # decided without touching the file system
        path = Path(value)
        resolved = os.path.realpath(path if path.is_absolute() else Path(self.allow_dirs[0]) / path)
        if not any(os.path.commonpath([resolved, folder]) == folder for folder in self.allow_dirs):
            raise refuse_path(node, type_id, param)
        try:  # inside an allowed folder, what exists may be told; still only regular files (no /dev/zero, FIFOs)
            regular = stat.S_ISREG(os.stat(resolved).st_mode)
        except OSError:
            regular = False
        if not regular:
            raise ApiError(422, "bad_graph", f"node '{node}' ({type_id}): param '{param}': no regular file "
                                             f"{str(value)!r} in the allowed folder")
        return resolved

    def _paths(self, spec: NodeSpec) -> dict[str, Any]:
        """Check every path param of one node; the updates that make allowed paths absolute."""
        type_id, params = spec.type_id, spec.params
        names = PATH_PARAMS.get(type_id)
        if names is None:  # a plugin: judge by the params' names, and any Path value
            names = tuple(name for name, value in params if PATHLIKE_NAME.search(name) or isinstance(value, Path))
        updates: dict[str, Any] = {}
        for name in names:
            value = getattr(params, name, None)
            if value is None or isinstance(value, Mapping):  # unset, or given inline (intrinsics {fx, ...})
                continue
            if isinstance(value, (list, tuple)):
                if any(isinstance(v, (str, Path)) for v in value):
                    raise refuse_path(spec.name, type_id, name)
                continue
            if isinstance(value, bool | int | float):
                continue
            updates[name] = self.allowed_path(spec.name, type_id, name, value)
        return updates

    # ------------------------------------------------------------------------------------------- the graph

    def check(self, graph: Graph, inputs: Mapping[str, Payload]) -> None:
        """Refuse what the policy forbids; cap detectors; count the masks the graph can compute."""
        s = self.settings
        if len(graph.nodes) > s.max_graph_nodes:
            raise over_limit("nodes in the graph", len(graph.nodes), s.max_graph_nodes, "max_graph_nodes")
        for spec in graph.nodes.values():
            updates = self._paths(spec)
            updates.update(self._node(spec))
            if updates:
                spec.params = spec.params.model_copy(update=updates)
        self._masks(graph, inputs)

    def _node(self, spec: NodeSpec) -> dict[str, Any]:
        s, p, name, type_id = self.settings, spec.params, spec.name, spec.type_id
        updates: dict[str, Any] = {}
        device = getattr(p, "device", None)
        if device is not None and not self._same_device(device):
            raise not_allowed(name, type_id, "device", f"is {device!r}; this service runs on {self.device} "
                                                       "(leave it unset)")
        if type_id == "sam.encoder":
            if isinstance(p.model, SamConfig):
                raise not_allowed(name, type_id, "model", "is a SamConfig mapping; over HTTP only preset names are "
                                                          f"accepted: {', '.join(sorted(self.presets))}")
            if p.model not in self.presets:
                raise not_allowed(name, type_id, "model", f"is {p.model!r}; this service allows "
                                                          f"{', '.join(sorted(self.presets))} (--graph-models)")
        elif type_id == "clip.text":
            self._check_clip(spec, updates)
            texts = [p.text] if isinstance(p.text, str) else p.text
            if len(texts) > s.max_texts:
                raise over_limit(f"node '{name}': texts", len(texts), s.max_texts, "max_texts")
        elif type_id == "detect.text" and p.texts is not None:
            texts = [p.texts] if isinstance(p.texts, str) else p.texts
            if len(texts) > s.max_texts:
                raise over_limit(f"node '{name}': texts", len(texts), s.max_texts, "max_texts")
        elif type_id == "clip.rank":
            if len(p.negatives) > s.max_texts:
                raise over_limit(f"node '{name}': negatives", len(p.negatives), s.max_texts, "max_texts")
            if p.top_k > s.max_masks:
                raise over_limit(f"node '{name}': top_k", p.top_k, s.max_masks, "max_masks")
        elif type_id == "prompt.points" and p.points is not None and len(p.points) > s.max_points:
            raise over_limit(f"node '{name}': points", len(p.points), s.max_points, "max_points")
        elif type_id == "prompt.boxes" and p.boxes is not None and len(p.boxes) > s.max_boxes:
            raise over_limit(f"node '{name}': boxes", len(p.boxes), s.max_boxes, "max_boxes")
        elif type_id == "detect.torchvision" and p.model_kwargs:
            raise not_allowed(name, type_id, "model_kwargs", "is not accepted over HTTP")
        elif type_id == "sam.auto":
            self._check_auto(spec)
        if type_id in DETECTORS and (p.max_detections is None or p.max_detections > s.max_boxes):
            updates["max_detections"] = s.max_boxes  # over HTTP a detector keeps at most max_boxes detections
        return updates

    def _same_device(self, device: str) -> bool:
        try:
            return resolve_device(device) == self.device
        except Exception:
            return False

    def _check_clip(self, spec: NodeSpec, updates: dict[str, Any]) -> None:
        from samflow.models.text.clip_config import SHIPPED_CLIP

        p, name, type_id = spec.params, spec.name, spec.type_id
        model = p.model
        if model in SHIPPED_CLIP:
            return
        text = str(model)
        if model is not None and (text.endswith(".json") or "/" in text or os.sep in text):
            updates["model"] = self.allowed_path(name, type_id, "model", model)  # a config file
        elif model is not None and not _open_clip_name(text):
            raise refuse_path(name, type_id, "model")  # neither a name nor (here) a readable config
        if p.checkpoint is None:  # random weights of any size, or a config that needs weights
            raise not_allowed(name, type_id, "model", f"is {model!r} without weights; over HTTP: "
                                                      f"{', '.join(SHIPPED_CLIP)}, or weights from an allowed "
                                                      "folder")

    def _check_auto(self, spec: NodeSpec) -> None:
        s, p, name = self.settings, spec.params, spec.name
        if p.crop_n_layers > MAX_AUTO_CROP_LAYERS:
            raise over_limit(f"node '{name}': crop_n_layers", p.crop_n_layers, MAX_AUTO_CROP_LAYERS,
                             "MAX_AUTO_CROP_LAYERS")
        if p.points_per_batch > MAX_AUTO_BATCH:
            raise over_limit(f"node '{name}': points_per_batch", p.points_per_batch, MAX_AUTO_BATCH,
                             "MAX_AUTO_BATCH")
        prompts = sum(4**i * (p.points_per_side // p.crop_n_points_downscale_factor**i) ** 2
                      for i in range(p.crop_n_layers + 1))
        if prompts > s.max_auto_prompts:
            raise over_limit(f"node '{name}': grid prompts over all crops", prompts, s.max_auto_prompts,
                             "max_auto_prompts")

    # ------------------------------------------------------------------------------------------- masks

    def _masks(self, graph: Graph, inputs: Mapping[str, Payload]) -> None:
        """Masks the graph's decoders can compute, from what feeds them (a conservative count)."""
        s = self.settings
        pixels = max((v.size[0] * v.size[1] for v in inputs.values() if isinstance(v, Image)), default=s.max_pixels)
        total = 0
        for spec in graph.nodes.values():
            if spec.type_id == "sam.decoder":
                sets = max((self._sets(graph, ref.node, ref.port, inputs) for port, ref in spec.inputs.items()
                            if port in ("points", "boxes", "text", "masks")), default=1)
                total += sets * (3 if spec.params.multimask else 1)
            elif spec.type_id == "detect.segment":
                ref = spec.inputs.get("detections")
                sets = self._sets(graph, ref.node, ref.port, inputs) if ref is not None else s.max_boxes
                total += sets * (3 if spec.params.multimask and not spec.params.refine else 1)
        if total > s.max_masks:
            raise over_limit("masks the graph's decoders compute", total, s.max_masks, "max_masks")
        if total * pixels > s.max_mask_pixels:
            raise over_limit("mask pixels the graph's decoders compute", total * pixels, s.max_mask_pixels,
                             "max_mask_pixels")

    def _sets(self, graph: Graph, node: str, port: str, inputs: Mapping[str, Payload], depth: int = 0) -> int:
        """How many prompt sets the value (node, port) can hold at most."""
        s = self.settings
        if node == GRAPH_INPUTS:
            value = inputs.get(port)
            return len(value) if isinstance(value, (Points, Boxes)) else s.max_boxes
        spec = graph.nodes[node]
        p = spec.params
        if spec.type_id == "prompt.points":
            return len(p.points) if p.separate and p.points is not None else (s.max_points if p.separate else 1)
        if spec.type_id == "prompt.boxes":
            return len(p.boxes) if p.boxes is not None else s.max_boxes
        if spec.type_id == "clip.text":
            return 1 if isinstance(p.text, str) else len(p.text)
        if spec.type_id in DETECTORS:
            return min(p.max_detections or s.max_boxes, s.max_boxes)
        if spec.type_id == "gaze.points":
            return 1
        if spec.type_id in ("sam.decoder", "detect.segment") and depth < len(graph.nodes):  # logits fed back
            if spec.type_id == "detect.segment":
                ref = spec.inputs.get("detections")
                return self._sets(graph, ref.node, ref.port, inputs, depth + 1) if ref is not None else s.max_boxes
            return max((self._sets(graph, r.node, r.port, inputs, depth + 1) for q, r in spec.inputs.items()
                        if q in ("points", "boxes", "text", "masks")), default=1)
        return s.max_boxes  # anything else (sam.auto boxes, gaze.simulated, plugins): the most a request may have

    def check_outputs(self, outputs: Mapping[str, Payload]) -> None:
        """Masks about to be returned, against max_masks and max_mask_pixels (before any is encoded)."""
        s = self.settings
        count = sum(int(np.prod(v.data.shape[:2])) for v in outputs.values() if isinstance(v, Masks))
        pixels = sum(int(v.data.size) for v in outputs.values() if isinstance(v, Masks))
        if count > s.max_masks:
            raise over_limit("masks in the graph's outputs", count, s.max_masks, "max_masks")
        if pixels > s.max_mask_pixels:
            raise over_limit("mask pixels in the graph's outputs", pixels, s.max_mask_pixels, "max_mask_pixels")

    # ------------------------------------------------------------------------------------------- inputs

    def graph_input(self, graph: Graph, name: str, value: Any, image: Any) -> Any:
        """A request's graph input as the payload the graph takes; `image(id)` finds an upload."""
        s = self.settings
        kind = graph.inputs.get(name)
        if kind is None:
            raise ApiError(422, "bad_input", f"the graph has no input {name!r}; its inputs: "
                                             f"{', '.join(graph.inputs) or 'none'}")
        if issubclass(kind, Image):
            if not isinstance(value, str):
                raise ApiError(422, "bad_input", f"input {name!r} ({kind.type_name}) takes the id of an uploaded "
                                                 "image")
            return kind.coerce(image(value))
        if isinstance(value, str):
            # A string would be read as a path on the server: the service only takes uploads and JSON values.
            raise ApiError(422, "bad_input", f"input {name!r} ({kind.type_name}) takes a JSON value here, not a path "
                                             "or string; images are uploaded and passed by id")
        if not issubclass(kind, (Points, Boxes, Intrinsics)):
            raise ApiError(422, "bad_input", f"input {name!r} ({kind.type_name}) cannot be given over HTTP; inputs "
                                             "here are uploaded images (by id), Points, Boxes, Detections and "
                                             "Intrinsics")
        json_depth(value, what=f"input {name!r}")
        try:
            payload = kind.coerce(value)
        except SamflowError as exc:
            raise ApiError(422, "bad_input", f"input {name!r}: {exc}") from exc
        if isinstance(payload, Points):
            count = int(payload.coords.shape[0] * payload.coords.shape[1])
            if count > s.max_points:
                raise over_limit(f"input {name!r}: points", count, s.max_points, "max_points")
            finite = np.isfinite(payload.coords).all()
        elif isinstance(payload, Boxes):  # Detections too
            if len(payload) > s.max_boxes:
                raise over_limit(f"input {name!r}: boxes", len(payload), s.max_boxes, "max_boxes")
            finite = np.isfinite(payload.xyxy).all()
            if isinstance(payload, Detections) and payload.scores is not None:
                finite = finite and np.isfinite(payload.scores).all()
        else:
            finite = all(np.isfinite(float(getattr(payload, k))) for k in ("fx", "fy", "cx", "cy"))
        if not finite:
            raise ApiError(422, "bad_input", f"input {name!r}: coordinates must be finite numbers")
        return payload


def _open_clip_name(name: str) -> bool:
    try:
        import open_clip

        return name in open_clip.list_models()
    except Exception:
        return False

"""samflow: Segment Anything as a composable part of vision pipelines.

Public names are exported lazily (PEP 562): `import samflow` loads nothing heavy, and `samflow.SamPredictor`
imports the predictor (and torch) on first use. So `import samflow.models.sam` loads the model code only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "SamAutomaticMaskGenerator": "samflow.predict.amg",
    "Sam2AutomaticMaskGenerator": "samflow.predict.amg",
    "EncodedImage": "samflow.predict.predictor",
    "SamPredictor": "samflow.predict.predictor",
    "Sam2Predictor": "samflow.predict.sam2_predictor",
    "Pipeline": "samflow.predict.api",
    "Segmentation": "samflow.predict.api",
    "Segmenter": "samflow.predict.api",
    "segment": "samflow.predict.api",
    "TextPromptsUnavailable": "samflow.predict.textprompt",
    "register_detector": "samflow.predict.detectors",
    "CheckpointError": "samflow.errors",
    "GraphError": "samflow.errors",
    "InputError": "samflow.errors",
    "NodeError": "samflow.errors",
    "SamflowError": "samflow.errors",
    "ModelPool": "samflow.pool",
    "Sam": "samflow.models.sam",
    "SamConfig": "samflow.models.sam",
    "build_sam": "samflow.models.sam",
    "Sam2": "samflow.models.sam2",
    "Sam2Config": "samflow.models.sam2",
    "EmbeddingCache": "samflow.engine.cache",
    "content_key": "samflow.engine.cache",
    "Graph": "samflow.engine.graph",
    "GraphValidationError": "samflow.engine.graph",
    "Input": "samflow.engine.node",
    "Node": "samflow.engine.node",
    "NodeParams": "samflow.engine.node",
    "register": "samflow.engine.registry",
    "Scheduler": "samflow.engine.scheduler",
    **{name: "samflow.engine.types" for name in (
        "Boxes", "Depth", "Detections", "FilePath", "Frame", "Gaze", "Image", "ImageEmbedding", "InstanceMasks",
        "Intrinsics", "MaskLogits", "Masks", "PointCloud", "Points", "Scores")},
    "evaluate": "samflow.evaluation.points",
    "TrainConfig": "samflow.train",
    "run_video": "samflow.scale.video",
}
# public modules reachable as attributes (`samflow.distributed.run(...)`); `samflow.train` is the package
# itself, callable as the function `samflow.train.train`.
_MODULES = {"distributed": "samflow.scale.distributed", "train": "samflow.train"}

__all__ = sorted([*_EXPORTS, "train"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    else:
        raise AttributeError(f"module 'samflow' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, *_MODULES])


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from samflow.engine.cache import EmbeddingCache, content_key
    from samflow.engine.graph import Graph, GraphValidationError
    from samflow.engine.node import Input, Node, NodeParams
    from samflow.engine.registry import register
    from samflow.engine.scheduler import Scheduler
    from samflow.engine.types import (
        Boxes,
        Depth,
        Detections,
        FilePath,
        Frame,
        Gaze,
        Image,
        ImageEmbedding,
        InstanceMasks,
        Intrinsics,
        MaskLogits,
        Masks,
        PointCloud,
        Points,
        Scores,
    )
    from samflow.errors import CheckpointError, GraphError, InputError, NodeError, SamflowError
    from samflow.evaluation.points import evaluate
    from samflow.models.sam import Sam, SamConfig, build_sam
    from samflow.models.sam2 import Sam2, Sam2Config
    from samflow.pool import ModelPool
    from samflow.predict.amg import Sam2AutomaticMaskGenerator, SamAutomaticMaskGenerator
    from samflow.predict.api import Pipeline, Segmentation, Segmenter, segment
    from samflow.predict.detectors import register_detector
    from samflow.predict.predictor import EncodedImage, SamPredictor
    from samflow.predict.sam2_predictor import Sam2Predictor
    from samflow.predict.textprompt import TextPromptsUnavailable
    from samflow.scale.video import run_video
    from samflow.train import TrainConfig, train  # noqa: F401

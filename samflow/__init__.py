"""samflow: Segment Anything as a composable part of vision pipelines."""

from samflow.errors import CheckpointError, GraphError, InputError, NodeError, SamflowError
from samflow.models.sam import Sam, SamConfig, build_sam
from samflow.predictor import EncodedImage, SamPredictor

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "EncodedImage",
    "GraphError",
    "InputError",
    "NodeError",
    "Sam",
    "SamConfig",
    "SamPredictor",
    "SamflowError",
    "build_sam",
]

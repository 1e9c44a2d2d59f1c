"""samflow: Segment Anything as a composable part of vision pipelines."""

from samflow.amg import SamAutomaticMaskGenerator
from samflow.api import Pipeline, Segmentation, Segmenter, segment
from samflow.cache import EmbeddingCache, content_key
from samflow.detectors import register_detector
from samflow.errors import CheckpointError, GraphError, InputError, NodeError, SamflowError
from samflow.eval import evaluate
from samflow.graph import Graph, GraphValidationError
from samflow.models.sam import Sam, SamConfig, build_sam
from samflow.node import Input, Node, NodeParams
from samflow.pool import ModelPool
from samflow.predictor import EncodedImage, SamPredictor
from samflow.registry import register
from samflow.scheduler import Scheduler
from samflow.textprompt import TextPromptsUnavailable
from samflow.train import TrainConfig, train
from samflow.types import Boxes, FilePath, Image, ImageEmbedding, MaskLogits, Masks, Points, Scores
from samflow.types_3d import Depth, Intrinsics, PointCloud
from samflow.types_detect import Detections, InstanceMasks
from samflow.types_video import Frame, Gaze
from samflow.video import run_video

__version__ = "0.1.0"

__all__ = [
    "SamAutomaticMaskGenerator",
    "TrainConfig",
    "evaluate",
    "train",
    "Boxes",
    "CheckpointError",
    "Depth",
    "Detections",
    "EmbeddingCache",
    "EncodedImage",
    "FilePath",
    "Frame",
    "Gaze",
    "Graph",
    "GraphError",
    "GraphValidationError",
    "Image",
    "ImageEmbedding",
    "Input",
    "InputError",
    "InstanceMasks",
    "Intrinsics",
    "MaskLogits",
    "Masks",
    "ModelPool",
    "Node",
    "NodeError",
    "NodeParams",
    "Pipeline",
    "PointCloud",
    "Points",
    "Sam",
    "SamConfig",
    "SamPredictor",
    "SamflowError",
    "Scheduler",
    "Scores",
    "Segmentation",
    "Segmenter",
    "TextPromptsUnavailable",
    "build_sam",
    "content_key",
    "register",
    "register_detector",
    "run_video",
    "segment",
]

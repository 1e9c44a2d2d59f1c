"""The payloads that travel on graph edges, registered by class name so a YAML graph can name them.

Importing this package registers every built-in payload (`inputs: {frame: Frame}` works before any node module
is loaded). Modules: `base` (Payload, the name registry, FilePath), `image`, `prompts`, `masks`, `detect`,
`video`, `geometry` (depth, intrinsics, point clouds).
"""

from samflow.engine.types.base import PAYLOAD_TYPES, FilePath, Payload, get_payload_type, payload_type
from samflow.engine.types.detect import Detections, InstanceMasks
from samflow.engine.types.geometry import Depth, Intrinsics, PointCloud
from samflow.engine.types.image import Image, ImageEmbedding
from samflow.engine.types.masks import MaskLogits, Masks, Scores
from samflow.engine.types.prompts import Boxes, Points, TextEmbedding
from samflow.engine.types.video import Frame, Gaze

__all__ = [
    "PAYLOAD_TYPES", "Boxes", "Depth", "Detections", "FilePath", "Frame", "Gaze", "Image", "ImageEmbedding",
    "InstanceMasks", "Intrinsics", "MaskLogits", "Masks", "Payload", "PointCloud", "Points", "Scores",
    "TextEmbedding", "get_payload_type", "payload_type",
]

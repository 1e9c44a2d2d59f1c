"""torchvision detectors (Faster R-CNN, RetinaNet, FCOS, SSD, Mask R-CNN...) built without downloads and loaded
from a local weights file, and run on one RGB image.

The model is built with `weights=None, weights_backbone=None` (torchvision fetches nothing), then the state dict is
read safely (`torch.load(weights_only=True)` or safetensors) and loaded strictly.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from samflow.errors import CheckpointError, InputError
from samflow.models.weights import read_tensor_file

log = logging.getLogger(__name__)


def detector_names() -> list[str]:
    """Builder names of torchvision's detection models (`fasterrcnn_resnet50_fpn`, `retinanet_resnet50_fpn`...)."""
    import torchvision
    from torchvision.models import list_models

    return sorted(list_models(module=torchvision.models.detection))


def coco_category_names() -> list[str]:
    """The 91 COCO category names indexed by torchvision's label ids ('__background__' and 'N/A' included).
    Read from torchvision's weight metadata: nothing is downloaded."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    return list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


def read_detector_weights(path: Path) -> dict[str, Any]:
    """A state dict of tensors from a .pth/.pt (safe unpickler) or .safetensors file."""
    return read_tensor_file(path, "detector weights")[0]


def build_torchvision_detector(name: str, weights: str | Path, num_classes: int | None = None,
                               device: str = "cpu", **kwargs: Any) -> Any:
    """A torchvision detection model `name` in eval mode with the weights of a local file."""
    from torchvision.models import get_model

    known = detector_names()
    if name not in known:
        hint = difflib.get_close_matches(name, known, n=3)
        raise InputError(f"unknown torchvision detector {name!r}" + (f"; did you mean {', '.join(hint)}?" if hint
                                                                     else f" (known: {', '.join(known)})"))
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = get_model(name, weights=None, weights_backbone=None, **kwargs)
    path = Path(weights)
    state = read_detector_weights(path)
    where = f"detector weights {path} do not fit {name}{f' with num_classes={num_classes}' if num_classes else ''}"
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches: name the first, usually a head sized for other classes
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise CheckpointError(f"{where}: {first}") from None
    if result.missing_keys or result.unexpected_keys:
        shown = (result.missing_keys or result.unexpected_keys)[:3]
        raise CheckpointError(f"{where}: {len(result.missing_keys)} missing and {len(result.unexpected_keys)} "
                              f"unexpected keys (e.g. {', '.join(shown)})")
    log.debug("loaded %s from %s", name, path)
    return model.eval().to(device)


def run_detector(model: Any, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes float32 (N, 4) xyxy pixels, scores float32 (N,), labels int64 (N,)) for one uint8 (H, W, 3) image."""
    import torch

    device = next(model.parameters()).device
    tensor = torch.tensor(rgb, device=device, dtype=torch.float32).permute(2, 0, 1)  # a copy: rgb may be read-only
    with torch.inference_mode():
        (out,) = model([tensor / 255.0])  # torchvision detectors normalise internally
    return (out["boxes"].float().cpu().numpy(), out["scores"].float().cpu().numpy(),
            out["labels"].cpu().numpy().astype(np.int64))

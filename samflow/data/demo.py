"""Small inputs for every recipe of issue 7, so a newcomer can run them right after setup:

    samflow demo-data                 # writes demo-data/detect, demo-data/gaze, demo-data/lift
    samflow run graphs/detect_then_segment.yaml --input image=demo-data/detect/images --out runs/detect
    samflow video graphs/gaze_video.yaml --input frame=demo-data/gaze/video.mp4 --out runs/gaze --overlay
    samflow run graphs/lift_3d.yaml --input image=demo-data/lift/image.png --input depth=demo-data/lift/depth.png \
        --input intrinsics=demo-data/lift/intrinsics.json --out runs/lift

The recipes name these files in their params (paths relative to the repository root).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from samflow.data.synthetic import SHAPES, render_scene, scene_file_stem, scene_rng
from samflow.errors import InputError

log = logging.getLogger(__name__)

PARTS = ("detect", "gaze", "lift")
DEFAULT_DIR = Path("demo-data")


def write_detect_demo(folder: str | Path, count: int = 3, size: int = 256, seed: int = 7) -> dict[str, Path]:
    """Synthetic scenes (images/sa_XXXXXX.png), their ground truth as COCO annotations (instances.json: boxes,
    shape names) and the same boxes as a detector's COCO results (detections.json, score 1)."""
    from PIL import Image

    folder = Path(folder)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(SHAPES)]
    ids = {name: i + 1 for i, name in enumerate(SHAPES)}
    coco: dict[str, list] = {"images": [], "annotations": [], "categories": categories}
    results = []
    for index in range(1, count + 1):
        scene = render_scene(scene_rng(seed, index), size)
        name = f"{scene_file_stem(index)}.png"
        Image.fromarray(scene.image).save(images / name)
        coco["images"].append({"id": index, "file_name": name, "width": size, "height": size})
        for ann in scene.annotations:
            if ann["part_of"] is not None:
                continue  # inner parts are not separate objects for a detector
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": index,
                                        "category_id": ids[ann["shape"]], "bbox": ann["bbox"],
                                        "area": ann["area"], "iscrowd": 0})
            results.append({"image_id": index, "category_id": ids[ann["shape"]], "bbox": ann["bbox"],
                            "score": 1.0})
    (folder / "instances.json").write_text(json.dumps(coco))
    (folder / "detections.json").write_text(json.dumps(results))
    return {"images": images, "instances": folder / "instances.json", "detections": folder / "detections.json"}


def write_demo(out: str | Path = DEFAULT_DIR, parts: tuple[str, ...] = PARTS) -> dict[str, dict[str, Path]]:
    """Write the inputs of the chosen recipes under `out` (out/detect, out/gaze, out/lift)."""
    from samflow.data.synthetic_depth import write_depth_demo
    from samflow.data.synthetic_video import write_gaze_demo

    unknown = [part for part in parts if part not in PARTS]
    if unknown:
        raise InputError(f"unknown demo part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    out = Path(out)
    writers = {"detect": write_detect_demo, "gaze": write_gaze_demo, "lift": write_depth_demo}
    written = {}
    for part in parts:
        written[part] = writers[part](out / part)
        log.info("wrote %s inputs to %s", part, out / part)
    return written


__all__ = ["DEFAULT_DIR", "PARTS", "write_demo", "write_detect_demo"]

"""Small synthetic datasets in the formats the evaluation tasks read: COCO and LVIS annotation files, BSDS500
folders, instance-mask folders. Ground truth is written with pycocotools and scipy, not with the code under test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from samflow.data.synthetic import SHAPES, Scene, render_scene, scene_rng

SIZE = 64


def scenes(n: int = 2, seed: int = 9, size: int = SIZE) -> list[Scene]:
    return [render_scene(scene_rng(seed, i + 1), size) for i in range(n)]


def coco_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def coco_dict(items: list[Scene], lvis: bool = False) -> dict:
    """COCO (or LVIS) ground truth of scenes: image i is sa_00000i.png, one category per shape."""
    from pycocotools import mask as mask_utils

    images, anns = [], []
    for i, scene in enumerate(items, start=1):
        h, w = scene.image.shape[:2]
        entry = {"id": i, "height": h, "width": w}
        if lvis:  # LVIS names images by URL only
            entry.update(coco_url=f"http://images.example/val2017/sa_{i:06d}.png", neg_category_ids=[],
                         not_exhaustive_category_ids=[])
        else:
            entry["file_name"] = f"sa_{i:06d}.png"
        images.append(entry)
        for mask, ann in zip(scene.masks, scene.annotations):
            rle = coco_rle(mask)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": SHAPES.index(ann["shape"]) + 1,
                         "segmentation": rle, "area": float(mask.sum()),
                         "bbox": [float(v) for v in mask_utils.toBbox({**rle, "counts": rle["counts"].encode()})],
                         "iscrowd": 0})
    categories = [{"id": k + 1, "name": s} for k, s in enumerate(SHAPES)]
    if lvis:  # rare, common, frequent in turn, so every group has objects
        for k, c in enumerate(categories):
            c.update(frequency="rcf"[k % 3], synset=c["name"], image_count=1, instance_count=1)
    return {"images": images, "annotations": anns, "categories": categories}


def write_images(folder: Path, items: list[Scene]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(items, start=1):
        Image.fromarray(scene.image).save(folder / f"sa_{i:06d}.png")


def write_coco(root: Path, items: list[Scene], lvis: bool = False) -> Path:
    """root/annotations.json (+ root/val2017/ images for LVIS, root/ images for COCO)."""
    write_images(root / "val2017" if lvis else root, items)
    path = root / ("lvis.json" if lvis else "annotations.json")
    path.write_text(json.dumps(coco_dict(items, lvis)))
    return path


def write_bsds(root: Path, items: list[Scene], boundaries: list[np.ndarray], form: str = "mat",
               split: str = "test") -> Path:
    """A BSDS500 data folder: images/SPLIT/NAME.png with groundTruth/SPLIT/NAME.mat (or .png, or NAME/*.png)."""
    from scipy.io import savemat

    images, truth = root / "images" / split, root / "groundTruth" / split
    images.mkdir(parents=True)
    truth.mkdir(parents=True)
    for i, (scene, maps) in enumerate(zip(items, boundaries), start=1):
        name = f"{100000 + i}"
        Image.fromarray(scene.image).save(images / f"{name}.png")
        maps = np.asarray(maps, dtype=bool)
        if form == "mat":  # as the benchmark ships them: a 1xK cell of structs
            cells = np.empty((1, len(maps)), dtype=object)
            for k, m in enumerate(maps):
                cells[0, k] = {"Segmentation": np.ones(m.shape, np.uint16), "Boundaries": m.astype(np.uint8)}
            savemat(truth / f"{name}.mat", {"groundTruth": cells})
        elif form == "png":
            Image.fromarray(maps[0].astype(np.uint8) * 255).save(truth / f"{name}.png")
        else:
            (truth / name).mkdir()
            for k, m in enumerate(maps):
                Image.fromarray(m.astype(np.uint8) * 255).save(truth / name / f"{k}.png")
    return root


def write_instance_folder(root: Path, items: list[Scene], form: str = "label") -> Path:
    """root/images/NAME.png with root/masks/NAME.png (label image) or root/masks/NAME/K.png (one per instance)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, scene in enumerate(items, start=1):
        name = f"img{i}"
        Image.fromarray(scene.image).save(root / "images" / f"{name}.png")
        if form == "label":  # visible regions only: an id per pixel
            label = np.zeros(scene.image.shape[:2], np.uint16)
            for k, m in enumerate(scene.masks, start=1):
                label[m] = k
            Image.fromarray(label).save(root / "masks" / f"{name}.png")
        else:
            (root / "masks" / name).mkdir()
            for k, m in enumerate(scene.masks):
                Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / name / f"{k:03d}.png")
    return root

"""The paper's prompt adapter for a user's own SAM checkpoint (issue 18, item 4): recipes/text_adapter_official.yaml's
route end to end at toy scale. A small random vit_b-shaped SAM saved as an official-layout .pth, a synthetic SA-1B
folder (non-square images, so resizing and padding into SAM's frame are exercised), the shipped clip_tiny; the
paper's recipe (CLIP image embeddings of crops, no captions); then `samflow.segment(..., text=...)` finds the
adapter beside the checkpoint, or takes it from `adapter=`."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image
from text_testing import needs_shipped_clip

from samflow.models.sam import SamConfig, build_sam
from samflow.models.sam.checkpoint import model_fingerprint

# vit_b's shape (ViT blocks with windowed and global attention, 16 px patches, SAM's prompt encoder and decoder),
# narrow and short, at 256 px.
SMALL_VIT_B = {"encoder_embed_dim": 64, "encoder_depth": 2, "encoder_num_heads": 2, "encoder_global_attn_indexes": [1],
               "image_size": 256, "window_size": 4}


@pytest.fixture(scope="module")
def official_like(tmp_path_factory):
    """A random vit_b-shaped SAM as `sam_vit_b_small.pth` (a bare state dict, as the official files are) and a
    synthetic SA-1B training and held-out folder."""
    from samflow.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("official")
    torch.manual_seed(0)
    sam = build_sam(SamConfig(**SMALL_VIT_B), device="cpu")
    checkpoint = root / "checkpoints" / "sam_vit_b_small.pth"
    checkpoint.parent.mkdir()
    torch.save(sam.state_dict(), checkpoint)
    write_dataset(root / "train", 8, seed=31, size=(192, 288), progress=False)
    write_dataset(root / "val", 3, seed=32, size=(192, 288), progress=False)
    return root, checkpoint


def test_the_official_recipe_parses():
    from samflow.train.text_adapter import load_text_adapter_config

    config = load_text_adapter_config("recipes/text_adapter_official.yaml")
    assert config.sam.endswith("sam_vit_b_01ec64.pth") and config.sam_model == "vit_b"
    assert config.data is not None and config.data.kind == "sa1b" and config.text_mix == 0.0
    assert config.min_area == 10000 and config.shift_captions


@needs_shipped_clip
def test_train_an_adapter_for_a_checkpoint_and_prompt_it_with_text(official_like, tmp_path):
    from samflow.engine.cache import EmbeddingCache
    from samflow.models.text.adapter import adapter_path_for, load_adapter
    from samflow.predict.api import segment
    from samflow.predict.segmenter import Segmenter
    from samflow.predict.textprompt import TextPromptsUnavailable
    from samflow.train.config import DataConfig
    from samflow.train.text_adapter import TextAdapterConfig, train_text_adapter

    root, checkpoint = official_like
    started = time.perf_counter()
    config = TextAdapterConfig(sam=str(checkpoint), clip="clip_tiny",
                               data=DataConfig(kind="sa1b", path=str(root / "train")),
                               eval_data=DataConfig(kind="sa1b", path=str(root / "val")),
                               num_scenes=8, eval_scenes=3, captions="none", min_area=300, max_objects_per_image=4,
                               shift_captions=["a red star", "a blue circle"], text_mix=0.0, heatmap_steps=10,
                               heatmap_batch=8, steps=6, batch_size=4, key_layers=1, key_channels=16, hidden=64,
                               num_threads=1)
    figures = train_text_adapter(config)
    seconds = time.perf_counter() - started
    assert figures["steps"] == 6 and figures["objects"] > 0
    assert 0.0 <= figures["image_miou"] <= 1.0 and "text_miou" not in figures  # no captions: the image path only
    assert np.isnan(figures["text_pointing"])

    path = adapter_path_for(checkpoint)  # beside the checkpoint: sam_vit_b_small_text_adapter.safetensors
    assert path.name == "sam_vit_b_small_text_adapter.safetensors" and path.is_file()
    adapter = load_adapter(path)
    sam = build_sam(SamConfig(**SMALL_VIT_B), checkpoint=checkpoint, device="cpu")
    assert adapter.config.sam_fingerprint == model_fingerprint(sam)
    assert adapter.clip_source == {"model": "clip_tiny", "checkpoint": None}
    assert adapter.text_shift.abs().sum() > 0  # estimated from shift_captions
    assert adapter.presence is None  # not calibrated: nothing is refused by default

    image = np.asarray(Image.open(sorted((root / "val").glob("*.png"))[0]).convert("RGB"))
    segmenter = Segmenter(cache=EmbeddingCache(max_bytes=1 << 26))
    options = {"model": SamConfig(**SMALL_VIT_B), "device": "cpu", "segmenter": segmenter}
    result = segment(image, text=["a red star", "a blue circle"], checkpoint=checkpoint, **options)
    assert len(result) == 2 and result.labels == ["a red star", "a blue circle"]
    assert result.masks.shape == (2, *image.shape[:2])

    # The same weights elsewhere, without the adapter beside them: found by adapter=, else the three routes.
    moved = tmp_path / "sam_vit_b_small.pth"
    shutil.copy(checkpoint, moved)
    with pytest.raises(TextPromptsUnavailable, match="adapter=PATH"):
        segment(image, text="a red star", checkpoint=moved, **options)
    again = segment(image, text="a red star", checkpoint=moved, adapter=path, **options)
    np.testing.assert_array_equal(again.masks, result.masks[:1])
    assert seconds < 120, f"the toy training run took {seconds:.0f} s (about 20 s on 2 idle cores)"


def _write_coco(folder, scenes):
    """A COCO instances file whose categories are the scenes' colour + shape names, images beside it."""
    import json

    from samflow.data.captions import object_name
    from samflow.ops import rle

    folder.mkdir()
    names = sorted({object_name(a) for s in scenes for a in s.annotations})
    images, annotations = [], []
    for i, scene in enumerate(scenes, start=1):
        Image.fromarray(scene.image).save(folder / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "height": scene.image.shape[0],
                       "width": scene.image.shape[1]})
        for ann, seg in zip(scene.annotations, rle.encode(scene.masks)):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "segmentation": seg, "iscrowd": 0,
                                "category_id": names.index(object_name(ann)) + 1, "bbox": ann["bbox"],
                                "area": ann["area"]})
    path = folder / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}))
    return path, names


@needs_shipped_clip
def test_coco_category_names_are_the_captions(tmp_path):
    from samflow.data.coco import CocoDataset
    from samflow.data.samples import Sample
    from samflow.data.synthetic import render_scene, scene_rng
    from samflow.models.text.clip_loading import load_clip
    from samflow.train.text_adapter_data import build_dataset_objects, modality_shift, template_embeddings
    from samflow.train.text_presence import presence_captions

    scenes = [render_scene(scene_rng(33, i), size=(192, 288)) for i in range(1, 3)]
    path, names = _write_coco(tmp_path / "coco", scenes)
    dataset = CocoDataset(path, path.parent)
    torch.manual_seed(0)
    sam = build_sam(SamConfig(**SMALL_VIT_B), device="cpu")
    clip = load_clip("clip_tiny")
    objects = build_dataset_objects(sam, clip, dataset, 2, min_area=300, categories=dataset.categories)
    assert objects.named.all() and set(objects.names) <= set(names)
    assert objects.masks[0].shape == (256, 256) and objects.target.shape[1:] == (64, 64)
    assert (objects.points >= 0).all() and (objects.points < 256).all()
    x, y = objects.points[0].round().long().tolist()
    assert objects.masks[0][y, x]  # the click is on its object, in SAM's input frame
    unnamed = build_dataset_objects(sam, clip, dataset, 2, min_area=300, captions="none",
                                    categories=dataset.categories, keep_masks=False)
    assert not unnamed.named.any() and unnamed.masks[0].shape == (0, 0)
    distinct, templates = template_embeddings(clip, objects.names)
    assert modality_shift(objects, distinct, templates).abs().sum() > 0

    sample = dataset[0]
    captions = presence_captions(Sample(sample.image, sample.masks, sample.annotations), (0, 0), 3,
                                 categories=dataset.categories)
    present = [t for t, m in zip(captions.texts, captions.targets) if m]
    absent = [t for t, m in zip(captions.texts, captions.targets) if not m]
    here = {dataset.categories[a["category_id"]] for a in sample.annotations}
    assert present and all(t[2:] in here for t in present) and len(absent) == 3
    assert not any(t[2:] in here for t in absent)

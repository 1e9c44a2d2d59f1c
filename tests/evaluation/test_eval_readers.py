"""The dataset readers of the evaluation tasks: instance-mask folders (both forms), BSDS500 folders (.mat and PNG
ground truth), LVIS files naming images by URL, and the clear errors for anything else."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_testing import coco_dict, scenes, write_bsds, write_coco, write_instance_folder
from PIL import Image

from samflow.data.bsds import BSDSDataset, read_boundaries_mat
from samflow.data.instance_folders import InstanceFolderDataset
from samflow.data.lvis import AnnotationFile
from samflow.errors import InputError
from samflow.evaluation.datasets import load_boundary_dataset, load_dataset
from samflow.evaluation.ground_truth import ground_truth


@pytest.mark.parametrize("form", ["label", "folder"])
def test_instance_folders_read_both_forms(tmp_path, form):
    items = scenes(2)
    root = write_instance_folder(tmp_path / form, items, form)
    name, dataset = load_dataset(str(root))
    assert name == form and isinstance(dataset, InstanceFolderDataset) and len(dataset) == 2
    sample = dataset[0]
    assert (sample.image == items[0].image).all()
    if form == "folder":  # one file per instance: the masks as they were, overlapping parts included
        assert (sample.masks == items[0].masks).all()
    else:  # one id per pixel: the visible region of each id, the non-empty ones
        label = np.zeros(items[0].image.shape[:2], int)
        for k, m in enumerate(items[0].masks, start=1):
            label[m] = k
        ids = [k for k in range(1, len(items[0].masks) + 1) if (label == k).any()]
        assert [a["instance_id"] for a in sample.annotations] == ids
        assert all((m == (label == k)).all() for m, k in zip(sample.masks, ids))


def test_instance_folders_refuse_other_layouts(tmp_path):
    items = scenes(1)
    with pytest.raises(InputError, match="lacks masks/"):
        (tmp_path / "a" / "images").mkdir(parents=True)
        load_dataset(str(tmp_path / "a"))
    root = write_instance_folder(tmp_path / "b", items)
    (root / "masks" / "img1.png").unlink()
    with pytest.raises(InputError, match="no masks for img1.png"):
        InstanceFolderDataset(root)
    root = write_instance_folder(tmp_path / "c", items)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "masks" / "img1.png")
    with pytest.raises(InputError, match="single-channel"):
        InstanceFolderDataset(root)[0]
    root = write_instance_folder(tmp_path / "d", items)
    (root / "masks" / "img1").mkdir()
    with pytest.raises(InputError, match="both"):
        InstanceFolderDataset(root)
    root = write_instance_folder(tmp_path / "e", items, "folder")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "masks" / "img1" / "999.png")
    with pytest.raises(InputError, match="32x32 but its image is 64x64"):
        InstanceFolderDataset(root)[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no SA-1B"):
        load_dataset(str(tmp_path / "empty"))


@pytest.mark.parametrize("form", ["mat", "png", "folder"])
def test_bsds_folders(tmp_path, form):
    items = scenes(2)
    maps = [np.stack([s.masks[0], s.masks[-1]]) for s in items]  # two "annotators"
    root = write_bsds(tmp_path / "BSDS500" / "data", items, maps, form)
    name, dataset = load_boundary_dataset(str(root))
    assert isinstance(dataset, BSDSDataset) and len(dataset) == 2 and name == "data/test"
    expected = maps[0][:1] if form == "png" else maps[0]
    assert (dataset[0].boundaries == expected).all() and (dataset[0].image == items[0].image).all()
    if form == "mat":
        assert read_boundaries_mat(root / "groundTruth" / "test" / "100001.mat").shape == (2, 64, 64)


def test_bsds_errors_and_mask_derived_boundaries(tmp_path):
    items = scenes(1)
    root = write_bsds(tmp_path / "data", items, [items[0].masks[:1]])
    with pytest.raises(InputError, match="no split 'val'"):
        BSDSDataset(root, "val")
    (root / "groundTruth" / "test" / "100001.mat").unlink()
    with pytest.raises(InputError, match="no ground truth for 100001.png"):
        BSDSDataset(root)
    (root / "groundTruth" / "test" / "100001.mat").write_text("not matlab")
    with pytest.raises(InputError, match="not a readable MATLAB file"):
        BSDSDataset(root)[0]
    with pytest.raises(InputError, match="--task edges"):
        load_dataset(str(root))
    name, derived = load_boundary_dataset("synthetic:9:1:64")
    assert derived[0].boundaries.shape == (1, 64, 64) and derived[0].boundaries.any()


def test_lvis_files_name_images_by_url(tmp_path):
    path = write_coco(tmp_path, scenes(2), lvis=True)
    found = AnnotationFile(path, tmp_path)
    assert found.lvis and found.image_path(found.images[0]) == tmp_path / "val2017" / "sa_000001.png"
    truth = ground_truth(str(path), str(tmp_path))
    assert truth.lvis and truth.frequencies == {"r": 3, "c": 2, "f": 2}
    assert [item.file_name for item in truth.images()] == ["val2017/sa_000001.png", "val2017/sa_000002.png"]
    data = json.loads(path.read_text())
    data["categories"][0].pop("frequency")
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="frequency"):
        AnnotationFile(path, tmp_path)


def test_converted_ground_truth_matches_the_masks(tmp_path):
    truth = ground_truth("synthetic:9:2:64")
    items = list(truth.images())
    reference = coco_dict(scenes(2))
    assert truth.image_ids == [1, 2] and len(items) == 2
    assert [a["segmentation"]["counts"] for a in truth.data["annotations"]] == \
        [a["segmentation"]["counts"] for a in reference["annotations"]]
    assert [a["bbox"] for a in truth.data["annotations"]] == [a["bbox"] for a in reference["annotations"]]
    assert [a["category_id"] for a in truth.data["annotations"]] == \
        [a["category_id"] for a in reference["annotations"]]

"""Payload types: shapes, coercion from user values, hashing, saving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from samflow.engine.types import (
    PAYLOAD_TYPES,
    Boxes,
    FilePath,
    Image,
    ImageEmbedding,
    MaskLogits,
    Masks,
    Points,
    get_payload_type,
)
from samflow.errors import InputError


def test_types_are_registered_by_name():
    for name in ("Image", "ImageEmbedding", "Points", "Boxes", "Masks", "Scores", "MaskLogits", "FilePath"):
        assert get_payload_type(name) is PAYLOAD_TYPES[name]
    assert get_payload_type("samflow.engine.types.Image") is None  # names only, never import paths


def test_points_shapes_and_coercion():
    one_set = Points([[1, 2], [3, 4]], [1, 0])
    assert one_set.coords.shape == (1, 2, 2) and one_set.labels.dtype == np.int32 and len(one_set) == 1
    from_list = Points.coerce([[5, 6]])
    assert from_list.labels.tolist() == [[1]]
    from_mapping = Points.coerce({"points": [[5, 6], [7, 8]], "labels": [0, 1]})
    assert from_mapping.labels.tolist() == [[0, 1]]
    with pytest.raises(InputError, match=r"coords \(N, P, 2\)"):
        Points([[1, 2, 3]], [1])


def test_boxes_and_masks_shapes():
    assert Boxes([1, 2, 3, 4]).xyxy.shape == (1, 4)
    with pytest.raises(InputError):
        Boxes([[1, 2, 3]])
    masks = Masks(np.zeros((2, 3, 5, 6)), np.array([[0.1, 0.9, 0.5], [0.7, 0.2, 0.1]]))
    assert masks.data.dtype == bool and masks.best().shape == (2, 5, 6)
    logits = MaskLogits(np.arange(2 * 3 * 4).reshape(2, 3, 2, 2), masks.scores)
    assert np.array_equal(logits.best()[:, 0], logits.data[[0, 1], [1, 0]])


def test_json_files_coerce(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"points": [[1, 2]], "labels": [0]}))
    (tmp_path / "b.json").write_text(json.dumps({"boxes": [[1, 2, 3, 4]]}))
    assert Points.coerce(tmp_path / "p.json").labels.tolist() == [[0]]
    assert Boxes.coerce(str(tmp_path / "b.json")).xyxy.tolist() == [[1, 2, 3, 4]]
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        Points.coerce(tmp_path / "bad.json")


def test_image_load_and_errors(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (7, 9, 3), dtype=np.uint8)
    PILImage.fromarray(data).save(tmp_path / "a.png")
    PILImage.fromarray(data).convert("L").save(tmp_path / "gray.png")
    image = Image.coerce(tmp_path / "a.png")
    assert image.size == (7, 9) and np.array_equal(image.data, data)
    assert Image.coerce(FilePath(tmp_path / "gray.png")).data.shape == (7, 9, 3)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="broken.png: not a recognised image format"):
        Image.load(tmp_path / "broken.png")
    with pytest.raises(InputError, match="not found"):
        Image.load(tmp_path / "missing.png")
    with pytest.raises(InputError, match="uint8"):
        Image(data.astype(np.float32))


def test_content_hash_follows_pixels_not_identity():
    data = np.zeros((4, 4, 3), np.uint8)
    assert Image(data).content_hash == Image(data.copy()).content_hash
    other = data.copy()
    other[0, 0, 0] = 1
    assert Image(other).content_hash != Image(data).content_hash
    assert Image(data.reshape(2, 8, 3)).content_hash != Image(data).content_hash  # shape is part of it


def test_embedding_state_round_trip():
    embedding = ImageEmbedding(torch.randn(1, 8, 4, 4), (30, 40), (96, 128), "m" * 8, "h" * 8, model=object())
    tensors, meta = embedding.to_state()
    back = ImageEmbedding.from_state(tensors, json.loads(json.dumps(meta)))
    assert torch.equal(back.features, embedding.features) and back.original_size == (30, 40)
    assert back.model is None and embedding.nbytes == 8 * 16 * 4


def test_masks_save_writes_pngs_and_record(tmp_path):
    data = np.zeros((1, 2, 4, 5), bool)
    data[0, 1, 1:3, 2:4] = True
    files = Masks(data, [[0.2, 0.8]]).save(tmp_path, "m")
    assert sorted(p.name for p in files) == ["m.json", "m_0_0.png", "m_0_1.png"]
    record = json.loads((tmp_path / "m.json").read_text())
    assert record[1] == {"set": 0, "index": 1, "area": 4, "bbox_xyxy": [2, 1, 4, 3], "score": pytest.approx(0.8),
                         "file": "m_0_1.png"}
    assert np.array_equal(np.asarray(PILImage.open(tmp_path / "m_0_1.png")) > 0, data[0, 1])

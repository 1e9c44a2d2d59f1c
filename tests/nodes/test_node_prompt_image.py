"""prompt.points, prompt.boxes and image.load, called directly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage
from pydantic import ValidationError

from samflow.engine.types import FilePath
from samflow.errors import InputError


def test_points_from_params_and_file(ctx, tmp_path):
    from samflow.nodes.prompt import PointPrompt

    points = PointPrompt({"points": [[1, 2], [3, 4]], "labels": [1, 0]}).run(ctx)["points"]
    assert points.coords.shape == (1, 2, 2) and points.labels.tolist() == [[1, 0]]
    separate = PointPrompt({"points": [[1, 2], [3, 4]], "separate": True}).run(ctx)["points"]
    assert separate.coords.shape == (2, 1, 2) and separate.labels.tolist() == [[1], [1]]
    (tmp_path / "p.json").write_text(json.dumps({"points": [[5, 6]], "labels": [0]}))
    from_file = PointPrompt({"file": str(tmp_path / "p.json")}).run(ctx)["points"]
    assert from_file.coords.tolist() == [[[5, 6]]] and from_file.labels.tolist() == [[0]]


def test_points_params_are_checked():
    from samflow.nodes.prompt import PointPrompt

    for bad, why in [({}, "either 'points' or 'file'"), ({"points": [[1, 2]], "labels": [1, 1]}, "2 labels"),
                     ({"points": [[1, 2]], "labels": [3]}, "labels must be 1"), ({"points": [[1]]}, "points")]:
        with pytest.raises(ValidationError, match=why):
            PointPrompt(bad)


def test_boxes_from_params_and_file(ctx, tmp_path):
    from samflow.nodes.prompt import BoxPrompt

    assert BoxPrompt({"boxes": [[1, 2, 3, 4]]}).run(ctx)["boxes"].xyxy.tolist() == [[1, 2, 3, 4]]
    (tmp_path / "b.json").write_text(json.dumps([[0, 0, 5, 5], [1, 1, 2, 2]]))
    assert len(BoxPrompt({"file": str(tmp_path / "b.json")}).run(ctx)["boxes"]) == 2
    with pytest.raises(ValidationError, match="negative width: expected x0 < x1"):
        BoxPrompt({"boxes": [[5, 0, 1, 4]]})
    with pytest.raises(InputError, match="cannot read boxes file"):
        BoxPrompt({"file": str(tmp_path / "missing.json")}).run(ctx)


def test_image_load(ctx, tmp_path):
    from samflow.nodes.image import LoadImage

    PILImage.fromarray(np.zeros((5, 6, 4), np.uint8)).save(tmp_path / "rgba.png")
    image = LoadImage().run(ctx, path=FilePath(tmp_path / "rgba.png"))["image"]
    assert image.data.shape == (5, 6, 3) and image.path == tmp_path / "rgba.png"
    (tmp_path / "x.jpg").write_text("hello")
    with pytest.raises(InputError, match="x.jpg: not a recognised image format"):
        LoadImage().run(ctx, path=FilePath(tmp_path / "x.jpg"))

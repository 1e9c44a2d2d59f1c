"""`samflow demo`: overlays written for a synthetic scene and for a user's image, through the graph engine."""

from __future__ import annotations

import numpy as np
from PIL import Image

from samflow.cli import main
from samflow.data.synthetic import render_scene, scene_rng
from samflow.demos.scenes import draw_segmentation, run_demo
from samflow.ops.metrics import mask_iou


def test_demo_on_a_synthetic_scene(tmp_path):
    result = run_demo(tmp_path / "demo", seed=7)
    assert set(result.files) == {"input", "points", "multimask", "boxes", "auto"}
    for path in result.files.values():
        assert path.is_file() and Image.open(path).size[1] == 256
    assert Image.open(result.files["multimask"]).size == (3 * 256, 256)
    assert result.point_masks.shape == (len(result.prompts.points), 256, 256)
    assert result.box_masks.shape == (len(result.prompts.boxes), 256, 256)
    # Automatic masks find the scene's larger objects (the same scene, rendered again for its ground truth).
    scene = render_scene(scene_rng(7, 1), 256)
    large = [m for m in scene.masks if m.sum() >= 32 * 32]
    found = [any(mask_iou(a, m) >= 0.75 for a in result.auto_masks) for m in large]
    assert len(large) >= 2 and sum(found) >= 0.5 * len(large), found


def test_demo_cli_with_an_image(tmp_path, capsys):
    picture = tmp_path / "photo.png"
    rgb = np.zeros((120, 200, 3), np.uint8)
    rgb[30:90, 60:140] = (200, 40, 40)
    Image.fromarray(rgb).save(picture)
    assert main(["demo", "--image", str(picture), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "out" / "points.png") in out
    assert Image.open(tmp_path / "out" / "boxes.png").size == (200, 120)
    assert Image.open(tmp_path / "out" / "auto.png").size == (200, 120)
    assert main(["demo", "--image", str(picture), "--auto-points", "-1"]) != 0


def test_drawing_shows_masks_contours_stars_and_boxes():
    image = np.full((64, 64, 3), 128, np.uint8)
    mask = np.zeros((1, 64, 64), bool)
    mask[0, 10:40, 10:40] = True
    picture = np.asarray(draw_segmentation(image, mask, points=np.array([[50.0, 50.0]]), labels=np.array([1]),
                                           boxes=np.array([[5.0, 5.0, 45.0, 45.0]])))
    assert not np.array_equal(picture[25, 25], image[25, 25])  # tinted
    assert not np.array_equal(picture[10, 25], picture[25, 25])  # contour differs from the fill
    assert tuple(picture[50, 50]) == (40, 230, 60)  # the star's centre, foreground green
    assert tuple(picture[5, 25]) != (128, 128, 128)  # box outline
    assert tuple(picture[60, 5]) == (128, 128, 128)  # untouched elsewhere

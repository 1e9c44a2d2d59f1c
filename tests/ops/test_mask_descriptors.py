"""Mask descriptors (samflow.ops.mask_descriptors) on shapes whose values are known: a rectangle fills its box, a
disc is round and solid, a ring and a star are not, colours are the pixels' means."""

from __future__ import annotations

import numpy as np
import pytest

from samflow.data.synthetic import render_scene
from samflow.errors import InputError
from samflow.ops.mask_descriptors import DESCRIPTORS, _hull_area, mask_descriptors

SIZE = 128


def shapes() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r = np.hypot(yy - 64, xx - 64)
    angle = np.arctan2(yy - 64, xx - 64)
    return {
        "rectangle": (np.abs(yy - 64) < 15) & (np.abs(xx - 64) < 45),
        "disc": r < 30,
        "ring": (r < 30) & (r >= 20),
        "star": r < 12 + 18 * (np.cos(5 * angle) + 1) / 2,
    }


def named(values: np.ndarray) -> dict[str, float]:
    return dict(zip(DESCRIPTORS, values.tolist()))


def test_shapes_have_the_descriptors_geometry_says():
    masks = shapes()
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[..., 2] = 200
    got = {name: named(row) for name, row in zip(masks, mask_descriptors(image, np.stack(list(masks.values()))))}
    rect, disc, ring, star = got["rectangle"], got["disc"], got["ring"], got["star"]
    assert rect["box_fill"] == pytest.approx(1.0) and rect["box_aspect"] == pytest.approx(29 / 89)
    assert rect["solidity"] == pytest.approx(1.0, abs=0.03) and rect["eccentricity"] > 0.9
    assert disc["box_fill"] == pytest.approx(np.pi / 4, abs=0.03) and disc["eccentricity"] < 0.05
    assert disc["solidity"] == pytest.approx(1.0, abs=0.03) and disc["radial_spread"] < 0.03
    assert disc["compactness"] > rect["compactness"] > ring["compactness"]
    assert ring["solidity"] == pytest.approx(1 - (20 / 30) ** 2, abs=0.05)
    assert star["solidity"] < 0.8 and star["radial_spread"] > 0.15
    area = masks["disc"].sum()
    assert disc["log_area"] == pytest.approx(np.log(area / SIZE**2), abs=1e-5)
    for values in got.values():  # the mask's colour, and no contrast on a uniform picture
        assert values["blue"] == pytest.approx(200 / 255, abs=1e-4) and values["red"] == 0
        assert values["colour_spread"] < 1e-4 and values["contrast"] < 1e-4


def test_colours_and_contrast_on_a_scene():
    scene = render_scene(5, size=SIZE)
    got = mask_descriptors(scene.image, scene.masks)
    assert got.shape == (len(scene.masks), len(DESCRIPTORS)) and got.dtype == np.float32
    for mask, values in zip(scene.masks, got):
        mean = scene.image[mask].mean(0) / 255
        np.testing.assert_allclose(values[8:11], mean, atol=1e-4)
    assert (got[:, DESCRIPTORS.index("contrast")] > 0.05).all()  # objects stand out from their background


def test_hull_area_and_small_or_bad_input():
    square = np.array([[0, 0], [0, 10], [10, 10], [10, 0], [5, 5], [3, 7]])
    assert _hull_area(square) == pytest.approx(100.0)
    assert _hull_area(np.array([[0, 0], [0, 5], [0, 9]])) == 0.0  # collinear: no area
    masks = np.zeros((2, 16, 16), bool)
    masks[1, 3, 3:5] = True  # two pixels: under MIN_PIXELS
    assert not mask_descriptors(np.zeros((16, 16, 3), np.uint8), masks).any()
    assert mask_descriptors(np.zeros((16, 16, 3), np.uint8), np.zeros((0, 16, 16), bool)).shape == (0, 13)
    with pytest.raises(InputError, match="same size"):
        mask_descriptors(np.zeros((8, 8, 3), np.uint8), masks)

"""The service takes a text alone through samflow.segment's routes (issue 18, item 1): the prompt adapter with its
presence check (absent objects: no object), or the operator's detector (`--text-detector`), with the same masks as
the library and the service's limits on what comes back."""

from __future__ import annotations

import numpy as np
import pytest
from serve_testing import make_segmenter, png_bytes
from test_text_detector import build_owlvit
from text_testing import needs_shipped_text

from samflow.errors import InputError
from samflow.ops import rle

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def scene():
    from samflow.data.synthetic import render_scene, scene_rng

    return render_scene(scene_rng(22, 3), size=256)  # held-out text scene: a red star, no giraffe


@pytest.fixture(scope="module")
def owl_folder(tmp_path_factory):
    return build_owlvit(tmp_path_factory.mktemp("detectors") / "owlvit")


def client_for(settings):
    from fastapi.testclient import TestClient

    from samflow.serve import create_app

    return TestClient(create_app(settings, segmenter=make_segmenter()), base_url="http://localhost")


def upload(client, pixels: np.ndarray) -> str:
    response = client.post("/api/images", files={"file": ("scene.png", png_bytes(pixels), "image/png")})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def decoded(mask_out: dict) -> np.ndarray:
    return rle.decode(mask_out["rle"]).astype(bool)


@needs_shipped_text
def test_a_text_alone_takes_the_adapter_route_with_its_presence_check(scene):
    from samflow.predict.api import segment
    from samflow.serve import ServiceSettings

    client = client_for(ServiceSettings())
    image_id = upload(client, scene.image)
    absent = client.post(f"/api/images/{image_id}/segment", json={"text": "a giraffe"})
    assert absent.status_code == 200, absent.text
    assert absent.json()["objects"] == []  # refused, not the nearest square
    present = client.post(f"/api/images/{image_id}/segment", json={"text": "a red star", "multimask": True})
    (obj,) = present.json()["objects"]
    want = segment(scene.image, text="a red star", device="cpu", multimask=True, segmenter=make_segmenter())
    assert obj["label"] == "a red star" and obj["confidence"] == pytest.approx(float(want.confidence[0]), abs=1e-5)
    assert len(obj["masks"]) == 3 and obj["best"] == int(want.best[0])
    np.testing.assert_array_equal(decoded(obj["masks"][obj["best"]]), want.masks[0])
    # A text with a click is the adapter's prompt tokens beside the click: never refused.
    mixed = client.post(f"/api/images/{image_id}/segment", json={"text": "a giraffe", "points": [[120, 80]]})
    assert len(mixed.json()["objects"]) == 1 and mixed.json()["objects"][0]["confidence"] is None


def test_the_operators_detector_finds_the_boxes(owl_folder):
    from samflow.predict.api import segment
    from samflow.serve import ServiceSettings

    rng = np.random.default_rng(3)
    picture = rng.integers(0, 80, (96, 128, 3), dtype=np.uint8)
    picture[20:60, 30:90] = (200, 40, 40)
    settings = ServiceSettings(text_detector=str(owl_folder), text_box_threshold=0.0, max_boxes=4)
    client = client_for(settings)
    image_id = upload(client, picture)
    response = client.post(f"/api/images/{image_id}/segment", json={"text": "a dog"})
    assert response.status_code == 200, response.text
    objects = response.json()["objects"]
    want = segment(picture, text="a dog", device="cpu", detector=owl_folder, box_threshold=0.0, max_detections=4,
                   multimask=True, segmenter=make_segmenter())  # the service's default: three candidates
    assert len(objects) == len(want) == 4  # capped at the service's max_boxes
    assert [o["label"] for o in objects] == ["a dog"] * 4
    np.testing.assert_allclose([o["confidence"] for o in objects], want.confidence, rtol=1e-5)
    for obj, mask in zip(objects, want.masks):
        assert len(obj["masks"]) == 3
        np.testing.assert_array_equal(decoded(obj["masks"][obj["best"]]), mask)


def test_a_detector_that_is_not_a_folder_is_refused_at_start(tmp_path):
    from samflow.serve import ServiceSettings
    from samflow.serve.service import Service

    with pytest.raises(InputError, match="text detector .* is not a folder"):
        Service(ServiceSettings(text_detector=str(tmp_path / "missing")), segmenter=make_segmenter())

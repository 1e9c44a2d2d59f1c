"""SamAutomaticMaskGenerator against the official one: the same records, mask for mask.

Three models:
- `ColourSam` (tests/amg_testing.py): SAM's interfaces around a colour-similarity formula, so masks follow the
  objects under the clicks and every filter has work to do. Both generators run the same model: records must be
  equal, bit for bit (masks, scores, boxes, points, crop boxes, order).
- samflow's SAM with random weights, run by both generators: exercises samflow's split decoder path (IoU first,
  masks upscaled only for survivors) against the official all-at-once call on the same modules: equal records.
- samflow's SAM and the official SAM with the same weights: the decoders are different code (their logits differ
  by ~1e-6), so masks are compared by IoU.
- The shipped `tiny` weights, when present; on a 1024 px image its stability counts, boxes and masks come from the
  blocks of the resize (samflow.ops.thresholded_resize), whose pixel values are summed in another order than the
  model's matrix resize: masks may differ by a pixel whose logit is within rounding of a threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from amg_testing import ColourSam, scene_image
from segment_anything import SamAutomaticMaskGenerator as OfficialGenerator

import samflow.predict.amg as amg_module
from samflow.errors import InputError
from samflow.models.sam.build import SHIPPED_WEIGHTS
from samflow.ops import rle as rle_ops
from samflow.predict.amg import SamAutomaticMaskGenerator
from samflow.predict.predictor import EncodedImage, SamPredictor
from tests.conftest import SMALL

COLOUR_PARAMS = {"points_per_side": 12, "pred_iou_thresh": 0.75, "stability_score_thresh": 0.8}
# Random weights give look-alike masks: without filters and NMS every candidate is compared.
TWIN_PARAMS = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


@pytest.fixture(scope="module")
def colour_sam() -> ColourSam:
    return ColourSam(256).eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return scene_image(1, size=(240, 320))


def assert_same_records(ours: list[dict], ref: list[dict]) -> None:
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(b[key], np.ndarray):
                assert np.array_equal(a[key], b[key]), f"record {i}: {key} differs"
            else:
                assert a[key] == b[key], f"record {i}: {key} differs: {a[key]} vs {b[key]}"
                assert type(a[key]) is type(b[key])


@pytest.mark.parametrize("params", [
    {"output_mode": "uncompressed_rle"},
    {"output_mode": "binary_mask", "crop_n_layers": 1, "points_per_side": 10},
    {"output_mode": "coco_rle", "crop_n_layers": 1, "min_mask_region_area": 80, "points_per_side": 10},
    {"output_mode": "uncompressed_rle", "min_mask_region_area": 300, "box_nms_thresh": 0.9},
], ids=["plain", "crops", "crops-small-regions", "small-regions"])
def test_same_records_as_official(colour_sam: ColourSam, image: np.ndarray, params: dict) -> None:
    params = {**COLOUR_PARAMS, **params}
    ref = OfficialGenerator(colour_sam, **params).generate(image)
    ours = SamAutomaticMaskGenerator(colour_sam, **params).generate(image)
    assert len(ref) >= 8  # enough masks for the comparison to mean something
    assert_same_records(ours, ref)


def test_filters_have_work_to_do(colour_sam: ColourSam, image: np.ndarray) -> None:
    """The thresholds above reject some candidates and keep others (else the equality tests would be weak)."""
    everything = SamAutomaticMaskGenerator(colour_sam, points_per_side=12, pred_iou_thresh=0.0,
                                           stability_score_thresh=0.0, box_nms_thresh=1.0).generate_masks(image)
    iou, stability = everything.predicted_iou, everything.stability_score
    assert 0.2 < (iou > COLOUR_PARAMS["pred_iou_thresh"]).mean() < 0.9
    assert 0.2 < (stability >= COLOUR_PARAMS["stability_score_thresh"]).mean() < 0.9
    areas = [everything.area(i) for i in range(len(everything))]
    assert len(set(areas)) > 50  # masks differ from click to click


@pytest.fixture(scope="module")
def twins():
    from official_reference import twin_models

    return twin_models(SMALL, seed=3)


def test_split_decoder_matches_official_call(twins, image: np.ndarray) -> None:
    ours_model, _ = twins
    ref = OfficialGenerator(ours_model, **TWIN_PARAMS, output_mode="uncompressed_rle").generate(image)
    ours = SamAutomaticMaskGenerator(ours_model, **TWIN_PARAMS, output_mode="uncompressed_rle").generate(image)
    assert len(ref) >= 40
    assert_same_records(ours, ref)


def test_close_to_official_model(twins, image: np.ndarray) -> None:
    ours_model, ref_model = twins
    ref = OfficialGenerator(ref_model, **TWIN_PARAMS).generate(image)
    ours = SamAutomaticMaskGenerator(ours_model, **TWIN_PARAMS).generate(image)
    assert len(ours) == len(ref) >= 40
    for a, b in zip(ours, ref):
        inter = (a["segmentation"] & b["segmentation"]).sum()
        union = (a["segmentation"] | b["segmentation"]).sum()
        assert inter / max(union, 1) > 0.999
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-4)
        assert a["point_coords"] == b["point_coords"]


@pytest.mark.skipif(not SHIPPED_WEIGHTS["tiny"].is_file(), reason="shipped tiny weights not trained yet")
def test_tiny_weights_match_official() -> None:
    from samflow.models.sam import build_sam

    model = build_sam("tiny").float()
    img = scene_image(2, size=256)
    # Thresholds low enough for the small model to leave several masks (the official generator fails on a crop
    # without masks, so no crops here).
    params = {"points_per_side": 8, "pred_iou_thresh": 0.3, "stability_score_thresh": 0.3,
              "output_mode": "uncompressed_rle"}
    ref = OfficialGenerator(model, **params).generate(img)
    ours = SamAutomaticMaskGenerator(model, **params).generate(img)
    assert len(ref) >= 3
    assert_same_records(ours, ref)


def assert_close_records(ours: list[dict], ref: list[dict]) -> None:
    """As assert_same_records, but masks may differ by a pixel whose logit rounds the other way (the block
    resize and the matrix one sum in another order, ~1e-7): then area, box and stability move with it."""
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.keys() == b.keys()
        mine, theirs = rle_ops.decode(a["segmentation"]), rle_ops.decode(b["segmentation"])
        assert (mine != theirs).sum() <= 2, f"record {i}"
        assert abs(a["area"] - b["area"]) <= 2
        assert np.abs(np.subtract(a["bbox"], b["bbox"])).max() <= 1
        assert a["stability_score"] == pytest.approx(b["stability_score"], rel=1e-3)
        for key in ("predicted_iou", "point_coords", "crop_box"):
            assert a[key] == b[key], f"record {i}: {key} differs"


@pytest.mark.skipif(not SHIPPED_WEIGHTS["tiny"].is_file(), reason="shipped tiny weights not trained yet")
@pytest.mark.parametrize("layers", [0, 1])
def test_block_resize_matches_official(layers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """tiny on a 1024 px image (its 256 px model upscales 8x): stability counts, boxes and masks come from the
    blocks of the resize (samflow.ops.thresholded_resize), the masks made after NMS; the records are the official
    generator's, run on the same model."""
    from samflow.models.sam import build_sam

    model = build_sam("tiny").float()
    img = scene_image(2, size=(768, 1024))
    params = {"points_per_side": 8, "pred_iou_thresh": 0.3, "stability_score_thresh": 0.3, "crop_n_layers": layers,
              "output_mode": "uncompressed_rle"}
    ref = OfficialGenerator(model, **params).generate(img)
    generator = SamAutomaticMaskGenerator(model, **params)
    ours = generator.generate(img)
    assert len(ref) >= 10
    assert generator._plans[((128, 128), (192, 256), (768, 1024))] is not None  # the whole image: by blocks
    assert_close_records(ours, ref)
    # Keeping no low-res logits for after NMS (every mask made at once) changes nothing.
    monkeypatch.setattr(amg_module, "PENDING_BYTES", 0)
    assert SamAutomaticMaskGenerator(model, **params).generate(img) == ours


def test_given_embedding_is_used(colour_sam: ColourSam, image: np.ndarray) -> None:
    encoded = SamPredictor(colour_sam).encode(image)
    calls = []
    handle = colour_sam.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        generator = SamAutomaticMaskGenerator(colour_sam, **COLOUR_PARAMS, output_mode="uncompressed_rle")
        with_embedding = generator.generate(image, embedding=encoded)
        assert calls == []
        assert_same_records(with_embedding, generator.generate(image))
        assert calls == [1]
        # Crops get their embeddings from `embed` when given.
        seen: list[tuple[int, int]] = []

        def embed(crop: np.ndarray) -> EncodedImage:
            seen.append(crop.shape[:2])
            return SamPredictor(colour_sam).encode(crop)

        cropped = SamAutomaticMaskGenerator(colour_sam, points_per_side=4, crop_n_layers=1, embed=embed)
        cropped.generate(image, embedding=encoded)
        assert len(seen) == 4 and all(h < 240 and w < 320 for h, w in seen)
    finally:
        handle.remove()


def test_empty_result_and_bad_arguments(colour_sam: ColourSam, image: np.ndarray) -> None:
    nothing = SamAutomaticMaskGenerator(colour_sam, points_per_side=4, pred_iou_thresh=1.0, crop_n_layers=1)
    assert nothing.generate(image) == []
    with pytest.raises(InputError):
        SamAutomaticMaskGenerator(colour_sam, points_per_side=None)
    with pytest.raises(InputError):
        SamAutomaticMaskGenerator(colour_sam, point_grids=[np.zeros((1, 2))], points_per_side=4)
    with pytest.raises(InputError):
        SamAutomaticMaskGenerator(colour_sam, output_mode="polygons")
    with pytest.raises(InputError):
        SamAutomaticMaskGenerator(colour_sam, points_per_side=None, point_grids=[np.zeros((1, 2))], crop_n_layers=1)


def test_point_grids_and_points_per_batch(colour_sam: ColourSam, image: np.ndarray) -> None:
    grid = np.random.default_rng(0).uniform(0.05, 0.95, (50, 2))
    params = {**COLOUR_PARAMS, "points_per_side": None, "point_grids": [grid], "points_per_batch": 7,
              "output_mode": "uncompressed_rle"}
    ref = OfficialGenerator(colour_sam, **params).generate(image)
    assert_same_records(SamAutomaticMaskGenerator(colour_sam, **params).generate(image), ref)


def test_grayscale_and_torch_free_input(colour_sam: ColourSam, image: np.ndarray) -> None:
    gray = image.mean(axis=2).astype(np.uint8)
    records = SamAutomaticMaskGenerator(colour_sam, **COLOUR_PARAMS).generate(gray)
    assert all(r["segmentation"].shape == gray.shape for r in records)
    assert torch.get_num_threads() >= 1

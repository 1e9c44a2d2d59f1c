"""The automatic mask generator on SAM 2 against Meta's `sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator`,
on identical perturbed random weights of a small SAM 2 (the reference model built from its own hydra config, samflow's
loaded from the reference's checkpoint file, as in test_sam2.py).

Random weights give look-alike masks (every box covers most of the image), so box NMS at its default keeps one mask;
the comparisons that mean something switch NMS off (1.0) and set the IoU and stability thresholds where they reject
some candidates and keep others. The decoders are the same arithmetic in different code (logits within ~1e-6), so
records are compared in order: the same points, crop boxes and count, predicted IoUs within 1e-4, masks with IoU >=
0.99 and nearly all of them identical.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2_reference import official_sam2, perturb_

from samflow import build_sam
from samflow.errors import InputError
from samflow.models.sam2 import Sam2Config
from samflow.predict.amg import Sam2AutomaticMaskGenerator, SamAutomaticMaskGenerator
from samflow.predict.predictor import EncodedImage
from samflow.predict.sam2_predictor import Sam2Predictor
from tests.conftest import make_image

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

# test_sam2.py's small_a: stage grids 64/32/16/8, padded windows, a pooling block, a global block; 256 px.
SMALL = Sam2Config(embed_dim=16, num_heads=1, stages=(1, 2, 3, 2), global_att_blocks=(4,),
                   window_pos_embed_bkg_spatial_size=(7, 7), image_size=256)
GRID = {"points_per_side": 8}
NO_FILTERS = {**GRID, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
FILTERS = {**GRID, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.15, "box_nms_thresh": 1.0}

CASES = {
    "everything": dict(NO_FILTERS, output_mode="uncompressed_rle"),
    "filters": FILTERS,
    "default-nms": dict(GRID, pred_iou_thresh=0.0, stability_score_thresh=0.0),
    "crops": dict(FILTERS, stability_score_thresh=0.1, crop_n_layers=1, crop_nms_thresh=1.0),
    "m2m": dict(FILTERS, use_m2m=True),
    "single-mask": dict(FILTERS, multimask_output=False, output_mode="coco_rle"),
    "mask-threshold": dict(NO_FILTERS, mask_threshold=0.5, stability_score_offset=0.5),
}


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    torch.manual_seed(0)
    ref = perturb_(official_sam2(SMALL), scale=0.05, seed=0)
    path = tmp_path_factory.mktemp("sam2_amg") / "checkpoint.pt"
    torch.save({"model": ref.state_dict()}, path)
    return build_sam(SMALL, checkpoint=path), ref


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return make_image(96, 128, seed=4)


def official_generator(model, **params):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    generator = SAM2AutomaticMaskGenerator(model, **params)
    s = model.image_size  # the official predictor's feature sizes are fixed for 1024 px
    generator.predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return generator


def _dense(record: dict) -> np.ndarray:
    from samflow.ops import rle

    segmentation = record["segmentation"]
    return segmentation if isinstance(segmentation, np.ndarray) else rle.decode(segmentation)


def assert_records_agree(ours: list[dict], ref: list[dict]) -> None:
    assert len(ours) == len(ref)
    identical = 0
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.keys() == b.keys()
        assert a["point_coords"] == b["point_coords"], f"record {i}"
        assert a["crop_box"] == b["crop_box"], f"record {i}"
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-4), f"record {i}"
        assert a["stability_score"] == pytest.approx(b["stability_score"], abs=2e-3), f"record {i}"
        ma, mb = _dense(a), _dense(b)
        assert ma.shape == mb.shape
        iou = (ma & mb).sum() / max((ma | mb).sum(), 1)
        assert iou >= 0.99, f"record {i}: mask IoU {iou}"
        if np.array_equal(ma, mb):
            identical += 1
            assert a["bbox"] == b["bbox"] and a["area"] == b["area"], f"record {i}"
            if not isinstance(a["segmentation"], np.ndarray):
                assert a["segmentation"] == b["segmentation"], f"record {i}"
    assert identical >= 0.95 * len(ref)  # masks differ only at logits within float noise of the threshold


@pytest.mark.parametrize("case", sorted(CASES))
def test_records_agree_with_official(twins, image, case):
    ours_model, ref_model = twins
    params = CASES[case]
    ref = official_generator(ref_model, **params).generate(image)
    ours = SamAutomaticMaskGenerator(ours_model, **params).generate(image)
    assert len(ref) >= (1 if case == "default-nms" else 40)  # enough masks for the comparison to mean something
    assert_records_agree(ours, ref)


def test_filters_have_work_to_do(twins, image):
    """FILTERS rejects some candidates and keeps others (else the comparison would prove little)."""
    model, _ = twins
    everything = Sam2AutomaticMaskGenerator(model, **NO_FILTERS).generate_masks(image)
    assert len(everything) == 3 * 64
    iou, stability = everything.predicted_iou, everything.stability_score
    assert 0.2 < (iou > FILTERS["pred_iou_thresh"]).mean() < 0.9
    assert 0.2 < (stability >= FILTERS["stability_score_thresh"]).mean() < 0.9
    assert len({everything.area(i) for i in range(len(everything))}) > 100  # masks differ from click to click


def test_sam_generator_takes_a_sam2_model(twins, image):
    model, _ = twins
    generator = SamAutomaticMaskGenerator(model, **GRID)
    assert type(generator) is Sam2AutomaticMaskGenerator
    assert generator.pred_iou_thresh == 0.8 and generator.mask_threshold == 0.0  # SAM 2's defaults
    same = Sam2AutomaticMaskGenerator(model, **FILTERS).generate(image)
    assert_records_agree(SamAutomaticMaskGenerator(model, **FILTERS).generate(image), same)
    with pytest.raises(InputError, match="by keyword"):
        SamAutomaticMaskGenerator(model, 8, 64, 0.5, 0.5, 1.0, 0.7)  # the 7th is box_nms_thresh for SAM only
    with pytest.raises(InputError, match="hq_token_only applies to HQ-SAM models only; this is a sam2 model"):
        Sam2AutomaticMaskGenerator(model, hq_token_only=True)
    with pytest.raises(InputError, match="needs a SAM 2 model"):
        Sam2AutomaticMaskGenerator(torch.nn.Linear(1, 1))


def test_given_embedding_is_used_and_another_family_refused(twins, image, small_config):
    from samflow.engine.types import Image
    from samflow.predict.embeddings import to_payload

    model, _ = twins
    generator = Sam2AutomaticMaskGenerator(model, **FILTERS)
    want = generator.generate_masks(image)
    encoded = Sam2Predictor(model).encode(image)
    payload_form = EncodedImage.of(to_payload(encoded, model, Image(image)))  # what the graph and api.py hand over
    encode = model.encode_image
    model.encode_image = None  # the encoder must not run
    try:
        for given in (encoded, payload_form):
            got = generator.generate_masks(image, given)
            assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got.counts, want.counts))
    finally:
        model.encode_image = encode
    sam = build_sam(small_config)
    with pytest.raises(InputError, match="made by a sam model; this sam2 model cannot decode it"):
        generator.generate_masks(image, EncodedImage(torch.zeros(1, 256, 16, 16), image.shape[:2], (192, 256),
                                                     family=sam.family))
    with pytest.raises(InputError, match="made by a sam2 model; this sam model cannot decode it"):
        SamAutomaticMaskGenerator(sam, **GRID).generate_masks(image, payload_form)


def test_min_mask_region_area_fills_the_low_res_masks(twins, image):
    """As SAM 2: min_mask_region_area is the predictor's max_hole_area and max_sprinkle_area (regions of the low-res
    masks filled before upscaling; Sam2Predictor's filling is checked against scipy in test_sam2.py), with no
    clean-up after NMS. The reference skips it on CPUs (its CUDA extension), so it is checked against the predictor."""
    model, _ = twins
    area = 40
    filled = Sam2AutomaticMaskGenerator(model, **NO_FILTERS, min_mask_region_area=area).generate(image)
    plain = Sam2AutomaticMaskGenerator(model, **NO_FILTERS).generate(image)
    assert len(filled) == len(plain)
    assert sum(not np.array_equal(a["segmentation"], b["segmentation"]) for a, b in zip(filled, plain)) > 10
    predictor = Sam2Predictor(model, max_hole_area=area, max_sprinkle_area=area)
    predictor.set_image(image)
    for record in filled[:: len(filled) // 12]:
        masks, scores, _ = predictor.predict(point_coords=np.array(record["point_coords"]), point_labels=np.array([1]))
        k = int(np.argmin(np.abs(scores - record["predicted_iou"])))
        assert np.array_equal(masks[k].astype(bool), record["segmentation"])

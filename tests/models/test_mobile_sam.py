"""MobileSAM at its real size (TinyViT-5M, 1024 px) against the reference on identical random weights: the
released checkpoint layout, the embedding, the predictor, the automatic mask generator, checkpoint round trips and
the errors for checkpoints of another family or size.

The reference is MobileSAM's TinyViT as `segment-anything-hq` carries it (MobileSAM's `tiny_vit_sam.py` with the
early features added to its return value) in the official `segment_anything` Sam, which is MobileSAM's model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam_family_reference import family_twins, load_reference, reference_model, reference_state_dict

from samflow import CheckpointError, SamConfig, SamPredictor, build_sam
from samflow.models.sam import config_from_state_dict, save_checkpoint
from samflow.models.sam.checkpoint import TINY_VIT_HEAD_KEYS
from samflow.predict.amg import SamAutomaticMaskGenerator
from tests.conftest import SMALL, make_image

RTOL = 1e-4
MOBILE = SamConfig.preset("mobile_sam")


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def twins():
    return family_twins(MOBILE, seed=1)


@pytest.fixture(scope="module")
def predictors(twins):
    from segment_anything import SamPredictor as ReferencePredictor

    ours_model, ref_model = twins
    image = make_image(150, 200, seed=4)
    ours, ref = SamPredictor(ours_model), ReferencePredictor(ref_model)
    ours.set_image(image)
    ref.set_image(image)
    return ours, ref, image


def test_released_layout_and_size_inference(twins):
    ours_model, ref_model = twins
    ours = {k: tuple(v.shape) for k, v in ours_model.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in reference_state_dict(ref_model).items()}
    # the layout of mobile_sam.pt: TinyViT under image_encoder, its classifier and BatchNorm statistics included
    assert {"image_encoder.patch_embed.seq.0.c.weight", "image_encoder.layers.1.blocks.0.attn.attention_biases",
            "image_encoder.layers.0.blocks.0.conv1.bn.running_var", "image_encoder.head.weight",
            "image_encoder.neck.0.weight", "mask_decoder.iou_token.weight"} <= ours.keys()
    assert not any(k.startswith("image_encoder.blocks.") for k in ours)
    assert config_from_state_dict(ours_model.state_dict()) == MOBILE
    assert ours_model.family == "mobile_sam" and 9e6 < sum(p.numel() for p in ours_model.parameters()) < 11e6


def test_embedding_matches_reference(predictors):
    ours, ref, _ = predictors
    assert ours.features.shape == ref.features.shape == (1, 256, 64, 64)
    assert rel_err(ours.features, ref.features) < RTOL
    assert ours.interm_features is None and ours.get_encoded().family == "mobile_sam"


@pytest.mark.parametrize(("case", "multimask"), [("point", True), ("box", False), ("box_and_points", True)])
def test_predict_matches_reference(predictors, case, multimask):
    ours, ref, image = predictors
    h, w = image.shape[:2]
    kwargs = {
        "point": dict(point_coords=np.array([[w * 0.4, h * 0.5]]), point_labels=np.array([1])),
        "box": dict(box=np.array([w * 0.1, h * 0.2, w * 0.8, h * 0.7])),
        "box_and_points": dict(box=np.array([w * 0.1, h * 0.2, w * 0.8, h * 0.7]),
                               point_coords=np.array([[w * 0.3, h * 0.4], [w * 0.6, h * 0.5]]),
                               point_labels=np.array([1, 0])),
    }[case]
    m1, s1, l1 = ours.predict(**kwargs, multimask_output=multimask)
    m2, s2, l2 = ref.predict(**kwargs, multimask_output=multimask)
    assert m1.shape == m2.shape == ((3 if multimask else 1), h, w)
    assert rel_err(l1, l2) < RTOL
    assert np.allclose(s1, s2, rtol=RTOL, atol=1e-6)


def test_generator_close_to_reference(twins, predictors):
    from segment_anything import SamAutomaticMaskGenerator as ReferenceGenerator

    ours_model, ref_model = twins
    ours_predictor, _, image = predictors
    params = {"points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    ref = ReferenceGenerator(ref_model, **params).generate(image)
    ours = SamAutomaticMaskGenerator(ours_model, **params).generate(image, ours_predictor.get_encoded())
    assert len(ours) == len(ref) == 12
    for a, b in zip(ours, ref):
        inter = (a["segmentation"] & b["segmentation"]).sum()
        assert inter / max((a["segmentation"] | b["segmentation"]).sum(), 1) > 0.999
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-4)


def test_checkpoint_round_trips(tmp_path, twins):
    ours_model, ref_model = twins
    path = tmp_path / "mobile_sam.pt"
    torch.save(reference_state_dict(ref_model), path)  # the reference's weights, in the released layout
    loaded = build_sam(checkpoint=path)  # the family and sizes from the keys alone
    assert loaded.config == MOBILE
    state = ours_model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    again = reference_model(MOBILE)
    load_reference(again, torch.load(path, weights_only=True))  # and ours reads back into the reference
    st = save_checkpoint(loaded, tmp_path / "mobile.safetensors")
    assert build_sam(checkpoint=st).config == MOBILE
    headless = tmp_path / "headless.pt"  # re-saved without the unused ImageNet classifier (as other tools do)
    torch.save({k: v for k, v in state.items() if k not in TINY_VIT_HEAD_KEYS}, headless)
    assert build_sam("mobile_sam", checkpoint=headless).config == MOBILE


def test_wrong_family_and_size_are_explained(tmp_path, twins):
    ours_model, _ = twins
    path = tmp_path / "mobile_sam.pt"
    torch.save(ours_model.state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        build_sam("vit_b", checkpoint=path)
    msg = str(err.value)
    assert "this is a MobileSAM checkpoint (mobile_sam)" in msg and "TinyViT image encoder" in msg
    assert "build_sam('mobile_sam', checkpoint=...)" in msg
    assert "missing keys: image_encoder.blocks" in msg and "unexpected keys: image_encoder.head" in msg
    small = tmp_path / "sam_small.pth"
    torch.save(build_sam(SMALL).state_dict(), small)
    with pytest.raises(CheckpointError, match="ViT image encoder.*this is a plain SAM checkpoint"):
        build_sam("mobile_sam", checkpoint=small)
    bigger = MOBILE.model_copy(update={"tiny_vit_depths": (2, 2, 4, 2)})
    torch.save(build_sam(bigger).state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="depths 2/2/4/2.*depths 2/2/6/2: this is mobile_sam"):
        build_sam("mobile_sam", checkpoint=tmp_path / "other.pt")


def test_config_rules():
    with pytest.raises(ValueError, match="overall stride"):
        SamConfig(encoder="tiny_vit", patch_size=8)
    assert SamConfig(encoder="tiny_vit", image_size=512).embedding_size == 32
    model = build_sam(SamConfig(encoder="tiny_vit", image_size=256, tiny_vit_depths=(1, 1, 1, 1)))
    with torch.inference_mode():  # sizes other than 1024 run too (the reference's grid is fixed at 64)
        assert model.image_encoder(torch.randn(1, 3, 256, 256)).shape == (1, 256, 16, 16)

"""HQ-SAM against the reference `segment-anything-hq` on identical random weights: keys, early features, predictor
(multimask and hq_token_only semantics), batched forward, the decoder at real size, Light HQ-SAM at real size, the
automatic mask generator, and the checkpoint layout both ways."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam_family_reference import family_twins, load_reference, perturb, reference_model, reference_state_dict

from samflow import CheckpointError, SamConfig, SamPredictor, build_sam
from samflow.models.sam import config_from_state_dict, save_checkpoint
from samflow.models.sam.sam import Sam
from samflow.predict.amg import SamAutomaticMaskGenerator
from tests.conftest import SMALL, make_image

RTOL = 1e-4
HQ_SMALL = SMALL.model_copy(update={"hq": True})


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def hq_twins():
    return family_twins(HQ_SMALL, seed=2)


@pytest.fixture(scope="module")
def predictors(hq_twins):
    from segment_anything_hq import SamPredictor as ReferencePredictor

    ours_model, ref_model = hq_twins
    image = make_image(180, 240, seed=5)
    ours, ref = SamPredictor(ours_model), ReferencePredictor(ref_model)
    ours.set_image(image)
    ref.set_image(image)
    return ours, ref, image


@pytest.mark.parametrize("name", ["sam_hq_vit_b", "sam_hq_vit_l", "sam_hq_vit_h"])
def test_keys_and_shapes_equal_reference_and_size_is_inferred(name):
    config = SamConfig.preset(name)
    with torch.device("meta"):
        ours, ref = Sam(config), reference_model(config)
    a = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert a == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {"mask_decoder.hf_token.weight", "mask_decoder.compress_vit_feat.0.weight",
            "mask_decoder.embedding_maskfeature.3.bias"} <= a.keys()
    assert config_from_state_dict(ours.state_dict()) == config
    assert config.family == "sam_hq" and ours.family == "sam_hq"


def test_early_features_are_the_first_global_blocks_output(hq_twins):
    ours_model, ref_model = hq_twins
    x = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        features, interm = ours_model.encode_image(x)
        ref_features, ref_interms = ref_model.image_encoder(x)
    assert len(ref_interms) == len(HQ_SMALL.encoder_global_attn_indexes)
    assert interm.shape == ref_interms[0].shape == (1, 16, 16, 64)
    assert rel_err(interm, ref_interms[0]) < RTOL and rel_err(features, ref_features) < RTOL


def _cases(h: int, w: int) -> dict[str, dict]:
    return {
        "point": dict(point_coords=np.array([[w * 0.4, h * 0.5]]), point_labels=np.array([1])),
        "points": dict(point_coords=np.array([[w * 0.2, h * 0.3], [w * 0.7, h * 0.6]]), point_labels=np.array([1, 0])),
        "box": dict(box=np.array([w * 0.1, h * 0.2, w * 0.8, h * 0.7])),
    }


@pytest.mark.parametrize(("case", "multimask", "hq_token_only"), [
    ("point", True, False), ("point", True, True), ("points", False, False), ("points", True, True),
    ("box", False, True), ("box", True, False)])
def test_predict_matches_reference(predictors, case, multimask, hq_token_only):
    ours, ref, image = predictors
    kwargs = dict(_cases(*image.shape[:2])[case], multimask_output=multimask, hq_token_only=hq_token_only)
    m1, s1, l1 = ours.predict(**kwargs)
    m2, s2, l2 = ref.predict(**kwargs)
    assert m1.shape == m2.shape == (1, *image.shape[:2])  # one mask per prompt either way, as the reference
    assert rel_err(l1, l2) < RTOL
    assert np.allclose(s1, s2, rtol=RTOL, atol=1e-6)
    logits, _, _ = ours.predict(**kwargs, return_logits=True)
    assert not ((m1 != m2) & (np.abs(logits) > 1e-3)).any()


def test_batched_forward_and_prompt_batches_match(hq_twins):
    ours_model, ref_model = hq_twins
    image = make_image(200, 256, seed=3)
    pixels = torch.as_tensor(SamPredictor(ours_model).transform.apply_image(image)).permute(2, 0, 1).float()
    batch = [{"image": pixels, "original_size": image.shape[:2],
              "boxes": torch.tensor([[10.0, 20.0, 120.0, 150.0], [50.0, 60.0, 200.0, 180.0]])}]
    for hq_token_only in (False, True):
        out1 = ours_model(batch, multimask_output=True, hq_token_only=hq_token_only)[0]
        with torch.no_grad():  # the reference's forward is not no_grad
            out2 = ref_model(batch, multimask_output=True, hq_token_only=hq_token_only)[0]
        assert out1["low_res_logits"].shape == out2["low_res_logits"].shape == (2, 1, 64, 64)
        assert rel_err(out1["low_res_logits"], out2["low_res_logits"]) < RTOL
        assert rel_err(out1["iou_predictions"], out2["iou_predictions"]) < RTOL


def test_decoder_at_real_size_matches_reference():
    """The decoder of sam_hq_vit_h (256 channels, 64x64 grid, early features 1280 wide) on random embeddings; more
    prompts than one chunk of the HQ masks."""
    from segment_anything_hq.modeling import MaskDecoderHQ as Reference
    from segment_anything_hq.modeling import TwoWayTransformer

    from samflow.models.sam.hq_decoder import MaskDecoderHQ
    from samflow.models.sam.prompt_encoder import PromptEncoder
    from samflow.models.sam.transformer import TwoWayTransformer as OursTransformer

    torch.manual_seed(0)
    decoder = perturb(MaskDecoderHQ(transformer_dim=256, transformer=OursTransformer(depth=2, embedding_dim=256,
                                                                                     mlp_dim=2048, num_heads=8),
                                    vit_dim=1280), seed=3).eval()
    prompts = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                            mask_in_chans=16)
    ref = Reference(transformer_dim=256, transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                       num_heads=8), vit_dim=1280).eval()
    ref.load_state_dict(decoder.state_dict())
    emb, interm = torch.randn(1, 256, 64, 64), torch.randn(1, 64, 64, 1280)
    boxes = torch.rand(5, 2) * 500
    boxes = torch.cat([boxes, boxes + 100 + torch.rand(5, 2) * 300], dim=1)
    with torch.inference_mode():
        sparse, dense = prompts(points=None, boxes=boxes, masks=None)
        pe = prompts.get_dense_pe()
        a = decoder(emb, pe, sparse, dense, True, hq_token_only=False, interm_embeddings=interm)
        b = ref(emb, pe, sparse, dense, True, hq_token_only=False, interm_embeddings=[interm])
    assert a[0].shape == b[0].shape == (5, 1, 256, 256)
    assert rel_err(a[0], b[0]) < RTOL and rel_err(a[1], b[1]) < RTOL


def test_light_hq_sam_at_real_size_matches_reference():
    """sam_hq_vit_tiny (MobileSAM's TinyViT-5M, early features from its second stage) end to end at 1024 px."""
    from segment_anything_hq import SamPredictor as ReferencePredictor

    ours_model, ref_model = family_twins(SamConfig.preset("sam_hq_vit_tiny"), seed=4)
    image = make_image(150, 200, seed=2)
    ours, ref = SamPredictor(ours_model), ReferencePredictor(ref_model)
    ours.set_image(image)
    ref.set_image(image)
    assert ours.interm_features.shape == ref.interm_features[0].shape == (1, 64, 64, 160)
    assert rel_err(ours.features, ref.features) < RTOL
    assert rel_err(ours.interm_features, ref.interm_features[0]) < RTOL
    kwargs = _cases(150, 200)["box"]
    _, s1, l1 = ours.predict(**kwargs)
    _, s2, l2 = ref.predict(**kwargs)
    assert rel_err(l1, l2) < RTOL and np.allclose(s1, s2, rtol=RTOL, atol=1e-6)


def test_generator_close_to_reference(hq_twins):
    from segment_anything_hq import SamAutomaticMaskGenerator as ReferenceGenerator

    ours_model, ref_model = hq_twins
    image = make_image(160, 224, seed=7)
    params = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    ref = ReferenceGenerator(ref_model, **params).generate(image)
    ours = SamAutomaticMaskGenerator(ours_model, **params, decoder_chunk=5).generate(image)
    assert len(ours) == len(ref) == 16  # one mask per point, as the reference HQ generator
    for a, b in zip(ours, ref):
        inter = (a["segmentation"] & b["segmentation"]).sum()
        assert inter / max((a["segmentation"] | b["segmentation"]).sum(), 1) > 0.999
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-4)
        assert a["point_coords"] == b["point_coords"]


def test_checkpoint_layout_both_ways(tmp_path, hq_twins):
    ours_model, _ = hq_twins
    path = tmp_path / "sam_hq_small.pth"
    torch.save(ours_model.state_dict(), path)  # a plain state dict, as the released files
    ref = reference_model(HQ_SMALL)
    load_reference(ref, torch.load(path, weights_only=True))  # the reference reads ours, strictly
    back = tmp_path / "from_reference.pth"
    torch.save(reference_state_dict(ref), back)
    loaded = build_sam(checkpoint=back)  # family and size inferred from the keys
    assert loaded.config == HQ_SMALL and loaded.family == "sam_hq"
    assert all(torch.equal(v, ours_model.state_dict()[k]) for k, v in loaded.state_dict().items())
    again = build_sam(checkpoint=save_checkpoint(loaded, tmp_path / "hq.safetensors"))
    assert again.config == HQ_SMALL


def test_wrong_family_checkpoints_are_explained(tmp_path, hq_twins):
    ours_model, _ = hq_twins
    hq_path = tmp_path / "sam_hq.pth"
    torch.save(ours_model.state_dict(), hq_path)
    with pytest.raises(CheckpointError) as err:
        build_sam(SMALL, checkpoint=hq_path)
    msg = str(err.value)
    assert "HQ-SAM keys present" in msg and "this is an HQ-SAM checkpoint" in msg
    assert "unexpected keys: mask_decoder.compress_vit_feat" in msg and str(hq_path) in msg
    plain = tmp_path / "sam.pth"
    torch.save({k: v for k, v in ours_model.state_dict().items() if "hf_" not in k and "compress" not in k
                and "embedding_encoder" not in k and "embedding_maskfeature" not in k}, plain)
    with pytest.raises(CheckpointError, match="no HQ-SAM keys.*this is a plain SAM checkpoint.*missing keys"):
        build_sam(HQ_SMALL, checkpoint=plain)


def test_wrong_size_hq_checkpoint_names_the_preset(tmp_path):
    h = SamConfig.preset("sam_hq_vit_h")
    state = {"image_encoder.pos_embed": torch.zeros(1, 64, 64, 1280),
             "image_encoder.patch_embed.proj.weight": torch.zeros(1280, 3, 16, 16),
             "mask_decoder.hf_token.weight": torch.zeros(1, 256),
             "mask_decoder.compress_vit_feat.0.weight": torch.zeros(1280, 256, 2, 2)}
    for i in range(32):
        state[f"image_encoder.blocks.{i}.attn.rel_pos_h"] = torch.zeros(127 if i in h.encoder_global_attn_indexes
                                                                         else 27, 80)
    path = tmp_path / "sam_hq_vit_h.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="this is sam_hq_vit_h.*this is sam_hq_vit_b"):
        build_sam("sam_hq_vit_b", checkpoint=path)


def test_hq_arguments_are_checked(hq_twins):
    from samflow.errors import InputError

    ours_model, _ = hq_twins
    plain = build_sam(SMALL)
    predictor = SamPredictor(plain)
    predictor.set_image(make_image(64, 64))
    with pytest.raises(InputError, match="hq_token_only applies to HQ-SAM models only"):
        predictor.predict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([1]), hq_token_only=True)
    hq = SamPredictor(ours_model)
    with pytest.raises(InputError, match="sam model; this sam_hq model cannot decode it"):
        hq.set_image_embedding(predictor.get_encoded())
    with pytest.raises(InputError, match="hq_token_only applies to HQ-SAM"):
        SamAutomaticMaskGenerator(plain, hq_token_only=True)

"""samflow's SAM against the official segment-anything 1.0 on identical (perturbed random) weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor as OfficialPredictor

from samflow import SamPredictor
from tests.conftest import make_image

RTOL = 1e-4


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def assert_masks_match(ours, ref, logits) -> None:
    """Masks equal except where the logit is a tie (within float noise of the threshold)."""
    differ = ours != ref
    assert not (differ & (np.abs(logits) > 1e-3)).any()


@pytest.fixture(scope="module", params=[(180, 240), (240, 150)], ids=["landscape", "portrait"])
def predictors(request, twins):
    ours_model, ref_model = twins
    image = make_image(*request.param, seed=sum(request.param))
    ours, ref = SamPredictor(ours_model), OfficialPredictor(ref_model)
    ours.set_image(image)
    ref.set_image(image)
    return ours, ref, image


def test_image_embeddings_match(predictors):
    ours, ref, _ = predictors
    assert ours.features.shape == ref.features.shape == (1, 256, 16, 16)
    assert rel_err(ours.features, ref.features) < RTOL
    assert ours.input_size == ref.input_size and ours.original_size == ref.original_size


def _prompt_cases(h: int, w: int):
    return {
        "single_point": dict(point_coords=np.array([[w * 0.4, h * 0.5]]), point_labels=np.array([1])),
        "pos_neg_points": dict(point_coords=np.array([[w * 0.2, h * 0.3], [w * 0.7, h * 0.6], [w * 0.5, h * 0.9]]),
                               point_labels=np.array([1, 0, 1])),
        "box": dict(box=np.array([w * 0.1, h * 0.2, w * 0.8, h * 0.7])),
        "box_and_points": dict(box=np.array([w * 0.1, h * 0.2, w * 0.8, h * 0.7]),
                               point_coords=np.array([[w * 0.3, h * 0.4]]), point_labels=np.array([0])),
    }


@pytest.mark.parametrize("case", ["single_point", "pos_neg_points", "box", "box_and_points"])
@pytest.mark.parametrize("multimask", [True, False])
def test_predict_matches_official(predictors, case, multimask):
    ours, ref, image = predictors
    kwargs = _prompt_cases(*image.shape[:2])[case]
    m1, s1, l1 = ours.predict(**kwargs, multimask_output=multimask)
    m2, s2, l2 = ref.predict(**kwargs, multimask_output=multimask)
    assert m1.shape == m2.shape == ((3 if multimask else 1), *image.shape[:2])
    assert m1.dtype == m2.dtype == bool
    assert rel_err(l1, l2) < RTOL
    assert np.allclose(s1, s2, rtol=RTOL, atol=1e-6)
    logits, _, _ = ours.predict(**kwargs, multimask_output=multimask, return_logits=True)
    assert_masks_match(m1, m2, logits)


def test_mask_input_fed_back(predictors):
    ours, ref, image = predictors
    kwargs = _prompt_cases(*image.shape[:2])["single_point"]
    _, s1, l1 = ours.predict(**kwargs)
    _, s2, l2 = ref.predict(**kwargs)
    best = int(np.argmax(s2))
    extra = dict(point_coords=np.vstack([kwargs["point_coords"], [[10.0, 12.0]]]), point_labels=np.array([1, 0]))
    m1, s1b, l1b = ours.predict(**extra, mask_input=l1[best][None], multimask_output=False)
    m2, s2b, l2b = ref.predict(**extra, mask_input=l2[best][None], multimask_output=False)
    assert rel_err(l1b, l2b) < RTOL
    assert np.allclose(s1b, s2b, rtol=RTOL, atol=1e-6)
    logits, _, _ = ours.predict(**extra, mask_input=l1[best][None], multimask_output=False, return_logits=True)
    assert_masks_match(m1, m2, logits)


def test_predict_torch_and_batched_forward_match(twins):
    ours_model, ref_model = twins
    image = make_image(200, 256, seed=3)
    pixels = torch.as_tensor(SamPredictor(ours_model).transform.apply_image(image)).permute(2, 0, 1).float()
    boxes = torch.tensor([[10.0, 20.0, 120.0, 150.0], [50.0, 60.0, 200.0, 180.0]])
    points = torch.tensor([[[30.0, 40.0]], [[100.0, 90.0]]])
    labels = torch.tensor([[1], [1]])
    batch = [{"image": pixels, "original_size": image.shape[:2], "boxes": boxes, "point_coords": points,
              "point_labels": labels}]
    out1 = ours_model(batch, multimask_output=True)[0]
    out2 = ref_model(batch, multimask_output=True)[0]
    assert rel_err(out1["low_res_logits"], out2["low_res_logits"]) < RTOL
    assert rel_err(out1["iou_predictions"], out2["iou_predictions"]) < RTOL
    assert out1["masks"].shape == out2["masks"].shape == (2, 3, 200, 256)


def test_one_piece_path_matches_official(twins, monkeypatch):
    """On a GPU the encoder's attention and the decoder's prompts go in one piece, not in cache-sized ones (no
    GPU here: the same code is forced on the CPU). Image embedding and 20 prompts (more than a chunk) must match."""
    from samflow.models.sam import common
    from samflow.models.sam.mask_decoder import PROMPT_CHUNK

    monkeypatch.setattr(common, "cache_blocked", lambda t: False)
    ours_model, ref_model = twins
    x = torch.randn(1, 3, ours_model.config.image_size, ours_model.config.image_size)
    n = 2 * PROMPT_CHUNK + 4
    boxes = torch.rand(n, 2) * 100
    boxes = torch.cat([boxes, boxes + 20 + torch.rand(n, 2) * 100], dim=1)
    with torch.inference_mode():
        emb_ours, emb_ref = ours_model.image_encoder(x), ref_model.image_encoder(x)
        outs = []
        for model in (ours_model, ref_model):
            sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
            outs.append(model.mask_decoder(emb_ref, model.prompt_encoder.get_dense_pe(), sparse, dense, True))
    assert rel_err(emb_ours, emb_ref) < RTOL
    assert rel_err(outs[0][0], outs[1][0]) < RTOL and rel_err(outs[0][1], outs[1][1]) < RTOL

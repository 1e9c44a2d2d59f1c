"""The decoder's per-image reuse (image-only products kept for the last image) never serves stale values."""

from __future__ import annotations

import numpy as np
import torch

from samflow import SamPredictor
from tests.conftest import make_image

CLICK = dict(point_coords=np.array([[40.0, 30.0]]), point_labels=np.array([1]))


def _fresh(model, image):
    model.mask_decoder.transformer._factored_cache = None
    p = SamPredictor(model)
    p.set_image(image)
    return p.predict(**CLICK, return_logits=True)[2]


def test_reuse_is_exact_and_follows_the_image(twins):
    model = twins[0]
    a, b = make_image(96, 128, seed=11), make_image(96, 128, seed=12)
    expected_a, expected_b = _fresh(model, a), _fresh(model, b)
    p = SamPredictor(model)
    p.set_image(a)
    first = p.predict(**CLICK, return_logits=True)[2]
    again = p.predict(**CLICK, return_logits=True)[2]  # served from the kept projection
    assert model.mask_decoder.transformer._factored_cache is not None
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, expected_a, rtol=1e-5, atol=1e-5)
    p.set_image(b)  # a new embedding: the kept projection must not be used
    np.testing.assert_allclose(p.predict(**CLICK, return_logits=True)[2], expected_b, rtol=1e-5, atol=1e-5)


def test_in_place_change_of_the_embedding_is_seen(twins):
    model = twins[0]
    p = SamPredictor(model)
    p.set_image(make_image(96, 128, seed=13))
    before = p.predict(**CLICK, return_logits=True)[2]
    with torch.no_grad():
        p.features.mul_(0.5)
    after = p.predict(**CLICK, return_logits=True)[2]
    assert not np.allclose(before, after)
    q = SamPredictor(model)
    q.set_image_embedding(p.get_encoded())
    model.mask_decoder.transformer._factored_cache = None
    np.testing.assert_allclose(after, q.predict(**CLICK, return_logits=True)[2], rtol=1e-5, atol=1e-5)


def test_training_mode_gradients_flow_without_reuse(twins):
    model = twins[0]
    features = torch.randn(1, 256, 16, 16)
    sparse, dense = model.prompt_encoder(points=(torch.tensor([[[30.0, 40.0]]]), torch.tensor([[1]])), boxes=None,
                                         masks=None)
    weight = model.mask_decoder.transformer.layers[0].cross_attn_token_to_image.k_proj.weight
    with torch.enable_grad():
        low, iou = model.mask_decoder(features, model.prompt_encoder.get_dense_pe(), sparse, dense, True)
        (low.mean() + iou.mean()).backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    weight.grad = None
    for param in model.parameters():
        param.grad = None

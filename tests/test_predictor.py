"""SamPredictor beyond the official API: image conversions, prompt checks, batching, embedding reuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from samflow import InputError, SamPredictor
from tests.conftest import make_image


@pytest.fixture(scope="module")
def predictor(twins):
    p = SamPredictor(twins[0])
    p.set_image(make_image(120, 160, seed=5))
    return p


def _embedding_of(model, image, **kw):
    p = SamPredictor(model)
    p.set_image(image, **kw)
    return p.get_image_embedding()


def test_image_conversions_follow_the_documented_rules(twins):
    model = twins[0]
    rgb = make_image(64, 80, seed=2)
    ref = _embedding_of(model, rgb)
    assert torch.equal(_embedding_of(model, Image.fromarray(rgb)), ref)
    assert torch.equal(_embedding_of(model, np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])), ref)  # RGBA
    assert torch.equal(_embedding_of(model, rgb.astype(np.float32) / 255.0), ref)  # float 0..1
    assert torch.equal(_embedding_of(model, rgb.astype(np.uint16) * 257), ref)  # uint16 full range
    assert torch.equal(_embedding_of(model, rgb[..., ::-1].copy(), image_format="BGR"), ref)
    gray = rgb[..., 0]
    assert torch.equal(_embedding_of(model, gray), _embedding_of(model, np.repeat(gray[..., None], 3, axis=2)))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((2, 8, 8, 3), np.uint8), r"shape \(H, W\)"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
        (np.zeros((8, 8, 5), np.uint8), "shape"),
        ("not an image", "PIL image or a numpy array"),
    ],
)
def test_bad_images_are_rejected(twins, image, message):
    with pytest.raises(InputError, match=message):
        SamPredictor(twins[0]).set_image(image)


def test_bad_image_format(twins):
    with pytest.raises(InputError, match="image_format"):
        SamPredictor(twins[0]).set_image(make_image(8, 8), image_format="HSV")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(point_coords=np.array([[np.nan, 1.0]]), point_labels=np.array([1])), "point_coords contains NaN"),
        (dict(point_coords=np.array([1.0, 2.0]), point_labels=np.array([1])), r"point_coords must have shape"),
        (dict(point_coords=np.array([[1.0, 2.0]])), "point_labels must be supplied"),
        (dict(point_coords=np.array([[1.0, 2.0]]), point_labels=np.array([1, 1])), "point_labels must have shape"),
        (dict(point_coords=np.array([[1.0, 2.0]]), point_labels=np.array([2])), r"point_labels must be 1.*\[2\]"),
        (dict(box=np.array([50.0, 10.0, 20.0, 40.0])), r"box 0 \[50, 10, 20, 40\] has negative width: expected x0 < x1"),
        (dict(box=np.array([5.0, 10.0, 20.0, 10.0])), "box 0 .* has zero height"),
        (dict(box=np.array([1.0, 2.0, 3.0])), r"box must have shape \(4,\) or \(N, 4\)"),
        (dict(box=np.array([0.0, 0.0, np.inf, 4.0])), "box contains NaN or infinite"),
        (dict(box=np.array([0, 0, 5, 5]), mask_input=np.zeros((1, 32, 32))), r"mask_input must have shape \(1, 64, 64\)"),
        (dict(box=np.zeros((3, 4)), point_coords=np.zeros((2, 1, 2)), point_labels=np.ones((2, 1))), "batch sizes"),
    ],
)
def test_bad_prompts_name_the_argument(predictor, kwargs, message):
    with pytest.raises(InputError, match=message):
        predictor.predict(**kwargs)


def test_predict_before_set_image_is_an_error(twins):
    with pytest.raises(RuntimeError, match="set_image"):
        SamPredictor(twins[0]).predict(box=np.array([0, 0, 4, 4]))


def test_many_boxes_in_one_call_equal_single_calls(predictor):
    boxes = np.array([[10, 10, 60, 80], [40, 20, 150, 110], [0, 0, 159, 119]], dtype=float)
    masks, scores, logits = predictor.predict(box=boxes)
    assert masks.shape == (3, 3, 120, 160) and scores.shape == (3, 3) and logits.shape == (3, 3, 64, 64)
    for i, box in enumerate(boxes):
        m, s, lg = predictor.predict(box=box)
        np.testing.assert_allclose(lg, logits[i], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(s, scores[i], rtol=1e-4, atol=1e-5)
        assert (m != masks[i]).mean() < 1e-3


def test_batched_points_equal_single_calls(predictor):
    coords = np.array([[[20, 30], [90, 60]], [[100, 100], [5, 5]]], dtype=float)
    labels = np.array([[1, 0], [1, -1]])
    masks, scores, logits = predictor.predict(point_coords=coords, point_labels=labels, multimask_output=False)
    assert masks.shape == (2, 1, 120, 160)
    for i in range(2):
        _, s, lg = predictor.predict(point_coords=coords[i], point_labels=labels[i], multimask_output=False)
        np.testing.assert_allclose(lg, logits[i], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(s, scores[i], rtol=1e-4, atol=1e-5)


def test_embedding_round_trip_skips_the_encoder(twins):
    model = twins[0]
    image = make_image(100, 90, seed=9)
    p = SamPredictor(model)
    encoded = p.encode(image)
    assert not p.is_image_set  # encode leaves the current image alone
    calls = []
    hook = model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        p.set_image_embedding(encoded)
        out = p.predict(point_coords=np.array([[30.0, 40.0]]), point_labels=np.array([1]))
    finally:
        hook.remove()
    assert calls == []
    q = SamPredictor(model)
    q.set_image(image)
    ref = q.predict(point_coords=np.array([[30.0, 40.0]]), point_labels=np.array([1]))
    for a, b in zip(out, ref):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="embedding has shape"):
        p.set_image_embedding(type(encoded)(encoded.features[:, :8], encoded.original_size, encoded.input_size))


def test_set_images_encodes_a_batch(twins):
    model = twins[0]
    images = [make_image(80, 100, seed=s) for s in range(3)]
    p = SamPredictor(model)
    encoded = p.set_images(images, batch_size=2)
    assert len(encoded) == 3 and p.is_image_set
    for image, enc in zip(images, encoded):
        single = p.encode(image)
        torch.testing.assert_close(enc.features, single.features, rtol=1e-4, atol=1e-5)
        assert enc.original_size == (80, 100)


def _point_logits(model, image):
    p = SamPredictor(model)
    p.set_image(image)
    return p.predict(point_coords=np.array([[50.0, 40.0]]), point_labels=np.array([1]), return_logits=True)


def test_bfloat16_and_compile_switches(twins):
    from samflow import build_sam
    from tests.conftest import SMALL

    state = twins[0].state_dict()
    image = make_image(90, 110, seed=4)
    ref = _point_logits(twins[0], image)
    bf16 = build_sam(SMALL, dtype="bfloat16")
    bf16.load_state_dict(state)
    masks, scores, low = _point_logits(bf16, image)
    assert masks.dtype == np.float32
    assert np.abs(low - ref[2]).max() < 0.05 * np.abs(ref[2]).max()  # bf16 keeps 8 bits of mantissa
    compiled = build_sam(SMALL, compile="eager")  # the switch, with torch.compile's cheapest backend
    assert compiled.state_dict().keys() == state.keys()  # compiled in place: checkpoints still load
    assert compiled.image_encoder._compiled_call_impl is not None
    assert compiled.mask_decoder._compiled_call_impl is not None

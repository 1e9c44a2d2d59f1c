"""SAM 2 for images against the reference (PyPI `sam2`, Meta's code) on identical perturbed random weights.

Two small configs cover the code paths (zero-padded windows, query pooling at every stage change, a global
block that pools, the object-score head as MLP and as Linear, nearest and bilinear top-down, a top-down level-1
map, release 2.1 and 2.0 layouts); the real Hiera-T (every width, depth, head count and window of the release) runs
at 512 px. The released layouts of all eight presets are checked on the meta device.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from sam2_reference import official_predictor, official_sam2, perturb_

from samflow import CheckpointError, build_sam
from samflow.models.sam2 import PRESETS, Sam2, Sam2Config, build_sam2, config_from_state_dict, save_checkpoint
from samflow.models.sam2.checkpoint import is_memory_key
from samflow.predict.sam2_predictor import Sam2Predictor
from tests.conftest import make_image

RTOL = 1e-4
# The reference's SAM2Transforms scripts its resize with torch.jit.script, which torch now warns about.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

SMALL = {
    # release 2.1; stage grids 64/32/16/8: the stage-3 window (14) and stage-4 window (7) pad; block 3 pools with
    # the previous stage's window, block 4 is global.
    "small_a": Sam2Config(embed_dim=16, num_heads=1, stages=(1, 2, 3, 2), global_att_blocks=(4,),
                          window_pos_embed_bkg_spatial_size=(7, 7), image_size=256),
    # release 2.0; two heads from the start; two stages of one block (each pools); windows 6 and 4 pad; the
    # object-score head is a Linear; bilinear top-down into levels 1-3.
    "small_b": Sam2Config(version="2.0", embed_dim=24, num_heads=2, stages=(2, 1, 2, 1), global_att_blocks=(4,),
                          window_spec=(8, 4, 6, 4), window_pos_embed_bkg_spatial_size=(4, 4), image_size=256,
                          pred_obj_scores_mlp=False, fpn_interp_model="bilinear", fpn_top_down_levels=(1, 2, 3)),
}


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def assert_masks_match(ours, ref, logits) -> None:
    """Masks equal except where the logit is a tie (within float noise of the threshold)."""
    differ = ours != ref
    assert not (differ & (np.abs(logits) > 1e-3)).any()


def twins(config: Sam2Config, tmp_path_factory, seed: int = 0) -> tuple[Sam2, torch.nn.Module, object]:
    """(samflow model loaded from the reference's own checkpoint file, reference model, the file)."""
    torch.manual_seed(seed)
    ref = perturb_(official_sam2(config), scale=0.05, seed=seed)
    path = tmp_path_factory.mktemp("sam2") / "checkpoint.pt"
    torch.save({"model": ref.state_dict()}, path)  # the released checkpoints' wrapping
    return build_sam(config, checkpoint=path), ref, path


@pytest.fixture(scope="module", params=sorted(SMALL))
def pair(request, tmp_path_factory):
    return twins(SMALL[request.param], tmp_path_factory)


@pytest.fixture(scope="module", params=[(180, 240), (250, 130)], ids=["landscape", "portrait"])
def predictors(request, pair):
    ours_model, ref_model, _ = pair
    image = make_image(*request.param, seed=sum(request.param))
    ours, ref = Sam2Predictor(ours_model), official_predictor(ref_model)
    ours.set_image(image)
    ref.set_image(image)
    return ours, ref, image


def _cases(h: int, w: int) -> dict[str, dict]:
    return {
        "point": dict(point_coords=np.array([[w * 0.4, h * 0.5]]), point_labels=np.array([1])),
        "points": dict(point_coords=np.array([[w * 0.2, h * 0.3], [w * 0.7, h * 0.6], [w * 0.5, h * 0.9]]),
                       point_labels=np.array([1, 0, 1])),
        "box": dict(box=np.array([w * 0.1, h * 0.2, w * 0.8, h * 0.7])),
        "box_and_point": dict(box=np.array([w * 0.1, h * 0.2, w * 0.8, h * 0.7]),
                              point_coords=np.array([[w * 0.3, h * 0.4]]), point_labels=np.array([0])),
        "boxes": dict(box=np.array([[w * 0.1, h * 0.2, w * 0.8, h * 0.7], [0, 0, w * 0.5, h * 0.5],
                                    [w * 0.3, h * 0.3, w * 0.9, h * 0.95]])),
        "point_sets": dict(point_coords=np.array([[[w * 0.2, h * 0.3]], [[w * 0.6, h * 0.6]]]),
                           point_labels=np.array([[1], [1]])),
    }


def _capture_decoder(model: torch.nn.Module) -> list:
    """The reference mask decoder's outputs, recorded (its object scores never leave SAM2ImagePredictor)."""
    decoder = model.sam_mask_decoder
    if not hasattr(decoder, "seen_outputs"):
        original = decoder.forward
        decoder.seen_outputs = []

        def forward(*args, **kwargs):
            out = original(*args, **kwargs)
            decoder.seen_outputs.append(out)
            return out

        decoder.forward = forward
    return decoder.seen_outputs


# --- the layout of the released checkpoints -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_state_dict_is_the_released_layout_without_the_memory(name):
    config = PRESETS[name]
    ref = official_sam2(config, meta=True)
    with torch.device("meta"):
        ours = Sam2(config)
    a = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert set(b) - set(a) and all(is_memory_key(k) for k in set(b) - set(a))  # only video memory is left out
    assert not set(a) - set(b)
    assert a == {k: v for k, v in b.items() if k in a}
    assert config_from_state_dict(ref.state_dict()) == config  # size and release recognised from the shapes
    assert ("no_obj_embed_spatial" in b) == (config.version == "2.1")


# --- parity -------------------------------------------------------------------------------------------------------


def test_features_match(predictors):
    ours, ref, _ = predictors
    assert ours.get_image_embedding().shape == ref.get_image_embedding().shape == (1, 256, 16, 16)
    assert rel_err(ours.get_image_embedding(), ref.get_image_embedding()) < RTOL
    for a, b in zip(ours._features["high_res_feats"], ref._features["high_res_feats"]):
        assert a.shape == b.shape
        assert rel_err(a, b) < RTOL
    assert ours._orig_hw == [tuple(x) for x in ref._orig_hw]


def test_backbone_levels_match(pair):
    ours, ref, _ = pair
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mine, theirs = ours.forward_image(x), ref.forward_image(x)["backbone_fpn"]
    assert len(mine) == len(theirs) == 3
    for a, b in zip(mine, theirs):
        assert a.shape == b.shape and rel_err(a, b) < RTOL


@pytest.mark.parametrize("case", ["point", "points", "box", "box_and_point", "boxes", "point_sets"])
@pytest.mark.parametrize("multimask", [True, False])
def test_predict_matches_reference(predictors, case, multimask):
    ours, ref, image = predictors
    kwargs = _cases(*image.shape[:2])[case]
    seen = _capture_decoder(ref.model)
    m1, s1, l1, obj = ours.predict(**kwargs, multimask_output=multimask, return_object_score=True)
    m2, s2, l2 = ref.predict(**kwargs, multimask_output=multimask)
    k = 3 if multimask else 1
    assert m1.shape == m2.shape and m1.shape[-3:] == (k, *image.shape[:2])
    assert m1.dtype == m2.dtype == np.float32  # as the reference: 0/1 masks as float
    assert rel_err(l1, l2) < RTOL and np.allclose(s1, s2, rtol=RTOL, atol=1e-6)
    assert np.abs(l1).max() <= 32.0
    ref_obj = seen[-1][3].squeeze(0).numpy()
    assert obj.shape == ref_obj.shape and np.allclose(obj, ref_obj, rtol=RTOL, atol=1e-5)
    logits, _, _ = ours.predict(**kwargs, multimask_output=multimask, return_logits=True)
    ref_logits, _, _ = ref.predict(**kwargs, multimask_output=multimask, return_logits=True)
    assert rel_err(logits, ref_logits) < RTOL
    assert_masks_match(m1, m2, logits)


def test_mask_input_fed_back_and_normalized_coords(predictors):
    ours, ref, image = predictors
    h, w = image.shape[:2]
    kwargs = _cases(h, w)["point"]
    _, s1, l1 = ours.predict(**kwargs)
    _, s2, l2 = ref.predict(**kwargs)
    best = int(np.argmax(s2))
    extra = dict(point_coords=np.array([[w * 0.4, h * 0.5], [10.0, 12.0]]), point_labels=np.array([1, 0]))
    _, s1b, l1b = ours.predict(**extra, mask_input=l1[best][None], multimask_output=False)
    _, s2b, l2b = ref.predict(**extra, mask_input=l2[best][None], multimask_output=False)
    assert rel_err(l1b, l2b) < RTOL and np.allclose(s1b, s2b, rtol=RTOL, atol=1e-6)
    unit = dict(point_coords=np.array([[0.25, 0.75]]), point_labels=np.array([1]), box=np.array([0.1, 0.1, 0.9, 0.8]))
    _, s1c, l1c = ours.predict(**unit, normalize_coords=False)
    _, s2c, l2c = ref.predict(**unit, normalize_coords=False)
    assert rel_err(l1c, l2c) < RTOL and np.allclose(s1c, s2c, rtol=RTOL, atol=1e-6)


def test_mask_only_prompt(predictors):
    ours, ref, image = predictors
    _, _, low = ref.predict(**_cases(*image.shape[:2])["point"])
    _, s1, l1 = ours.predict(mask_input=low[:1])
    _, s2, l2 = ref.predict(mask_input=low[:1])
    assert rel_err(l1, l2) < RTOL and np.allclose(s1, s2, rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("thresh", [0.0, 1.01])  # always stable: the single-mask token; never: the best of three
def test_single_mask_stability_fallback_matches(pair, thresh):
    ours_model, ref_model, _ = pair
    image = make_image(160, 200, seed=5)
    ours, ref = Sam2Predictor(ours_model), official_predictor(ref_model)
    ours.set_image(image)
    ref.set_image(image)
    old = ours_model.sam_mask_decoder.dynamic_multimask_stability_thresh
    try:
        ours_model.sam_mask_decoder.dynamic_multimask_stability_thresh = thresh
        ref_model.sam_mask_decoder.dynamic_multimask_stability_thresh = thresh
        kwargs = _cases(160, 200)["points"]
        _, s1, l1 = ours.predict(**kwargs, multimask_output=False)
        _, s2, l2 = ref.predict(**kwargs, multimask_output=False)
        _, s3, l3 = ours.predict(**kwargs, multimask_output=True)
    finally:
        ours_model.sam_mask_decoder.dynamic_multimask_stability_thresh = old
        ref_model.sam_mask_decoder.dynamic_multimask_stability_thresh = old
    assert rel_err(l1, l2) < RTOL and np.allclose(s1, s2, rtol=RTOL, atol=1e-6)
    if thresh > 1:  # the fallback is the multimask output with the highest IoU
        assert np.allclose(l1[0], l3[int(np.argmax(s3))]) and np.isclose(s1[0], s3.max())


def test_image_batch_matches_reference(pair):
    ours_model, ref_model, _ = pair
    images = [make_image(120, 200, seed=1), make_image(220, 90, seed=2)]
    ours, ref = Sam2Predictor(ours_model), official_predictor(ref_model)
    ours.set_image_batch(images)
    ref.set_image_batch(images)
    assert rel_err(ours.get_image_embedding(), ref.get_image_embedding()) < RTOL
    points = [np.array([[50.0, 60.0]]), np.array([[40.0, 150.0]])]
    labels = [np.array([1]), np.array([1])]
    boxes = [np.array([10, 10, 150, 100]), np.array([5, 20, 80, 200])]
    out1 = ours.predict_batch(points, labels, box_batch=boxes)
    out2 = ref.predict_batch(points, labels, box_batch=boxes)
    for (m1, s1, l1), (m2, s2, l2) in zip(zip(*out1), zip(*out2)):
        assert m1.shape == m2.shape and rel_err(l1, l2) < RTOL and np.allclose(s1, s2, rtol=RTOL, atol=1e-6)


def test_real_hiera_tiny_at_512_px(tmp_path_factory):
    """The released Hiera-T trunk (all its widths, heads, windows, global blocks), at 512 px to fit the suite."""
    config = PRESETS["sam2.1_hiera_tiny"].model_copy(update={"image_size": 512})
    ours_model, ref_model, _ = twins(config, tmp_path_factory, seed=2)
    image = make_image(300, 420, seed=7)
    ours, ref = Sam2Predictor(ours_model), official_predictor(ref_model)
    ours.set_image(image)
    ref.set_image(image)
    assert rel_err(ours.get_image_embedding(), ref.get_image_embedding()) < RTOL
    for a, b in zip(ours._features["high_res_feats"], ref._features["high_res_feats"]):
        assert rel_err(a, b) < RTOL
    kwargs = _cases(300, 420)["box_and_point"]
    _, s1, l1 = ours.predict(**kwargs)
    _, s2, l2 = ref.predict(**kwargs)
    assert rel_err(l1, l2) < RTOL and np.allclose(s1, s2, rtol=RTOL, atol=1e-6)


# --- checkpoints --------------------------------------------------------------------------------------------------


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_released_checkpoint_loads_and_names_the_memory_keys(pair, caplog):
    ours, ref, path = pair
    with caplog.at_level(logging.INFO, logger="samflow.models.sam2.checkpoint"):
        again = build_sam(ours.config, checkpoint=path)
    memory = sorted(k for k in ref.state_dict() if is_memory_key(k))
    assert list(again.ignored_checkpoint_keys) == memory and memory
    assert "video-memory tensors not used" in caplog.text and "memory_attention." in caplog.text
    assert _same_weights(again, ours) and not again.training
    unwrapped = path.with_name("plain.pt")
    torch.save(ref.state_dict(), unwrapped)  # without the "model" wrapper
    assert _same_weights(build_sam2(ours.config, checkpoint=unwrapped), ours)


def test_safetensors_round_trip_embeds_the_config(pair, tmp_path):
    ours, _, _ = pair
    path = save_checkpoint(ours, tmp_path / "sam2_small.safetensors")
    loaded = build_sam(checkpoint=path)  # the size comes from the embedded config
    assert isinstance(loaded, Sam2) and loaded.config == ours.config and _same_weights(loaded, ours)
    assert loaded.ignored_checkpoint_keys == ()


def _released_layout(name: str) -> dict[str, torch.Tensor]:
    """A checkpoint with a released model's layout and shapes (zeros), as saved under "model"."""
    ref = official_sam2(PRESETS[name], meta=True)
    return {k: torch.zeros(()).expand(v.shape) for k, v in ref.state_dict().items()}  # tiny files: one zero each


def test_preset_names_and_checkpoint_inference(tmp_path):
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": _released_layout("sam2.1_hiera_tiny")}, path)
    model = build_sam(checkpoint=path)  # size and release from the shapes and keys
    assert isinstance(model, Sam2) and model.config == PRESETS["sam2.1_hiera_tiny"]
    assert build_sam("sam2_hiera_tiny", checkpoint=path).config.version == "2.0"  # same image path: it loads
    with pytest.raises(CheckpointError, match="unknown SAM 2 preset 'sam2.1_hiera_tinny'.*sam2.1_hiera_tiny"):
        build_sam("sam2.1_hiera_tinny")


def test_wrong_size_and_wrong_family_are_named(tmp_path):
    small = tmp_path / "sam2.1_hiera_small.pt"
    torch.save({"model": _released_layout("sam2.1_hiera_small")}, small)
    with pytest.raises(CheckpointError, match=r"is a SAM 2.1 hiera_small checkpoint; the model being built has "
                                              r"a Hiera trunk of 12 blocks .*sam2.1_hiera_tiny"):
        build_sam("sam2.1_hiera_tiny", checkpoint=small)
    with pytest.raises(CheckpointError, match=r"is a SAM 2.1 hiera_small checkpoint, not an original SAM one: "
                                              r"'vit_b' cannot load it.*build_sam\('sam2.1_hiera_small'"):
        build_sam("vit_b", checkpoint=small)
    from official_reference import official_sam

    from samflow import SamConfig

    vit = tmp_path / "sam_vit_b.pth"
    with torch.device("meta"):
        layout = official_sam(SamConfig.preset("vit_b")).state_dict()
    torch.save({k: torch.zeros(()).expand(v.shape) for k, v in layout.items()}, vit)
    with pytest.raises(CheckpointError, match=r"is a SAM \(vit_b\) checkpoint, not SAM 2: load it with "
                                              r"build_sam\('vit_b'"):
        build_sam("sam2.1_hiera_tiny", checkpoint=vit)


def test_missing_unexpected_and_misshaped_keys_are_listed(pair, tmp_path):
    ours, ref, _ = pair
    state = dict(ref.state_dict())
    del state["sam_mask_decoder.conv_s0.weight"]
    state["sam_mask_decoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=r"1 missing keys: sam_mask_decoder.conv_s0.weight; "
                                              r"1 unexpected keys: sam_mask_decoder.extra.weight"):
        build_sam(ours.config, checkpoint=path)
    state = dict(ref.state_dict())
    state["no_mem_embed"] = torch.zeros(1, 1, 128)
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=r"wrong shape: no_mem_embed \(1, 1, 128\) \(expected \(1, 1, 256\)\)"):
        build_sam(ours.config, checkpoint=path)


# --- the predictor's own behaviour --------------------------------------------------------------------------------


def test_predictor_checks_and_embedding_reuse(pair):
    model, _, _ = pair
    predictor = Sam2Predictor(model)
    with pytest.raises(RuntimeError, match="must be set"):
        predictor.predict(point_coords=np.array([[1.0, 2.0]]), point_labels=np.array([1]))
    image = make_image(100, 140, seed=9)
    encoded = predictor.encode(image)
    predictor.set_image_embedding(encoded)
    a = predictor.predict(box=np.array([10, 10, 90, 80]))
    predictor.set_image(image)
    b = predictor.predict(box=np.array([10, 10, 90, 80]))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    layout = model.sam_mask_decoder._high_res_layout[1]
    c = predictor.predict(box=np.array([10, 10, 90, 80]))  # the image-side work is kept for the same image
    assert model.sam_mask_decoder._high_res_layout[1] is layout
    assert all(np.array_equal(x, y) for x, y in zip(b, c))
    bgr = predictor.encode(np.ascontiguousarray(image[..., ::-1]), image_format="BGR")
    assert torch.equal(bgr.features.image_embed, encoded.features.image_embed)
    with pytest.raises(ValueError, match="point_labels must be 1"):
        predictor.predict(point_coords=np.array([[1.0, 2.0]]), point_labels=np.array([5]))
    with pytest.raises(ValueError, match="box must have shape"):
        predictor.predict(box=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"mask_input must have shape \(1, 64, 64\)"):
        predictor.predict(mask_input=np.zeros((1, 256, 256)))
    with pytest.raises(ValueError, match="batch sizes disagree"):
        predictor.predict(point_coords=np.zeros((2, 1, 2)), point_labels=np.ones((2, 1)), box=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="needs a SAM 2 model"):
        Sam2Predictor(torch.nn.Linear(1, 1))


def test_hole_and_sprinkle_filling_on_cpu(pair):
    """max_hole_area / max_sprinkle_area as SAM2Transforms defines them (8-connected regions of the low-res mask
    up to that area, found on the masks as they came), which the reference itself runs only with its CUDA
    extension: checked against scipy's labelling."""
    from scipy import ndimage

    model, _, _ = pair
    predictor = Sam2Predictor(model, max_hole_area=6, max_sprinkle_area=4)
    rng = np.random.default_rng(0)
    logits = torch.as_tensor(rng.normal(size=(2, 3, 64, 64)).astype(np.float32))
    out = predictor._fill_regions(logits.clone()).numpy()
    want = logits.numpy().copy()
    eight = np.ones((3, 3), dtype=int)
    for i in range(2):
        for j in range(3):
            mask = logits[i, j].numpy()
            for region, limit, value in ((mask <= 0, 6, 10.0), (mask > 0, 4, -10.0)):
                labels, n = ndimage.label(region, structure=eight)
                sizes = np.bincount(labels.ravel(), minlength=n + 1)
                small = (labels > 0) & (sizes[labels] <= limit)
                want[i, j][small] = value
    assert np.array_equal(out, want)
    assert not np.array_equal(out, logits.numpy())

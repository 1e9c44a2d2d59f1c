"""Absent objects get no mask on the prompt-adapter route (issue 18, item 2): the presence check after decoding, its
threshold argument, empty results, the calibration stored in the adapter file and the rule that chose it.

The regression floor runs on a few held-out scenes (seed 22); the figures over 200 of them come from
benchmarks/text_presence.py, the threshold from recipes/calibrate_text_presence.py on validation scenes (seed 23)."""

from __future__ import annotations

import numpy as np
import pytest
from text_testing import needs_shipped_text

from samflow.errors import CheckpointError, InputError

HELD_OUT_SEED = 22
SCENES = 20


@pytest.fixture(scope="module")
def scene():
    from samflow.data.synthetic import render_scene, scene_rng

    return render_scene(scene_rng(HELD_OUT_SEED, 3), size=256)  # orange circle, red star, purple, green stars...


@pytest.fixture(scope="module")
def segmenter():
    from samflow.engine.cache import EmbeddingCache
    from samflow.predict.segmenter import Segmenter

    return Segmenter(cache=EmbeddingCache(max_bytes=1 << 26))


@needs_shipped_text
def test_absent_captions_are_refused_on_held_out_scenes(segmenter):
    from samflow.data.samples import Sample
    from samflow.data.synthetic import render_scene, scene_rng
    from samflow.ops.metrics import mask_iou
    from samflow.predict.api import segment
    from samflow.train.text_presence import OTHER_WORDS, presence_captions

    present, refused, other = [], [], []
    for index in range(SCENES):
        scene = render_scene(scene_rng(HELD_OUT_SEED, index + 1), size=256)
        captions = presence_captions(Sample(scene.image, scene.masks, scene.annotations), (0, index),
                                     other_words=OTHER_WORDS["test"], other_per_image=3)
        result = segment(scene.image, text=captions.texts, device="cpu", segmenter=segmenter)
        answers = dict(zip(result.labels, result.masks))
        for text, members in zip(captions.texts, captions.targets):
            if members:  # a refused present caption counts as IoU 0
                present.append(float(mask_iou(answers[text], scene.masks[members]).max()) if text in answers else 0)
            elif text[2:] in OTHER_WORDS["test"]:  # words neither the head nor its threshold saw
                other.append(text not in answers)
            else:
                refused.append(text not in answers)
    # Measured here with the shipped head: 84% refused, other words 100%, present mIoU 0.80 (200 scenes:
    # benchmarks/text_presence.py; the cosine rule before it: 76% and 0.77 here).
    assert len(refused) == 6 * SCENES and len(other) == 3 * SCENES and len(present) >= 80
    assert np.mean(refused) >= 0.80, np.mean(refused)
    assert np.mean(other) >= 0.95, np.mean(other)
    assert np.mean(present) >= 0.75, np.mean(present)


@needs_shipped_text
def test_a_refused_text_gives_an_empty_well_formed_result(scene, segmenter):
    from samflow.predict.api import segment

    for multimask in (None, True):
        result = segment(scene.image, text="a giraffe", device="cpu", segmenter=segmenter, multimask=multimask)
        k = 3 if multimask else 1
        assert len(result) == 0 and result.labels == [] and "0 object(s)" in repr(result)
        assert result.masks.shape == (0, 256, 256) and result.candidates.shape == (0, k, 256, 256)
        assert result.scores.shape == (0,) and result.confidence.shape == (0,) and result.areas.shape == (0,)
        assert result.to_coco() == [] and result.best_logits().shape == (0, 1, 128, 128)
        assert result.to_masks().data.shape == (0, k, 256, 256)
        result.overlay()

    mixed = segment(scene.image, text=["a giraffe", "a red star", "a purple circle"], device="cpu",
                    segmenter=segmenter, multimask=True)
    assert mixed.labels == ["a red star"] and len(mixed) == 1 and mixed.confidence.shape == (1,)
    assert mixed.confidence[0] >= 0.5 and mixed.candidates.shape == (1, 3, 256, 256)
    np.testing.assert_array_equal(mixed.masks[0], mixed.candidates[0, mixed.best[0]])
    np.testing.assert_array_equal(mixed.best_logits()[0, 0], mixed.logits[0, mixed.best[0]])
    (coco,) = mixed.to_coco()
    assert coco["label"] == "a red star" and coco["confidence"] == pytest.approx(float(mixed.confidence[0]))


@needs_shipped_text
def test_presence_threshold_argument(scene, segmenter):
    from samflow.predict.api import segment

    def run(value, text=("a giraffe", "a red star"), **kwargs):
        return segment(scene.image, text=list(text), device="cpu", segmenter=segmenter, presence_threshold=value,
                       **kwargs)

    from samflow.models.text.presence_head import PresenceHead

    consulted = []
    probabilities = PresenceHead.probabilities

    def spy(self, *args, **kwargs):
        consulted.append(self)
        return probabilities(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PresenceHead, "probabilities", spy)
        calibrated = run(None)
        assert len(consulted) == 1  # the calibrated decision is the shipped head's, not a cosine
        assert len(run(0.3)) and len(consulted) == 1  # an explicit number is the cosine rule: no head
    assert calibrated.labels == ["a red star"]
    assert run(True).labels == calibrated.labels  # True: the calibrated threshold, explicitly
    assert len(run(1.0)) == 0  # no crop reaches a cosine of 1: everything refused
    assert run(-1.0).labels == ["a giraffe", "a red star"]  # every candidate counts
    off = run(False)
    assert off.labels == ["a giraffe", "a red star"] and off.confidence is None
    assert run("off").labels == off.labels
    # Off is the route as it was: the decoder's single mask of each text.
    single = segment(scene.image, text=["a giraffe", "a red star"], device="cpu", segmenter=segmenter,
                     presence_threshold=False, multimask=False)
    np.testing.assert_array_equal(off.masks, single.masks)
    for bad in (70, float("nan"), "maybe"):
        with pytest.raises(InputError, match="presence_threshold"):
            run(bad)
    with pytest.raises(InputError, match="text prompts alone"):
        run(0.5, points=[[120, 80]])
    assert len(run(None, points=[[120, 80]])) == 2  # with a click the text is never refused


def test_resolve_presence_threshold():
    from samflow.models.text.presence import PresenceCalibration
    from samflow.predict.text import resolve_presence_threshold

    calibration = PresenceCalibration(threshold=0.7)
    assert resolve_presence_threshold(None, calibration) == 0.7
    assert resolve_presence_threshold(None, None) is None  # uncalibrated adapters refuse nothing by default
    assert resolve_presence_threshold(True, calibration) == 0.7
    with pytest.raises(InputError, match="no calibrated presence threshold"):
        resolve_presence_threshold(True, None)
    assert resolve_presence_threshold(False, calibration) is None
    assert resolve_presence_threshold("off", calibration) is None
    assert resolve_presence_threshold(0.25, None) == 0.25
    assert resolve_presence_threshold(0, calibration) == 0.0  # zero is a threshold, not "off"
    with pytest.raises(InputError, match="in \\[-1, 1\\]"):
        resolve_presence_threshold(1.5, calibration)
    with pytest.raises(ValueError):
        PresenceCalibration(threshold=2.0)


@needs_shipped_text
def test_text_predictor_presence(scene):
    from samflow.models.sam import build_sam
    from samflow.predict.text import TextSamPredictor, load_text_models

    sam = build_sam("tiny", device="cpu")
    predictor = TextSamPredictor(sam, load_text_models("tiny", device="cpu"))
    predictor.set_image(scene.image)
    masks, scores, logits = predictor.predict(text=["a giraffe", "a red star"], multimask_output=False)
    assert masks.shape == (2, 1, 256, 256) and scores.shape == (2, 1) and logits.shape == (2, 1, 128, 128)
    decision = predictor.last_presence
    assert decision is not None and decision.present.tolist() == [False, True]
    assert not masks[0].any() and scores[0, 0] == 0 and masks[1].any() and scores[1, 0] > 0
    masks, scores, _ = predictor.predict(text="a giraffe", multimask_output=True)
    assert masks.shape == (3, 256, 256) and not masks.any() and (scores == 0).all()
    logits_out, _, _ = predictor.predict(text="a giraffe", multimask_output=False, return_logits=True)
    assert logits_out.shape == (1, 256, 256) and np.isneginf(logits_out).all()
    off, _, _ = predictor.predict(text="a giraffe", multimask_output=False, presence_threshold=False)
    assert off.any() and predictor.last_presence is None

    # An embedding without its pixels: the calibrated default cannot look at crops, so it is skipped; an explicit
    # threshold says what is missing.
    encoded = predictor.get_encoded()
    predictor.set_image_embedding(encoded)
    masks, _, _ = predictor.predict(text="a giraffe", multimask_output=False)
    assert masks.any() and predictor.last_presence is None
    with pytest.raises(InputError, match="pixels"):
        predictor.predict(text="a giraffe", presence_threshold=0.5)
    predictor.set_image_embedding(encoded, image=scene.image)
    masks, _, _ = predictor.predict(text="a giraffe", multimask_output=False)
    assert not masks.any()
    with pytest.raises(InputError, match="text prompt alone"):
        predictor.predict(text="a red star", point_coords=np.array([[120.0, 80.0]]), point_labels=np.array([1]),
                          presence_threshold=0.5)


@needs_shipped_text
def test_the_shipped_calibration_was_chosen_on_validation_scenes():
    from samflow.predict.text import default_adapter_path, get_adapter

    calibration = get_adapter(default_adapter_path("tiny")).presence
    assert calibration is not None and -1 <= calibration.threshold <= 1
    provenance = calibration.provenance
    assert provenance["data"].startswith("synthetic:23:")  # never the held-out 22 or 1000
    assert provenance["script"] == "recipes/calibrate_text_presence.py"
    assert provenance["validation"]["present_miou"] >= 0.75
    assert calibration.scorer == "head" and provenance["head"]["data"].startswith("synthetic:24:")  # trained apart


def test_calibration_round_trips_through_the_adapter_file(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from samflow.models.text.adapter import AdapterConfig, PromptAdapter, load_adapter, save_adapter
    from samflow.models.text.presence import PRESENCE_KEY, PresenceCalibration

    adapter = PromptAdapter(AdapterConfig(clip_dim=32))
    path = save_adapter(adapter, tmp_path / "plain.safetensors")
    assert load_adapter(path).presence is None and load_adapter(path).clip_source is None
    adapter.presence = PresenceCalibration(threshold=0.61, quality_weight=0.3, augment="hflip",
                                           provenance={"data": "synthetic:23:10"})
    adapter.clip_source = {"model": "ViT-B-16", "checkpoint": "/models/clip.bin"}
    path = save_adapter(adapter, tmp_path / "calibrated.safetensors")
    again = load_adapter(path)
    assert again.presence == adapter.presence and again.clip_source == adapter.clip_source
    with safe_open(str(path), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())  # noqa: SIM118
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={**metadata, PRESENCE_KEY: '{"threshold": 7}'})
    with pytest.raises(CheckpointError, match="presence"):
        load_adapter(bad)


def test_the_calibration_rule():
    """Most absent captions refused while the present mIoU (refused = 0) holds; ties to the simpler decision."""
    from samflow.train.text_presence import PresenceRecords, calibrate_presence, presence_figures

    # Three present captions (good masks, cosines 0.9 / 0.8 / 0.6) and three absent ones (0.7 / 0.5 / 0.3).
    cos = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.0], [0.7, 0.1], [0.5, 0.0], [0.3, 0.2]])
    records = PresenceRecords(present=np.array([True, True, True, False, False, False]),
                              iou=np.array([[0.9, 0.0], [0.9, 0.1], [0.9, 0.0], [0, 0], [0, 0], [0, 0]]),
                              single_iou=np.full(6, 0.9), quality=np.full((6, 2), 0.5), cosines={"none": cos})
    # Keeping all three present (mIoU 0.9) refuses the absent 0.5 and 0.3 at most: a threshold in (0.5, 0.6].
    calibration, figures = calibrate_presence(records, min_present_miou=0.85, quality_weights=(0.0,))
    assert 0.5 < calibration.threshold <= 0.6 and figures["absent_refused"] == pytest.approx(2 / 3)
    assert figures["present_miou"] == pytest.approx(0.9) and calibration.provenance["validation"]
    # Dropping one present caption is allowed at a lower floor, and buys the third absent one.
    calibration, figures = calibrate_presence(records, min_present_miou=0.6, quality_weights=(0.0,))
    assert 0.7 < calibration.threshold <= 0.8 and figures["absent_refused"] == 1.0
    assert figures["present_miou"] == pytest.approx(0.6)
    assert presence_figures(records, calibration) == figures
    with pytest.raises(InputError, match="lower min_present_miou"):
        calibrate_presence(records, min_present_miou=0.95)


def _head_records(n: int, seed: int):
    """Captions whose right candidate has a telltale descriptor: present ones' first candidate has descriptor 0
    high and a good mask; absent ones' candidates never do, though their cosines are as high as the present ones'."""
    from samflow.ops.mask_descriptors import DESCRIPTORS
    from samflow.train.text_presence import PresenceRecords

    rng = np.random.default_rng(seed)
    present = rng.random(n) < 0.5
    k = 3
    descriptors = rng.normal(size=(n, k, len(DESCRIPTORS))).astype(np.float32)
    descriptors[present, 0, 0] += 4.0
    iou = np.where(present[:, None] & (np.arange(k) == 0), 0.9, 0.05)
    cos = rng.uniform(0.6, 0.8, (n, k))
    return PresenceRecords(present=present, iou=iou, single_iou=iou[:, 0], quality=np.full((n, k), 0.8),
                           cosines={"dihedral": cos}, descriptors=descriptors,
                           text_embeddings=rng.normal(size=(n, 8)).astype(np.float32))


def test_a_presence_head_learns_what_the_cosine_cannot_see():
    from samflow.train.text_presence import calibrate_presence, fit_presence_head, presence_figures

    train, validation = _head_records(400, 0), _head_records(300, 1)
    with pytest.raises(InputError, match="lower min_present_miou"):  # the cosines cannot even pick the mask
        calibrate_presence(validation, min_present_miou=0.85, augments=["dihedral"])
    head = fit_presence_head(train, hidden=16, steps=300)
    calibration, figures = calibrate_presence(validation, min_present_miou=0.85, head=head)
    assert calibration.scorer == "head" and 0 < calibration.threshold < 1
    assert figures["absent_refused"] > 0.9 and figures["present_miou"] >= 0.85
    assert presence_figures(validation, calibration, head=head) == figures
    with pytest.raises(InputError, match="head="):
        presence_figures(validation, calibration)


def test_a_presence_head_round_trips_through_the_adapter_file(tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from samflow.models.text.adapter import AdapterConfig, PromptAdapter, load_adapter, save_adapter
    from samflow.models.text.presence import PRESENCE_KEY, PresenceCalibration
    from samflow.models.text.presence_head import HEAD_KEY, PresenceHead, PresenceHeadConfig
    from samflow.predict.text import calibrated_head

    adapter = PromptAdapter(AdapterConfig(clip_dim=32))
    head = PresenceHead(PresenceHeadConfig(text_dim=32, hidden=8))
    torch.nn.init.normal_(head.net[0].weight)
    adapter.presence_head = head
    adapter.presence = PresenceCalibration(threshold=0.4, augment="dihedral", scorer="head")
    path = save_adapter(adapter, tmp_path / "headed.safetensors")
    again = load_adapter(path)
    assert again.presence == adapter.presence and again.presence_head.config == head.config
    for key, value in head.state_dict().items():
        assert torch.equal(again.presence_head.state_dict()[key], value)
    # The calibrated default uses the head; an explicit number is always the cosine rule.
    assert calibrated_head(again, None) is again.presence_head and calibrated_head(again, True) is not None
    assert calibrated_head(again, 0.5) is None and calibrated_head(again, False) is None
    with safe_open(str(path), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())  # noqa: SIM118
    bad = tmp_path / "headless.safetensors"
    save_file({k: v for k, v in tensors.items() if not k.startswith("presence_head.")}, str(bad),
              metadata={k: v for k, v in metadata.items() if k != HEAD_KEY})
    with pytest.raises(CheckpointError, match="presence head"):
        load_adapter(bad)
    assert PRESENCE_KEY in metadata


def test_other_words_are_absent_captions_in_three_disjoint_lists():
    """Words a user might type that name nothing a scene holds ("a giraffe"): the head trains on one list, the
    threshold is chosen with another, the benchmark reports on a third; drawing them leaves the other captions."""
    from samflow.data.samples import Sample
    from samflow.data.synthetic import COLORS, SHAPES, render_scene, scene_rng
    from samflow.train.text_presence import OTHER_WORDS, PresenceRecords, presence_captions, presence_figures

    lists = [set(words) for words in OTHER_WORDS.values()]
    assert all(not (a & b) for i, a in enumerate(lists) for b in lists[i + 1:])
    vocabulary = set(COLORS) | set(SHAPES)
    assert not any(set(word.split()) & vocabulary for words in lists for word in words)
    assert "giraffe" in OTHER_WORDS["test"]  # the tests' absent caption is one neither head nor threshold saw
    scene = render_scene(scene_rng(HELD_OUT_SEED, 1), size=64)
    sample = Sample(scene.image, scene.masks, scene.annotations)
    plain = presence_captions(sample, (0, 0), min_area=0)
    more = presence_captions(sample, (0, 0), min_area=0, other_words=OTHER_WORDS["test"], other_per_image=3)
    assert more.texts[:len(plain.texts)] == plain.texts and more.targets[:len(plain.targets)] == plain.targets
    extra = more.texts[len(plain.texts):]
    assert len(extra) == 3 == len(set(extra)) and all(t[2:] in OTHER_WORDS["test"] for t in extra)
    assert all(m == [] for m in more.targets[len(plain.texts):])

    # Figures keep them apart: absent_refused is the scene vocabulary's, the other words have their own share.
    cos = np.array([[0.9], [0.2], [0.8], [0.1]])
    records = PresenceRecords(present=np.array([True, False, False, False]), iou=np.array([[0.9], [0], [0], [0]]),
                              single_iou=np.full(4, 0.9), quality=np.full((4, 1), 0.5), cosines={"none": cos},
                              other_word=np.array([False, False, True, True]))
    figures = presence_figures(records, 0.5)
    assert figures["absent_refused"] == 1.0 and figures["absent_captions"] == 1
    assert figures["absent_refused_other_words"] == 0.5 and figures["other_word_captions"] == 2

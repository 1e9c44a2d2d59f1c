"""CLIP ranking of mask proposals: absolute threshold (nothing kept for an absent object), top-k order, duplicates,
the contrast mode for uncalibrated models; with the shipped clip_tiny on held-out synthetic scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from text_testing import needs_shipped_clip

from samflow.errors import InputError
from samflow.models.text.rank import rank_masks


class StubClip:
    """A CLIP whose crop embedding is set by the crop's mean colour, so scores are known in advance."""

    def __init__(self, rank_threshold: float | None = 0.5) -> None:
        self.rank_threshold = rank_threshold
        self.config = type("Config", (), {"name": "stub"})()
        self.model = type("Model", (), {"logit_scale": torch.tensor(np.log(10.0))})()
        self.vectors = {"a red thing": [1.0, 0, 0], "a green thing": [0, 1.0, 0], "a blue thing": [0, 0, 1.0]}

    def embed_text(self, texts):
        texts = [texts] if isinstance(texts, str) else texts
        return F.normalize(torch.tensor([self.vectors.get(t, [0.3, 0.3, 0.3]) for t in texts]), dim=-1)

    def embed_crops(self, image, masks):
        means = [image[m].mean(0) if m.any() else np.zeros(3) for m in masks]
        return F.normalize(torch.tensor(np.stack(means), dtype=torch.float32) + 1e-3, dim=-1)


@pytest.fixture
def scene():
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    image[0:20, 0:20] = (250, 0, 0)
    image[20:40, 20:40] = (0, 250, 0)
    masks = np.zeros((4, 40, 40), dtype=bool)
    masks[0, 0:20, 0:20] = True  # red square
    masks[1, 20:40, 20:40] = True  # green square
    masks[2, 0:20, 0:19] = True  # the red square again, a pixel column short (a duplicate proposal)
    masks[3, 0:2, 0:2] = True  # red but tiny
    return image, masks


def test_present_object_is_ranked_first_and_duplicates_dropped(scene):
    image, masks = scene
    result = rank_masks(StubClip(), image, masks, "a red thing", top_k=3, min_area=16)
    assert result.indices.tolist() == [0]  # 2 duplicates 0, 3 is under min_area, 1 is below threshold
    assert result.scores[0] == pytest.approx(1.0, abs=1e-3) and result.mode == "cosine"
    assert result.cosines.shape == (4,) and result.cosines[1] < 0.1
    both = rank_masks(StubClip(), image, masks, "a red thing", top_k=3, dedupe=False, threshold=0.0)
    assert both.indices.tolist()[:2] == [0, 2] or both.indices.tolist()[:2] == [2, 0]


def test_predicted_iou_orders_near_ties_but_keeps_nothing_by_itself(scene):
    """Masks 0 and 2 look alike to CLIP; SAM's predicted IoU decides between them. The threshold still applies to
    the text score alone: a perfect mask of the wrong colour is not kept however sure SAM is."""
    image, masks = scene
    kwargs = {"top_k": 3, "dedupe": False, "min_area": 16}
    plain = rank_masks(StubClip(), image, masks, "a red thing", **kwargs)
    first = plain.indices[0]
    favour_other = np.where(np.arange(4) == (2 if first == 0 else 0), 1.0, 0.0)
    weighed = rank_masks(StubClip(), image, masks, "a red thing", quality=favour_other, **kwargs)
    assert weighed.indices.tolist() == [2 if first == 0 else 0, first]
    np.testing.assert_allclose(sorted(weighed.scores), sorted(plain.scores))  # scores stay the text's
    green_is_sure = np.array([0.0, 10.0, 0.0, 0.0])
    assert 1 not in rank_masks(StubClip(), image, masks, "a red thing", quality=green_is_sure, **kwargs).indices
    with pytest.raises(InputError, match="one value per mask"):
        rank_masks(StubClip(), image, masks, "a red thing", quality=np.ones(3))


def test_absent_object_returns_nothing(scene):
    image, masks = scene
    result = rank_masks(StubClip(), image, masks, "a blue thing", top_k=5)
    assert result.indices.size == 0 and result.scores.size == 0
    assert result.cosines.max() < result.threshold


def test_contrast_mode_for_uncalibrated_models(scene):
    image, masks = scene
    clip = StubClip(rank_threshold=None)
    assert rank_masks(clip, image, masks, "a green thing").mode == "contrast"
    assert rank_masks(clip, image, masks, "a green thing").indices.tolist() == [1]
    assert rank_masks(clip, image, masks, "a blue thing").indices.size == 0
    with pytest.raises(InputError, match="no calibrated threshold"):
        rank_masks(clip, image, masks, "a green thing", mode="cosine")


@needs_shipped_clip
def test_shipped_clip_ranks_held_out_scenes():
    """Over held-out scenes: a caption naming an object unique in its scene picks it; a caption naming nothing in
    the scene keeps nothing (ground-truth masks as the proposals)."""
    from samflow.data.captions import absent_names, caption, unique_objects
    from samflow.data.synthetic import render_scene, scene_rng
    from samflow.models.text.clip_loading import get_clip

    clip = get_clip("clip_tiny", device="cpu")
    hits = total = false_keeps = absent_total = 0
    for index in range(8):
        scene = render_scene(scene_rng(4242, index))
        keep = [i for i, a in enumerate(scene.annotations) if a["area"] >= 200]
        anns = [scene.annotations[i] for i in keep]
        masks = scene.masks[keep]
        for j in unique_objects(anns):
            result = rank_masks(clip, scene.image, masks, caption(anns[j]))
            hits += int(result.indices.tolist() == [j])
            total += 1
        for name in absent_names(anns)[::7]:
            false_keeps += int(rank_masks(clip, scene.image, masks, f"a {name}").indices.size > 0)
            absent_total += 1
    assert hits / total >= 0.7, f"{hits}/{total} right"
    assert false_keeps / absent_total <= 0.3, f"{false_keeps}/{absent_total} absent names kept a mask"


def test_precomputed_crop_embeddings_give_the_same_ranking(scene):
    image, masks = scene
    clip = StubClip()
    direct = rank_masks(clip, image, masks, "a green thing", top_k=2, threshold=0.0)
    reused = rank_masks(clip, image, masks, "a green thing", top_k=2, threshold=0.0,
                        crop_embeddings=clip.embed_crops(image, masks))
    assert direct.indices.tolist() == reused.indices.tolist()
    assert np.allclose(direct.cosines, reused.cosines)

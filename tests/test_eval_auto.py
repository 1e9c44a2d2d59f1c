"""Automatic-mask recall (samflow.evaluation.auto): objects of at least 32x32 px recovered at IoU >= 0.75."""

from __future__ import annotations

import json

import numpy as np
import pytest

from samflow.cli import main
from samflow.errors import InputError
from samflow.evaluation.auto import automatic_mask_recall, best_overlaps
from samflow.evaluation.points import synthetic_scenes
from tests.amg_testing import ColourSam


def test_best_overlaps_is_the_best_iou_per_true_mask():
    truth = np.zeros((2, 8, 8), bool)
    truth[0, :4], truth[1, 4:, 4:] = True, True
    generated = np.zeros((3, 8, 8), bool)
    generated[0, :2] = True  # half of object 0
    generated[1, :4] = True  # object 0 exactly
    generated[2, 4:, :] = True  # object 1 and as much again
    np.testing.assert_allclose(best_overlaps(truth, generated), [1.0, 0.5])
    assert best_overlaps(truth, generated[:0]).tolist() == [0.0, 0.0]


class _Generator:
    """Generates each scene's true masks of at least 32x32 px, shrunk by `shrink` pixels per side."""

    points_per_side = 0

    def __init__(self, scenes, shrink: int = 0) -> None:
        self.truth = {id(s.image): s.masks for s in scenes}
        self.shrink = shrink

    def generate(self, image):
        masks = [m for m in self.truth[id(image)] if m.sum() >= 32 * 32]
        if self.shrink:
            from scipy.ndimage import binary_erosion

            masks = [binary_erosion(m, iterations=self.shrink) for m in masks]
        return [{"segmentation": m} for m in masks]


def test_recall_counts_objects_of_at_least_min_area_at_the_iou_threshold():
    scenes = [synthetic_scenes(1000, 3)[i] for i in range(3)]
    counted = sum(int((s.masks.reshape(len(s.masks), -1).sum(1) >= 32 * 32).sum()) for s in scenes)
    perfect = automatic_mask_recall(_Generator(scenes), scenes)
    assert perfect.objects == perfect.recovered == counted > 0 and perfect.recall == 1.0 and perfect.images == 3
    shrunk = automatic_mask_recall(_Generator(scenes, shrink=8), scenes)  # masks far too small: IoU < 0.75
    assert shrunk.objects == counted and shrunk.recovered < counted / 2
    loose = automatic_mask_recall(_Generator(scenes, shrink=8), scenes, iou_threshold=0.05)
    assert loose.recovered == counted
    everything = automatic_mask_recall(_Generator(scenes), scenes, min_area=1)
    assert everything.objects > counted


def test_with_a_model_the_official_generator_runs_and_its_filters_apply():
    scenes = synthetic_scenes(1000, 2)
    sam = ColourSam(256).eval()
    found = automatic_mask_recall(sam, scenes, points_per_side=12, pred_iou_thresh=0.5, stability_score_thresh=0.5)
    assert found.masks > 0 and 0 < found.recovered <= found.objects
    nothing = automatic_mask_recall(sam, scenes, points_per_side=12, pred_iou_thresh=1.01)
    assert nothing.masks == 0 and nothing.recovered == 0 and nothing.objects == found.objects
    assert "recovered 0 of" in nothing.format()
    with pytest.raises(InputError, match="iou_threshold"):
        automatic_mask_recall(sam, scenes, iou_threshold=0)


def test_cli_reports_recall_with_the_shipped_tiny(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "synthetic:1000:2", "--clicks", "1", "--no-box", "--auto", "--auto-points", "8",
                 "--auto-iou-thresh", "0.7", "--json", str(out), "--no-progress"]) == 0
    auto = json.loads(out.read_text())[0]["automatic_masks"]
    assert auto["images"] == 2 and auto["objects"] > 0 and auto["points_per_side"] == 8
    assert 0 <= auto["recall"] <= 1 and "automatic masks (8x8 points" in capsys.readouterr().out
    assert main(["eval", "synthetic:1000:1", "--auto", "--auto-points", "0"]) != 0

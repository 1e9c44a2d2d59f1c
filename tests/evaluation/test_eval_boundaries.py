"""The boundary benchmark on hand-made maps with known matches, and against pyEdgeEval's own evaluation.

The benchmark's matcher (BSDS's correspondPixels) links each pixel to a few random outlier nodes, so on dense,
ambiguous lines a different random stream may leave a pixel or two unmatched; samflow reseeds it before every call,
so each result is a function of its inputs. The maps here are sparse dots, where every match is forced."""

from __future__ import annotations

import numpy as np
import pytest

from samflow.evaluation.boundaries import (
    ImageCounts,
    correspond,
    image_counts,
    mask_boundaries,
    summarize,
    thin,
    thresholds,
)

SIDE = 200  # diagonal 283 px: the standard tolerance 0.0075 is 2.1 px


def dots(points: list[tuple[int, int]]) -> np.ndarray:
    out = np.zeros((SIDE, SIDE), dtype=bool)
    for y, x in points:
        out[y, x] = True
    return out


TRUTH = [(20 + 16 * i, 30) for i in range(10)]


def test_pixels_within_the_tolerance_match_one_to_one():
    truth = dots(TRUTH)
    near = dots([(y + 1, x + 1) for y, x in TRUTH])  # 1.4 px away: within 2.1
    far = dots([(y, x + 3) for y, x in TRUTH])  # 3 px away: outside
    matched_edges, matched_truth = correspond(near, truth)
    assert matched_edges.sum() == matched_truth.sum() == 10 and (matched_edges == near).all()
    matched_edges, matched_truth = correspond(far, truth)
    assert matched_edges.sum() == matched_truth.sum() == 0
    # Two edge pixels by one truth pixel: one match, the other is a false positive.
    pair = dots([(100, 100), (100, 101)])
    matched_edges, matched_truth = correspond(pair, dots([(100, 100)]))
    assert matched_edges.sum() == 1 and matched_truth.sum() == 1
    # A looser tolerance reaches the far pixels.
    assert correspond(far, truth, max_dist=0.02)[1].sum() == 10


def test_counts_per_threshold_with_false_positives_and_two_annotators():
    edge_map = np.zeros((SIDE, SIDE))
    for y, x in TRUTH:
        edge_map[y, x] = 0.9  # strong, on the boundary
    for i in range(5):
        edge_map[150, 40 + 20 * i] = 0.3  # weak, nowhere near it
    second = dots(TRUTH[:5] + [(180, 180)])  # a second annotator drew half of them and one elsewhere
    counts = image_counts(edge_map, np.stack([dots(TRUTH), second]), [0.2, 0.5, 0.95])
    assert counts.sum_r.tolist() == [16, 16, 16]  # boundary pixels of both annotators
    assert counts.cnt_r.tolist() == [15, 15, 0]  # all but the one edge pixels never come near
    assert counts.sum_p.tolist() == [15, 10, 0]
    assert counts.cnt_p.tolist() == [10, 10, 0]
    assert thin(edge_map > 0).sum() == 15  # isolated pixels survive thinning


def test_summary_of_a_perfect_map_and_of_a_known_curve():
    perfect = ImageCounts(*(np.full(3, 10.0) for _ in range(4)))
    summary = summarize([perfect], [0.25, 0.5, 0.75])
    assert summary["ODS"] == summary["OIS"] == pytest.approx(1.0)
    assert summary["AP"] == 0.0  # one distinct recall: the toolbox defines no curve, so no area
    # Two thresholds: (R 1, P 0.5) then (R 0.5, P 1).
    counts = ImageCounts(cnt_r=np.array([10.0, 5.0]), sum_r=np.array([10.0, 10.0]), cnt_p=np.array([10.0, 5.0]),
                         sum_p=np.array([20.0, 5.0]))
    summary = summarize([counts], [0.3, 0.6])
    assert summary["AP"] == pytest.approx(0.3825)  # P = 1.5 - R at R = 0.50, 0.51, ..., 1.00, summed / 100
    assert summary["R50"] == pytest.approx(1.0)  # precision 0.5 is reached at recall 1
    assert summary["ODS"] == pytest.approx(0.75, abs=1e-4)  # best F on the segment: R = P = 0.75
    assert summary["ODS_threshold"] == pytest.approx(0.45, abs=0.01)
    assert summary["OIS"] == pytest.approx(2 / 3)  # one image: its best threshold, no interpolation


def test_agrees_with_pyedgeeval_reference():
    from pyEdgeEval.common.binary_label.calculate_metrics import calculate_metrics
    from pyEdgeEval.common.binary_label.evaluate_boundaries import evaluate_boundaries_threshold_multiple_gts

    rng = np.random.default_rng(3)
    levels = thresholds(9)
    per_image, reference = [], []
    for _ in range(3):
        truth = dots([(20 + 16 * i, 30 + int(rng.integers(0, 100))) for i in range(10)])
        edge_map = np.zeros((SIDE, SIDE))
        ys, xs = np.nonzero(truth)
        keep = rng.random(len(ys)) < 0.8
        edge_map[ys[keep] + 1, xs[keep]] = rng.uniform(0.2, 1.0, keep.sum())
        edge_map[rng.integers(0, SIDE, 6), rng.integers(0, SIDE, 6)] = rng.uniform(0.1, 1.0, 6)
        per_image.append(image_counts(edge_map, truth[None], levels))
        reference.append(evaluate_boundaries_threshold_multiple_gts(levels, edge_map, truth[None]))
    for ours, theirs in zip(per_image, reference):
        assert ours.cnt_r.tolist() == list(theirs[0]) and ours.sum_r.tolist() == list(theirs[1])
        assert ours.cnt_p.tolist() == list(theirs[2]) and ours.sum_p.tolist() == list(theirs[3])
    samples = [{"name": str(i), "counts": c} for i, c in enumerate(reference)]
    _, _, overall = calculate_metrics(lambda s: s["counts"], 9, samples, nproc=1)
    summary = summarize(per_image, levels)
    assert summary["OIS"] == pytest.approx(overall["OIS_f1"])
    assert summary["ODS"] == pytest.approx(overall["ODS_f1"], abs=2e-3)  # 100 vs 101 interpolation steps


def test_boundaries_of_instance_masks():
    masks = np.zeros((2, 20, 20), dtype=bool)
    masks[0, 5:15, 5:15] = True
    edge = mask_boundaries(masks[:1])
    assert edge.sum() == 39  # above and bottom row, left and right column: 4 x 10, the corner (14, 14) shared
    assert edge[4, 5] and edge[14, 5] and edge[5, 4] and edge[5, 14] and not edge[4, 4]
    masks[1, 8:11, 8:11] = True  # an inner part: its own boundary appears inside the whole's
    assert mask_boundaries(masks)[7, 8] and mask_boundaries(masks).sum() == 39 + 11


def test_the_matcher_is_seeded_per_call():
    # The matcher's random outlier links come from one process-wide generator: unseeded, an ambiguous map matched
    # after other work (the generator advanced) may match a pixel more or fewer. Seeded per call, never.
    rng = np.random.default_rng(5)
    edges, truth = rng.random((SIDE, SIDE)) < 0.05, rng.random((SIDE, SIDE)) < 0.05  # dense and ambiguous
    first = correspond(edges, truth)
    results = set()
    for i in range(6):
        correspond(rng.random((SIDE, SIDE)) < 0.01 * (i + 1), truth)  # advances the generator, by differing amounts
        again = correspond(edges, truth)
        results.add((int(again[0].sum()), int(again[1].sum())))
        assert (again[0] == first[0]).all() and (again[1] == first[1]).all()
    assert len(results) == 1

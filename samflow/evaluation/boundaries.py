"""The BSDS500 boundary benchmark: ODS, OIS, AP and R50 of soft edge maps against the boundaries of several
annotators, as the standard tools compute them.

Per image and threshold (`edgesEvalImg` of Dollár's Structured Edge toolbox, the BSDS benchmark's protocol): the
edge map E in [0, 1] is binarised at E >= t and thinned to one-pixel lines (`bwmorph(..., 'thin', inf)`); each
annotator's boundary map is matched to it by a minimum-cost bipartite correspondence of pixels within `max_dist`
(0.0075) of the image diagonal (BSDS's `correspondPixels`, outlier cost 100); recall counts the annotators'
boundary pixels that were matched (summed over annotators), precision the edge pixels that matched any annotator.
Over the dataset (`edgesEvalDir`): ODS is the best F of the summed counts at one threshold (linearly interpolated
between thresholds), OIS sums each image's counts at its own best threshold, AP averages the precision interpolated
at recall 0, 0.01, ..., 1 (the toolbox divides by 100), R50 is the recall where precision falls to 50%.

The correspondence, the thinning and the edge NMS are those of pyEdgeEval (a maintained Python port of the
benchmark's C++ code, in samflow's `eval` extra): `pip install "samflow[eval]"`.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from samflow.errors import InputError

__all__ = ["MAX_DIST", "ImageCounts", "correspond", "image_counts", "mask_boundaries", "summarize", "thin",
           "thresholds"]

MAX_DIST = 0.0075
INSTALL = 'pip install "samflow[eval]"'
_EPS = np.finfo(np.float64).eps


def _pyedgeeval() -> tuple[Any, Any]:
    try:
        from pyEdgeEval._lib import correspond_pixels
        from pyEdgeEval.preprocess import binary_thin
    except ImportError:
        raise InputError(f"the boundary benchmark uses pyEdgeEval, which is not installed: {INSTALL}") from None
    return correspond_pixels, binary_thin


def thresholds(n: int = 99) -> np.ndarray:
    """The benchmark's `n` thresholds: evenly spaced in (0, 1), 1/(n+1) to n/(n+1)."""
    if n < 1:
        raise InputError(f"the number of thresholds must be positive, got {n}")
    return np.linspace(1.0 / (n + 1), 1.0 - 1.0 / (n + 1), n)


def thin(mask: np.ndarray) -> np.ndarray:
    """Morphological thinning to one-pixel lines, as MATLAB's bwmorph(mask, 'thin', inf)."""
    _, binary_thin = _pyedgeeval()
    return np.asarray(binary_thin(np.asarray(mask, dtype=bool)), dtype=bool)


def correspond(edges: np.ndarray, truth: np.ndarray, max_dist: float = MAX_DIST) -> tuple[np.ndarray, np.ndarray]:
    """The minimum-cost one-to-one matching of the pixels of two boundary maps (H, W) within `max_dist` x the
    image diagonal: (matched edge pixels, matched truth pixels), bool (H, W) each."""
    correspond_pixels, _ = _pyedgeeval()
    edges, truth = np.asarray(edges, dtype=bool), np.asarray(truth, dtype=bool)
    if edges.shape != truth.shape:
        raise InputError(f"boundary maps of different sizes: {edges.shape} and {truth.shape}")
    if not 0 < max_dist:
        raise InputError(f"max_dist must be positive, got {max_dist}")
    _seed_matcher(correspond_pixels)
    match_edges, match_truth, _, _ = correspond_pixels(edges, truth, max_dist=max_dist)
    return match_edges > 0, match_truth > 0


# The matcher links each pixel to a few random outlier nodes, drawing from one process-wide generator that the
# library seeds from the clock when it loads: on ambiguous maps a pixel or two then match or not from run to run.
# Reseeding it before every call makes each correspondence a function of its inputs alone.
MATCHER_SEED = 0x5A3F1


def _seed_matcher(function: Any) -> None:
    """Reseed the C++ `Random::rand` of the extension that defines `function` (pyEdgeEval's correspond_pixels,
    through its exported symbols) with MATCHER_SEED; a build without them is left as it is."""
    module = sys.modules.get(getattr(function, "__module__", "") or "")
    reseed = _matcher_reseed(getattr(module, "__file__", None))
    if reseed is not None:
        reseed()


@functools.lru_cache(maxsize=4)
def _matcher_reseed(path: str | None) -> Callable[[], None] | None:
    if not path:
        return None
    try:
        lib = ctypes.CDLL(path)  # the already loaded library: dlopen returns the same handle and globals
        generator = ctypes.addressof(ctypes.c_char.in_dll(lib, "_ZN6Random4randE"))
        function = lib._ZN6Random6reseedEm  # Random::reseed(u_int64_t), `this` first
    except (OSError, AttributeError, ValueError):
        return None
    function.argtypes, function.restype = [ctypes.c_void_p, ctypes.c_uint64], None
    return lambda: function(generator, MATCHER_SEED)


@dataclass
class ImageCounts:
    """Per threshold (T,): matched truth pixels `cnt_r` of `sum_r`, matched edge pixels `cnt_p` of `sum_p`."""

    cnt_r: np.ndarray
    sum_r: np.ndarray
    cnt_p: np.ndarray
    sum_p: np.ndarray

    def to_dict(self) -> dict[str, list[int]]:
        return {k: getattr(self, k).astype(int).tolist() for k in ("cnt_r", "sum_r", "cnt_p", "sum_p")}


def image_counts(edge_map: np.ndarray, boundaries: np.ndarray, levels: Sequence[float] | np.ndarray | None = None,
                 max_dist: float = MAX_DIST, apply_thinning: bool = True) -> ImageCounts:
    """The benchmark's counts for one soft edge map (H, W) in [0, 1] against annotator maps (K, H, W) (or one
    (H, W)), at each of `levels` (default: the 99 standard thresholds)."""
    levels = thresholds() if levels is None else np.asarray(levels, dtype=np.float64)
    edge_map = np.asarray(edge_map, dtype=np.float64)
    truth = np.asarray(boundaries, dtype=bool)
    truth = truth[None] if truth.ndim == 2 else truth
    if truth.ndim != 3 or truth.shape[1:] != edge_map.shape:
        raise InputError(f"boundaries {truth.shape} do not fit the edge map {edge_map.shape}")
    n = len(levels)
    cnt_r, sum_r, cnt_p, sum_p = (np.zeros(n) for _ in range(4))
    all_truth = float(truth.sum())
    for k, level in enumerate(levels):
        edges = edge_map >= max(_EPS, float(level))
        if apply_thinning:
            edges = thin(edges)
        matched_edges = np.zeros(edges.shape, dtype=bool)
        matched_truth = 0
        for annotator in truth:
            if not edges.any() or not annotator.any():
                continue  # nothing to match (the matcher needs pixels on both sides)
            match_e, match_t = correspond(edges, annotator, max_dist)
            matched_edges |= match_e
            matched_truth += int(match_t.sum())
        cnt_r[k], sum_r[k] = matched_truth, all_truth
        cnt_p[k], sum_p[k] = matched_edges.sum(), edges.sum()
    return ImageCounts(cnt_r, sum_r, cnt_p, sum_p)


def _rpf(cnt_r: Any, sum_r: Any, cnt_p: Any, sum_p: Any) -> tuple[Any, Any, Any]:
    r = np.asarray(cnt_r, dtype=np.float64) / np.maximum(_EPS, sum_r)
    p = np.asarray(cnt_p, dtype=np.float64) / np.maximum(_EPS, sum_p)
    return r, p, 2 * p * r / np.maximum(_EPS, p + r)


def _best_interpolated(t: np.ndarray, r: np.ndarray, p: np.ndarray) -> tuple[float, float, float, float]:
    """(threshold, recall, precision, F) of the best F on the curve, linearly interpolated between thresholds
    (100 steps between neighbours, as the toolbox's findBestRPF)."""
    if len(t) == 1:
        f = 2 * p[0] * r[0] / max(_EPS, p[0] + r[0])
        return float(t[0]), float(r[0]), float(p[0]), float(f)
    a = np.linspace(0, 1, 100)
    best = (-1.0, 0.0, 0.0, 0.0)
    for j in range(1, len(t)):
        rj, pj, tj = r[j] * a + r[j - 1] * (1 - a), p[j] * a + p[j - 1] * (1 - a), t[j] * a + t[j - 1] * (1 - a)
        fj = 2 * pj * rj / np.maximum(_EPS, pj + rj)
        k = int(np.argmax(fj))
        if fj[k] > best[0]:
            best = (float(fj[k]), float(tj[k]), float(rj[k]), float(pj[k]))
    return best[1], best[2], best[3], best[0]


def summarize(counts: Sequence[ImageCounts], levels: Sequence[float] | np.ndarray | None = None) -> dict[str, Any]:
    """ODS, OIS, AP and R50 (with the precision and recall behind them) of a dataset's per-image counts, and the
    precision-recall curve over thresholds."""
    levels = thresholds() if levels is None else np.asarray(levels, dtype=np.float64)
    if not counts:
        raise InputError("no images to summarize")
    cnt_r = np.sum([c.cnt_r for c in counts], axis=0)
    sum_r = np.sum([c.sum_r for c in counts], axis=0)
    cnt_p = np.sum([c.cnt_p for c in counts], axis=0)
    sum_p = np.sum([c.sum_p for c in counts], axis=0)
    ois = np.zeros(4)
    for c in counts:
        _, _, f = _rpf(c.cnt_r, c.sum_r, c.cnt_p, c.sum_p)
        k = int(np.argmax(f))
        ois += [c.cnt_r[k], c.sum_r[k], c.cnt_p[k], c.sum_p[k]]
    r, p, f = _rpf(cnt_r, sum_r, cnt_p, sum_p)
    ods_t, ods_r, ods_p, ods_f = _best_interpolated(levels, r, p)
    ois_r, ois_p, ois_f = (float(v) for v in _rpf(*ois))
    # AP and R50 as the toolbox: one point per distinct recall, recall descending.
    _, first = np.unique(r, return_index=True)
    order = first[::-1]
    ru, pu = r[order], p[order]
    ap = 0.0
    if len(ru) > 1:
        grid = np.linspace(0, 1, 101)
        inside = (grid >= ru.min()) & (grid <= ru.max())
        ap = float(np.interp(grid[inside], ru[::-1], pu[::-1]).sum() / 100)
    _, by_p = np.unique(pu, return_index=True)
    ps, rs = pu[by_p], ru[by_p]
    if len(ru) > 1:
        at = max(float(ps[0]), 0.5)
        r50 = float(np.interp(at, ps, rs)) if at <= ps[-1] else float("nan")
    else:
        r50 = float(rs[0])
    return {"ODS": ods_f, "OIS": ois_f, "AP": ap, "R50": r50,
            "ODS_threshold": ods_t, "ODS_recall": ods_r, "ODS_precision": ods_p,
            "OIS_recall": ois_r, "OIS_precision": ois_p,
            "curve": {"threshold": levels.tolist(), "recall": r.tolist(), "precision": p.tolist(),
                      "f": f.tolist()}}


def mask_boundaries(masks: np.ndarray) -> np.ndarray:
    """bool (H, W) boundaries of instance masks (N, H, W), one pixel wide as BSDS draws them: a pixel is on a
    boundary when its region differs from its right or lower neighbour's. Regions: each pixel belongs to the
    smallest mask that holds it (so an inner part has its own), or to the background."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise InputError(f"masks must be (N, H, W), got shape {masks.shape}")
    h, w = masks.shape[1:]
    label = np.zeros((h, w), dtype=np.int64)
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    for rank, i in enumerate(np.argsort(-areas, kind="stable"), start=1):  # largest first, smaller ones on top
        label[masks[i]] = rank
    edge = np.zeros((h, w), dtype=bool)
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    edge[:-1, :] |= label[:-1, :] != label[1:, :]
    return edge

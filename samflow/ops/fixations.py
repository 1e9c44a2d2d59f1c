"""Fixation filters over a gaze stream: I-VT (velocity threshold) and I-DT (dispersion threshold), after
Salvucci & Goldberg (2000). Samples the filters reject (saccades, blinks, lone samples) should prompt nothing.

Positions are (T, 2) in any unit (degrees for angular gaze, pixels for 2D gaze); thresholds are in the same unit
(per second for I-VT). Times are seconds and may come unsorted; NaN positions are missing samples and never
fixations. A gap longer than `max_gap` seconds splits the stream: no velocity or window spans it.
"""

from __future__ import annotations

import math

import numpy as np

from samflow.errors import InputError


def _sorted(times: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    if times.shape[0] != positions.shape[0]:
        raise InputError(f"{times.shape[0]} times for {positions.shape[0]} gaze positions")
    order = np.argsort(times, kind="stable")
    return order, times[order], positions[order]


def _unsort(order: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    out[order] = values
    return out


def velocities(times: np.ndarray, positions: np.ndarray, max_gap: float = math.inf) -> np.ndarray:
    """float64 (T,) speed of each sample of a time-sorted stream (unit/s): the central difference over its
    neighbours, one-sided at an end, a gap or a missing neighbour; NaN for a missing sample, 0 for a lone one."""
    finite = np.isfinite(positions).all(axis=1)
    n = times.shape[0]
    speed = np.zeros(n)
    prev = np.arange(n) - 1
    nxt = np.arange(n) + 1
    has_prev = (prev >= 0)
    has_next = (nxt < n)
    prev_c, next_c = np.clip(prev, 0, n - 1), np.clip(nxt, 0, n - 1)
    has_prev &= finite[prev_c] & (times - times[prev_c] <= max_gap)
    has_next &= finite[next_c] & (times[next_c] - times <= max_gap)
    a = np.where(has_prev, prev_c, np.arange(n))
    b = np.where(has_next, next_c, np.arange(n))
    dt = times[b] - times[a]
    moved = np.linalg.norm(positions[b] - positions[a], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Two samples at one instant in different places move infinitely fast: a saccade, not a fixation.
        speed = np.where(dt > 0, moved / np.where(dt > 0, dt, 1), np.where(moved > 0, math.inf, 0.0))
    speed[~finite] = math.nan
    return speed


def _groups(times: np.ndarray, keep: np.ndarray, max_gap: float) -> list[tuple[int, int]]:
    """[start, end) runs of consecutive kept samples not split by a gap."""
    runs = []
    start = None
    for i in range(times.shape[0]):
        breaks = start is not None and (not keep[i] or times[i] - times[i - 1] > max_gap)
        if breaks:
            runs.append((start, i))
            start = None
        if keep[i] and start is None:
            start = i
    if start is not None:
        runs.append((start, times.shape[0]))
    return runs


def _drop_short(times: np.ndarray, keep: np.ndarray, min_duration: float, max_gap: float) -> np.ndarray:
    if min_duration <= 0:
        return keep
    keep = keep.copy()
    for start, end in _groups(times, keep, max_gap):
        if times[end - 1] - times[start] < min_duration:
            keep[start:end] = False
    return keep


def ivt(times: np.ndarray, positions: np.ndarray, threshold: float, min_duration: float = 0.0,
        max_gap: float = math.inf) -> np.ndarray:
    """bool (T,) in the input order: True for fixation samples, those moving slower than `threshold` (unit/s).
    Fixations shorter than `min_duration` seconds are dropped too."""
    if not threshold > 0:
        raise InputError(f"I-VT velocity threshold must be > 0, got {threshold}")
    order, t, p = _sorted(times, positions)
    speed = velocities(t, p, max_gap)
    keep = np.isfinite(speed) & (speed <= threshold)
    return _unsort(order, _drop_short(t, keep, min_duration, max_gap))


def dispersion(positions: np.ndarray) -> float:
    """(max x - min x) + (max y - min y) of (K, 2) positions."""
    return float(np.ptp(positions[:, 0]) + np.ptp(positions[:, 1]))


def idt(times: np.ndarray, positions: np.ndarray, threshold: float, min_duration: float = 0.1,
        max_gap: float = math.inf) -> np.ndarray:
    """bool (T,) in the input order: True for samples inside a fixation, a window lasting at least
    `min_duration` seconds whose dispersion stays within `threshold` (grown while it does)."""
    if not threshold > 0:
        raise InputError(f"I-DT dispersion threshold must be > 0, got {threshold}")
    order, t, p = _sorted(times, positions)
    keep = np.zeros(t.shape[0], dtype=bool)
    finite = np.isfinite(p).all(axis=1)
    for start, end in _groups(t, finite, max_gap):  # runs of present samples without gaps
        _idt_run(t[start:end], p[start:end], threshold, min_duration, keep[start:end])
    return _unsort(order, keep)


def _idt_run(t: np.ndarray, p: np.ndarray, threshold: float, min_duration: float, keep: np.ndarray) -> None:
    n = t.shape[0]
    i = 0
    while i < n:
        # The smallest window starting at i that covers min_duration.
        j = int(np.searchsorted(t, t[i] + min_duration, side="left"))
        if j >= n:
            return
        if dispersion(p[i:j + 1]) > threshold:
            i += 1  # the first sample is not part of a fixation
            continue
        lo, hi = p[i:j + 1].min(axis=0), p[i:j + 1].max(axis=0)
        while j + 1 < n:
            nlo, nhi = np.minimum(lo, p[j + 1]), np.maximum(hi, p[j + 1])
            if float((nhi - nlo).sum()) > threshold:
                break
            lo, hi, j = nlo, nhi, j + 1
        keep[i:j + 1] = True
        i = j + 1


def fixation_centroids(times: np.ndarray, positions: np.ndarray, keep: np.ndarray,
                       max_gap: float = math.inf) -> np.ndarray:
    """float64 (T, 2) in the input order: each kept sample replaced by the mean position of its fixation (a run of
    consecutive kept samples); NaN for samples not kept."""
    order, t, p = _sorted(times, positions)
    k = np.asarray(keep, dtype=bool)[order]
    out = np.full_like(p, math.nan)
    for start, end in _groups(t, k, max_gap):
        out[start:end] = p[start:end].mean(axis=0)
    return _unsort(order, out)

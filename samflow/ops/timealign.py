"""Nearest-timestamp alignment of two streams (gaze samples to video frames), within a tolerance."""

from __future__ import annotations

import numpy as np

from samflow.errors import InputError


class NearestSample:
    """Sorts sample times once, then answers nearest-sample queries in O(Q log S).

    Samples may come in any order and may repeat; NaN sample times never match; on a tie (two samples equally
    near, or equal times) the earlier row wins.
    """

    def __init__(self, sample_times: np.ndarray) -> None:
        samples = np.asarray(sample_times, dtype=np.float64).reshape(-1)
        known = np.flatnonzero(np.isfinite(samples))
        self._order = known[np.argsort(samples[known], kind="stable")]
        self._times = samples[self._order]

    def query(self, query_times: np.ndarray | float, tolerance: float) -> np.ndarray:
        """int64 (Q,): per query, the index (in the samples' own order) of the nearest sample, or -1 when none
        lies within `tolerance` (a gap in the recording, or a query outside it)."""
        if not tolerance >= 0:
            raise InputError(f"tolerance must be >= 0, got {tolerance}")
        queries = np.asarray(query_times, dtype=np.float64).reshape(-1)
        out = np.full(queries.shape[0], -1, dtype=np.int64)
        times = self._times
        if times.size == 0 or queries.size == 0:
            return out
        right = np.searchsorted(times, queries, side="left")  # the first sample at or after the query
        left = np.clip(right - 1, 0, times.size - 1)
        right = np.clip(right, 0, times.size - 1)
        left = np.searchsorted(times, times[left], side="left")  # equal times: the first of them (earliest row)
        d_left = np.abs(queries - times[left])
        d_right = np.abs(times[right] - queries)
        pick = np.where(d_right < d_left, right, left)
        hit = np.isfinite(queries) & (np.minimum(d_left, d_right) <= tolerance)
        out[hit] = self._order[pick[hit]]
        return out


def nearest_samples(sample_times: np.ndarray, query_times: np.ndarray, tolerance: float) -> np.ndarray:
    """int64 (Q,): for each query time the index of the nearest sample within `tolerance`, else -1 (see
    NearestSample, which to prefer when querying one stream many times)."""
    return NearestSample(sample_times).query(query_times, tolerance)

"""Thresholds of a separable, non-negative resize of low-res logits, without computing most of its pixels.

Automatic mask generation needs, for every candidate, three counts over its full-resolution logits (pixels above
the mask threshold +- the stability offset) and the box of the pixels above the threshold, while only the few
candidates that survive NMS need their masks. The full-resolution logits are ``rows @ low @ cols.T``, where each
output row (column) is a convex combination of a few adjacent low-res rows (columns): bilinear resizing.

So the output splits into blocks: runs of rows with the same low-res taps times runs of columns with the same taps.
Every pixel of a block is a convex combination of the same small low-res patch, so it lies between the patch's min
and max: a block whose patch is wholly above (below) a threshold, by a margin that covers float rounding, is
wholly above (below) it, and only the blocks along a mask's edge are evaluated pixel by pixel. For SAM's 16x
upscaling of a 256 px model to a 1024 px image that is a few percent of the pixels.

Pixels are evaluated by one fixed-order formula (`_block_values`), elementwise, so a pixel has the same value
whichever blocks are evaluated with it: counts, boxes and masks always agree with each other. They agree with the
matrix product (`Sam.postprocess_masks`) up to float rounding (~1e-7 relative), as that one does with the official
two-step ``F.interpolate``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from samflow.errors import InputError

__all__ = ["ResizePlan", "threshold_masks", "threshold_stats"]

# A block is decided by its patch only when the patch clears a threshold by this much (relative to the largest
# logit of the mask, plus an absolute floor): float32 rounding of a few-tap convex combination is ~1e-7 of it.
RELATIVE_MARGIN = 1e-5
ABSOLUTE_MARGIN = 1e-6


# Runs per side of a tile: tiles are decided first, from their whole patch, and only the blocks of undecided tiles
# (a mask's edge) are looked at one by one.
TILE_RUNS = 8
# Undecided blocks evaluated pixel by pixel at once (bounds the (B, Hb, Wb) value tensor).
BLOCK_BATCH = 1 << 15


@dataclass(frozen=True)
class _Axis:
    """One axis of the resize: output positions grouped into runs that read the same low-res taps, and runs
    grouped into tiles of TILE_RUNS."""

    starts: torch.Tensor  # (G,) first output position of each run
    sizes: torch.Tensor  # (G,) its length
    taps: torch.Tensor  # (G, K) low-res indices read by the run (short ones padded by repeating a tap)
    weights: torch.Tensor  # (out, K) each output position's weights over its run's taps (padding: 0)
    longest: int  # the longest run
    tile_taps: torch.Tensor  # (T, S) the contiguous low-res range a tile's runs read (padded by repeating)

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor) -> _Axis:
        dense = matrix.detach().to("cpu", torch.float32).numpy()
        if dense.ndim != 2 or dense.shape[0] == 0 or dense.shape[1] == 0:
            raise InputError(f"a resize matrix must be (out, low) with both sizes > 0, got shape {dense.shape}")
        if (dense < 0).any():
            raise InputError("a resize matrix must have non-negative weights (a convex combination per output)")
        support = [tuple(np.flatnonzero(row).tolist()) for row in dense]
        if any(not taps for taps in support):
            raise InputError("every output position of a resize matrix must read at least one low-res position")
        starts, groups = [0], [support[0]]
        for position in range(1, len(support)):
            if support[position] != groups[-1]:
                starts.append(position)
                groups.append(support[position])
        # Runs near the borders (clamped taps) are longer: split every run to at most the median length, so that
        # blocks evaluated together pad little.
        lengths = np.diff(np.array(starts + [len(support)]))
        cap = max(1, int(np.median(lengths)))
        starts, groups = zip(*[(start + offset, group) for start, length, group in zip(starts, lengths, groups)
                               for offset in range(0, int(length), cap)])
        starts, groups = list(starts), list(groups)
        width = max(len(taps) for taps in groups)
        taps = np.array([list(g) + [g[-1]] * (width - len(g)) for g in groups], dtype=np.int64)
        sizes = np.diff(np.array(starts + [len(support)]))
        weights = np.zeros((len(support), width), dtype=np.float32)
        for group, (start, size) in enumerate(zip(starts, sizes)):
            rows = dense[start : start + size][:, list(groups[group])]
            weights[start : start + size, : rows.shape[1]] = rows
        ranges = []
        for first in range(0, len(groups), TILE_RUNS):
            read = taps[first : first + TILE_RUNS]
            ranges.append((int(read.min()), int(read.max())))
        span = max(b - a + 1 for a, b in ranges)
        tile_taps = np.array([[min(a + k, b) for k in range(span)] for a, b in ranges], dtype=np.int64)
        return cls(torch.as_tensor(starts), torch.from_numpy(sizes), torch.from_numpy(taps),
                   torch.from_numpy(weights), int(sizes.max()), torch.from_numpy(tile_taps))

    @property
    def length(self) -> int:
        return int(self.weights.shape[0])

    @property
    def runs(self) -> int:
        return int(self.starts.shape[0])

    @property
    def ends(self) -> torch.Tensor:
        """(G,) last output position (inclusive) of each run."""
        return self.starts + self.sizes - 1

    def tile_extent(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(T,) first and last (inclusive) output position of each tile."""
        first = self.starts[::TILE_RUNS]
        last = self.ends[TILE_RUNS - 1 :: TILE_RUNS]
        if len(last) < len(first):
            last = torch.cat([last, self.ends[-1:]])
        return first, last

    def tile_runs(self, tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The runs (len(tiles), TILE_RUNS) of the given tiles, clamped, and which of them exist."""
        runs = tiles[:, None] * TILE_RUNS + torch.arange(TILE_RUNS)[None, :]
        return runs.clamp(max=self.runs - 1), runs < self.runs

    def positions(self, runs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output positions (len(runs), longest) of the given runs, clamped, and which of them are real."""
        offsets = torch.arange(self.longest)
        valid = offsets[None, :] < self.sizes[runs][:, None]
        positions = (self.starts[runs][:, None] + offsets[None, :]).clamp(max=self.length - 1)
        return positions, valid


@dataclass(frozen=True)
class ResizePlan:
    """A separable resize ``rows (H x r) @ low[:r, :c] @ cols (W x c).T`` split into tiles and blocks of shared
    low-res taps. Build it once per (low-res size, output size): `from_matrices(rows, cols)`."""

    rows: _Axis
    cols: _Axis

    @classmethod
    def from_matrices(cls, rows: torch.Tensor, cols: torch.Tensor) -> ResizePlan:
        return cls(_Axis.from_matrix(rows), _Axis.from_matrix(cols))

    @property
    def size(self) -> tuple[int, int]:
        return self.rows.length, self.cols.length

    @property
    def reads(self) -> tuple[int, int]:
        """Low-res rows and columns the resize reads (the first r and c)."""
        return int(self.rows.taps.max()) + 1, int(self.cols.taps.max()) + 1

    @property
    def mean_block_area(self) -> float:
        """Output pixels per block: what one patch decides."""
        return self.rows.length * self.cols.length / (self.rows.runs * self.cols.runs)

    def check(self, low: torch.Tensor) -> None:
        need_r, need_c = self.reads
        if low.ndim != 3 or low.shape[1] < need_r or low.shape[2] < need_c:
            raise InputError(f"low-res logits must be (N, >={need_r}, >={need_c}) for this resize, "
                             f"got shape {tuple(low.shape)}")


def _margins(low: torch.Tensor) -> torch.Tensor:
    """(N,): how far a patch must clear a threshold for its region to be decided."""
    return low.abs().flatten(1).amax(1) * RELATIVE_MARGIN + ABSOLUTE_MARGIN


def _min_max(parts: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise min and max of equal-shaped tensors (a chain of contiguous passes: torch's reductions over a
    short axis are slow)."""
    parts = iter(parts)
    first = next(parts)
    low, high = first.clone(), first.clone()
    for part in parts:
        torch.minimum(low, part, out=low)
        torch.maximum(high, part, out=high)
    return low, high


def _undecided(low_min: torch.Tensor, low_max: torch.Tensor, margin: torch.Tensor,
               thresholds: tuple[float, ...]) -> torch.Tensor:
    """Where a patch's range, widened by `margin`, reaches a threshold."""
    open_ = torch.zeros_like(low_min, dtype=torch.bool)
    for t in thresholds:
        open_ |= (low_min <= t + margin) & (low_max >= t - margin)
    return open_


def _block_values(plan: ResizePlan, row_run: torch.Tensor, col_run: torch.Tensor,
                  patch: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Pixel values of blocks, blocks last: (Hb, Wb, B) for the longest row and column runs, from their patches
    (Kr, Kc, B); with their validity (Hb, Wb, B) and output rows (Hb, B) and columns (Wb, B) (clamped).

    One fixed order for every pixel: v = sum_i rw_i * (sum_j cw_j * low[r_i, c_j]), elementwise (no fused or
    reordered sums), so a pixel's value does not depend on which other blocks are evaluated with it. Blocks last
    keeps every step one contiguous stream.
    """
    rows, row_valid = (x.t() for x in plan.rows.positions(row_run))  # (Hb, B)
    cols, col_valid = (x.t() for x in plan.cols.positions(col_run))  # (Wb, B)
    row_w = plan.rows.weights.t()[:, rows]  # (Kr, Hb, B)
    col_w = plan.cols.weights.t()[:, cols]  # (Kc, Wb, B)
    values = None
    for i in range(patch.shape[0]):
        inner = patch[i, 0] * col_w[0]  # (Wb, B): tap row i resized along the columns
        for j in range(1, patch.shape[1]):
            inner = inner + patch[i, j] * col_w[j]
        term = row_w[i][:, None, :] * inner[None, :, :]
        values = term if values is None else values + term
    return values, row_valid[:, None, :] & col_valid[None, :, :], rows, cols


@dataclass
class _Walk:
    """The resize of `low` against some thresholds: its tiles, the blocks of its undecided tiles, and the blocks
    still undecided, whose pixels `block_pixels` evaluates. Regions below every threshold are left out."""

    plan: ResizePlan
    low: torch.Tensor  # (N, h, w) float32
    margin: torch.Tensor  # (N,)
    tile_min: torch.Tensor  # (N, Tr, Tc): patch minimum per tile
    open_tiles: torch.Tensor  # (N, Tr, Tc) bool: tiles whose patch range reaches a threshold
    mask: torch.Tensor  # (B,): the blocks of the open tiles (of at least the lowest threshold)
    row_run: torch.Tensor  # (B,)
    col_run: torch.Tensor  # (B,)
    patch: torch.Tensor  # (Kr, Kc, B)
    block_min: torch.Tensor  # (B,)
    open_blocks: torch.Tensor  # (B,) bool

    @classmethod
    def run(cls, plan: ResizePlan, low: torch.Tensor, thresholds: tuple[float, ...]) -> _Walk:
        plan.check(low)
        margin = _margins(low)
        rows, cols = plan.rows, plan.cols
        # Tiles' min and max over their patch, separably: along the rows, then the columns.
        row_min, row_max = _min_max(low[:, rows.tile_taps[:, s], :] for s in range(rows.tile_taps.shape[1]))
        tile_min, _ = _min_max(row_min[..., cols.tile_taps[:, s]] for s in range(cols.tile_taps.shape[1]))
        _, tile_max = _min_max(row_max[..., cols.tile_taps[:, s]] for s in range(cols.tile_taps.shape[1]))
        open_tiles = _undecided(tile_min, tile_max, margin[:, None, None], thresholds)

        m, tr, tc = torch.nonzero(open_tiles, as_tuple=True)
        row_run, row_ok = rows.tile_runs(tr)  # (U, R)
        col_run, col_ok = cols.tile_runs(tc)
        exists = (row_ok[:, :, None] & col_ok[:, None, :]).flatten()
        m = m.repeat_interleave(TILE_RUNS * TILE_RUNS)[exists]
        row_run = row_run[:, :, None].expand(-1, -1, TILE_RUNS).flatten()[exists]
        col_run = col_run[:, None, :].expand(-1, TILE_RUNS, -1).flatten()[exists]
        # Each block's patch, blocks last (Kr, Kc, B), from the flat logits.
        h, w = low.shape[1:]
        at = (m * h)[None, :] + rows.taps[row_run].t()  # (Kr, B)
        flat_index = (at[:, None, :] * w) + cols.taps[col_run].t()[None, :, :]
        patch = low.view(-1)[flat_index]
        block_min, block_max = _min_max(patch.flatten(0, 1).unbind(0))
        open_blocks = _undecided(block_min, block_max, margin[m], thresholds)
        keep = open_blocks | (block_min > min(thresholds) + margin[m])  # the rest is below everything
        return cls(plan, low, margin, tile_min, open_tiles, m[keep], row_run[keep], col_run[keep],
                   patch[:, :, keep], block_min[keep], open_blocks[keep])

    def decided_tiles(self, t: float) -> torch.Tensor:
        """(N, Tr, Tc) bool: tiles wholly above `t`."""
        return ~self.open_tiles & (self.tile_min > t + self.margin[:, None, None])

    def decided_blocks(self, t: float) -> torch.Tensor:
        """(B,) bool: blocks wholly above `t`."""
        return ~self.open_blocks & (self.block_min > t + self.margin[self.mask])

    def block_pixels(self) -> Iterator[tuple[torch.Tensor, ...]]:
        """Batches of the open blocks, blocks last: mask index (b,), values (Hb, Wb, b) (-inf where a block is
        shorter than the batch's longest), which of them are real, output rows (Hb, b) and columns (Wb, b)."""
        which = torch.nonzero(self.open_blocks).flatten()
        for start in range(0, len(which), BLOCK_BATCH):
            part = which[start : start + BLOCK_BATCH]
            values, valid, rows, cols = _block_values(self.plan, self.row_run[part], self.col_run[part],
                                                      self.patch[:, :, part])
            yield self.mask[part], values.masked_fill_(~valid, -torch.inf), valid, rows, cols


def threshold_stats(plan: ResizePlan, low: torch.Tensor, counted: tuple[float, ...],
                    boxed: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For low-res logits (N, h, w) on the CPU: per mask the number of full-resolution pixels above each of the
    `counted` thresholds (N, len(counted)) int64, and the XYXY box (inclusive ends, as `masks_to_boxes`) of the
    pixels above `boxed` (N, 4) int64, [0, 0, 0, 0] for an empty mask."""
    low = low.float().contiguous()
    walk = _Walk.run(plan, low, tuple(counted) + (boxed,))
    rows, cols = plan.rows, plan.cols
    n = low.shape[0]
    counts = torch.zeros(n, len(counted), dtype=torch.int64)
    tile_rows, tile_cols = rows.tile_extent(), cols.tile_extent()
    tile_area = (tile_rows[1] - tile_rows[0] + 1)[:, None] * (tile_cols[1] - tile_cols[0] + 1)[None, :]
    block_area = rows.sizes[walk.row_run] * cols.sizes[walk.col_run]
    for k, t in enumerate(counted):
        counts[:, k] = (walk.decided_tiles(t) * tile_area).flatten(1).sum(1)
        counts[:, k].index_add_(0, walk.mask, torch.where(walk.decided_blocks(t), block_area, 0))

    big = max(plan.size) + 1
    inside = walk.decided_tiles(boxed)  # (N, Tr, Tc)
    first = torch.stack([torch.where(inside.any(2), tile_rows[0], big).amin(1),
                         torch.where(inside.any(1), tile_cols[0], big).amin(1)], 1)  # (N, 2): y0, x0
    last = torch.stack([torch.where(inside.any(2), tile_rows[1], -1).amax(1),
                        torch.where(inside.any(1), tile_cols[1], -1).amax(1)], 1)
    index = walk.mask[:, None].expand(-1, 2)

    def extend(index: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, y1: torch.Tensor, x1: torch.Tensor) -> None:
        first.scatter_reduce_(0, index, torch.stack([y0, x0], 1), "amin")
        last.scatter_reduce_(0, index, torch.stack([y1, x1], 1), "amax")

    inside = walk.decided_blocks(boxed)
    extend(index, torch.where(inside, rows.starts[walk.row_run], big), torch.where(inside, cols.starts[walk.col_run], big),
           torch.where(inside, rows.ends[walk.row_run], -1), torch.where(inside, cols.ends[walk.col_run], -1))
    for mask, values, _, out_rows, out_cols in walk.block_pixels():
        for k, t in enumerate(counted):
            counts[:, k].index_add_(0, mask, (values > t).sum((0, 1)))
        above = values > boxed
        any_row, any_col = above.any(1), above.any(0)  # (Hb, b), (Wb, b)
        y0, _ = _min_max(torch.where(any_row, out_rows, big).unbind(0))
        _, y1 = _min_max(torch.where(any_row, out_rows, -1).unbind(0))
        x0, _ = _min_max(torch.where(any_col, out_cols, big).unbind(0))
        _, x1 = _min_max(torch.where(any_col, out_cols, -1).unbind(0))
        extend(mask[:, None].expand(-1, 2), y0, x0, y1, x1)
    boxes = torch.cat([first.flip(1), last.flip(1)], 1)  # x0, y0, x1, y1
    boxes[last[:, 0] < 0] = 0
    return counts, boxes


def threshold_masks(plan: ResizePlan, low: torch.Tensor, threshold: float) -> torch.Tensor:
    """Full-resolution bool masks (N, H, W) of the pixels above `threshold`, from the same pixel values as
    `threshold_stats` (so a mask's pixel count and box are the ones it reported)."""
    low = low.float().contiguous()
    walk = _Walk.run(plan, low, (threshold,))
    rows, cols = plan.rows, plan.cols
    tile_rows, tile_cols = rows.tile_extent(), cols.tile_extent()
    masks = walk.decided_tiles(threshold)
    masks = masks.repeat_interleave(tile_rows[1] - tile_rows[0] + 1, dim=1)
    masks = masks.repeat_interleave(tile_cols[1] - tile_cols[0] + 1, dim=2)
    inside = walk.decided_blocks(threshold)
    if inside.any():
        out_rows, row_ok = rows.positions(walk.row_run[inside])
        out_cols, col_ok = cols.positions(walk.col_run[inside])
        b, hb, wb = len(out_rows), out_rows.shape[1], out_cols.shape[1]
        valid = row_ok[:, :, None] & col_ok[:, None, :]
        masks[walk.mask[inside][:, None, None].expand(b, hb, wb)[valid], out_rows[:, :, None].expand(b, hb, wb)[valid],
              out_cols[:, None, :].expand(b, hb, wb)[valid]] = True
    for mask, values, valid, out_rows, out_cols in walk.block_pixels():
        hb, wb, b = values.shape
        masks[mask[None, None, :].expand(hb, wb, b)[valid], out_rows[:, None, :].expand(hb, wb, b)[valid],
              out_cols[None, :, :].expand(hb, wb, b)[valid]] = values[valid] > threshold
    return masks

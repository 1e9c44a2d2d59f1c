"""Seeded synthetic scenes of coloured shapes, for training and evaluating small SAM models.

A scene is a background (flat, gradient or texture) with 3-8 filled, rotated shapes in named colours, drawn in
order so later shapes occlude earlier ones. Some shapes carry an inner part of another colour; a click on the part
is then ambiguous between the part and the whole, and both are annotated (the part with ``part_of``). Masks are
binary and exact (the image is painted from them), and each annotation's mask is its visible region.

Scene ``i`` of a dataset with seed ``S`` depends only on ``(S, i)``, so datasets can be written in shards, in
parallel or resumed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from samflow.errors import InputError
from samflow.fileio import atomic_path, write_atomic
from samflow.ops import rle

log = logging.getLogger(__name__)

__all__ = [
    "COLORS",
    "SHAPES",
    "Scene",
    "WriteStats",
    "render_scene",
    "scene_file_stem",
    "scene_record",
    "scene_rng",
    "write_dataset",
]

SHAPES: tuple[str, ...] = ("circle", "ellipse", "square", "rectangle", "triangle", "star", "ring")

# Saturated (or extreme) anchors, far apart, so a jittered colour keeps its name; backgrounds stay muted.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 215, 35),
    "orange": (245, 135, 25),
    "purple": (135, 50, 180),
    "white": (242, 242, 242),
    "black": (18, 18, 18),
}

_PART_SHAPES = ("circle", "square", "triangle", "star", "ellipse")
_BACKGROUNDS = ("flat", "linear", "radial", "stripes", "checker", "blobs")
_COLOR_JITTER = 12
_PART_PROB = 0.4
_MIN_PARENT_RADIUS = 14.0  # below this an inner part would fall under the minimum area


@dataclass
class Scene:
    """One rendered scene.

    image: uint8 (H, W, 3) RGB. masks: bool (N, H, W), visible regions, one per annotation.
    annotations: N dicts with ``id`` (1..N), ``shape``, ``color``, ``bbox`` (XYWH floats), ``area`` (int),
    ``point`` ([x, y], a pixel well inside the mask) and ``part_of`` (the id of the whole, or None).
    """

    image: np.ndarray
    masks: np.ndarray
    annotations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Region:
    """A painted region in drawing order; ``owner`` is the index of the shape it belongs to."""

    mask: np.ndarray
    rgb: np.ndarray
    owner: int
    is_part: bool
    shape: str
    color: str


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of scene ``index`` of a dataset with ``seed`` (independent of every other scene)."""
    if seed < 0 or index < 0:
        raise InputError(f"seed and index must not be negative, got seed={seed}, index={index}")
    return np.random.default_rng([seed, index])


def _as_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        if len(size) != 2:
            raise InputError(f"size must be an int or (height, width), got {size!r}")
        h, w = (int(v) for v in size)
    if h < 32 or w < 32:
        raise InputError(f"scenes need at least 32x32 pixels, got {h}x{w}")
    return h, w


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1], shared by scenes of one size (read-only)."""
    ys = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
    xs = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]
    ys.flags.writeable = False
    xs.flags.writeable = False
    return ys, xs


# ------------------------------------------------------------------------------------------- background


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation, mid-brightness colour: never confusable with a named shape colour."""
    hue = rng.random()
    sat = rng.uniform(0.05, 0.3)
    val = rng.uniform(0.3, 0.75)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    rgb = val - val * sat * np.clip(np.minimum(k, 4 - k), 0, 1)
    return (rgb * 255).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Float32 (H, W, 3) background of a random kind."""
    kind = _BACKGROUNDS[rng.integers(len(_BACKGROUNDS))]
    a, b = _muted(rng), _muted(rng)
    if kind == "flat":
        return np.broadcast_to(a, (h, w, 3)).copy()
    ys, xs = _grid(h, w)
    aspect = w / h
    if kind == "linear":
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * xs * aspect + np.sin(angle) * ys
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == "radial":
        cx, cy = rng.uniform(0.2, 0.8, size=2)
        t = np.sqrt(((xs - cx) * aspect) ** 2 + (ys - cy) ** 2)
        t = np.clip(t / max(float(t.max()), 1e-6), 0, 1)
    elif kind == "stripes":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(0.04, 0.2)
        u = (np.cos(angle) * xs * aspect + np.sin(angle) * ys) / period
        t = (np.floor(u) % 2).astype(np.float32)
    elif kind == "checker":
        cell = rng.uniform(0.05, 0.2)
        t = ((np.floor(xs * aspect / cell) + np.floor(ys / cell)) % 2).astype(np.float32)
    else:  # blobs: smooth low-frequency noise, bilinearly upsampled from a coarse grid
        coarse = rng.integers(3, 9)
        small = (rng.random((coarse, coarse)) * 255).astype(np.uint8)
        t = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255
    return a + (b - a) * np.asarray(t, dtype=np.float32)[..., None]


# ------------------------------------------------------------------------------------------------ shapes


def _polygon_points(kind: str, cx: float, cy: float, r: float, angle: float, aspect: float) -> np.ndarray:
    """Vertices (K, 2) of a polygonal shape of circumradius about ``r``, rotated by ``angle``."""
    if kind == "ellipse":
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        pts = np.stack([r * np.cos(t), r * aspect * np.sin(t)], axis=1)
    elif kind == "square":
        s = r * 0.75
        pts = np.array([[-s, -s], [s, -s], [s, s], [-s, s]])
    elif kind == "rectangle":
        sx, sy = r * 0.9, r * 0.9 * aspect
        pts = np.array([[-sx, -sy], [sx, -sy], [sx, sy], [-sx, sy]])
    elif kind == "triangle":
        t = np.array([0.0, 2 / 3, 4 / 3]) * np.pi - np.pi / 2
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    elif kind == "star":
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        radius = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    else:
        raise InputError(f"unknown polygon shape {kind!r}")
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return pts @ rot.T + np.array([cx, cy])


def _shape_mask(
    kind: str, cx: float, cy: float, r: float, angle: float, aspect: float, h: int, w: int
) -> np.ndarray:
    """Binary (H, W) mask of one shape, rasterised without anti-aliasing."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if kind in ("circle", "ring"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
        if kind == "ring":
            ri = r * aspect
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
    else:
        pts = _polygon_points(kind, cx, cy, r, angle, aspect)
        draw.polygon([(float(x), float(y)) for x, y in pts], fill=1)
    return np.asarray(canvas, dtype=np.uint8).astype(bool)


def _jitter(rng: np.random.Generator, name: str) -> np.ndarray:
    base = np.array(COLORS[name], dtype=np.float32)
    return np.clip(base + rng.uniform(-_COLOR_JITTER, _COLOR_JITTER, size=3), 0, 255).astype(np.float32)


def _shape_regions(rng: np.random.Generator, h: int, w: int, n_shapes: int) -> list[_Region]:
    """Sample shapes (and their inner parts) and return the regions in drawing order."""
    side = min(h, w)
    d_min, d_max = max(12.0, 0.047 * side), 0.5 * side
    diameters = np.exp(rng.uniform(np.log(d_min), np.log(d_max), size=n_shapes))
    # Mostly large shapes first, so small ones are not all buried; the noise keeps some big occluders on top.
    order = np.argsort(-diameters * rng.uniform(0.5, 1.5, size=n_shapes))
    names = list(COLORS)
    # Distinct colours keep neighbouring shapes separable by colour (8 names, at most 8 shapes).
    colors = [names[i] for i in rng.permutation(len(names))[:n_shapes]]
    regions: list[_Region] = []
    for owner, j in enumerate(order):
        kind = SHAPES[rng.integers(len(SHAPES))]
        r = float(diameters[j]) / 2
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        angle = rng.uniform(0, 2 * np.pi)
        aspect = rng.uniform(0.45, 0.7) if kind == "ring" else rng.uniform(0.4, 0.75)
        body = _shape_mask(kind, cx, cy, r, angle, aspect, h, w)
        color = colors[owner]
        regions.append(_Region(body, _jitter(rng, color), owner, False, kind, color))
        if r < _MIN_PARENT_RADIUS or rng.random() >= _PART_PROB:
            continue
        part_color = names[rng.choice([i for i, n in enumerate(names) if n != color])]
        if kind == "ring":
            # The ambiguous click of a ring is its centre dot, inside the hole.
            part_kind, pr = "circle", r * aspect * rng.uniform(0.35, 0.7)
            pcx, pcy = cx, cy
        else:
            part_kind, pr = _PART_SHAPES[rng.integers(len(_PART_SHAPES))], r * rng.uniform(0.3, 0.45)
            pcx, pcy = cx + rng.uniform(-0.1, 0.1) * r, cy + rng.uniform(-0.1, 0.1) * r
        part = _shape_mask(part_kind, pcx, pcy, pr, rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 0.8), h, w)
        if kind != "ring":
            part &= body  # a part never sticks out of its whole
        regions.append(_Region(part, _jitter(rng, part_color), owner, True, part_kind, part_color))
    return regions


# ------------------------------------------------------------------------------------------- annotations


def _bbox(mask: np.ndarray) -> list[float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def _interior_point(mask: np.ndarray, bbox: list[float]) -> list[float]:
    """A pixel of the mask away from its edge, near its centroid: a click a user would plausibly make."""
    x0, y0, bw, bh = (int(v) for v in bbox)
    crop = mask[y0 : y0 + bh, x0 : x0 + bw]
    core = crop
    for _ in range(3):  # a few 4-neighbour erosions; keep the last non-empty one
        eroded = np.zeros_like(core)
        eroded[1:-1, 1:-1] = (
            core[1:-1, 1:-1] & core[:-2, 1:-1] & core[2:, 1:-1] & core[1:-1, :-2] & core[1:-1, 2:]
        )
        if not eroded.any():
            break
        core = eroded
    ys, xs = np.nonzero(core)
    cy, cx = np.nonzero(crop)
    best = np.argmin((ys - cy.mean()) ** 2 + (xs - cx.mean()) ** 2)
    return [float(xs[best] + x0), float(ys[best] + y0)]


def _annotate(
    regions: list[_Region], label: np.ndarray, min_area: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Visible masks and annotations: one per shape, plus one per inner part, dropping tiny ones."""
    h, w = label.shape
    visible = label[None] == np.arange(1, len(regions) + 1, dtype=label.dtype)[:, None, None]
    masks: list[np.ndarray] = []
    anns: list[dict[str, Any]] = []

    def add(mask: np.ndarray, reg: _Region, part_of: int | None) -> int:
        box = _bbox(mask)
        ann = {
            "id": len(anns) + 1,
            "shape": reg.shape,
            "color": reg.color,
            "bbox": box,
            "area": int(mask.sum()),
            "point": _interior_point(mask, box),
            "part_of": part_of,
        }
        masks.append(mask)
        anns.append(ann)
        return ann["id"]

    i = 0
    while i < len(regions):
        body = regions[i]
        has_part = i + 1 < len(regions) and regions[i + 1].is_part
        body_vis = visible[i]
        part_vis = visible[i + 1] if has_part else None
        body_ok = int(body_vis.sum()) >= min_area
        part_ok = part_vis is not None and int(part_vis.sum()) >= min_area
        whole_id = None
        if body_ok:
            # The whole includes whatever of its part shows, even when the part alone is too small to annotate.
            whole = body_vis | part_vis if part_vis is not None else body_vis
            whole_id = add(whole, body, None)
        if part_ok:
            assert part_vis is not None
            add(part_vis, regions[i + 1], whole_id)
        i += 2 if has_part else 1
    stack = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
    return stack, anns


# ------------------------------------------------------------------------------------------------ render


def render_scene(
    rng_or_seed: np.random.Generator | int | Sequence[int],
    size: int | Sequence[int] = 256,
    *,
    min_area: int = 30,
) -> Scene:
    """Render one scene. ``size``: an int (square) or (height, width). Same seed, same scene."""
    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else np.random.default_rng(rng_or_seed)
    h, w = _as_size(size)
    canvas = _background(rng, h, w)
    n_shapes = int(rng.integers(3, 9))
    regions = _shape_regions(rng, h, w, n_shapes)
    label = np.zeros((h, w), dtype=np.int16)
    for k, reg in enumerate(regions, start=1):
        np.putmask(label, reg.mask, k)
    # Paint once from the label map (a palette gather), not once per region.
    palette = np.stack([np.zeros(3, np.float32)] + [reg.rgb for reg in regions])
    np.copyto(canvas, np.take(palette, label, axis=0), where=(label > 0)[..., None])
    masks, anns = _annotate(regions, label, min_area)
    sigma = rng.uniform(2.0, 6.0)
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(sigma) + np.float32(0.5)
    image = np.clip(canvas, 0, 255, out=canvas).astype(np.uint8)
    return Scene(image=image, masks=masks, annotations=anns)


# ------------------------------------------------------------------------------------------------- write


@dataclass
class WriteStats:
    """What ``write_dataset`` did."""

    out_dir: Path
    written: int
    skipped: int


def scene_file_stem(index: int) -> str:
    """File stem of scene ``index`` (1-based): ``sa_000001``."""
    return f"sa_{index:06d}"


# Annotation fields a scene style may add, written into its record when present (synthetic_hard: the whole
# shape's area, beside the visible `area`).
EXTRA_FIELDS = ("full_area",)


def scene_record(scene: Scene, image_id: int, file_name: str) -> dict[str, Any]:
    """The SA-1B style JSON record of a scene."""
    h, w = scene.image.shape[:2]
    segs = rle.encode(scene.masks)
    assert isinstance(segs, list)
    anns = []
    for ann, seg in zip(scene.annotations, segs, strict=True):
        anns.append(
            {
                "id": ann["id"],
                "segmentation": seg,
                "bbox": ann["bbox"],
                "area": ann["area"],
                "predicted_iou": 1.0,
                "stability_score": 1.0,
                "crop_box": [0, 0, w, h],
                "point_coords": [ann["point"]],
                "shape": ann["shape"],
                "color": ann["color"],
                "part_of": ann["part_of"],
                **{key: ann[key] for key in EXTRA_FIELDS if key in ann},
            }
        )
    image = {"image_id": image_id, "width": w, "height": h, "file_name": file_name}
    return {"image": image, "annotations": anns}


SceneRenderer = Callable[[int, int, tuple[int, int]], Scene]  # (seed, index, (h, w)) -> scene; picklable


def _render_plain(seed: int, index: int, size: tuple[int, int]) -> Scene:
    return render_scene(scene_rng(seed, index), size)


def _write_scene(out: Path, seed: int, index: int, size: tuple[int, int], render: SceneRenderer) -> bool:
    """Write one scene unless both its files exist; True when it was written."""
    stem = scene_file_stem(index)
    png, js = out / f"{stem}.png", out / f"{stem}.json"
    if png.exists() and js.exists():
        return False
    scene = render(seed, index, size)
    record = scene_record(scene, index, png.name)

    def save_png(path: Path) -> None:
        # Fast zlib: noisy pixels barely compress, and the default level costs a third more time for ~10% less.
        Image.fromarray(scene.image).save(path, format="PNG", compress_level=1)

    # The image goes first: a JSON file marks a finished scene.
    with atomic_path(png) as tmp:
        save_png(tmp)
    write_atomic(js, json.dumps(record))
    return True


def write_dataset(
    out_dir: str | os.PathLike[str],
    n: int,
    seed: int,
    size: int | Sequence[int] = 256,
    progress: bool = True,
    *,
    start: int = 1,
    workers: int = 1,
) -> WriteStats:
    """Write scenes ``start .. start + n - 1`` as ``sa_XXXXXX.png`` + ``sa_XXXXXX.json`` (SA-1B layout).

    Scenes whose two files already exist are skipped, so an interrupted run resumes where it stopped.
    ``workers`` > 1 renders in that many processes; the files are the same either way.
    """
    return write_scenes(_render_plain, "synth", out_dir, n, seed, size, progress, start=start, workers=workers)


def write_scenes(
    render: SceneRenderer,
    desc: str,
    out_dir: str | os.PathLike[str],
    n: int,
    seed: int,
    size: int | Sequence[int] = 256,
    progress: bool = True,
    *,
    start: int = 1,
    workers: int = 1,
) -> WriteStats:
    """`write_dataset` for any scene style: `render` (a module-level function, so worker processes can take it)
    makes scene ``index`` of ``seed``; `desc` names the progress bar and the log line."""
    if n < 0:
        raise InputError(f"n must not be negative, got {n}")
    if start < 0:
        raise InputError(f"start must not be negative, got {start}")
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    hw = _as_size(size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    indices = range(start, start + n)
    bar = tqdm(total=n, desc=desc, unit="scene", disable=not progress)
    written = 0
    if workers == 1 or n < 2:
        for index in indices:
            written += _write_scene(out, seed, index, hw, render)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            args = (repeat(out), repeat(seed), indices, repeat(hw), repeat(render))
            for done in pool.map(_write_scene, *args, chunksize=max(1, min(32, n // (4 * workers)))):
                written += done
                bar.update()
    bar.close()
    skipped = n - written
    log.debug("%s: wrote %d scenes, skipped %d existing, in %s", desc, written, skipped, out)
    return WriteStats(out_dir=out, written=written, skipped=skipped)

"""A second synthetic scene style, for evaluation only: crowded, occluded shapes on noisy textured backgrounds.

The shipped models were trained and selected on `samflow.data.synthetic`'s scenes; this style measures how they
hold on another distribution. It keeps that module's shape and colour names (``SHAPES``, ``COLORS``), so captions
("a red circle", samflow.data.captions) still name objects, and its annotation records, so every evaluation task
reads it; everything else differs:

- objects cluster around one or two centres and overlap heavily, drawn in a nearly random order: each annotation's
  mask is its visible region (exact, from the label map the image is painted from) and ``full_area`` its whole
  shape's area inside the image, so ``area < full_area`` marks an occluded object;
- sizes and aspect ratios: a third of the objects are small (3-10% of the image side), rectangles are thin bars
  (aspect 0.08-0.5), ellipses elongated, triangles and stars stretched, rings thinner; objects carry a mild shading;
- backgrounds: multi-octave value noise, noisy gradients, stripes and checkers with noise, clutter of small muted
  polygons, all in muted colours with fine grain;
- the image is blurred (sometimes), noised and JPEG-compressed (PIL, quality 30-80); the masks stay exact;
- no inner parts (``part_of`` is always None).

Objects with fewer than ``min_area`` (40) visible pixels are dropped, so every annotation can be clicked. Scene
``i`` of seed ``S`` depends only on ``(S, i)`` (`hard_scene_rng`), and on another random stream than
`samflow.data.synthetic`'s scene ``(S, i)``.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from samflow.data.synthetic import (
    COLORS,
    SHAPES,
    Scene,
    WriteStats,
    _as_size,
    _bbox,
    _interior_point,
    write_scenes,
)
from samflow.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["MIN_AREA", "hard_scene_rng", "render_hard_scene", "write_hard_dataset"]

MIN_AREA = 40
_STREAM = 0x48415244  # "HARD": scene (S, i) of this style draws from another stream than synthetic.py's (S, i)
_BACKGROUNDS = ("value_noise", "noisy_gradient", "noisy_stripes", "noisy_checker", "clutter")
_COLOR_JITTER = 12
_SMALL_PROB = 1 / 3


def hard_scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of scene ``index`` of a hard-style dataset with ``seed`` (independent of every other scene)."""
    if seed < 0 or index < 0:
        raise InputError(f"seed and index must not be negative, got seed={seed}, index={index}")
    return np.random.default_rng([seed, index, _STREAM])


# ------------------------------------------------------------------------------------------- background


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation, mid-brightness colour, never confusable with a named object colour."""
    hue = rng.random()
    sat = rng.uniform(0.0, 0.3)
    val = rng.uniform(0.3, 0.72)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    rgb = val - val * sat * np.clip(np.minimum(k, 4 - k), 0, 1)
    return (rgb * 255).astype(np.float32)


def _upsample(small: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.asarray(Image.fromarray(small.astype(np.float32), mode="F").resize((w, h), Image.BICUBIC))


def _value_noise(rng: np.random.Generator, h: int, w: int, octaves: int) -> np.ndarray:
    """Fractal value noise in [0, 1]: random grids of doubling resolution, upsampled and summed."""
    base = int(rng.integers(2, 6))
    total = np.zeros((h, w), np.float32)
    for o in range(octaves):
        cells = min(base * 2**o, max(h, w))
        total += 0.55**o * _upsample(rng.random((cells, cells)), h, w)
    lo, hi = float(total.min()), float(total.max())
    return (total - lo) / max(hi - lo, 1e-6)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Float32 (H, W, 3) textured background of a random kind, with fine grain."""
    kind = _BACKGROUNDS[rng.integers(len(_BACKGROUNDS))]
    a, b = _muted(rng), _muted(rng)
    ys = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
    xs = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]
    aspect = w / h
    angle = rng.uniform(0, 2 * np.pi)
    u = np.cos(angle) * xs * aspect + np.sin(angle) * ys
    if kind == "value_noise":
        t = _value_noise(rng, h, w, octaves=int(rng.integers(3, 6)))
    elif kind == "noisy_gradient":
        t = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
        t = np.clip(t + 0.35 * (_value_noise(rng, h, w, 4) - 0.5), 0, 1)
    elif kind == "noisy_stripes":
        period = rng.uniform(0.02, 0.12)
        wobble = 0.6 * period * (_value_noise(rng, h, w, 3) - 0.5)
        t = (np.floor((u + wobble) / period) % 2).astype(np.float32)
    elif kind == "noisy_checker":
        cell = rng.uniform(0.03, 0.15)
        c, s = np.cos(angle), np.sin(angle)
        p, q = (c * xs * aspect + s * ys) / cell, (-s * xs * aspect + c * ys) / cell
        t = ((np.floor(p) + np.floor(q)) % 2).astype(np.float32)
        t = np.clip(t + 0.3 * (_value_noise(rng, h, w, 4) - 0.5), 0, 1)
    else:  # clutter: a gradient under many small muted polygons
        t = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    canvas = a + (b - a) * np.asarray(t, np.float32)[..., None]
    if kind == "clutter":
        side = min(h, w)
        img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(20, 61))):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(0.01, 0.06) * side
            k = int(rng.integers(3, 7))
            t_ = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = r * rng.uniform(0.5, 1.0, k)
            pts = [(float(cx + rr * np.cos(tt)), float(cy + rr * np.sin(tt))) for rr, tt in zip(rad, t_)]
            draw.polygon(pts, fill=tuple(int(v) for v in _muted(rng)))
        canvas = np.asarray(img, np.float32).copy()
    grain = rng.uniform(3.0, 12.0)
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(grain)
    return canvas


# ------------------------------------------------------------------------------------------------ shapes


def _outline(kind: str, r: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Outlines (K, 2) around the origin, unrotated: one polygon, or for a ring the outer and the inner one."""
    if kind in ("circle", "ellipse", "ring"):
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        ry = r * (rng.uniform(0.15, 0.6) if kind == "ellipse" else 1.0)
        ry = max(ry, min(r, 2.0))  # never thinner than about 4 px
        outer = np.stack([r * np.cos(t), ry * np.sin(t)], axis=1)
        if kind != "ring":
            return [outer]
        inner = min(rng.uniform(0.5, 0.8), 1 - 2.0 / r) * outer if r > 4 else 0.5 * outer
        return [outer, inner]
    if kind == "square":
        s = r * 0.75
        return [np.array([[-s, -s], [s, -s], [s, s], [-s, s]])]
    if kind == "rectangle":
        # Thin bars and elongated boxes: aspect 0.08-0.5, log-uniform, never under ~3 px across.
        sx = r
        sy = max(sx * float(np.exp(rng.uniform(np.log(0.08), np.log(0.5)))), 1.5)
        return [np.array([[-sx, -sy], [sx, -sy], [sx, sy], [-sx, sy]])]
    if kind == "triangle":
        t = np.array([0.0, 2 / 3, 4 / 3]) * np.pi - np.pi / 2
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
        pts[:, 0] *= rng.uniform(0.45, 1.3)  # isosceles: narrow or wide
        return [pts]
    if kind == "star":
        n_tips = 5
        t = np.arange(2 * n_tips) * np.pi / n_tips - np.pi / 2
        radius = np.where(np.arange(2 * n_tips) % 2 == 0, r, r * rng.uniform(0.35, 0.55))
        pts = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
        pts[:, 1] *= rng.uniform(0.7, 1.3)
        return [pts]
    raise InputError(f"unknown shape {kind!r}")


def _shape_mask(outlines: list[np.ndarray], cx: float, cy: float, angle: float, h: int, w: int) -> np.ndarray:
    """Binary (H, W) mask of rotated, placed outlines (the second, if any, is a hole), without anti-aliasing."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for k, pts in enumerate(outlines):
        placed = pts @ rot.T + np.array([cx, cy])
        draw.polygon([(float(x), float(y)) for x, y in placed], fill=0 if k else 1)
    return np.asarray(canvas, dtype=np.uint8).astype(bool)


def _shading(rng: np.random.Generator, h: int, w: int, mask: np.ndarray) -> np.ndarray:
    """A mild linear brightness ramp over the object's box: factors in [0.88, 1.06] (its colour keeps its name)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    lo, hi = rng.uniform(0.88, 1.0), rng.uniform(1.0, 1.06)
    angle = rng.uniform(0, 2 * np.pi)
    if rows.size == 0:
        return np.ones((h, w), np.float32)
    ys = np.arange(h, dtype=np.float32)[:, None] - rows.mean()
    xs = np.arange(w, dtype=np.float32)[None, :] - cols.mean()
    span = max(float(rows[-1] - rows[0]), float(cols[-1] - cols[0]), 1.0)
    t = np.clip((np.cos(angle) * xs + np.sin(angle) * ys) / span + 0.5, 0, 1)
    return (lo + (hi - lo) * t).astype(np.float32)


# ------------------------------------------------------------------------------------------------ render


def _degrade(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Blur (60% of scenes), sensor noise, then a JPEG round trip at quality 30-80."""
    pic = Image.fromarray(image)
    if rng.random() < 0.6:
        pic = pic.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))
    noisy = np.asarray(pic, np.float32) + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(
        rng.uniform(2.0, 7.0)
    )
    pic = Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    pic.save(buffer, format="JPEG", quality=int(rng.integers(30, 81)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()


def render_hard_scene(
    rng_or_seed: np.random.Generator | int | Sequence[int],
    size: int | Sequence[int] = 256,
    *,
    min_area: int = MIN_AREA,
    degrade: bool = True,
) -> Scene:
    """Render one hard-style scene. ``size``: an int (square) or (height, width). Same seed, same scene.

    ``degrade=False`` skips the blur, noise and JPEG round trip (everything else, masks included, is the same):
    the image is then painted exactly from the masks.
    """
    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else np.random.default_rng(rng_or_seed)
    h, w = _as_size(size)
    side = min(h, w)
    canvas = _background(rng, h, w)
    n = int(rng.integers(4, 9))
    names = list(COLORS)
    colors = [names[i] for i in rng.permutation(len(names))[:n]]  # distinct: touching objects stay separable
    small = rng.random(n) < _SMALL_PROB
    lo_small = max(7.0, 0.03 * side)
    hi_small = max(0.1 * side, 1.5 * lo_small)  # small images: still a range below the large objects'
    diameters = np.where(
        small,
        np.exp(rng.uniform(np.log(lo_small), np.log(hi_small), n)),
        np.exp(rng.uniform(np.log(hi_small), np.log(0.6 * side), n)),
    )
    # One or two clusters: objects crowd and overlap. A weak size bias in the drawing order buries some small ones.
    centres = rng.uniform(0.2, 0.8, size=(int(rng.integers(1, 3)), 2)) * np.array([w, h])
    spread = rng.uniform(0.04, 0.12) * side
    order = np.argsort(-diameters * rng.uniform(0.2, 1.8, n))
    label = np.zeros((h, w), np.int16)
    objects: list[tuple[str, str, np.ndarray]] = []
    for k, j in enumerate(order, start=1):
        kind = SHAPES[rng.integers(len(SHAPES))]
        r = float(diameters[j]) / 2
        cx, cy = centres[rng.integers(len(centres))] + rng.normal(0, spread, 2)
        full = _shape_mask(_outline(kind, r, rng), float(cx), float(cy), rng.uniform(0, 2 * np.pi), h, w)
        rgb = np.clip(np.array(COLORS[colors[j]], np.float32) + rng.uniform(-_COLOR_JITTER, _COLOR_JITTER, 3), 0, 255)
        shade = _shading(rng, h, w, full)
        canvas[full] = rgb[None, :] * shade[full][:, None]
        label[full] = k
        objects.append((kind, colors[j], full))
    masks: list[np.ndarray] = []
    anns: list[dict[str, Any]] = []
    for k, (kind, color, full) in enumerate(objects, start=1):
        visible = label == k
        area = int(visible.sum())
        if area < min_area:
            continue
        box = _bbox(visible)
        anns.append({"id": len(anns) + 1, "shape": kind, "color": color, "bbox": box, "area": area,
                     "point": _interior_point(visible, box), "part_of": None, "full_area": int(full.sum())})
        masks.append(visible)
    image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    if degrade:
        image = _degrade(rng, image)
    stack = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
    return Scene(image=image, masks=stack, annotations=anns)


# ------------------------------------------------------------------------------------------------- write


def _render(seed: int, index: int, size: tuple[int, int]) -> Scene:
    return render_hard_scene(hard_scene_rng(seed, index), size)


def write_hard_dataset(
    out_dir: str | os.PathLike[str],
    n: int,
    seed: int,
    size: int | Sequence[int] = 256,
    progress: bool = True,
    *,
    start: int = 1,
    workers: int = 1,
) -> WriteStats:
    """Write hard-style scenes ``start .. start + n - 1`` as ``sa_XXXXXX.png`` + ``.json``, as
    `samflow.data.synthetic.write_dataset` does (existing scenes skipped; the files do not depend on ``workers``;
    the JPEG artefacts are in the pixels, which PNG keeps as they are)."""
    return write_scenes(_render, "synth hard", out_dir, n, seed, size, progress, start=start, workers=workers)

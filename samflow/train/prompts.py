"""Prompt sampling for interactive training: a foreground point or a noisy box first, then correction clicks.

All functions work on a batch of N objects at the model's input resolution, on tensors. Prompts of every kind are
kept as one token list (coords (N, T, 2), labels (N, T)) with the official label meanings: -1 padding ("not a
point"), 0 negative click, 1 positive click, 2/3 top-left/bottom-right box corner. This lets points and boxes share
one decoder batch; `embed_tokens` embeds such a list exactly as the official PromptEncoder would.
"""

from __future__ import annotations

import torch

from samflow.models.sam.prompt_encoder import PromptEncoder

PAD, NEGATIVE, POSITIVE, BOX_TL, BOX_BR = -1, 0, 1, 2, 3


def _sample_pixels(weights: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One pixel per row of (N, H, W) weights, uniformly among the nonzero ones: (N, 2) xy and (N,) found."""
    n, h, w = weights.shape
    flat = weights.reshape(n, h * w) > 0
    found = flat.any(dim=1)
    # argmax of uniform keys over the allowed pixels is a uniform choice (cheaper than multinomial on CPU).
    keys = torch.rand(flat.shape, generator=generator, device=flat.device)
    idx = torch.where(flat, keys, -1.0).argmax(dim=1)
    xy = torch.stack([idx % w, idx // w], dim=1).float()
    return xy, found


def sample_points(masks: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random foreground pixel of each (N, H, W) mask: (N, 2) xy."""
    return _sample_pixels(masks, generator)[0]


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes (N, 4) of (N, H, W) masks, inclusive pixel coordinates (zeros for empty masks)."""
    n, h, w = masks.shape
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    big = torch.iinfo(torch.long).max
    y0 = torch.where(rows, ar_h, big).amin(dim=1)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1)
    x0 = torch.where(cols, ar_w, big).amin(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(masks.flatten(1).any(dim=1)[:, None], boxes, torch.zeros_like(boxes))


def noisy_boxes(masks: torch.Tensor, noise: float, noise_max: float, generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """The masks' boxes with each corner moved by N(0, noise * side), capped at `noise_max` pixels: (N, 4)."""
    boxes = mask_boxes(masks)
    h, w = masks.shape[-2:]
    side = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1).repeat(1, 2) + 1
    jitter = torch.randn(boxes.shape, generator=generator, device=boxes.device) * noise * side
    boxes = boxes + jitter.clamp(-noise_max, noise_max)
    x = boxes[:, 0::2].clamp(0, w - 1)
    y = boxes[:, 1::2].clamp(0, h - 1)
    # Keep the corners ordered after noise.
    return torch.stack([x.amin(1), y.amin(1), x.amax(1), y.amax(1)], dim=1)


def first_prompts(masks: torch.Tensor, box_prob: float, noise: float, noise_max: float,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first prompt of each object: a box (with prob `box_prob`) or a foreground point.

    Returns coords (N, 2, 2), labels (N, 2) and is_box (N,). A point row is [point, padding], as the official
    encoder pads a points-only prompt; a box row is its two corners.
    """
    n = masks.shape[0]
    is_box = torch.rand(n, generator=generator, device=masks.device) < box_prob
    points = sample_points(masks, generator)
    boxes = noisy_boxes(masks, noise, noise_max, generator)
    point_coords = torch.stack([points, torch.zeros_like(points)], dim=1)
    box_coords = boxes.view(n, 2, 2)
    coords = torch.where(is_box[:, None, None], box_coords, point_coords)
    point_labels = torch.tensor([POSITIVE, PAD], device=masks.device).expand(n, 2)
    box_labels = torch.tensor([BOX_TL, BOX_BR], device=masks.device).expand(n, 2)
    labels = torch.where(is_box[:, None], box_labels, point_labels)
    return coords, labels, is_box


def correction_clicks(pred: torch.Tensor, gt: torch.Tensor, generator: torch.Generator | None = None,
                      scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One click per object, uniformly in the error region of bool `pred` vs `gt` (N, h, w).

    Positive in a false-negative pixel, negative in a false-positive one; a padding token where there is no error.
    With `scale` > 1 the masks are a coarse grid of the input: the click lands at a random spot of the cell.
    Returns coords (N, 2) in input pixels and labels (N,).
    """
    error = pred ^ gt
    xy, found = _sample_pixels(error, generator)
    n = gt.shape[0]
    hit = gt[torch.arange(n, device=gt.device), xy[:, 1].long(), xy[:, 0].long()]
    if scale != 1.0:
        offset = torch.rand(xy.shape, generator=generator, device=xy.device)
        xy = torch.floor((xy + offset) * scale)
    labels = torch.where(found, hit.long(), torch.full_like(hit, PAD, dtype=torch.long))
    coords = torch.where(found[:, None], xy, torch.zeros_like(xy))
    return coords, labels


def add_click(coords: torch.Tensor, labels: torch.Tensor, click_xy: torch.Tensor, click_label: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert a click before the trailing token (the padding of a point prompt, or after the clicks of a box).

    Token order matches what the official encoder builds from the same prompts: clicks first, then either one
    padding token (points only) or the two box corners.
    """
    is_box = (labels == BOX_BR).any(dim=1)
    # Point rows: [clicks..., pad] -> [clicks..., new, pad]; box rows: [clicks..., tl, br] -> [clicks..., new, tl, br].
    n_tail = torch.where(is_box, 2, 1)
    t = coords.shape[1]
    new_coords = torch.cat([coords, coords[:, -1:]], dim=1).clone()
    new_labels = torch.cat([labels, labels[:, -1:]], dim=1).clone()
    for tail in (1, 2):  # two row kinds; vectorised within each
        rows = n_tail == tail
        if not rows.any():
            continue
        pos = t - tail
        new_coords[rows, pos] = click_xy[rows]
        new_labels[rows, pos] = click_label[rows]
        new_coords[rows, pos + 1 :] = coords[rows, pos:]
        new_labels[rows, pos + 1 :] = labels[rows, pos:]
    return new_coords, new_labels


def embed_tokens(prompt_encoder: PromptEncoder, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sparse embeddings (N, T, C) of a mixed token list, equal to the official encoder's for the same prompts."""
    pe = prompt_encoder.pe_layer.forward_with_coords(coords + 0.5, prompt_encoder.input_image_size)
    lab = labels[..., None]
    out = torch.where(lab == PAD, prompt_encoder.not_a_point_embed.weight.to(pe.dtype), pe)
    for k, emb in enumerate(prompt_encoder.point_embeddings):
        out = out + torch.where(lab == k, emb.weight, 0.0)
    return out

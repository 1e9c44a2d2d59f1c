"""The text adapter on held-out scenes: full-resolution mIoU of the text, image and text + one click prompts, and
how often a caption's first click lands on its object. Data without names (SA-1B) has only the image-path figures."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from samflow.models.sam.sam import Sam
from samflow.models.text.adapter import PromptAdapter
from samflow.models.text.clip import ClipModel
from samflow.ops.metrics import mask_iou
from samflow.train.text_adapter_data import ObjectSet, text_embeddings
from samflow.train.text_adapter_losses import decode


@torch.no_grad()
def pointing_accuracy(adapter: PromptAdapter, clip: ClipModel, sam: Sam, objects: ObjectSet) -> float:
    """How often the first click of a caption's text prompt lands on its object (named objects unique in their
    scene; nan without any)."""
    rows = torch.nonzero(objects.unique & objects.named).flatten().to(objects.features.device)
    if not len(rows):
        return float("nan")
    emb = adapter.text_to_image_space(text_embeddings(clip, [objects.names[i] for i in rows.tolist()], None))
    cfg = adapter.config
    out = adapter.net(emb).view(-1, cfg.num_clicks + cfg.num_tokens, cfg.token_dim)
    heat = adapter.heatmaps(out[:, :1], objects.features[objects.scene[rows]].float())[:, 0]
    side = int(round(heat.shape[-1] ** 0.5))
    cell = heat.argmax(-1)
    area = F.adaptive_avg_pool2d(objects.target[rows].float()[:, None], side).flatten(1)
    return float((area[torch.arange(len(rows), device=cell.device), cell] > 0.25).float().mean())


@torch.no_grad()
def evaluate(sam: Sam, clip: ClipModel, adapter: PromptAdapter, objects: ObjectSet, *, click: bool = True
             ) -> dict[str, float]:
    """Full-resolution mIoU over the objects unique in their scene: text path, image path, and text + one
    corrective click (at the pixel of the error region farthest from its boundary, the usual protocol), each one
    decoder call. Without names (SA-1B: the paper's recipe) only the image path and the one-click reference."""
    from samflow.ops.distance import farthest_point

    with_names = objects.unique & objects.named
    named = bool(with_names.any())  # the text path needs names: over the named objects, else the image path alone
    rows = torch.nonzero(with_names if named else objects.unique).flatten().cpu()
    click = click and named
    if named:
        text_emb = text_embeddings(clip, [objects.names[i] for i in rows], None)
    size = sam.image_encoder.img_size
    device = objects.features.device
    sums = {"text": 0.0, "image": 0.0, "text_click": 0.0, "point": 0.0}
    for start in range(0, len(rows), 64):
        part = rows[start : start + 64]
        feats = objects.features[objects.scene[part.to(device)]].float()
        # Objects have at least min_area >= 1 pixels: no target is empty, so mask_iou's 1 for empty/empty never counts.
        gt = torch.from_numpy(np.stack([objects.masks[i] for i in part])).to(device)
        tokens = {"image": adapter.prompt_tokens(objects.image_emb[part.to(device)], sam, feats, text=False)}
        if named:
            tokens["text"] = adapter.prompt_tokens(text_emb[start : start + 64], sam, feats, text=True)
        preds = {}
        for name, tok in tokens.items():
            logits, _ = decode(sam, feats, tok)
            preds[name] = F.interpolate(logits[:, None], (size, size), mode="bilinear", align_corners=False)[:, 0] > 0
            sums[name] += float(mask_iou(preds[name], gt).sum())
        # Reference: SAM with one click at the object's interior point (the synthetic annotation's), no text.
        logits, _ = decode(sam, feats, tokens["image"][:, :0], objects.points[part.to(device)])
        full = F.interpolate(logits[:, None], (size, size), mode="bilinear", align_corners=False)[:, 0] > 0
        sums["point"] += float(mask_iou(full, gt).sum())
        if click:
            coords, labels = [], []
            for j, i in enumerate(part.tolist()):
                pred, truth = preds["text"][j].cpu().numpy(), objects.masks[i]
                fn, fp = truth & ~pred, pred & ~truth
                region, label = (fn, 1) if fn.sum() >= fp.sum() else (fp, 0)
                coords.append(farthest_point(region) or tuple(objects.points[i].int().tolist()))
                labels.append(label if region.any() else 1)
            logits, _ = decode(sam, feats, tokens["text"], torch.tensor(coords, dtype=torch.float32, device=device),
                               torch.tensor(labels, dtype=torch.int, device=device))
            full = F.interpolate(logits[:, None], (size, size), mode="bilinear", align_corners=False)[:, 0] > 0
            sums["text_click"] += float(mask_iou(full, gt).sum())
    figures = {f"{k}_miou": v / max(len(rows), 1) for k, v in sums.items()
               if (click or k != "text_click") and (named or k != "text")}
    figures["objects"] = float(len(rows))
    return figures

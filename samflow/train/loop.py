"""The training loop: interactive prompting rounds, focal+dice+IoU losses, AdamW with warm-up and cosine decay,
periodic safetensors checkpoints and exact resume."""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from samflow.devices import resolve_device
from samflow.errors import CheckpointError
from samflow.models.sam.build import build_sam
from samflow.models.sam.checkpoint import (
    config_from_metadata,
    config_from_state_dict,
    load_into,
    read_state_dict,
    save_checkpoint,
)
from samflow.models.sam.config import SamConfig
from samflow.models.sam.regrid import regrid_state_dict
from samflow.models.sam.sam import Sam
from samflow.ops.metrics import mask_iou
from samflow.train.config import TrainConfig, load_train_config
from samflow.train.data import BatchSampler, SceneSource, batch_stream
from samflow.train.losses import dice_loss, sigmoid_focal_loss
from samflow.train.prompts import add_click, correction_clicks, embed_tokens, first_prompts

log = logging.getLogger(__name__)

WEIGHTS_NAME = "last.safetensors"
STATE_NAME = "last_state.pt"
FINAL_NAME = "final.safetensors"
METRICS_NAME = "metrics.jsonl"


@dataclass
class TrainResult:
    """What a `train` call did: the run folder, the step reached, the final weights (when finished), the losses."""

    out_dir: Path
    step: int
    finished: bool
    checkpoint: Path
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------------ model / optim


def _param_groups(model: Sam, config: TrainConfig) -> list[dict[str, Any]]:
    """Encoder vs rest (the encoder may take its own LR), each split into decayed and not-decayed parameters."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_encoder = name.startswith("image_encoder.")
        # Norms, biases, positional tables and learned tokens are not weight-decayed.
        no_decay = p.ndim < 2 or any(s in name for s in ("pos_embed", "rel_pos", "token", "point_embed",
                                                          "mask_embed"))
        groups.setdefault((is_encoder, not no_decay), []).append(p)
    out = []
    for (is_encoder, decay), params in sorted(groups.items()):
        scale = config.encoder_lr_scale if is_encoder else 1.0
        out.append({"params": params, "lr": config.lr * scale, "lr_scale": scale,
                    "weight_decay": config.weight_decay if decay else 0.0})
    return out


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine decay to `min_lr_ratio` at the last step."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    t = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _set_lr(optimizer: torch.optim.Optimizer, step: int, config: TrainConfig) -> float:
    factor = lr_factor(step, config)
    for group in optimizer.param_groups:
        group["lr"] = config.lr * group.get("lr_scale", 1.0) * factor
    return config.lr * factor


def _autocast(device: torch.device, amp: str) -> tuple[Any, torch.dtype | None]:
    """The autocast context for `amp` on `device`: bf16 where supported on GPUs, fp16 (with a scaler) otherwise."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return nullcontext(), None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        dtype = torch.float16
    else:
        dtype = torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype), dtype


# -------------------------------------------------------------------------------------------------- one step


def interactive_loss(model: Sam, images: list[torch.Tensor], gt: torch.Tensor, config: TrainConfig,
                     generator: torch.Generator | None = None, rounds: int | None = None
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch over `rounds` (default `config.rounds`) interactive rounds (the mean of the rounds' losses).

    images: B float (3, h, w) tensors; gt: bool (B*K, S, S) masks, K consecutive per image. Round 0 prompts with a
    point (ambiguous: the best of the three multimask outputs takes the mask loss) or a noisy box (single output);
    each later round adds a click in the error region of the previous mask and feeds its low-res logits back as
    the mask prompt (detached, as SAM does).
    """
    device = model.device
    rounds = config.rounds if rounds is None else rounds
    k = gt.shape[0] // len(images)
    x = torch.stack([model.preprocess(img.to(device)) for img in images])
    frozen = not any(p.requires_grad for p in model.image_encoder.parameters())
    with torch.no_grad() if frozen else nullcontext():
        embeddings = model.image_encoder(x)
    embeddings = embeddings.repeat_interleave(k, dim=0)
    gt = gt.to(device)
    n, size = gt.shape[0], gt.shape[-1]
    pe = model.prompt_encoder
    low_size = 4 * pe.image_embedding_size[0]
    if config.loss_resolution == "low":
        # Area-averaged soft targets on the decoder's own grid: 16x fewer pixels than the input for the same signal.
        target = F.adaptive_avg_pool2d(gt.float()[:, None], low_size)
        gt_eval = target[:, 0] > 0.5
    else:
        target = gt.float()[:, None]
        gt_eval = gt
    target = target.expand(-1, 4, -1, -1)
    rows = torch.arange(n, device=device)
    dense_pe = pe.get_dense_pe()
    coords, labels, is_box = first_prompts(gt, config.box_prob, config.box_noise, config.box_noise_max, generator)
    coords, labels = coords.to(device), labels.to(device)
    mask_input: torch.Tensor | None = None
    total = embeddings.new_zeros(())
    stats = {"focal": 0.0, "dice": 0.0, "iou_mse": 0.0, "iou_r0": 0.0, "iou_last": 0.0}
    for r in range(rounds):
        sparse = embed_tokens(pe, coords, labels)
        if mask_input is None:
            h, w = pe.image_embedding_size
            dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, h, w)
        else:
            dense = pe.mask_downscaling(mask_input)
        low_res, iou_pred = model.mask_decoder.predict_masks(embeddings, dense_pe, sparse, dense)
        logits = low_res.float()
        if config.loss_resolution == "full":
            logits = F.interpolate(logits, (size, size), mode="bilinear", align_corners=False)
        # (N, 4): token 0 is the single-mask output, 1..3 the multimask ones.
        focal = sigmoid_focal_loss(logits, target, alpha=config.focal_alpha)
        dice = dice_loss(logits, target)
        per_mask = config.focal_weight * focal + config.dice_weight * dice
        ambiguous = ~is_box if r == 0 else torch.zeros_like(is_box)
        best_loss, best = per_mask[:, 1:].detach().min(dim=1)
        chosen = torch.where(ambiguous, best + 1, torch.zeros_like(best))
        mask_loss = per_mask[rows, chosen]
        with torch.no_grad():
            binary = logits > 0
            true_iou = mask_iou(binary, gt_eval[:, None])  # (N, 4)
        sq = (iou_pred.float() - true_iou) ** 2
        iou_loss = torch.where(ambiguous, sq[:, 1:].mean(dim=1), sq[:, 0])
        total = total + (mask_loss + config.iou_weight * iou_loss).mean()
        with torch.no_grad():
            stats["focal"] += float(focal[rows, chosen].mean()) / rounds
            stats["dice"] += float(dice[rows, chosen].mean()) / rounds
            stats["iou_mse"] += float(iou_loss.mean()) / rounds
            stats["iou_r0" if r == 0 else "iou_last"] = float(true_iou[rows, chosen].mean())
        if r + 1 < rounds:
            mask_input = low_res[rows, chosen][:, None].detach()
            scale = size / binary.shape[-1]
            click_xy, click_label = correction_clicks(binary[rows, chosen], gt_eval, generator, scale=scale)
            coords, labels = add_click(coords, labels, click_xy, click_label)
    return total / rounds, stats


# ----------------------------------------------------------------------------------------------- checkpoints


def _save_state(out_dir: Path, model: Sam, optimizer: torch.optim.Optimizer, scaler: Any, step: int,
                config: TrainConfig) -> Path:
    meta = {"samflow_train_step": str(step), "samflow_train_config": config.model_dump_json()}
    weights = save_checkpoint(model, out_dir / WEIGHTS_NAME, extra_metadata=meta)
    state = {"step": step, "optimizer": optimizer.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else {}}
    tmp = out_dir / (STATE_NAME + ".tmp")
    torch.save(state, tmp)
    tmp.replace(out_dir / STATE_NAME)
    log.info("checkpoint at step %d: %s", step, weights)
    return weights


def _try_resume(out_dir: Path, model: Sam, optimizer: torch.optim.Optimizer, scaler: Any) -> int:
    """Load the run's last checkpoint into model/optimizer; the step to continue from (0 when there is none)."""
    weights, state_path = out_dir / WEIGHTS_NAME, out_dir / STATE_NAME
    if not (weights.is_file() and state_path.is_file()):
        return 0
    state_dict, _ = read_state_dict(weights)
    load_into(model, state_dict, weights)
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable state means the same to the user
        raise CheckpointError(f"cannot read training state {state_path}: {exc}") from None
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    log.info("resumed %s at step %d", out_dir, state["step"])
    return int(state["step"])


def _build_from_init(want: SamConfig, checkpoint: str) -> Sam:
    """`want`'s model with the init weights; weights made for a coarser patch grid are carried over (regrid)."""
    state, metadata = read_state_dict(checkpoint)
    found = config_from_metadata(metadata) or config_from_state_dict(state)
    if (found.patch_size, found.window_size) != (want.patch_size, want.window_size):
        log.info("regridding %s from patch %d to %d", checkpoint, found.patch_size, want.patch_size)
        state = regrid_state_dict(state, found, want)
    model = Sam(want)
    load_into(model, state, checkpoint)
    return model


def build_model(config: TrainConfig, device: torch.device) -> Sam:
    """The model to train: from `init_checkpoint` when given (size taken from it if `model` is a preset name that
    does not match), else the preset with fresh random weights (not the shipped ones)."""
    if config.init_checkpoint and isinstance(config.model, dict):
        model = _build_from_init(SamConfig(**config.model), config.init_checkpoint)
    elif config.init_checkpoint:
        model = build_sam(checkpoint=config.init_checkpoint)
    elif isinstance(config.model, str):
        model = Sam(SamConfig.preset(config.model))
    else:
        model = build_sam(config.model)
    return model.to(device).train()


# ------------------------------------------------------------------------------------------------------ train


def train(config: TrainConfig | str | Path, *, resume: bool = True, progress: bool = True,
          max_steps: int | None = None, base_dir: Path | None = None) -> TrainResult:
    """Train (or fine-tune) SAM as `config` says; returns where the weights are.

    config: a TrainConfig or a YAML path. resume: continue from `out_dir`'s last checkpoint when there is one.
    max_steps: stop this call after that many steps (a checkpoint is written), e.g. to train in slices.
    base_dir: folder that a relative `out_dir` is relative to (default: the current directory).
    """
    if not isinstance(config, TrainConfig):
        config = load_train_config(config)
    out_dir = config.resolved_out_dir(base_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(config.model_dump_json(indent=2), encoding="utf-8")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = torch.device(resolve_device(config.device))
    torch.manual_seed(config.seed)
    model = build_model(config, device)
    if config.freeze_image_encoder:
        model.image_encoder.requires_grad_(False)
        model.image_encoder.eval()
    optimizer = torch.optim.AdamW(_param_groups(model, config), lr=config.lr, betas=(0.9, 0.999))
    autocast, amp_dtype = _autocast(device, config.amp)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    step = _try_resume(out_dir, model, optimizer, scaler) if resume else 0
    sampler = BatchSampler(SceneSource(config.data), config.images_per_batch, config.objects_per_image,
                           model.config.image_size, config.seed)
    stop = config.steps if max_steps is None else min(config.steps, step + max_steps)
    log.info("training %s on %s from step %d to %d (%s)", model.config.describe(), device, step, stop, out_dir)

    losses: list[float] = []
    t_start = last_save = time.perf_counter()
    ema: float | None = None
    bar = tqdm(total=config.steps, initial=step, disable=not progress, dynamic_ncols=True, desc="train")
    metrics = (out_dir / METRICS_NAME).open("a", encoding="utf-8")
    try:
        batches = batch_stream(sampler, step, stop, config.data_workers, pin_memory=device.type == "cuda")
        t_ready = time.perf_counter()
        for images, gt in batches:
            t0 = time.perf_counter()
            data_sec = t0 - t_ready  # waiting for the batch: > 0 when data preparation is the bottleneck
            lr = _set_lr(optimizer, step, config)
            generator = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + step)
            with autocast:
                rounds = 1 if step < config.first_prompt_only_steps else config.rounds
                loss, stats = interactive_loss(model, images, gt, config, generator, rounds)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            step += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at step {step}; lower lr or check the data")
            losses.append(value)
            ema = value if ema is None else 0.95 * ema + 0.05 * value
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.4f}", iou=f"{stats['iou_r0']:.3f}", lr=f"{lr:.2e}")
            if step % config.log_every == 0 or step == stop:
                record = {"step": step, "loss": round(value, 5), "loss_ema": round(ema, 5), "lr": lr,
                          "sec": round(time.perf_counter() - t0, 3), "data_sec": round(data_sec, 3),
                          **{k: round(v, 5) for k, v in stats.items()}}
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                log.debug("step %d: %s", step, record)
            if time.perf_counter() - last_save > config.checkpoint_every_s:
                _save_state(out_dir, model, optimizer, scaler, step, config)
                last_save = time.perf_counter()
            t_ready = time.perf_counter()
    except KeyboardInterrupt:
        log.warning("interrupted at step %d: saving a checkpoint to resume from", step)
        _save_state(out_dir, model, optimizer, scaler, step, config)
        raise
    finally:
        bar.close()
        metrics.close()
    checkpoint = _save_state(out_dir, model, optimizer, scaler, step, config)
    finished = step >= config.steps
    if finished:
        model.eval()
        checkpoint = save_checkpoint(model, out_dir / FINAL_NAME, extra_metadata={"samflow_train_step": str(step)})
        if config.export:
            export_weights(checkpoint, Path(config.export), dtype=getattr(torch, config.export_dtype))
    return TrainResult(out_dir=out_dir, step=step, finished=finished, checkpoint=checkpoint, losses=losses,
                       seconds=time.perf_counter() - t_start)


def export_weights(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float16,
                   extra_metadata: dict[str, str] | None = None) -> Path:
    """Re-write a checkpoint's weights as safetensors in `dtype` (e.g. fp16 to ship), with the config embedded."""
    model = build_sam(None, checkpoint=src)
    path = save_checkpoint(model, dst, dtype=dtype, extra_metadata=extra_metadata)
    log.info("exported %s -> %s (%s, %.1f MB)", src, path, dtype, path.stat().st_size / 1e6)
    return path

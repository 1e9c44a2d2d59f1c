"""Reading and writing SAM weights: official .pth files, safetensors, and the Hugging Face key layout.

Every load is safe (`weights_only=True` or safetensors) and strict; mismatches are explained in terms of model sizes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from samflow.errors import CheckpointError
from samflow.models.sam.config import PRESETS, SamConfig
from samflow.models.weights import read_tensor_file

log = logging.getLogger(__name__)

CONFIG_METADATA_KEY = "samflow_config"

# Hugging Face `SamModel` names -> official names, applied in order to each key (regex, replacement).
_HF_TO_OFFICIAL: list[tuple[str, str]] = [
    (r"^shared_image_embedding\.positional_embedding$", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"^vision_encoder\.", "image_encoder."),
    (r"\.patch_embed\.projection\.", ".patch_embed.proj."),
    (r"^image_encoder\.layers\.(\d+)\.layer_norm([12])\.", r"image_encoder.blocks.\1.norm\2."),
    (r"^image_encoder\.layers\.", "image_encoder.blocks."),
    (r"\.neck\.conv1\.", ".neck.0."),
    (r"\.neck\.layer_norm1\.", ".neck.1."),
    (r"\.neck\.conv2\.", ".neck.2."),
    (r"\.neck\.layer_norm2\.", ".neck.3."),
    (r"\.mask_embed\.conv1\.", ".mask_downscaling.0."),
    (r"\.mask_embed\.layer_norm1\.", ".mask_downscaling.1."),
    (r"\.mask_embed\.conv2\.", ".mask_downscaling.3."),
    (r"\.mask_embed\.layer_norm2\.", ".mask_downscaling.4."),
    (r"\.mask_embed\.conv3\.", ".mask_downscaling.6."),
    (r"\.point_embed\.", ".point_embeddings."),
    (r"\.transformer\.layers\.(\d+)\.layer_norm(\d)\.", r".transformer.layers.\1.norm\2."),
    (r"\.transformer\.layer_norm_final_attn\.", ".transformer.norm_final_attn."),
    (r"\.upscale_conv1\.", ".output_upscaling.0."),
    (r"\.upscale_layer_norm\.", ".output_upscaling.1."),
    (r"\.upscale_conv2\.", ".output_upscaling.3."),
    # The hypernetwork and IoU-head MLPs: proj_in, layers.0, proj_out -> layers.0, 1, 2.
    (r"(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.0\.", r"\1.layers.1."),
    (r"(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.proj_in\.", r"\1.layers.0."),
    (r"(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.proj_out\.", r"\1.layers.2."),
]


def is_hf_layout(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("vision_encoder.") for k in state_dict)


def convert_hf_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face `facebook/sam-vit-*` state dict to the official layout (tensors are not copied)."""
    converted = {}
    for key, value in state_dict.items():
        new = key
        for pattern, repl in _HF_TO_OFFICIAL:
            new = re.sub(pattern, repl, new)
        converted[new] = value
    return converted


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a checkpoint file (.pth/.pt or .safetensors), loaded safely onto the CPU; a Hugging
    Face SAM layout is renamed to the official one."""
    state, metadata = read_tensor_file(path, "checkpoint")
    if is_hf_layout(state):
        log.info("converting Hugging Face key layout of %s", path)
        state = convert_hf_state_dict(state)
    return state, metadata


# The keys only HQ-SAM's decoder has, and the unused classifier of MobileSAM's TinyViT (optional on load).
HQ_KEYS = ("mask_decoder.hf_token", "mask_decoder.hf_mlp", "mask_decoder.compress_vit_feat",
           "mask_decoder.embedding_encoder", "mask_decoder.embedding_maskfeature")
TINY_VIT_HEAD_KEYS = ("image_encoder.head.weight", "image_encoder.head.bias", "image_encoder.norm_head.weight",
                      "image_encoder.norm_head.bias")


def has_hq_keys(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(HQ_KEYS) for k in state)


def has_tiny_vit_keys(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("image_encoder.layers.") for k in state)


def config_from_state_dict(state: dict[str, torch.Tensor]) -> SamConfig:
    """Infer the model (family and sizes) that a SAM, MobileSAM or HQ-SAM state dict was made for."""
    if has_tiny_vit_keys(state):
        fields = _tiny_vit_fields(state)
    else:
        fields = _vit_fields(state)
    prompt_dim = state.get("prompt_encoder.no_mask_embed.weight")
    if prompt_dim is not None:
        fields["prompt_embed_dim"] = prompt_dim.shape[1]
    if has_hq_keys(state):
        fields["hq"] = True
    try:
        config = SamConfig(**fields)
    except ValueError as exc:
        raise CheckpointError(f"not a SAM checkpoint: inconsistent sizes {fields}: {exc}") from None
    vit = state.get("mask_decoder.compress_vit_feat.0.weight")
    if vit is not None and vit.shape[0] != config.interm_dim:
        raise CheckpointError(f"not an HQ-SAM checkpoint: its decoder fuses early features of width {vit.shape[0]} "
                              f"but its encoder's are {config.interm_dim} wide")
    return config


def _tiny_vit_fields(state: dict[str, torch.Tensor]) -> dict:
    def get(key: str) -> torch.Tensor:
        try:
            return state[f"image_encoder.{key}"]
        except KeyError:
            raise CheckpointError(f"not a MobileSAM checkpoint: TinyViT keys without image_encoder.{key}") from None

    dims = [get("patch_embed.seq.2.c.weight").shape[0]]
    depths, heads, windows = [], [2], [7]  # stage 0 is convolutional: no heads or windows
    for i in range(4):
        ids = {int(m.group(1)) for k in state if (m := re.match(rf"image_encoder\.layers\.{i}\.blocks\.(\d+)\.", k))}
        depths.append(len(ids))
        if i:
            biases = get(f"layers.{i}.blocks.0.attn.attention_biases")
            dims.append(get(f"layers.{i}.blocks.0.attn.norm.weight").shape[0])
            heads.append(biases.shape[0])
            windows.append(round(biases.shape[1] ** 0.5))
    fields: dict = dict(encoder="tiny_vit", tiny_vit_embed_dims=tuple(dims), tiny_vit_depths=tuple(depths),
                        tiny_vit_num_heads=tuple(heads), tiny_vit_window_sizes=tuple(windows))
    mlp = state.get("image_encoder.layers.1.blocks.0.mlp.fc1.weight")
    if mlp is not None:
        fields["encoder_mlp_ratio"] = mlp.shape[0] / dims[1]
    head = state.get("image_encoder.head.weight")
    if head is not None:
        fields["tiny_vit_num_classes"] = head.shape[0]
    return fields


def _vit_fields(state: dict[str, torch.Tensor]) -> dict:
    try:
        pos = state["image_encoder.pos_embed"]
        patch = state["image_encoder.patch_embed.proj.weight"]
    except KeyError:
        raise CheckpointError("not a SAM checkpoint: no image_encoder.pos_embed / patch_embed keys (nor "
                              "MobileSAM's image_encoder.layers)") from None
    block_ids = sorted({int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
    depth = len(block_ids)
    grid, embed_dim, patch_size = pos.shape[1], pos.shape[-1], patch.shape[-1]
    rel = [state.get(f"image_encoder.blocks.{i}.attn.rel_pos_h") for i in block_ids]
    head_dim = rel[0].shape[1] if rel and rel[0] is not None else 64
    global_idx = tuple(i for i, r in zip(block_ids, rel) if r is not None and r.shape[0] == 2 * grid - 1)
    windowed = [r for r in rel if r is not None and r.shape[0] != 2 * grid - 1]
    window = (windowed[0].shape[0] + 1) // 2 if windowed else 14
    fields = dict(
        encoder_embed_dim=embed_dim,
        encoder_depth=depth,
        encoder_num_heads=max(1, embed_dim // head_dim),
        encoder_global_attn_indexes=global_idx,
        image_size=grid * patch_size,
        patch_size=patch_size,
        window_size=window,
    )
    mlp = state.get("image_encoder.blocks.0.mlp.lin1.weight")
    if mlp is not None:
        fields["encoder_mlp_ratio"] = mlp.shape[0] / embed_dim
    return fields


def _size_keys(config: SamConfig) -> tuple[str, ...]:
    """The fields that tell models of one family apart (those a checkpoint shows)."""
    if config.encoder == "tiny_vit":
        return ("tiny_vit_embed_dims", "tiny_vit_depths", "image_size")
    return ("encoder_embed_dim", "encoder_depth", "encoder_global_attn_indexes", "image_size")


def preset_name(config: SamConfig) -> str | None:
    """The preset whose family and encoder sizes match `config`, if any."""
    keys = ("encoder", "hq", *_size_keys(config))
    for name, preset in PRESETS.items():
        if all(getattr(preset, k) == getattr(config, k) for k in keys):
            return name
    return None


def describe_config(config: SamConfig) -> str:
    name = preset_name(config)
    return config.describe() + (f": this is {name}" if name else "")


def _brief(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _family_of_state(state: dict[str, torch.Tensor]) -> tuple[str, bool] | None:
    """(encoder kind, HQ) a state dict shows, or None when it shows no image encoder."""
    if has_tiny_vit_keys(state):
        return "tiny_vit", has_hq_keys(state)
    if "image_encoder.pos_embed" in state:
        return "vit", has_hq_keys(state)
    return None


def _family_mismatch(state: dict[str, torch.Tensor], config: SamConfig, source: str | Path) -> str | None:
    """Why a checkpoint of one family cannot load into a model of another, or None."""
    shown = _family_of_state(state)
    if shown is None or shown == (config.encoder, config.hq):
        return None
    encoder, hq = shown
    try:
        found = config_from_state_dict(state)
        name = preset_name(found)
    except CheckpointError:
        found, name = None, None
    what = {("tiny_vit", False): "a MobileSAM checkpoint", ("tiny_vit", True): "a Light HQ-SAM checkpoint",
            ("vit", True): "an HQ-SAM checkpoint", ("vit", False): "a plain SAM checkpoint"}[shown]
    if name:
        what += f" ({name})"
    clues = []
    if encoder != config.encoder:
        clues.append("a TinyViT image encoder (image_encoder.layers.* keys)" if encoder == "tiny_vit"
                     else "a ViT image encoder (image_encoder.blocks.* keys)")
    if hq and not config.hq:
        clues.append("HQ-SAM keys present (" + ", ".join(k.split(".", 1)[1] for k in HQ_KEYS) + ")")
    elif config.hq and not hq:
        clues.append("no HQ-SAM keys (mask_decoder.hf_token, hf_mlp, compress_vit_feat, ...)")
    build = f"build_sam({name!r}, checkpoint=...)" if name else "a model of its family"
    model_name = preset_name(config)
    family = {"sam": "SAM", "mobile_sam": "MobileSAM", "sam_hq": "HQ-SAM"}[config.family]
    return (f"checkpoint {source} has {' and '.join(clues)}: this is {what}; the model being built is {family} "
            f"with {describe_config(config) if model_name else config.describe()}. Build it with {build} "
            f"(or pass no name: build_sam(checkpoint=...) infers the family and size)")


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Strictly load `state` into `model`, explaining family and size mismatches and listing wrong keys briefly."""
    config: SamConfig = model.config  # type: ignore[assignment]
    expected = model.state_dict()
    if config.encoder == "tiny_vit" and not any(k in state for k in TINY_VIT_HEAD_KEYS):
        # MobileSAM's unused ImageNet classifier: checkpoints re-saved without it load (the model keeps its own).
        state = {**state, **{k: expected[k] for k in TINY_VIT_HEAD_KEYS if k in expected}}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {_brief(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_brief(unexpected)}")
    mismatch = _family_mismatch(state, config, source)
    if mismatch:
        raise CheckpointError(mismatch + (" [" + "; ".join(parts) + "]" if parts else ""))
    if _family_of_state(state) is not None:
        found = config_from_state_dict(state)
        if any(getattr(found, k) != getattr(config, k) for k in _size_keys(config)):
            raise CheckpointError(
                f"checkpoint {source} has {describe_config(found)}; the model being built has "
                f"{describe_config(config)}. Build the model with the checkpoint's size (or pass no size: "
                f"build_sam(checkpoint=...) infers it)."
            )
    if parts:
        raise CheckpointError(f"checkpoint {source} does not fit a SAM model: " + "; ".join(parts))
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if state[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"checkpoint {source} has tensors of the wrong shape: {_brief(wrong, 3)}")
    model.load_state_dict(state, strict=True)


def save_checkpoint(model: nn.Module, path: str | Path, dtype: torch.dtype | None = None,
                    extra_metadata: dict[str, str] | None = None) -> Path:
    """Write the model's weights as safetensors with its SamConfig embedded; atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    metadata = {CONFIG_METADATA_KEY: model.config.identity_json(), **(extra_metadata or {})}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def config_from_metadata(metadata: dict[str, str]) -> SamConfig | None:
    raw = metadata.get(CONFIG_METADATA_KEY)
    return SamConfig(**json.loads(raw)) if raw else None


def model_fingerprint(model: nn.Module) -> str:
    """A stable hash of a model's config and weights, for cache keys. Computed once per model object.

    Changing the weights in place afterwards (training) does not update it: call `reset_fingerprint` then.
    """
    cached = getattr(model, "_samflow_fingerprint", None)
    if cached is not None:
        return cached
    digest = hashlib.blake2b(digest_size=16)
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.identity_json().encode())
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(value.dtype).encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    fingerprint = digest.hexdigest()
    model._samflow_fingerprint = fingerprint  # type: ignore[attr-defined]
    return fingerprint


def reset_fingerprint(model: nn.Module) -> None:
    if hasattr(model, "_samflow_fingerprint"):
        del model._samflow_fingerprint

"""Reading SAM 2 weights: the released checkpoints (a state dict under "model", loaded with weights_only=True) and
samflow's safetensors, size and release detection from tensor shapes, and strict loading of the image part.

A released checkpoint also holds the video-memory modules (memory attention, memory encoder, object pointers...):
an image model has no use for them, so they are set aside (and named) rather than refused. Every other key must
match exactly: missing, unexpected and wrongly shaped keys are listed, and a checkpoint of another size, or of the
original SAM, is named for what it is.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from samflow.errors import CheckpointError
from samflow.models.sam.checkpoint import config_from_state_dict as sam1_config
from samflow.models.sam.checkpoint import preset_name as sam1_preset
from samflow.models.sam2.config import PRESETS, Sam2Config, preset_name
from samflow.models.weights import read_tensor_file

log = logging.getLogger(__name__)

CONFIG_METADATA_KEY = "samflow_sam2_config"

# The video-only parts of SAM2Base (sam2/modeling/sam2_base.py): tolerated in a checkpoint, never loaded.
MEMORY_PREFIXES = (
    "memory_attention.",
    "memory_encoder.",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "mask_downsample.",
)
MEMORY_KEYS = ("maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial")
# Keys only SAM 2.1's configs create (no_obj_embed_spatial, proj_tpos_enc_in_obj_ptrs).
SAM21_MARKERS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight")

_TRUNK_BLOCK = re.compile(r"image_encoder\.trunk\.blocks\.(\d+)\.")


def is_memory_key(key: str) -> bool:
    return key in MEMORY_KEYS or key.startswith(MEMORY_PREFIXES)


def is_sam2_state_dict(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict has SAM 2's layout (a Hiera trunk, or SAM 2's head names)."""
    return any(k.startswith(("image_encoder.trunk.", "sam_mask_decoder.", "sam_prompt_encoder.")) for k in state)


def is_sam1_state_dict(state: dict[str, torch.Tensor]) -> bool:
    return "image_encoder.pos_embed" in state or any(k.startswith("mask_decoder.") for k in state)


def release_of(state: dict[str, torch.Tensor]) -> str | None:
    """'2.1' or '2.0' from the memory-side keys; None when the checkpoint holds no memory part (image only)."""
    if any(k in state for k in SAM21_MARKERS):
        return "2.1"
    if any(is_memory_key(k) for k in state):
        return "2.0"
    return None


def trunk_sizes(state: dict[str, torch.Tensor]) -> tuple[int, tuple[int, ...], tuple[int, int], int]:
    """(embed_dim, blocks per stage, background pos-embed size, first window) read from the trunk's shapes."""
    try:
        patch = state["image_encoder.trunk.patch_embed.proj.weight"]
        pos = state["image_encoder.trunk.pos_embed"]
        window = state["image_encoder.trunk.pos_embed_window"]
    except KeyError as exc:
        raise CheckpointError(f"not a SAM 2 checkpoint: no {exc.args[0]}") from None
    blocks = sorted({int(m.group(1)) for k in state if (m := _TRUNK_BLOCK.match(k))})
    # A stage starts where a block widens (it has a `proj` for its shortcut).
    starts = [0] + [i for i in blocks if f"image_encoder.trunk.blocks.{i}.proj.weight" in state]
    ends = starts[1:] + [len(blocks)]
    stages = tuple(e - s for s, e in zip(starts, ends))
    return patch.shape[0], stages, (pos.shape[-2], pos.shape[-1]), window.shape[-1]


def _matching_presets(state: dict[str, torch.Tensor]) -> list[str]:
    """The presets whose every image-side tensor has the checkpoint's shape (the size), in PRESETS order."""
    embed_dim, stages, bkg, window = trunk_sizes(state)
    return [name for name, p in PRESETS.items()
            if (p.embed_dim, p.stages, p.window_pos_embed_bkg_spatial_size, p.window_spec[0])
            == (embed_dim, stages, bkg, window)]


def config_from_state_dict(state: dict[str, torch.Tensor]) -> Sam2Config:
    """The released size (and release) a SAM 2 state dict was made for.

    The head counts and which blocks attend globally leave no trace in tensor shapes, so the size is recognised
    among the released ones; any other trunk needs an explicit Sam2Config (or samflow's safetensors, which embed
    it).
    """
    names = _matching_presets(state)
    if not names:
        embed_dim, stages, bkg, window = trunk_sizes(state)
        raise CheckpointError(
            f"this SAM 2 checkpoint's trunk (width {embed_dim}, blocks per stage {stages}, positional embedding "
            f"{bkg}, first window {window}) is none of the released sizes ({', '.join(sorted(_size_names()))}): "
            "build it with an explicit Sam2Config"
        )
    release = release_of(state) or "2.1"
    config = next(PRESETS[n] for n in names if PRESETS[n].version == release)
    grid = state.get("sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix")
    d_model = grid.shape[1] * 2 if grid is not None else config.d_model
    return config.model_copy(update={"d_model": d_model}) if d_model != config.d_model else config


def _size_names() -> set[str]:
    return {name.split("_", 1)[1] for name in PRESETS}


def describe_state_dict(state: dict[str, torch.Tensor]) -> str:
    """e.g. 'a SAM 2.1 hiera_small checkpoint'."""
    names = _matching_presets(state)
    release = release_of(state)
    size = names[0].split("_", 1)[1] if names else "non-standard"
    return f"a SAM {release or '2'} {size} checkpoint" + ("" if release else " (image part only)")


def describe_config(config: Sam2Config) -> str:
    name = preset_name(config)
    return f"{config.describe()}" + (f" ({name})" if name else "")


def _brief(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def split_memory(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The image part of a SAM 2 state dict, and the sorted names of the video-memory keys set aside."""
    image = {k: v for k, v in state.items() if not is_memory_key(k)}
    return image, sorted(k for k in state if is_memory_key(k))


def check_family(state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Raise CheckpointError naming what `state` is unless it has SAM 2's layout."""
    if not is_sam2_state_dict(state):
        if is_sam1_state_dict(state):
            try:
                name = sam1_preset(sam1_config(state))
            except CheckpointError:
                name = None
            what = f"a SAM ({name}) checkpoint" if name else "a SAM (original, ViT) checkpoint"
            hint = f"build_sam({name!r}, checkpoint=...)" if name else "build_sam(checkpoint=...)"
            raise CheckpointError(f"checkpoint {source} is {what}, not SAM 2: load it with {hint}")
        raise CheckpointError(f"checkpoint {source} is not a SAM 2 checkpoint: it has none of the keys "
                              f"image_encoder.trunk.*, sam_prompt_encoder.*, sam_mask_decoder.* (found e.g. "
                              f"{_brief(sorted(state), 3)})")


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> list[str]:
    """Strictly load the image part of `state` into a Sam2 model; returns the memory keys set aside.

    Raises CheckpointError naming the checkpoint for what it is when it is the original SAM's or another size,
    and listing missing / unexpected / wrongly shaped keys otherwise.
    """
    config: Sam2Config = model.config  # type: ignore[assignment]
    check_family(state, source)
    image, memory = split_memory(state)
    if "image_encoder.trunk.patch_embed.proj.weight" in image:
        want = (config.embed_dim, config.stages, config.window_pos_embed_bkg_spatial_size, config.window_spec[0])
        if trunk_sizes(image) != want:
            raise CheckpointError(
                f"checkpoint {source} is {describe_state_dict(state)}; the model being built has "
                f"{describe_config(config)}. Build the model with the checkpoint's size (or pass no size: "
                f"build_sam(checkpoint=...) infers it)."
            )
        release = release_of(state)
        if release and release != config.version:
            log.info("checkpoint %s is a SAM %s checkpoint, loaded into a SAM %s model: the image path of both "
                     "releases is the same", source, release, config.version)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(image))
    unexpected = sorted(set(image) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_brief(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_brief(unexpected)}")
        raise CheckpointError(f"checkpoint {source} does not fit a SAM 2 image model: " + "; ".join(parts))
    wrong = [f"{k} {tuple(image[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if image[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"checkpoint {source} has tensors of the wrong shape: {_brief(wrong, 3)}")
    model.load_state_dict(image, strict=True)
    if memory:
        log.info("checkpoint %s: %d video-memory tensors not used by the image model: %s", source, len(memory),
                 _brief(memory, 8))
    return memory


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a SAM 2 checkpoint (.pt/.pth with or without the "model" wrapper, .safetensors)."""
    return read_tensor_file(path, "SAM 2 checkpoint")


def config_from_metadata(metadata: dict[str, str]) -> Sam2Config | None:
    raw = metadata.get(CONFIG_METADATA_KEY)
    return Sam2Config(**json.loads(raw)) if raw else None


def save_checkpoint(model: nn.Module, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """The image model's weights as safetensors with its Sam2Config embedded; atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={CONFIG_METADATA_KEY: model.config.model_dump_json()})
    tmp.replace(path)
    return path

"""SamConfig: every size of a SAM-family model as data, with the official presets.

Three families share the prompt encoder and the two-way mask decoder and differ in what is around them:

- `sam`: the original ViT image encoder (vit_b, vit_l, vit_h; samflow's `tiny`);
- `mobile_sam`: MobileSAM, a TinyViT image encoder distilled from vit_h (`encoder="tiny_vit"`), SAM's decoder;
- `sam_hq`: HQ-SAM (`hq=True`): SAM's encoder also hands the decoder its first global-attention block's
  output, and the decoder has an extra output token (the HQ token) whose mask is made from a fusion of those early
  features with the late ones.

The family is part of what an image embedding is: an embedding is decoded only by a model of its own family (see
`SamConfig.family`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The official pixel statistics (ImageNet, 0..255 scale).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

FAMILIES = ("sam", "mobile_sam", "sam_hq")
FAMILY_NAMES = {"sam": "SAM", "mobile_sam": "MobileSAM", "sam_hq": "HQ-SAM"}
# TinyViT's last patch merging keeps the resolution (stride 1), as the released TinyViT-SAM models do: the
# reference code decides it by these widths of the last stage, samflow by position (the same for these widths).
TINY_VIT_LAST_WIDTHS = (320, 448, 576)
# Fields added with MobileSAM and HQ-SAM (see SamConfig.identity_json).
FAMILY_FIELDS = ("encoder", "tiny_vit_embed_dims", "tiny_vit_depths", "tiny_vit_num_heads", "tiny_vit_window_sizes",
                 "tiny_vit_num_classes", "hq")


class SamConfig(BaseModel):
    """Sizes of the image encoder, prompt encoder and mask decoder.

    Defaults are the official ones; the encoder sizes default to vit_b. `image_size` is the long side the image is
    resized and padded to; the embedding grid is `image_size // patch_size` on each side.

    `encoder`: "vit" (the `encoder_*` fields) or "tiny_vit" (MobileSAM: the `tiny_vit_*` fields, four stages; its
    overall stride, `patch_size`, is 16). `hq`: HQ-SAM's mask decoder (HQ token and early/late feature fusion).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoder_embed_dim: int = Field(768, gt=0)
    encoder_depth: int = Field(12, gt=0)
    encoder_num_heads: int = Field(12, gt=0)
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    encoder_mlp_ratio: float = Field(4.0, gt=0)
    image_size: int = Field(1024, gt=0)
    patch_size: int = Field(16, gt=0)
    window_size: int = Field(14, ge=0)
    prompt_embed_dim: int = Field(256, gt=0)
    mask_in_chans: int = Field(16, gt=0)
    decoder_depth: int = Field(2, gt=0)
    decoder_mlp_dim: int = Field(2048, gt=0)
    decoder_num_heads: int = Field(8, gt=0)
    num_multimask_outputs: int = Field(3, gt=0)
    iou_head_depth: int = Field(3, gt=0)
    iou_head_hidden_dim: int = Field(256, gt=0)
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    encoder: Literal["vit", "tiny_vit"] = "vit"
    tiny_vit_embed_dims: tuple[int, int, int, int] = (64, 128, 160, 320)
    tiny_vit_depths: tuple[int, int, int, int] = (2, 2, 6, 2)
    tiny_vit_num_heads: tuple[int, int, int, int] = (2, 4, 5, 10)
    tiny_vit_window_sizes: tuple[int, int, int, int] = (7, 7, 14, 7)
    tiny_vit_num_classes: int = Field(1000, ge=0)  # the (unused) classifier head the released checkpoints hold
    hq: bool = False

    @model_validator(mode="after")
    def _check_sizes(self) -> SamConfig:
        if self.encoder == "tiny_vit":
            self._check_tiny_vit()
        elif self.hq and not self.encoder_global_attn_indexes:
            raise ValueError("an HQ-SAM ViT needs a global-attention block (its output is the early features)")
        if self.encoder_embed_dim % self.encoder_num_heads:
            raise ValueError(
                f"encoder_embed_dim={self.encoder_embed_dim} is not divisible by "
                f"encoder_num_heads={self.encoder_num_heads}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")
        bad = [i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad:
            raise ValueError(f"encoder_global_attn_indexes {bad} lie outside 0..{self.encoder_depth - 1}")
        if self.prompt_embed_dim % 4 or self.mask_in_chans % 4:
            raise ValueError("prompt_embed_dim and mask_in_chans must be multiples of 4")
        return self

    def _check_tiny_vit(self) -> None:
        if self.patch_size != 16:
            raise ValueError(f"a tiny_vit encoder has an overall stride (patch_size) of 16, not {self.patch_size}")
        bad = [(d, h) for d, h in zip(self.tiny_vit_embed_dims[1:], self.tiny_vit_num_heads[1:]) if d % h]
        if bad:
            raise ValueError(f"tiny_vit_embed_dims are not divisible by tiny_vit_num_heads: {bad}")
        if min(self.tiny_vit_embed_dims) < 2 or min(self.tiny_vit_window_sizes) < 1 or min(self.tiny_vit_depths) < 1:
            raise ValueError("tiny_vit widths must be at least 2, window sizes and depths at least 1")

    def identity_json(self) -> str:
        """The config as JSON for fingerprints and checkpoint metadata. The fields the SAM family added (`encoder`,
        `tiny_vit_*`, `hq`) are left out at their defaults, so a plain SAM config reads as it did before them: its
        fingerprint (cache keys, text adapters' checks) and its checkpoints stay valid."""
        defaults = type(self).model_fields
        extra = {name for name in FAMILY_FIELDS if getattr(self, name) == defaults[name].default}
        return self.model_dump_json(exclude=extra)

    @property
    def family(self) -> str:
        """"sam", "mobile_sam" or "sam_hq" (HQ-SAM, whatever its encoder)."""
        if self.hq:
            return "sam_hq"
        return "mobile_sam" if self.encoder == "tiny_vit" else "sam"

    @property
    def interm_dim(self) -> int:
        """Channels of the early encoder features an HQ-SAM decoder fuses (its `vit_dim`)."""
        return self.tiny_vit_embed_dims[2] if self.encoder == "tiny_vit" else self.encoder_embed_dim

    @property
    def embedding_size(self) -> int:
        """Side of the image-embedding grid (64 for the official models)."""
        return self.image_size // self.patch_size

    @classmethod
    def preset(cls, name: str) -> SamConfig:
        """The config of a named model: vit_b, vit_l, vit_h (official SAM), tiny (samflow's shipped default),
        mobile_sam (MobileSAM), sam_hq_vit_b/l/h and sam_hq_vit_tiny (HQ-SAM)."""
        try:
            return PRESETS[name]
        except KeyError:
            raise KeyError(f"unknown SAM preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None

    def describe(self) -> str:
        """Human description of the model, e.g. '32 encoder blocks of width 1280' (an HQ-SAM or TinyViT model
        says so first)."""
        if self.encoder == "tiny_vit":
            widths = "/".join(map(str, self.tiny_vit_embed_dims))
            depths = "/".join(map(str, self.tiny_vit_depths))
            text = f"a TinyViT encoder of widths {widths} and depths {depths}"
        else:
            text = f"{self.encoder_depth} encoder blocks of width {self.encoder_embed_dim}"
        return f"HQ-SAM with {text}" if self.hq else text


PRESETS: dict[str, SamConfig] = {
    "vit_b": SamConfig(),
    "vit_l": SamConfig(
        encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16, encoder_global_attn_indexes=(5, 11, 17, 23)
    ),
    "vit_h": SamConfig(
        encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16, encoder_global_attn_indexes=(7, 15, 23, 31)
    ),
    # samflow's own default, trained on synthetic scenes: a small ViT at 256 px with 8 px patches (32x32 embedding
    # grid, so masks come out at 128x128), SAM's standard prompt encoder and 256-channel mask decoder: the official
    # classes load it with sizes changed.
    "tiny": SamConfig(
        encoder_embed_dim=192,
        encoder_depth=6,
        encoder_num_heads=6,
        encoder_global_attn_indexes=(2, 5),
        image_size=256,
        patch_size=8,
        window_size=16,
    ),
    # MobileSAM: TinyViT-5M distilled from vit_h's encoder; SAM's prompt encoder and mask decoder.
    "mobile_sam": SamConfig(encoder="tiny_vit"),
    # HQ-SAM: the ViT encoders with the HQ decoder (early features: the first global-attention block's output).
    "sam_hq_vit_b": SamConfig(hq=True),
    "sam_hq_vit_l": SamConfig(
        encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16, encoder_global_attn_indexes=(5, 11, 17, 23),
        hq=True,
    ),
    "sam_hq_vit_h": SamConfig(
        encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16, encoder_global_attn_indexes=(7, 15, 23, 31),
        hq=True,
    ),
    # Light HQ-SAM: MobileSAM's TinyViT with the HQ decoder (early features: the second stage's output, 160 wide).
    "sam_hq_vit_tiny": SamConfig(encoder="tiny_vit", hq=True),
}

PRESET_DOCS = {
    "vit_b": "SAM ViT-B (91M)", "vit_l": "SAM ViT-L (308M)", "vit_h": "SAM ViT-H (636M)",
    "tiny": "samflow's shipped small SAM (256 px)", "mobile_sam": "MobileSAM (TinyViT-5M encoder)",
    "sam_hq_vit_b": "HQ-SAM ViT-B", "sam_hq_vit_l": "HQ-SAM ViT-L", "sam_hq_vit_h": "HQ-SAM ViT-H",
    "sam_hq_vit_tiny": "Light HQ-SAM (TinyViT encoder)",
}


def presets_help() -> str:
    """The presets by family, for parameter docs: 'sam: vit_b, vit_l, vit_h, tiny; mobile_sam: ...'."""
    by_family: dict[str, list[str]] = {}
    for name, config in PRESETS.items():
        by_family.setdefault(config.family, []).append(name)
    return "; ".join(f"{family}: {', '.join(names)}" for family, names in by_family.items())

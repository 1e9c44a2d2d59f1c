"""SamConfig: every size of a SAM model as data, with the official presets."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The official pixel statistics (ImageNet, 0..255 scale).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class SamConfig(BaseModel):
    """Sizes of the image encoder, prompt encoder and mask decoder.

    Defaults are the official ones; the encoder sizes default to vit_b. `image_size` is the long side the image is
    resized and padded to; the embedding grid is `image_size // patch_size` on each side.
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

    @model_validator(mode="after")
    def _check_sizes(self) -> SamConfig:
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

    @property
    def embedding_size(self) -> int:
        """Side of the image-embedding grid (64 for the official models)."""
        return self.image_size // self.patch_size

    @classmethod
    def preset(cls, name: str) -> SamConfig:
        """The config of a named model: vit_b, vit_l, vit_h (official) or tiny (samflow's shipped default)."""
        try:
            return PRESETS[name]
        except KeyError:
            raise KeyError(f"unknown SAM preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None

    def describe(self) -> str:
        """Human description of the encoder size, e.g. '32 encoder blocks of width 1280'."""
        return f"{self.encoder_depth} encoder blocks of width {self.encoder_embed_dim}"


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
}

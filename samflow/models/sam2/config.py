"""Sam2Config: the sizes of a SAM 2 image model (Hiera trunk, FPN neck, SAM heads) as data, with the released presets.

The released SAM 2.0 and SAM 2.1 checkpoints share the image path exactly (the configs differ only in video-memory
options), so a 2.0 and a 2.1 preset of one size build the same image model; `version` names which release layout a
checkpoint is expected to have (2.1 adds the memory-side keys `no_obj_embed_spatial` and `obj_ptr_tpos_proj.*`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# SAM 2's pixel statistics, on the 0..1 scale (after ToTensor).
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


class Sam2Config(BaseModel):
    """Sizes of the Hiera image encoder, its FPN neck, the prompt encoder and the mask decoder.

    Field names follow the official hydra configs (`sam2/configs/sam2.1/*.yaml`); defaults are the official ones
    (the trunk defaults are Hiera-B+). `image_size` is the side the image is resized to (a square); the image
    embedding grid is `image_size // 16` on each side, the high-resolution features are 4x and 2x finer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal["2.0", "2.1"] = "2.1"
    # Hiera trunk
    embed_dim: int = Field(112, gt=0)
    num_heads: int = Field(2, gt=0)
    stages: tuple[int, int, int, int] = (2, 3, 16, 3)
    global_att_blocks: tuple[int, ...] = (12, 16, 20)
    window_spec: tuple[int, int, int, int] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    dim_mul: float = Field(2.0, gt=0)
    head_mul: float = Field(2.0, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    # FPN neck
    d_model: int = Field(256, gt=0)
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    fpn_interp_model: Literal["nearest", "bilinear", "bicubic"] = "nearest"
    fuse_type: Literal["sum", "avg"] = "sum"
    # SAM heads
    image_size: int = Field(1024, gt=0)
    mask_in_chans: int = Field(16, gt=0)
    decoder_depth: int = Field(2, gt=0)
    decoder_mlp_dim: int = Field(2048, gt=0)
    decoder_num_heads: int = Field(8, gt=0)
    num_multimask_outputs: int = Field(3, gt=0)
    iou_head_depth: int = Field(3, gt=0)
    iou_head_hidden_dim: int = Field(256, gt=0)
    pred_obj_scores_mlp: bool = True
    # build_sam2's default post-processing: a single mask that is unstable falls back to the best of the three
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD

    @model_validator(mode="after")
    def _check_sizes(self) -> Sam2Config:
        depth = sum(self.stages)
        if min(self.stages) < 1:
            raise ValueError(f"every Hiera stage needs at least one block; stages={self.stages}")
        bad = [i for i in self.global_att_blocks if not 0 <= i < depth]
        if bad:
            raise ValueError(f"global_att_blocks {bad} lie outside 0..{depth - 1}")
        for stage in range(4):
            dim, heads = self.stage_dims[stage], self.stage_heads[stage]
            if dim % heads:
                raise ValueError(f"stage {stage + 1} width {dim} is not divisible by its {heads} heads")
        if self.image_size % 32:
            raise ValueError(f"image_size={self.image_size} is not a multiple of 32 (the trunk's last stride)")
        if self.window_spec[0] and (self.image_size // 4) % self.window_spec[0]:
            raise ValueError(f"the first stage's grid {self.image_size // 4} is not a multiple of its window "
                             f"{self.window_spec[0]} (the windowed positional embedding is tiled over it)")
        if any(w % 2 for w in self.window_spec[:3] if w):
            raise ValueError(f"the windows of stages 1-3 must be even (query pooling halves them): {self.window_spec}")
        pooling = [sum(self.stages[:i]) for i in (1, 2, 3)]
        if set(pooling) & set(self.global_att_blocks):
            raise ValueError(f"global_att_blocks {self.global_att_blocks} include a block that pools (the first of "
                             f"stages 2-4: {pooling}), which the official Hiera cannot run")
        if not set(self.fpn_top_down_levels) <= {0, 1, 2, 3}:
            raise ValueError(f"fpn_top_down_levels {self.fpn_top_down_levels} must lie in 0..3")
        if self.d_model % 8 or self.mask_in_chans % 4:
            raise ValueError("d_model must be a multiple of 8 and mask_in_chans of 4")
        return self

    @property
    def family(self) -> str:
        """The model family (an image embedding is decoded only by a model of its own family)."""
        return "sam2"

    def identity_json(self) -> str:
        """The config as JSON, for the model's fingerprint (`samflow.models.sam.model_fingerprint`: cache keys)."""
        return self.model_dump_json()

    @property
    def depth(self) -> int:
        return sum(self.stages)

    @property
    def stage_dims(self) -> tuple[int, int, int, int]:
        """Channel width of each trunk stage (the neck's inputs, finest first)."""
        return tuple(int(self.embed_dim * self.dim_mul**i) for i in range(4))  # type: ignore[return-value]

    @property
    def stage_heads(self) -> tuple[int, int, int, int]:
        return tuple(int(self.num_heads * self.head_mul**i) for i in range(4))  # type: ignore[return-value]

    @property
    def embedding_size(self) -> int:
        """Side of the image-embedding grid (64 for the released models)."""
        return self.image_size // 16

    def describe(self) -> str:
        """e.g. 'a Hiera trunk of 12 blocks (1, 2, 7, 2) from width 96'."""
        return f"a Hiera trunk of {self.depth} blocks {self.stages} from width {self.embed_dim}"

    @classmethod
    def preset(cls, name: str) -> Sam2Config:
        try:
            return PRESETS[name]
        except KeyError:
            raise KeyError(f"unknown SAM 2 preset {name!r}; known: {', '.join(PRESETS)}") from None


# The trunk sizes of the four released models (sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml; the sam2/
# configs of release 2.0 have the same trunks).
_SIZES: dict[str, dict] = {
    "hiera_tiny": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
                       window_pos_embed_bkg_spatial_size=(7, 7)),
    "hiera_small": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
                        window_pos_embed_bkg_spatial_size=(7, 7)),
    "hiera_base_plus": dict(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3), global_att_blocks=(12, 16, 20),
                            window_pos_embed_bkg_spatial_size=(14, 14)),
    "hiera_large": dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
                        window_pos_embed_bkg_spatial_size=(7, 7), window_spec=(8, 4, 16, 8)),
}

PRESETS: dict[str, Sam2Config] = {
    f"{prefix}_{size}": Sam2Config(version=version, **fields)
    for prefix, version in (("sam2.1", "2.1"), ("sam2", "2.0"))
    for size, fields in _SIZES.items()
}


def preset_name(config: Sam2Config) -> str | None:
    """The preset with `config`'s trunk sizes and release, if any."""
    keys = ("embed_dim", "num_heads", "stages", "global_att_blocks", "window_spec",
            "window_pos_embed_bkg_spatial_size", "image_size", "version")
    for name, preset in PRESETS.items():
        if all(getattr(preset, k) == getattr(config, k) for k in keys):
            return name
    return None

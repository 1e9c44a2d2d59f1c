"""Per-prompt image tokens kept factored (samflow.models.sam.factored_tokens) equal the materialised ones."""

from __future__ import annotations

import pytest
import torch

from samflow.models.sam.factored_tokens import FactoredImageTokens
from samflow.models.sam.mask_decoder import PROMPT_CHUNK, MaskDecoder
from samflow.models.sam.transformer import TwoWayTransformer


def _decoder(seed: int, dim: int = 64, depth: int = 2, heads: int = 4) -> MaskDecoder:
    torch.manual_seed(seed)
    decoder = MaskDecoder(transformer_dim=dim, transformer=TwoWayTransformer(depth=depth, embedding_dim=dim,
                                                                              num_heads=heads, mlp_dim=128))
    with torch.no_grad():  # layer norms with gains and shifts far from their initial 1 and 0
        for m in decoder.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.3, 2.0)
                m.bias.normal_(0.0, 0.5)
    return decoder.eval()


def _inputs(batch: int, dim: int, grid: int = 16, tokens: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(1, dim, grid, grid, generator=g) * 2.0 + 0.5
    pe = torch.randn(1, dim, grid, grid, generator=g)
    sparse = torch.randn(batch, tokens, dim, generator=g)
    dense = torch.randn(1, dim, 1, 1, generator=g).expand(1, dim, grid, grid)  # the no-mask embedding's form
    return image, pe, sparse, dense


def _both(decoder: MaskDecoder, image, pe, sparse, dense, index=None):
    with torch.inference_mode():
        tokens, image_tokens = decoder.attend(image, pe, sparse, dense)
        masks = decoder.masks_from_tokens(tokens, image_tokens, image.shape[-2:], index)
        assert isinstance(image_tokens, FactoredImageTokens)
        materialised = image_tokens.dense()
        decoder.factored_image_tokens = False
        try:
            ref_tokens, ref_image_tokens = decoder.attend(image, pe, sparse, dense)
            ref_masks = decoder.masks_from_tokens(ref_tokens, ref_image_tokens, image.shape[-2:], index)
        finally:
            del decoder.factored_image_tokens
    return (tokens, materialised, masks), (ref_tokens, ref_image_tokens, ref_masks)


@pytest.mark.parametrize("batch", [1, 3, PROMPT_CHUNK + 3])  # one prompt, a chunk, chunks concatenated
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_factored_tokens_equal_the_materialised_ones(batch, depth):
    decoder = _decoder(seed=depth, depth=depth)
    image, pe, sparse, dense = _inputs(batch, 64, seed=batch)
    (tokens, image_tokens, masks), (ref_tokens, ref_image_tokens, ref_masks) = _both(decoder, image, pe, sparse,
                                                                                     dense)
    assert not isinstance(ref_image_tokens, FactoredImageTokens)
    scale = ref_image_tokens.abs().max().item()
    torch.testing.assert_close(image_tokens, ref_image_tokens, rtol=0, atol=2e-5 * scale)
    n_out = decoder.output_token_weights().shape[0]  # the learned output tokens: all the decoder reads
    assert tokens.shape[1] == n_out < ref_tokens.shape[1]
    torch.testing.assert_close(tokens, ref_tokens[:, :n_out], rtol=0, atol=2e-5 * ref_tokens.abs().max().item())
    torch.testing.assert_close(masks, ref_masks, rtol=0, atol=2e-5 * ref_masks.abs().max().item())
    with torch.inference_mode():
        torch.testing.assert_close(decoder.predict_iou(tokens), decoder.predict_iou(ref_tokens), rtol=1e-5,
                                   atol=1e-5)


def test_picked_prompts_and_reuse_for_the_same_image():
    decoder = _decoder(seed=7)
    image, pe, sparse, dense = _inputs(5, 64, seed=3)
    index = torch.tensor([4, 1])
    (_, _, masks), (_, _, ref_masks) = _both(decoder, image, pe, sparse, dense, index)
    assert masks.shape[0] == 2
    torch.testing.assert_close(masks, ref_masks, rtol=0, atol=2e-5 * ref_masks.abs().max().item())
    with torch.inference_mode():  # a second call on the same image reuses its cached products, same result
        cache = decoder.transformer._factored_cache
        tokens, image_tokens = decoder.attend(image, pe, sparse, dense)
        assert decoder.transformer._factored_cache is cache
        torch.testing.assert_close(decoder.masks_from_tokens(tokens, image_tokens, image.shape[-2:], index), masks,
                                   rtol=0, atol=0)


def test_not_factored_where_the_tokens_must_be_materialised():
    decoder = _decoder(seed=2)
    image, pe, sparse, dense = _inputs(2, 64)
    with torch.no_grad():  # a per-prompt dense embedding (a mask prompt): no shared image
        _, image_tokens = decoder.attend(image, pe, sparse, dense.expand(2, -1, -1, -1).contiguous())
    assert isinstance(image_tokens, torch.Tensor)
    with torch.enable_grad():  # training: autograd goes through the materialised path
        _, image_tokens = decoder.attend(image, pe, sparse, dense)
    assert isinstance(image_tokens, torch.Tensor) and image_tokens.requires_grad
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, image_tokens = decoder.attend(image, pe, sparse, dense)
    assert isinstance(image_tokens, torch.Tensor)

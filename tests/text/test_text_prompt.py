"""Text prompts in SAM's decoder: adapter tokens beside point and box tokens in one forward pass; the adapter file."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samflow.errors import CheckpointError, InputError
from samflow.models.text.adapter import (
    AdapterConfig,
    PromptAdapter,
    adapter_path_for,
    load_adapter,
    save_adapter,
)
from samflow.predict.predictor import SamPredictor
from samflow.predict.text import TextSamPredictor


@pytest.fixture
def adapter():
    torch.manual_seed(1)
    return PromptAdapter(AdapterConfig(clip_dim=32, num_tokens=2)).eval()


@pytest.fixture
def predictor(small_sam, adapter):
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    p = TextSamPredictor(small_sam, adapter=adapter)
    p.set_image(image)
    return p


def _embeddings(n=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, 32, generator=g), dim=-1)


def _tokens(adapter, sam, features, n=1, seed=0):
    with torch.no_grad():
        return adapter.prompt_tokens(_embeddings(n, seed), sam, features)


def test_text_and_point_in_one_decoder_call(predictor, adapter, small_sam):
    seen = []
    hook = small_sam.mask_decoder.register_forward_hook(
        lambda module, args, kwargs, out: seen.append(kwargs["sparse_prompt_embeddings"].shape), with_kwargs=True)
    try:
        masks, scores, logits = predictor.predict(point_coords=np.array([[60.0, 40.0]]), point_labels=np.array([1]),
                                                  text_embeddings=_embeddings(), multimask_output=False)
    finally:
        hook.remove()
    assert masks.shape == (1, 90, 120) and scores.shape == (1,) and logits.shape == (1, 32, 32)
    # One forward pass whose sparse tokens are the click and its padding token, then the text's located click,
    # its padding token and two content tokens.
    assert seen == [torch.Size([1, 6, 256])]


def test_text_changes_the_point_result_and_without_text_nothing_changes(predictor, adapter, small_sam):
    point = {"point_coords": np.array([[60.0, 40.0]]), "point_labels": np.array([1])}
    plain = SamPredictor(small_sam)
    plain.set_image_embedding(predictor.get_encoded())
    base = plain.predict(**point)[2]
    assert np.allclose(predictor.predict(**point)[2], base)  # no text: exactly SamPredictor
    with_text = predictor.predict(**point, text_embeddings=_embeddings())[2]
    assert not np.allclose(with_text, base)


def test_batched_text_sets_broadcast_with_one_box(predictor, adapter):
    masks, scores, logits = predictor.predict(box=np.array([10, 10, 80, 70]), text_embeddings=_embeddings(3))
    assert masks.shape == (3, 3, 90, 120) and scores.shape == (3, 3)
    tokens = _tokens(adapter, predictor.model, predictor.features)
    masks, _, _ = predictor.predict(text_tokens=tokens[0])  # text alone, as (T, C) tokens
    assert masks.shape == (3, 90, 120)
    with pytest.raises(InputError, match="need equal counts"):
        predictor.predict(box=np.array([[10, 10, 80, 70], [0, 0, 20, 20]]), text_embeddings=_embeddings(3))
    with pytest.raises(InputError, match="prompt tokens"):
        predictor.predict(text_tokens=torch.zeros(1, 2, 64))
    with pytest.raises(InputError, match="needs the text models"):
        predictor.predict(text="a red star")


def test_soft_clicks_follow_the_heat_map(adapter, small_sam):
    """A click query that matches one cell's features puts the soft click's positional part at that cell."""
    features = torch.zeros(1, 256, 8, 8)
    features[0, :, 2, 5] = 1.0
    with torch.no_grad():
        adapter.key.weight.copy_(torch.eye(256))
        adapter.key.bias.zero_()
        adapter.log_scale.fill_(4.0)
        queries = torch.ones(1, adapter.config.num_clicks, 256)
        heat = adapter.heatmaps(queries, features).softmax(-1)
    assert int(heat[0, 0].argmax()) == 2 * 8 + 5 and float(heat[0, 0].max()) > 0.99


def test_heat_maps_equal_projecting_every_cell(adapter):
    """The queries are folded through the key projection; the logits are those of projecting each cell."""
    adapter = copy.deepcopy(adapter).double()
    torch.manual_seed(0)
    features = torch.randn(3, 256, 8, 8, dtype=torch.float64)
    queries = torch.randn(3, adapter.config.num_clicks, 256, dtype=torch.float64)
    with torch.no_grad():
        adapter.key.bias.normal_()
        keys = adapter.key(features.flatten(2).transpose(1, 2))  # (N, hw, C)
        scale = adapter.log_scale.exp() / 256 ** 0.5
        torch.testing.assert_close(adapter.heatmaps(queries, features), queries @ keys.transpose(1, 2) * scale)


def test_context_keys_add_what_a_cells_neighbourhood_says():
    """With conv context layers, a cell's key is its linear key plus the conv stack's output there; the stack
    starts at zero (the linear adapter), and its keys are reused for one image only while nothing changed."""
    torch.manual_seed(0)
    adapter = PromptAdapter(AdapterConfig(clip_dim=32, key_layers=2, key_channels=8)).double().eval()
    features = torch.randn(2, 256, 8, 8, dtype=torch.float64)
    queries = torch.randn(2, 1, 256, dtype=torch.float64)
    scale = adapter.log_scale.exp() / 256 ** 0.5

    def expected():
        keys = adapter.key(features.flatten(2).transpose(1, 2)) + adapter.key_context(features).flatten(2).transpose(1, 2)
        return queries @ keys.transpose(1, 2) * scale

    with torch.no_grad():
        linear = adapter.key(features.flatten(2).transpose(1, 2))
        torch.testing.assert_close(adapter.heatmaps(queries, features), queries @ linear.transpose(1, 2) * scale)
        adapter.key_context[-1].weight.normal_()  # a weight changed: the kept keys are stale
        torch.testing.assert_close(adapter.heatmaps(queries, features), expected())
        assert not torch.allclose(expected(), queries @ linear.transpose(1, 2) * scale)
        features.mul_(-1)  # the features changed in place
        torch.testing.assert_close(adapter.heatmaps(queries, features), expected())
    # Training (gradients on) always computes them, and the gradient reaches the conv stack.
    adapter.heatmaps(queries, features).sum().backward()
    assert adapter.key_context[-1].weight.grad is not None


def test_adapter_with_context_layers_round_trips(tmp_path):
    torch.manual_seed(0)
    adapter = PromptAdapter(AdapterConfig(clip_dim=32, key_layers=1, key_channels=8)).eval()
    with torch.no_grad():
        adapter.key_context[-1].weight.normal_()
    loaded = load_adapter(save_adapter(adapter, tmp_path / "a_text_adapter.safetensors"))
    assert loaded.config.key_layers == 1
    features, queries = torch.randn(1, 256, 8, 8), torch.randn(1, 1, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded.heatmaps(queries, features), adapter.heatmaps(queries, features))


def test_caption_table_mixes_in_captions_of_the_right_names():
    from samflow.train.text_adapter_data import CaptionTable, template_embeddings

    class FakeClip:  # one embedding per text: its templates and names stay tellable apart
        def embed_text(self, texts):
            return F.normalize(torch.stack([torch.tensor([float(len(t)), float(sum(map(ord, t)) % 97), 1.0] + [0.0] * 29)
                                            for t in texts]), dim=-1)

    adapter = PromptAdapter(AdapterConfig(clip_dim=32))
    names = ["red star", "blue ring", "red star"]
    table = CaptionTable(*template_embeddings(FakeClip(), names), adapter)
    assert table.table.shape[:2] == (2, 6)
    images = torch.full((300, 32), 5.0)
    rows = [names[i % 3] for i in range(300)]
    mixed = table.mix(images, rows, 0.5, torch.Generator().manual_seed(0))
    replaced = (mixed != 5.0).any(1)
    assert 100 < int(replaced.sum()) < 200  # about half
    for i in torch.nonzero(replaced).flatten().tolist():
        assert any(torch.equal(mixed[i], row) for row in table.table[table.row[rows[i]]])
    assert torch.equal(table.mix(images, rows, 0.0, torch.Generator()), images)


def test_adapter_file_round_trip_and_errors(adapter, tmp_path):
    adapter.text_shift.fill_(0.1)
    path = save_adapter(adapter, adapter_path_for(tmp_path / "sam_small.safetensors"))
    assert path.name == "sam_small_text_adapter.safetensors"
    loaded = load_adapter(path)
    assert loaded.config == adapter.config
    features = torch.randn(1, 256, 8, 8)
    sam = _sam_like()
    assert torch.allclose(_tokens(loaded, sam, features), _tokens(adapter, sam, features))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_adapter(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a samflow text prompt adapter"):
        load_adapter(tmp_path / "other.safetensors")


def test_text_tokens_for_refuses_another_clip(adapter, small_sam):
    from samflow.predict.text import text_tokens_for

    adapter = PromptAdapter(adapter.config.model_copy(update={"clip_fingerprint": "abc"}))
    features = torch.randn(1, 256, 8, 8)
    tokens = text_tokens_for(adapter, np.ones((2, 32), np.float32) / 32**0.5, "abc", small_sam, features)
    assert tokens.shape == (2, 4, 256) and tokens.dtype == small_sam.dtype
    with pytest.raises(InputError, match="another CLIP"):
        text_tokens_for(adapter, np.ones((1, 32), np.float32), "xyz", small_sam, features)


def test_hook_needs_the_image_and_refuses_other_sam_weights(adapter, small_sam, clip_file):
    from samflow.models.text.clip_loading import load_clip
    from samflow.predict.text import TextModels, text_prompt_tokens

    clip = load_clip(None, clip_file)
    models = TextModels(clip, PromptAdapter(adapter.config.model_copy(update={"sam_fingerprint": "other"})))
    features = torch.randn(1, 256, 8, 8)
    with pytest.raises(InputError, match="image_embeddings"):
        text_prompt_tokens("a red star", small_sam, models=models)
    with pytest.raises(CheckpointError, match="no text prompt adapter for this SAM model"):
        text_prompt_tokens("a red star", small_sam, features, models=models)
    ok = TextModels(clip, adapter)
    assert text_prompt_tokens("a red star", small_sam, features, models=ok).shape == (1, 4, 256)


def _sam_like():
    from text_testing import SMALL_SAM

    from samflow.models.sam import build_sam

    return build_sam(SMALL_SAM, device="cpu")


def test_adapter_refuses_an_embedding_of_another_grid(adapter, small_sam):
    h, w = small_sam.prompt_encoder.image_embedding_size
    with pytest.raises(InputError, match="does not match"):
        adapter(torch.zeros(1, adapter.config.clip_dim), small_sam, torch.zeros(1, 256, h + 1, w))

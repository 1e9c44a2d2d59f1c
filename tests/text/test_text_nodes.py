"""clip.text, sam.decoder's text input and clip.rank as graph nodes; graphs/text_to_mask.yaml with --set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from text_testing import SMALL_SAM, needs_shipped_text

from samflow.engine.graph import Graph
from samflow.engine.types import Image, Masks, TextEmbedding
from samflow.models.text.adapter import AdapterConfig, PromptAdapter, save_adapter
from samflow.models.text.clip_loading import load_clip

GRAPH = Path(__file__).resolve().parents[2] / "graphs" / "text_to_mask.yaml"


@pytest.fixture
def picture():
    data = np.full((64, 80, 3), 120, dtype=np.uint8)
    data[10:40, 20:60] = (220, 30, 30)
    return Image(data)


@pytest.fixture
def adapter_file(tmp_path, clip_file):
    torch.manual_seed(0)
    clip = load_clip(None, clip_file)
    adapter = PromptAdapter(AdapterConfig(clip_dim=32, clip_fingerprint=clip.fingerprint))
    return save_adapter(adapter, tmp_path / "adapter.safetensors")


def _text(ctx, clip_file, text="a red square"):
    from samflow.nodes.clip import ClipText

    return ClipText({"text": text, "model": None, "checkpoint": str(clip_file), "device": "cpu"}).run(ctx)["text"]


def test_clip_text_node(ctx, clip_file):
    text = _text(ctx, clip_file, text=["a red square", "a blue ring"])
    assert isinstance(text, TextEmbedding) and text.data.shape == (2, 32) and len(text) == 2
    assert np.allclose(np.linalg.norm(text.data, axis=1), 1, atol=1e-5)
    assert text.model_key == text.model.fingerprint
    assert text.to_record()["texts"] == ["a red square", "a blue ring"]


def test_decoder_text_input_with_points(ctx, clip_file, adapter_file, picture):
    from samflow.nodes.sam import SamDecoder, SamEncoder

    from samflow.engine.types import Points
    from samflow.predict.predictor import EncodedImage
    from samflow.predict.text import TextSamPredictor, get_adapter

    torch.manual_seed(0)
    embedding = SamEncoder({"model": SMALL_SAM, "device": "cpu"}).run(ctx, image=picture)["embedding"]
    text = _text(ctx, clip_file)
    points = Points([[40.0, 25.0]], [1])
    decoder = SamDecoder({"multimask": False, "text_adapter": str(adapter_file)})
    out = decoder.run(ctx, embedding=embedding, points=points, text=text)
    assert out["masks"].data.shape == (1, 1, 64, 80)
    # The same as the predictor given the adapter's tokens and the click in one call.
    adapter = get_adapter(adapter_file, "cpu", pool=ctx.models)
    predictor = TextSamPredictor(embedding.model)
    predictor.set_image_embedding(EncodedImage(embedding.features, embedding.original_size, embedding.input_size))
    with torch.no_grad():
        tokens = adapter.prompt_tokens(torch.as_tensor(text.data), embedding.model, embedding.features)
    _, _, logits = predictor.predict(point_coords=points.coords[0], point_labels=points.labels[0],
                                     text_tokens=tokens, multimask_output=False)
    assert np.allclose(out["logits"].data[0], logits, atol=1e-5)
    # Without text, the decoder is unchanged (and its batch key has no text part).
    plain = SamDecoder({"multimask": False}).run(ctx, embedding=embedding, points=points)
    assert not np.allclose(plain["logits"].data, out["logits"].data)


def test_clip_rank_node_keeps_nothing_above_an_unreachable_threshold(ctx, clip_file, picture):
    from samflow.nodes.clip import ClipRank

    masks = np.zeros((3, 2, 64, 80), dtype=bool)
    masks[0, 0, 10:40, 20:60] = True
    masks[1, 1, 0:20, 0:20] = True
    masks[2, 0, 30:60, 50:80] = True
    text = _text(ctx, clip_file)
    nothing = ClipRank({"threshold": 1.0}).run(ctx, image=picture, masks=Masks(masks), text=text)
    assert nothing["masks"].data.shape == (0, 1, 64, 80) and nothing["scores"].values.shape == (0, 1)
    some = ClipRank({"threshold": -1.0, "top_k": 2}).run(ctx, image=picture, masks=Masks(masks), text=text)
    assert some["masks"].data.shape == (2, 1, 64, 80)
    assert some["scores"].values[0, 0] >= some["scores"].values[1, 0]
    # The proposals' own scores (SAM's predicted IoU) weigh in the order; weighed heavily, they decide it.
    sure = Masks(masks, np.array([[0.1, 0.0], [0.0, 0.9], [0.5, 0.0]], dtype=np.float32))
    by_quality = ClipRank({"threshold": -1.0, "top_k": 3, "quality_weight": 100.0}).run(
        ctx, image=picture, masks=sure, text=text)["masks"].data[:, 0]
    np.testing.assert_array_equal(by_quality, np.stack([masks[1, 1], masks[2, 0], masks[0, 0]]))


def test_text_graph_validates_and_set_overrides_the_prompt():
    graph = Graph.load(GRAPH, overrides={"prompt.text": "a blue ring"})
    assert graph.nodes["prompt"].params.text == "a blue ring"
    assert graph.nodes["segment"].inputs["text"] is not None


@needs_shipped_text
def test_samflow_run_text_graph(tmp_path):
    from samflow.cli import main
    from samflow.data.synthetic import render_scene, scene_rng

    scene = render_scene(scene_rng(7, 1))
    from PIL import Image as PILImage

    PILImage.fromarray(scene.image).save(tmp_path / "scene.png")
    name = f"{scene.annotations[0]['color']} {scene.annotations[0]['shape']}"
    code = main(["run", str(GRAPH), "--input", f"image={tmp_path / 'scene.png'}", "--out", str(tmp_path / "out"),
                 "--set", f"prompt.text=a {name}", "--no-progress"])
    assert code == 0
    assert (tmp_path / "out" / "scene" / "overlay_text.png").is_file()

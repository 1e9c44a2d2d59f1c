"""The SAM family in the engine: embeddings carry their family (and HQ-SAM's early features), decoders refuse another
family's embeddings (at validation and at run time, naming both), cache keys include the family, the presets are
listed by `samflow nodes` and shown by `samflow graph`, and the one-call API takes HQ-SAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samflow.engine.cache import EmbeddingCache
from samflow.engine.graph import Graph
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import Image, ImageEmbedding, Points
from samflow.engine.validation import GraphValidationError
from samflow.errors import InputError, NodeError

SMALL_SAM = {"encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2, "encoder_global_attn_indexes": [1],
             "image_size": 128, "window_size": 4}
SMALL_HQ = {**SMALL_SAM, "hq": True}


@pytest.fixture
def picture():
    rng = np.random.default_rng(3)
    data = rng.integers(0, 80, (60, 90, 3), dtype=np.uint8)
    data[10:40, 20:60] = 220
    return Image(data)


def _encode(ctx, picture, model):
    from samflow.nodes.sam import SamEncoder

    torch.manual_seed(0)
    return SamEncoder({"model": model, "device": "cpu"}).run(ctx, image=picture)["embedding"]


def _graph(encoder_model, **decoder_params) -> Graph:
    g = Graph()
    image = g.input("image", Image)
    points = g.input("points", Points)
    enc = g.add("sam.encoder", "enc", params={"model": encoder_model, "device": "cpu"}, image=image)
    dec = g.add("sam.decoder", "dec", params=decoder_params, embedding=enc.embedding, points=points)
    g.output("masks", dec.masks)
    g.output("scores", dec.scores)
    return g


def test_encoder_takes_the_new_presets_and_lists_them():
    from samflow.nodes.sam import EncoderParams, SamEncoder

    for name in ("mobile_sam", "sam_hq_vit_b", "sam_hq_vit_l", "sam_hq_vit_h", "sam_hq_vit_tiny"):
        assert EncoderParams(model=name).model == name
    with pytest.raises(ValueError, match="unknown SAM preset 'sam_hq_vit_x'.*sam_hq_vit_b"):
        EncoderParams(model="sam_hq_vit_x")
    doc = SamEncoder.describe()["params"]["model"]["doc"]  # what `samflow nodes` prints
    assert "mobile_sam: mobile_sam" in doc and "sam_hq: sam_hq_vit_b, sam_hq_vit_l, sam_hq_vit_h" in doc
    assert "vit_b" in doc and "tiny" in doc


def test_hq_embedding_carries_family_and_early_features(ctx, picture):
    embedding = _encode(ctx, picture, SMALL_HQ)
    assert embedding.family == "sam_hq" and embedding.interm.shape == (1, 8, 8, 32)
    assert embedding.nbytes == (256 + 32) * 64 * 4
    tensors, meta = embedding.to_state()  # the disk cache's form keeps both
    back = ImageEmbedding.from_state(tensors, meta)
    assert back.family == "sam_hq" and torch.equal(back.interm, embedding.interm)
    assert _encode(ctx, picture, SMALL_SAM).family == "sam"


def test_cache_keys_include_the_family(ctx, picture):
    from samflow.nodes.sam import SamEncoder

    from samflow.engine.cache import content_key
    from samflow.models.sam import model_fingerprint
    from samflow.predict.embeddings import encoder_cache_key

    plain, hq = SamEncoder({"model": SMALL_SAM, "device": "cpu"}), SamEncoder({"model": SMALL_HQ, "device": "cpu"})
    assert plain.cache_key(ctx, image=picture) != hq.cache_key(ctx, image=picture)
    model = plain.model(ctx)
    key = encoder_cache_key(model, picture)
    assert plain.cache_key(ctx, image=picture) == key  # the node's key is the library's
    assert key == content_key("sam.encoder", "sam", model_fingerprint(model), picture)


def test_validation_refuses_another_family_naming_both():
    with pytest.raises(GraphValidationError, match=r"\$enc.embedding is a mobile_sam embedding \(sam.encoder "
                                                   r"model: mobile_sam\) but this decoder is for sam_hq"):
        _graph("mobile_sam", family="sam_hq")
    with pytest.raises(GraphValidationError, match="hq_token_only needs a sam_hq"):
        _graph("vit_b", hq_token_only=True)
    _graph("sam_hq_vit_b", family="sam_hq", hq_token_only=True)  # the same family validates
    _graph(SMALL_HQ, family="sam_hq")  # SamConfig fields say their family too
    text = """
samflow: 1
inputs: {image: Image, points: Points}
nodes:
  enc: {type: sam.encoder, params: {model: sam_hq_vit_l}, inputs: {image: $inputs.image}}
  dec:
    type: sam.decoder
    params: {family: mobile_sam}
    inputs: {embedding: $enc.embedding, points: $inputs.points}
outputs: {masks: $dec.masks}
"""
    with pytest.raises(GraphValidationError) as err:
        Graph.from_yaml(text, source="g.yaml")
    assert "g.yaml:9" in str(err.value) and "sam_hq embedding" in str(err.value) and "mobile_sam" in str(err.value)


def test_graph_runs_hq_and_refuses_a_mismatch_at_run_time(ctx, picture):
    from samflow.nodes.sam import SamDecoder

    points = Points([[30.0, 20.0]], [1])
    out = Scheduler(_graph(SMALL_HQ, family="sam_hq")).run(image=picture, points=points)
    assert out["masks"].data.shape == (1, 1, 60, 90)  # HQ-SAM: one mask per prompt
    hq = _encode(ctx, picture, SMALL_HQ)
    plain = _encode(ctx, picture, SMALL_SAM)
    mixed = ImageEmbedding(plain.features, plain.original_size, plain.input_size, plain.model_key,
                           plain.image_hash, model=hq.model, family="sam")
    with pytest.raises(NodeError, match="a sam embedding but carries a sam_hq model"):
        SamDecoder({}).run(ctx, embedding=mixed, points=points)
    with pytest.raises(NodeError, match="a sam embedding but this decoder is for mobile_sam"):
        SamDecoder({"family": "mobile_sam"}).run(ctx, embedding=plain, points=points)
    unknown = ImageEmbedding(plain.features, plain.original_size, plain.input_size, plain.model_key,
                             plain.image_hash, model=hq.model)  # no family: the model's, but no early features
    with pytest.raises(InputError, match="needs the embedding's early encoder features"):
        SamDecoder({}).run(ctx, embedding=unknown, points=points)
    got = SamDecoder({"hq_token_only": True}).run(ctx, embedding=hq, points=points)
    assert got["masks"].data.shape == (1, 1, 60, 90)


def test_diagram_shows_the_model():
    from samflow.engine.diagram import to_dot, to_mermaid

    g = _graph("mobile_sam")
    assert "sam.encoder · mobile_sam" in to_mermaid(g) and "sam.encoder · mobile_sam" in to_dot(g)


def test_segment_takes_hq_sam(tmp_path, picture):
    import samflow
    from samflow.errors import CheckpointError
    from samflow.models.sam import SamConfig, build_sam, save_checkpoint
    from samflow.predict.segmenter import Segmenter

    torch.manual_seed(0)
    path = save_checkpoint(build_sam(SMALL_HQ), tmp_path / "hq.safetensors")
    segmenter = Segmenter(EmbeddingCache())
    result = samflow.segment(picture.data, points=[[30, 20]], model=SamConfig(**SMALL_HQ), checkpoint=path,
                             segmenter=segmenter)
    assert result.masks.shape == (1, 60, 90)
    with pytest.raises(CheckpointError, match="this is sam_hq_vit_b"):
        samflow.segment(picture.data, points=[[30, 20]], model="sam_hq_vit_b", checkpoint=path, segmenter=segmenter)

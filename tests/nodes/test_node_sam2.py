"""SAM 2 behind the same nodes and library as the SAM family: `sam.encoder` takes the sam2 presets (and Sam2Config
fields) and its embedding carries the family and the high-resolution features; `sam.decoder` decodes it with SAM 2's
decoder exactly as Sam2Predictor does (Sam2Predictor equals Meta's SAM2ImagePredictor: tests/models/test_sam2.py);
validation and run time refuse mixing families, naming both; cache keys include the family; `sam.auto` runs SAM 2's
generator; the Segmenter (`samflow.segment`, the service) takes SAM 2 models by name or config.

Small random SAM 2 configs keep it fast; the real Hiera-T (random weights saved as a checkpoint) runs once through
a YAML graph and `samflow.segment` by its preset name.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2_reference import perturb_

from samflow.engine.cache import EmbeddingCache, content_key
from samflow.engine.graph import Graph
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import Boxes, Image, ImageEmbedding, MaskLogits, Points, TextEmbedding
from samflow.engine.validation import GraphValidationError
from samflow.errors import CheckpointError, InputError, NodeError
from samflow.models.sam2 import PRESETS, Sam2Config, build_sam2, save_checkpoint
from samflow.predict.sam2_predictor import HIGH_RES_KEYS, Sam2Predictor

# Stage grids 64/32/16/8 at 256 px (test_sam2.py's small_a): an embedding grid of 16, high-res maps of 64 and 32.
SMALL_SAM2 = {"embed_dim": 16, "num_heads": 1, "stages": [1, 2, 3, 2], "global_att_blocks": [4],
              "window_pos_embed_bkg_spatial_size": [7, 7], "image_size": 256}
SMALL_SAM = {"encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2, "encoder_global_attn_indexes": [1],
             "image_size": 128, "window_size": 4}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small SAM 2 with perturbed random weights, saved as samflow's safetensors (the config embedded)."""
    torch.manual_seed(0)
    model = perturb_(build_sam2(Sam2Config(**SMALL_SAM2)), scale=0.05, seed=1)
    return save_checkpoint(model, tmp_path_factory.mktemp("sam2") / "small.safetensors")


@pytest.fixture(scope="module")
def model(checkpoint):
    return build_sam2(Sam2Config(**SMALL_SAM2), checkpoint=checkpoint)


@pytest.fixture
def picture():
    rng = np.random.default_rng(3)
    data = rng.integers(0, 80, (60, 90, 3), dtype=np.uint8)
    data[10:40, 20:60] = 220
    return Image(data)


def _encoder_params(checkpoint, model: object = None) -> dict:
    return {"model": SMALL_SAM2 if model is None else model, "checkpoint": str(checkpoint), "device": "cpu"}


def _encode(ctx, picture, checkpoint) -> ImageEmbedding:
    from samflow.nodes.sam import SamEncoder

    return SamEncoder(_encoder_params(checkpoint)).run(ctx, image=picture)["embedding"]


def _reference(model, picture, **prompts) -> tuple[np.ndarray, ...]:
    predictor = Sam2Predictor(model)
    predictor.set_image(picture.data)
    masks, scores, logits = predictor.predict(**prompts)
    if masks.ndim == 3:
        masks, scores, logits = masks[None], scores[None], logits[None]
    return masks.astype(bool), scores, logits


GRAPH = """
samflow: 1
inputs: {{image: Image, {inputs}}}
nodes:
  enc:
    type: sam.encoder
    params: {{model: {model}, checkpoint: {checkpoint}, device: cpu}}
    inputs: {{image: $inputs.image}}
  dec:
    type: sam.decoder
    params: {{family: sam2, multimask: {multimask}}}
    inputs: {{embedding: $enc.embedding, {prompts}}}
  refine:
    type: sam.decoder
    params: {{multimask: false}}
    inputs: {{embedding: $enc.embedding, {prompts}, masks: $dec.logits}}
outputs: {{masks: $dec.masks, scores: $dec.scores, logits: $dec.logits, refined: $refine.masks,
          refined_logits: $refine.logits}}
"""
KINDS = {"points": "Points", "boxes": "Boxes"}


def _yaml(checkpoint, model: str = "", multimask: bool = True, kinds: tuple[str, ...] = ("points",)) -> Graph:
    """A YAML graph: sam.encoder, sam.decoder (family sam2) on the prompts `kinds`, and a second decoder refining
    the first one's masks (its logits as mask_input)."""
    import json

    text = GRAPH.format(model=model or json.dumps(SMALL_SAM2), checkpoint=checkpoint,
                        multimask=str(multimask).lower(), inputs=", ".join(f"{k}: {KINDS[k]}" for k in kinds),
                        prompts=", ".join(f"{k}: $inputs.{k}" for k in kinds))
    return Graph.from_yaml(text, source="sam2.yaml")


# --- the encoder: presets, embeddings, cache keys -------------------------------------------------------------------


def test_encoder_takes_the_sam2_presets_and_lists_them(capsys):
    from samflow.nodes.sam import EncoderParams, SamEncoder

    from samflow.cli import main

    for name in PRESETS:
        params = EncoderParams(model=name)
        assert SamEncoder.output_facts(params, "embedding") == {"family": "sam2", "model": name}
    custom = EncoderParams(model=SMALL_SAM2)  # Sam2Config fields, told from SamConfig fields by their names
    assert isinstance(custom.model, Sam2Config) and SamEncoder.summary(custom) == "custom sam2"
    assert SamEncoder.output_facts(custom, "embedding") == {"family": "sam2", "model": "Sam2Config fields"}
    with pytest.raises(ValueError, match="unknown SAM preset 'sam2.1_hiera_tinny'.*sam2.1_hiera_tiny"):
        EncoderParams(model="sam2.1_hiera_tinny")
    assert main(["nodes", "sam.encoder"]) == 0  # `samflow nodes` prints the presets by family
    printed = capsys.readouterr().out
    assert ("sam2: sam2.1_hiera_tiny, sam2.1_hiera_small, sam2.1_hiera_base_plus, sam2.1_hiera_large, "
            "sam2_hiera_tiny") in printed and "mobile_sam: mobile_sam" in printed


def test_embedding_carries_family_and_high_res_features(ctx, picture, checkpoint, model):
    embedding = _encode(ctx, picture, checkpoint)
    assert embedding.family == "sam2" and embedding.model.family == "sam2"
    assert embedding.features.shape == (1, 256, 16, 16) and embedding.input_size == (256, 256)
    assert {k: tuple(v.shape) for k, v in embedding.extras.items()} == {
        "high_res_s0": (1, 32, 64, 64), "high_res_s1": (1, 64, 32, 32)}
    assert embedding.nbytes == 4 * (256 * 16 * 16 + 32 * 64 * 64 + 64 * 32 * 32)  # what the cache budget counts
    encoded = Sam2Predictor(model).encode(picture.data)  # the same weights, loaded again: the same features
    assert torch.equal(embedding.features, encoded.features.image_embed)
    assert all(torch.equal(embedding.extras[k], f) for k, f in zip(HIGH_RES_KEYS, encoded.features.high_res_feats))
    tensors, meta = embedding.to_state()  # the disk cache's form keeps all three
    back = ImageEmbedding.from_state(tensors, meta)
    assert back.family == "sam2" and back.extras.keys() == embedding.extras.keys()
    assert all(torch.equal(back.extras[k], embedding.extras[k]) for k in HIGH_RES_KEYS)
    assert embedding.to_record()["extras"] == {"high_res_s0": [1, 32, 64, 64], "high_res_s1": [1, 64, 32, 32]}


def test_cache_keys_include_the_family(ctx, picture, checkpoint):
    from samflow.nodes.sam import SamEncoder

    from samflow.models.sam import model_fingerprint
    from samflow.predict.embeddings import encoder_cache_key

    sam2 = SamEncoder(_encoder_params(checkpoint))
    sam = SamEncoder({"model": SMALL_SAM, "device": "cpu"})
    key = sam2.cache_key(ctx, image=picture)
    model = sam2.model(ctx)
    assert key == encoder_cache_key(model, picture)  # the node's key is the library's
    assert key == content_key("sam.encoder", "sam2", model_fingerprint(model), picture)
    assert key != content_key("sam.encoder", "sam", model_fingerprint(model), picture)
    assert key != sam.cache_key(ctx, image=picture)
    again = build_sam2(checkpoint=checkpoint)  # the same weights in another model object: the same key
    assert encoder_cache_key(again, picture) == key


def test_embeddings_come_back_from_the_disk_cache(tmp_path, picture, checkpoint):
    g = _yaml(checkpoint, kinds=("points", "boxes"))
    prompts = {"points": Points([[30.0, 20.0]], [1]), "boxes": Boxes([[10.0, 5.0, 70.0, 50.0]])}
    first = Scheduler(g, cache=EmbeddingCache(disk_dir=tmp_path / "cache")).run(image=picture, **prompts)
    cache = EmbeddingCache(disk_dir=tmp_path / "cache")  # a new process: only the disk tier is left
    second = Scheduler(g, cache=cache).run(image=picture, **prompts)
    assert cache.stats.disk_hits == 1
    for name in ("masks", "refined"):
        assert np.array_equal(first[name].data, second[name].data)
    assert np.array_equal(first["logits"].data, second["logits"].data)


# --- the decoder: equal to Sam2Predictor ----------------------------------------------------------------------------


def _cases() -> dict[str, dict]:
    return {
        "point": dict(points=Points([[30.0, 20.0]], [1])),
        "points": dict(points=Points([[30.0, 20.0], [70.0, 45.0]], [1, 0])),
        "box": dict(boxes=Boxes([[10.0, 5.0, 70.0, 50.0]])),
        "box_and_point": dict(boxes=Boxes([[10.0, 5.0, 70.0, 50.0]]), points=Points([[40.0, 30.0]], [0])),
        "boxes": dict(boxes=Boxes([[10.0, 5.0, 70.0, 50.0], [0.0, 0.0, 45.0, 30.0], [50.0, 20.0, 89.0, 59.0]])),
    }


def _as_predictor_prompts(points: Points | None = None, boxes: Boxes | None = None) -> dict:
    out = {}
    if points is not None:
        out.update(point_coords=points.coords, point_labels=points.labels)
    if boxes is not None:
        out["box"] = boxes.xyxy
    return out


@pytest.mark.parametrize("case", sorted(_cases()))
@pytest.mark.parametrize("multimask", [True, False])
def test_graph_equals_sam2_predictor(picture, checkpoint, model, case, multimask):
    """A YAML graph (sam.encoder with Sam2Config fields and a checkpoint, sam.decoder, and a second decoder fed the
    first one's logits as mask_input) gives exactly Sam2Predictor's masks, scores and low-res logits."""
    prompts = _cases()[case]
    g = _yaml(checkpoint, multimask=multimask, kinds=tuple(sorted(prompts, reverse=True)))
    out = Scheduler(g).run(image=picture, **prompts)
    kwargs = _as_predictor_prompts(**prompts)
    masks, scores, logits = _reference(model, picture, **kwargs, multimask_output=multimask)
    k = 3 if multimask else 1
    assert out["masks"].data.shape == (masks.shape[0], k, 60, 90) and out["masks"].data.dtype == bool
    assert np.array_equal(out["masks"].data, masks)
    assert np.allclose(out["scores"].values, scores, rtol=0, atol=1e-6)
    assert np.allclose(out["logits"].data, logits, rtol=0, atol=1e-5)
    best = MaskLogits(logits, scores).best()  # what the refining decoder takes
    refined, _, refined_logits = _reference(model, picture, **kwargs, mask_input=best, multimask_output=False)
    assert np.array_equal(out["refined"].data, refined)
    assert np.allclose(out["refined_logits"].data, refined_logits, rtol=0, atol=1e-5)


def test_fused_decoders_equal_separate_calls(ctx, picture, checkpoint, model):
    """Sibling decoders with one embedding and prompts of one layout are fused into one SAM 2 decoder call."""
    from samflow.nodes.sam import SamDecoder

    embedding = _encode(ctx, picture, checkpoint)
    a, b = Points([[30.0, 20.0]], [1]), Points([[70.0, 45.0], [20.0, 50.0]], [1, 1])
    a2 = Points([[60.0, 10.0]], [1])
    one, two = SamDecoder({}), SamDecoder({})
    assert one.batch_key(ctx, embedding=embedding, points=a) == two.batch_key(ctx, embedding=embedding, points=a2)
    fused = SamDecoder.run_batch(ctx, [(one, {"embedding": embedding, "points": a}),
                                       (two, {"embedding": embedding, "points": a2})])
    for got, points in zip(fused, (a, a2)):  # one batch of two prompts: equal up to float noise
        masks, scores, logits = _reference(model, picture, **_as_predictor_prompts(points))
        assert np.allclose(got["scores"].values, scores, atol=1e-5) and np.allclose(got["logits"].data, logits, atol=1e-4)
        assert (got["masks"].data != masks).mean() < 1e-3
    alone = SamDecoder({}).run(ctx, embedding=embedding, points=b)
    masks, _, _ = _reference(model, picture, **_as_predictor_prompts(b))
    assert np.array_equal(alone["masks"].data, masks)
    empty = SamDecoder({}).run(ctx, embedding=embedding, boxes=Boxes(np.zeros((0, 4))))  # nothing to decode
    assert empty["masks"].data.shape == (0, 3, 60, 90) and empty["logits"].data.shape == (0, 3, 64, 64)


# --- mixing families ------------------------------------------------------------------------------------------------


def _graph(encoder_model, **decoder_params) -> Graph:
    g = Graph()
    image = g.input("image", Image)
    points = g.input("points", Points)
    enc = g.add("sam.encoder", "enc", params={"model": encoder_model, "device": "cpu"}, image=image)
    dec = g.add("sam.decoder", "dec", params=decoder_params, embedding=enc.embedding, points=points)
    g.output("masks", dec.masks)
    return g


def test_validation_refuses_mixing_families_naming_both():
    with pytest.raises(GraphValidationError, match=r"\$enc.embedding is a sam2 embedding \(sam.encoder model: "
                                                   r"sam2.1_hiera_tiny\) but this decoder is for sam \(param family\)"):
        _graph("sam2.1_hiera_tiny", family="sam")
    with pytest.raises(GraphValidationError, match=r"\$enc.embedding is a sam embedding \(sam.encoder model: vit_b\) "
                                                   r"but this decoder is for sam2"):
        _graph("vit_b", family="sam2")
    with pytest.raises(GraphValidationError, match=r"is a sam2 embedding \(sam.encoder model: Sam2Config fields\) "
                                                   r"but this decoder is for mobile_sam"):
        _graph(SMALL_SAM2, family="mobile_sam")
    with pytest.raises(GraphValidationError, match="hq_token_only needs a sam_hq"):
        _graph("sam2_hiera_large", hq_token_only=True)
    _graph("sam2_hiera_small", family="sam2")  # the same family validates
    text = """
samflow: 1
inputs: {image: Image, points: Points}
nodes:
  enc: {type: sam.encoder, params: {model: sam2.1_hiera_base_plus}, inputs: {image: $inputs.image}}
  dec:
    type: sam.decoder
    params: {family: sam_hq}
    inputs: {embedding: $enc.embedding, points: $inputs.points}
outputs: {masks: $dec.masks}
"""
    with pytest.raises(GraphValidationError) as err:
        Graph.from_yaml(text, source="g.yaml")
    assert "g.yaml:9" in str(err.value) and "sam2 embedding" in str(err.value) and "sam_hq" in str(err.value)


def test_run_time_refuses_mixing_families_naming_both(ctx, picture, checkpoint):
    from samflow.nodes.sam import SamDecoder, SamEncoder

    from samflow.predict.predictor import EncodedImage, SamPredictor

    points = Points([[30.0, 20.0]], [1])
    sam2 = _encode(ctx, picture, checkpoint)
    torch.manual_seed(0)
    sam = SamEncoder({"model": SMALL_SAM, "device": "cpu"}).run(ctx, image=picture)["embedding"]
    with pytest.raises(NodeError, match="a sam2 embedding but this decoder is for sam "):
        SamDecoder({"family": "sam"}).run(ctx, embedding=sam2, points=points)
    with pytest.raises(NodeError, match="a sam embedding but this decoder is for sam2"):
        SamDecoder({"family": "sam2"}).run(ctx, embedding=sam, points=points)
    forged = ImageEmbedding(sam2.features, sam2.original_size, sam2.input_size, sam2.model_key, sam2.image_hash,
                            model=sam.model, family="sam2", extras=sam2.extras)
    with pytest.raises(NodeError, match="a sam2 embedding but carries a sam model"):
        SamDecoder({}).run(ctx, embedding=forged, points=points)
    with pytest.raises(InputError, match="made by a sam model; this sam2 model cannot decode it"):
        Sam2Predictor(sam2.model).set_image_embedding(EncodedImage.of(sam))
    with pytest.raises(InputError, match="made by a sam2 model; this sam model cannot decode it"):
        SamPredictor(sam.model).set_image_embedding(EncodedImage.of(sam2))
    bare = ImageEmbedding(sam2.features, sam2.original_size, sam2.input_size, sam2.model_key, sam2.image_hash,
                          model=sam2.model, family="sam2")  # without the high-resolution features
    with pytest.raises(InputError, match="lacks SAM 2's high-resolution features"):
        SamDecoder({}).run(ctx, embedding=bare, points=points)
    text = TextEmbedding(np.ones((1, 8), np.float32), ["a mug"], model_key="clip")
    with pytest.raises(NodeError, match="this is a sam2 embedding: prompt SAM 2 with points or boxes"):
        SamDecoder({}).run(ctx, embedding=sam2, text=text)


# --- the automatic mask generator in the graph ----------------------------------------------------------------------


def test_sam_auto_on_a_sam2_embedding(ctx, picture, checkpoint, model):
    from samflow.predict.amg import Sam2AutomaticMaskGenerator

    params = {"points_per_side": 4, "pred_iou_thresh": 0.3, "stability_score_thresh": 0.05, "box_nms_thresh": 1.0,
              "crop_n_layers": 1, "crop_nms_thresh": 1.0}
    g = Graph()
    image = g.input("image", Image)
    enc = g.add("sam.encoder", "enc", params=_encoder_params(checkpoint), image=image)
    auto = g.add("sam.auto", "auto", params=params, embedding=enc.embedding, image=image)
    g.output("masks", auto.masks)
    g.output("stability", auto.stability)
    cache = EmbeddingCache()
    out = Scheduler(g, cache=cache).run(image=picture)
    want = Sam2AutomaticMaskGenerator(model, **params).generate_masks(picture.data)
    assert len(want) >= 10
    assert out["masks"].data.shape == (len(want), 1, 60, 90)
    assert np.array_equal(out["masks"].data[:, 0], want.masks())
    assert np.array_equal(out["masks"].scores[:, 0], want.predicted_iou)
    assert np.array_equal(out["stability"].values[:, 0], want.stability_score)
    assert len(cache) == 5  # the image and its four crops, under the encoder's keys


# --- the Segmenter and samflow.segment ------------------------------------------------------------------------------


def test_segmenter_on_sam2_points_and_boxes(picture, checkpoint, model):
    import samflow
    from samflow.predict.prompts import Prompts
    from samflow.predict.segmenter import Segmenter
    from samflow.predict.textprompt import TextPromptsUnavailable

    segmenter = Segmenter(EmbeddingCache())
    sam2 = segmenter.model(Sam2Config(**SMALL_SAM2), checkpoint=checkpoint, device="cpu")
    assert sam2.family == "sam2" and segmenter.model(sam2) is sam2
    click = segmenter.predict(sam2, picture, Prompts.build(points=[[30, 20]]))
    masks, scores, logits = _reference(model, picture, point_coords=np.array([[30.0, 20.0]]),
                                       point_labels=np.array([1]))
    assert np.array_equal(click.masks, masks) and np.allclose(click.scores, scores, atol=1e-6)
    assert np.allclose(click.logits, logits, atol=1e-5)
    boxes = [[10, 5, 70, 50], [0, 0, 45, 30]]
    result = samflow.segment(picture.data, boxes=boxes, model=Sam2Config(**SMALL_SAM2), checkpoint=checkpoint,
                             device="cpu", segmenter=segmenter)
    masks, scores, _ = _reference(model, picture, box=np.array(boxes, float), multimask_output=False)
    assert result.masks.shape == (2, 60, 90) and np.array_equal(result.masks, masks[:, 0])
    assert np.allclose(result.scores, scores[:, 0], atol=1e-6)
    assert segmenter.stats.encodes == 1 and segmenter.stats.embedding_hits == 1  # the encoder ran once
    with pytest.raises(TextPromptsUnavailable, match="this is a sam2 model"):
        segmenter.predict(sam2, picture, Prompts.build(text="a mug"))
    sam = segmenter.model(samflow.SamConfig(**SMALL_SAM), device="cpu")
    with pytest.raises(InputError, match="made by a sam2 model; this sam model cannot decode it"):
        segmenter.predict(sam, segmenter.embed(sam2, picture), Prompts.build(points=[[30, 20]]))
    with pytest.raises(CheckpointError, match=r"the model being built has a Hiera trunk of 12 blocks"):
        samflow.segment(picture.data, points=[[30, 20]], model="sam2.1_hiera_tiny", checkpoint=checkpoint,
                        segmenter=segmenter)  # the name reaches SAM 2's builder, which checks the checkpoint


@pytest.fixture(scope="module")
def hiera_tiny(tmp_path_factory):
    """The real sam2.1_hiera_tiny (random weights), saved as a checkpoint."""
    torch.manual_seed(0)
    model = build_sam2("sam2.1_hiera_tiny")
    return model, save_checkpoint(model, tmp_path_factory.mktemp("tiny") / "sam2.1_hiera_tiny.safetensors")


def test_hiera_tiny_by_name_in_a_graph_and_in_segment(picture, hiera_tiny):
    import samflow
    from samflow.pool import ModelPool
    from samflow.predict.segmenter import Segmenter

    model, path = hiera_tiny
    pool = ModelPool()
    segmenter = Segmenter(EmbeddingCache(), models=pool)
    result = samflow.segment(picture.data, points=[[30, 20]], model="sam2.1_hiera_tiny", checkpoint=path,
                             device="cpu", segmenter=segmenter)
    masks, scores, _ = _reference(model, picture, point_coords=np.array([[30.0, 20.0]]), point_labels=np.array([1]))
    assert result.masks.shape == (1, 60, 90)
    assert np.array_equal(result.candidates, masks) and np.allclose(result.candidate_scores, scores, atol=1e-6)
    g = _yaml(path, model="sam2.1_hiera_tiny")  # `model: sam2.1_hiera_tiny` in a YAML graph
    out = Scheduler(g, models=pool, cache=segmenter.cache).run(image=picture, points=Points([[30.0, 20.0]], [1]))
    assert np.array_equal(out["masks"].data, masks)
    assert segmenter.stats.encodes == 1 and len(pool) == 1  # one model, one embedding, shared by both


def test_detect_segment_decodes_a_sam2_embedding(ctx, picture, checkpoint, model):
    """Detections on a SAM 2 embedding: one SAM 2 mask per box, as Sam2Predictor gives them (refined too)."""
    from samflow.nodes.detect import SegmentDetections as DetectSegment

    from samflow.engine.types.detect import Detections

    embedding = _encode(ctx, picture, checkpoint)
    boxes = np.array([[20, 10, 60, 40], [0, 0, 45, 30]], np.float32)
    found = Detections(boxes, np.array([0.9, 0.6], np.float32), None, ["a", "b"])
    out = DetectSegment({"multimask": False}).run(ctx, embedding=embedding, detections=found)
    masks, scores, _ = _reference(model, picture, box=boxes, multimask_output=False)
    assert out["masks"].data.shape == masks.shape == (2, 1, 60, 90)
    np.testing.assert_array_equal(out["masks"].data, masks)
    np.testing.assert_allclose(out["scores"].values, scores, rtol=1e-5)
    refined = DetectSegment({"refine": True}).run(ctx, embedding=embedding, detections=found)
    assert refined["masks"].data.shape == (2, 1, 60, 90)
    empty = DetectSegment({}).run(ctx, embedding=embedding, detections=Detections(np.zeros((0, 4), np.float32),
                                                                                   np.zeros(0, np.float32)))
    assert empty["masks"].data.shape[0] == 0

"""sam.encoder / sam.decoder against SamPredictor, decoder fusion, and the mask writers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from samflow.engine.types import Boxes, Image, ImageEmbedding, Masks, Points
from samflow.errors import InputError
from samflow.predict.predictor import SamPredictor

SMALL_SAM = {"encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2, "encoder_global_attn_indexes": [1],
             "image_size": 128, "window_size": 4}


@pytest.fixture
def picture():
    rng = np.random.default_rng(3)
    data = rng.integers(0, 80, (60, 90, 3), dtype=np.uint8)
    data[10:40, 20:60] = 220
    return Image(data)


@pytest.fixture
def embedding(ctx, picture):
    from samflow.nodes.sam import SamEncoder

    torch.manual_seed(0)
    return SamEncoder({"model": SMALL_SAM, "device": "cpu"}).run(ctx, image=picture)["embedding"]


def test_encoder_output_and_cache_key(ctx, picture, embedding):
    from samflow.nodes.sam import SamEncoder

    encoder = SamEncoder({"model": SMALL_SAM, "device": "cpu"})
    assert isinstance(embedding, ImageEmbedding) and embedding.features.shape == (1, 256, 8, 8)
    assert embedding.original_size == (60, 90) and embedding.image_hash == picture.content_hash
    assert encoder.cache_key(ctx, image=picture) == encoder.cache_key(ctx, image=Image(picture.data.copy()))
    other = Image(picture.data[::-1].copy())
    assert encoder.cache_key(ctx, image=picture) != encoder.cache_key(ctx, image=other)
    stored = {"embedding": ImageEmbedding.from_state(*embedding.to_state())}
    restored = encoder.restore(ctx, stored)["embedding"]
    assert restored.model is embedding.model


def test_decoder_matches_predictor_and_fusion_changes_nothing(ctx, picture, embedding):
    from samflow.nodes.sam import SamDecoder

    predictor = SamPredictor(embedding.model)
    predictor.set_image(picture.data)
    points = Points([[30, 20], [70, 35]], [1, 0])
    boxes = Boxes([[15, 5, 65, 45], [0, 0, 30, 30]])
    decoder = SamDecoder({"multimask": True})
    got = decoder.run(ctx, embedding=embedding, points=points)
    masks, scores, logits = predictor.predict(points.coords[0], points.labels[0], multimask_output=True)
    assert np.array_equal(got["masks"].data[0], masks) and np.allclose(got["scores"].values[0], scores, atol=1e-6)
    assert got["logits"].data.shape == (1, 3, 32, 32)
    single = SamDecoder({"multimask": False})
    by_box = single.run(ctx, embedding=embedding, boxes=boxes)["masks"]
    expected, _, _ = predictor.predict(box=boxes.xyxy, multimask_output=False)
    assert by_box.data.shape == (2, 1, 60, 90) and np.array_equal(by_box.data, expected)

    # Two callers fused in one forward give what each gets alone.
    other = Points([[10, 10], [80, 50]], [1, 1])
    assert decoder.batch_key(ctx, embedding=embedding, points=points) == \
        decoder.batch_key(ctx, embedding=embedding, points=other)
    assert decoder.batch_key(ctx, embedding=embedding, points=points) != \
        decoder.batch_key(ctx, embedding=embedding, boxes=boxes)
    fused = SamDecoder.run_batch(ctx, [(decoder, {"embedding": embedding, "points": points}),
                                       (decoder, {"embedding": embedding, "points": other})])
    alone = decoder.run(ctx, embedding=embedding, points=other)
    assert np.array_equal(fused[0]["masks"].data, got["masks"].data)
    assert np.array_equal(fused[1]["masks"].data, alone["masks"].data)


def test_decoder_refines_with_mask_logits_and_checks_counts(ctx, embedding):
    from samflow.nodes.sam import SamDecoder

    decoder = SamDecoder({"multimask": False})
    first = SamDecoder({"multimask": True}).run(ctx, embedding=embedding, points=Points([[30, 20]], [1]))
    refined = decoder.run(ctx, embedding=embedding, points=Points([[30, 20]], [1]), masks=first["logits"])
    assert refined["masks"].data.shape == (1, 1, 60, 90)
    with pytest.raises(InputError, match="prompt set counts disagree"):
        decoder.run(ctx, embedding=embedding, points=Points(np.zeros((2, 1, 2)), np.ones((2, 1))),
                    boxes=Boxes(np.tile([[0, 0, 5, 5]], (3, 1))))
    broadcast = decoder.run(ctx, embedding=embedding, points=Points([[30, 20]], [1]),
                            boxes=Boxes([[0, 0, 50, 50], [10, 10, 80, 55]]))
    assert broadcast["masks"].data.shape[0] == 2


def test_masks_write_and_overlay(ctx, picture):
    from samflow.nodes.masks import OverlayMasks, WriteMasks

    data = np.zeros((2, 3, 60, 90), bool)
    data[0, :, 10:20, 10:30] = True
    data[1, 2, 30:50, 40:80] = True
    masks = Masks(data, [[0.9, 0.1, 0.2], [0.1, 0.2, 0.95]])
    WriteMasks({"dir": "out", "best_only": True}).run(ctx, masks=masks)
    record = json.loads((ctx.output_dir / "out" / "mask.json").read_text())
    assert [(r["set"], r["index"], r["score"]) for r in record] == [(0, 0, pytest.approx(0.9)),
                                                                    (1, 0, pytest.approx(0.95))]
    assert record[1]["area"] == 20 * 40 and record[1]["bbox_xyxy"] == [40, 30, 80, 50]
    overlay = OverlayMasks({"file": "pictures/o.png"}).run(ctx, image=picture, masks=masks,
                                                           points=Points([[5, 5]], [0]),
                                                           boxes=Boxes([[1, 1, 88, 58]]))["image"]
    written = np.asarray(PILImage.open(ctx.output_dir / "pictures" / "o.png"))
    assert np.array_equal(written, overlay.data) and written.shape == (60, 90, 3)
    assert not np.array_equal(written[15, 20], picture.data[15, 20])  # tinted inside the mask
    assert np.array_equal(written[55, 5], picture.data[55, 5])  # untouched outside masks and prompts
    assert tuple(written[5, 5]) == (230, 30, 30)  # a background click is red

"""The scheduler: one encoder run per image shared by every decoder, the model pool, the embedding cache on disk,
fused decoder calls, concurrency that does not change results, per-item failures."""

from __future__ import annotations

import gc
import json
import weakref

import numpy as np
import pytest
from graph_testing import (
    BOXES,
    LABELS_A,
    POINTS_A,
    POINTS_B,
    SMALL_SAM,
    EncoderCounter,
    make_checkpoint,
    make_images,
    three_decoders_yaml,
)
from PIL import Image as PILImage

from samflow.cli import main
from samflow.engine.cache import EmbeddingCache
from samflow.engine.graph import Graph
from samflow.engine.node import Input, Node
from samflow.engine.registry import register
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import Boxes, Image, ImageEmbedding, Masks, Points
from samflow.errors import InputError, NodeError
from samflow.models.sam import build_sam
from samflow.pool import ModelPool
from samflow.predict.predictor import SamPredictor


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("scheduler")
    checkpoint = make_checkpoint(root)
    images = make_images(root / "images", 5)
    graph_file = root / "three.yaml"
    graph_file.write_text(three_decoders_yaml(checkpoint))
    return root, checkpoint, images, graph_file


def read_masks(item_dir, name):
    records = json.loads((item_dir / f"{name}.json").read_text())
    n = max(r["set"] for r in records) + 1
    k = max(r["index"] for r in records) + 1
    data = np.zeros((n, k) + np.asarray(PILImage.open(item_dir / records[0]["file"])).shape, bool)
    scores = np.zeros((n, k), np.float32)
    for r in records:
        data[r["set"], r["index"]] = np.asarray(PILImage.open(item_dir / r["file"])) > 0
        scores[r["set"], r["index"]] = r["score"]
    return data, scores


def test_one_encoder_three_decoders_five_images(setup):
    root, checkpoint, images, graph_file = setup
    out, cache = root / "out1", root / "cache"
    with EncoderCounter() as counter:
        code = main(["run", str(graph_file), "--input", f"image={root / 'images'}", "--out", str(out),
                     "--cache", str(cache), "--no-progress"])
    assert code == 0
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["nodes"]["encoder"]["runs"] == 5 and counter.calls == 5
    assert manifest["nodes"]["encoder"]["cache_hits"] == 0
    for name in ("by_points", "by_boxes", "by_points_b"):
        assert manifest["nodes"][name]["runs"] == 5
    # The two point decoders share an embedding and a prompt layout: fused into one forward per image.
    assert manifest["nodes"]["by_points"]["batched"] == 5 and manifest["nodes"]["by_points_b"]["batched"] == 5
    assert [item["status"] for item in manifest["items"]] == ["ok"] * 5

    predictor = SamPredictor(build_sam(SMALL_SAM, checkpoint=checkpoint, device="cpu"))
    for path in images:
        predictor.set_image(np.asarray(PILImage.open(path).convert("RGB")))
        expected = {
            "points_masks": predictor.predict(np.array(POINTS_A), np.array(LABELS_A), multimask_output=True),
            "boxes_masks": predictor.predict(box=np.array(BOXES), multimask_output=False),
            "points_b_masks": predictor.predict(np.array(POINTS_B), np.ones(len(POINTS_B)), multimask_output=True),
        }
        for name, (masks, scores, _) in expected.items():
            got_masks, got_scores = read_masks(out / path.stem, name)
            masks, scores = masks.reshape(got_masks.shape), scores.reshape(got_scores.shape)
            assert np.array_equal(got_masks, masks), (path.name, name)
            np.testing.assert_allclose(got_scores, scores, rtol=1e-4, atol=1e-5)

    # A second run over the same images with the on-disk cache: no encoder at all, identical masks.
    out2 = root / "out2"
    with EncoderCounter() as counter:
        assert main(["run", str(graph_file), "--input", f"image={root / 'images'}", "--out", str(out2),
                     "--cache", str(cache), "--no-progress"]) == 0
    manifest2 = json.loads((out2 / "run.json").read_text())
    assert counter.calls == 0
    assert manifest2["nodes"]["encoder"]["runs"] == 0 and manifest2["nodes"]["encoder"]["cache_hits"] == 5
    for path in images:
        for name in ("points_masks", "boxes_masks", "points_b_masks"):
            first, second = read_masks(out / path.stem, name), read_masks(out2 / path.stem, name)
            assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])

    # Rerunning into the same folder skips what is done.
    assert main(["run", str(graph_file), "--input", f"image={root / 'images'}", "--out", str(out2),
                 "--no-progress"]) == 0
    manifest3 = json.loads((out2 / "run.json").read_text())
    assert manifest3["counts"] == {"ok": 0, "failed": 0, "skipped": 5}


def test_corrupt_image_is_recorded_and_the_run_goes_on(setup, tmp_path):
    root, checkpoint, images, graph_file = setup
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in images[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    assert main(["run", str(graph_file), "--input", f"image={folder}/*.png", "--out", str(out),
                 "--no-progress"]) == 1
    manifest = json.loads((out / "run.json").read_text())
    status = {item["id"]: item for item in manifest["items"]}
    assert status["broken"]["status"] == "failed" and "broken.png" in status["broken"]["error"]
    assert status["img0"]["status"] == status["img1"]["status"] == "ok"
    assert (out / "img0" / "points_masks.json").is_file() and (out / "img1" / "boxes_masks_0_0.png").is_file()
    assert not (out / "broken").exists() and not list(out.glob(".*partial"))


def test_interactive_runs_hit_the_cache_and_share_by_reference(setup):
    root, checkpoint, images, _ = setup
    g = Graph()
    image, points = g.input("image", Image), g.input("points", Points)
    encoder = g.add("sam.encoder", params={"model": SMALL_SAM, "checkpoint": str(checkpoint), "device": "cpu"},
                    image=image)
    decoder = g.add("sam.decoder", embedding=encoder.embedding, points=points)
    g.output("masks", decoder.masks)
    g.output("embedding", encoder.embedding)
    scheduler = Scheduler(g)
    picture = Image.load(images[0])
    with EncoderCounter() as counter:
        results = [scheduler.run(image=picture, points=[[10 + 20 * i, 30]]) for i in range(4)]
    assert counter.calls == 1
    assert scheduler.stats["encoder"].runs == 1 and scheduler.stats["encoder"].cache_hits == 3
    assert scheduler.stats["decoder"].runs == 4
    assert results[0]["embedding"].features is results[3]["embedding"].features  # by reference, not copied
    # The same pixels from another object or file hash the same: still a hit.
    scheduler.run(image=np.asarray(PILImage.open(images[0]).convert("RGB")), points=[[5, 5]])
    assert scheduler.stats["encoder"].cache_hits == 4


def test_model_pool_shares_one_model_across_nodes_and_schedulers(setup):
    root, checkpoint, images, graph_file = setup
    pool = ModelPool()
    text = graph_file.read_text().replace("  by_points:", "  encoder_2: {type: sam.encoder, params: {model: "
                                          + "{" + ", ".join(f"{k}: {v}" for k, v in SMALL_SAM.items()) + "}"
                                          + f", checkpoint: '{checkpoint}', device: cpu}}, "
                                          "inputs: {image: $inputs.image}}\n  by_points:")
    graph = Graph.from_yaml(text)
    with EncoderCounter() as counter:
        Scheduler(graph, models=pool, cache=EmbeddingCache()).run(image=images[0])
        Scheduler(graph, models=pool, cache=EmbeddingCache()).run(image=images[1])
    assert pool.loads == 1 and len(pool) == 1
    assert counter.calls == 2  # two encoder nodes naming the same weights: one embedding per image


def test_concurrent_branches_give_the_same_results(setup):
    root, checkpoint, images, graph_file = setup
    graph = Graph.load(graph_file)
    serial = Scheduler(graph, cache=EmbeddingCache()).run(image=images[2])
    with Scheduler(graph, cache=EmbeddingCache(), max_workers=3) as threaded:
        parallel = threaded.run(image=images[2])
    for name, masks in serial.items():
        assert np.array_equal(masks.data, parallel[name].data) and np.array_equal(masks.scores, parallel[name].scores)


WATCHED: list = []


@register("testing.watch")
class Watch(Node):
    """Keeps a weak reference to the embedding it sees."""

    inputs = {"embedding": Input(ImageEmbedding)}
    outputs = {"boxes": Boxes}

    def run(self, ctx, embedding):
        WATCHED.append(weakref.ref(embedding.features))
        return {"boxes": Boxes([[1, 1, 5, 5]])}


@register("testing.probe")
class Probe(Node):
    """Records whether the watched embedding is still alive when it runs (a later layer)."""

    inputs = {"masks": Input(Masks)}
    outputs = {"masks": Masks}

    def run(self, ctx, masks):
        gc.collect()
        WATCHED.append(WATCHED[-1]() is None)
        return {"masks": masks}


def test_values_are_released_after_their_last_consumer(setup):
    root, checkpoint, images, graph_file = setup
    g = Graph()
    encoder = g.add("sam.encoder", params={"model": SMALL_SAM, "checkpoint": str(checkpoint), "device": "cpu"},
                    image=g.input("image", Image))
    watch = g.add("testing.watch", embedding=encoder.embedding)
    decoder = g.add("sam.decoder", embedding=encoder.embedding, boxes=watch.boxes)
    probe = g.add("testing.probe", masks=decoder.masks)
    g.output("masks", probe.masks)
    scheduler = Scheduler(g, cache=EmbeddingCache(max_bytes=0))  # the cache keeps nothing
    scheduler.run(image=images[0])
    assert WATCHED[-1] is True  # the embedding was freed before the probe ran
    kept = Scheduler(g, cache=EmbeddingCache())
    kept.run(image=images[0])
    assert WATCHED[-1] is False  # ... unless the cache keeps it


@register("testing.fail_on_dark")
class FailOnDark(Node):
    """Fails on dark images (to test per-item failures)."""

    inputs = {"image": Input(Image)}
    outputs = {"masks": Masks}

    def run(self, ctx, image):
        if image.data.mean() < 100:
            raise ValueError("too dark")
        return {"masks": Masks(np.ones((1, 1, *image.size), bool))}


def test_node_failures_name_node_and_item_and_run_many_goes_on():
    g = Graph()
    check = g.add("testing.fail_on_dark", "check", image=g.input("image", Image))
    g.output("masks", check.masks)
    scheduler = Scheduler(g)
    dark, bright = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 200, np.uint8)
    with pytest.raises(NodeError, match="node 'check' \\(testing.fail_on_dark\\) failed on item 'x': ValueError: too"):
        scheduler.run(image=dark, item_id="x")
    results = list(scheduler.run_many([("a", {"image": dark}), ("b", {"image": bright})]))
    assert [r.status for r in results] == ["failed", "ok"] and "too dark" in results[0].error
    with pytest.raises(InputError, match="missing graph input 'image'"):
        scheduler.run()
    with pytest.raises(InputError, match="unknown graph input"):
        scheduler.run(image=bright, picture=bright)


def test_writer_nodes_need_an_output_folder(setup, tmp_path):
    g = Graph()
    check = g.add("testing.fail_on_dark", "check", image=g.input("image", Image))
    g.add("masks.write", masks=check.masks)
    bright = np.full((4, 4, 3), 200, np.uint8)
    with pytest.raises(NodeError, match="no output folder"):
        Scheduler(g).run(image=bright)
    Scheduler(g).run(image=bright, output_dir=tmp_path)
    assert (tmp_path / "masks" / "mask_0_0.png").is_file()

"""Issue 17, item 3: per-request limits on every count that drives work, on every endpoint (graph runs included),
mask encoding inside the bounded model slot, only preset models over HTTP, and a bounded model pool."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hostile_testing import error, flat_png, upload
from PIL import Image as PILImage

from samflow.pool import ModelPool
from samflow.predict.detectors import register_detector, unregister_detector
from samflow.serve.models import BoundedModelPool

RUN = "/api/graphs/run"
BOXES_GRAPH = """samflow: 1
inputs: {image: Image, boxes: Boxes}
nodes:
  encoder: {type: sam.encoder, params: {model: tiny}, inputs: {image: $inputs.image}}
  segment: {type: sam.decoder, params: {multimask: false}, inputs: {embedding: $encoder.embedding, boxes: $inputs.boxes}}
outputs: {masks: $segment.masks}
"""


def test_small_png_of_many_pixels_is_downscaled_or_refused(make_client):
    data = flat_png(4096, 4096)
    assert len(data) < 100_000
    with make_client() as client:  # defaults: max_pixels 2048 x 2048, downscale
        info = client.post("/api/images", content=data, headers={"content-type": "image/png"}).json()
        assert (info["width"], info["height"]) == (2048, 2048) and info["scale"] == 0.5
        assert (info["original_width"], info["original_height"]) == (4096, 4096)
        assert client.get(f"/api/images/{info['id']}").json()["scale"] == 0.5
        png = client.get(f"/api/images/{info['id']}/image.png")
        assert PILImage.open(io.BytesIO(png.content)).size == (2048, 2048)
        stored = client.app_state.service.image(info["id"])
        assert stored.nbytes <= 2048 * 2048 * 3
        wide = client.post("/api/images", content=flat_png(3000, 1000)).json()  # aspect ratio kept
        assert wide["width"] * wide["height"] <= 2048 * 2048 and abs(wide["width"] / wide["height"] - 3) < 0.01
    with make_client(oversize="refuse") as client:
        assert "4096x4096" in error(client.post("/api/images", content=data), 413, "image_too_large")


def test_segment_limits_masks_and_mask_pixels(make_client):
    boxes = [[i, i, i + 40, i + 40] for i in range(64)]
    with make_client() as client:
        iid = upload(client, flat_png(2048, 2048))
        # 64 boxes x 3 candidates of 2048 x 2048: over max_mask_pixels (the 7.9 GB request, scaled)
        message = error(client.post(f"/api/images/{iid}/segment", json={"boxes": boxes, "png": False}), 422,
                        "bad_prompt")
        assert "64 objects x 3 candidate masks" in message and "multimask false" in message
    with make_client(max_masks=8) as client:
        iid = upload(client, flat_png(64, 64))
        error(client.post(f"/api/images/{iid}/segment", json={"boxes": boxes[:3], "png": False}), 422, "bad_prompt")
        ok = client.post(f"/api/images/{iid}/segment", json={"boxes": boxes[:3], "multimask": False, "png": False})
        assert ok.status_code == 200 and len(ok.json()["objects"]) == 3


def test_graph_run_inputs_are_limited(make_client, scene_png):
    with make_client() as client:
        iid = upload(client, scene_png)
        boxes = [[1, 1, 30, 30]] * 3000
        message = error(client.post(RUN, json={"graph": BOXES_GRAPH, "inputs": {"image": iid, "boxes": boxes}}),
                        413, "over_limit")
        assert "boxes: 3000" in message and "max_boxes" in message
        points = BOXES_GRAPH.replace("boxes: Boxes", "p: Points").replace("boxes: $inputs.boxes", "points: $inputs.p")
        error(client.post(RUN, json={"graph": points, "inputs": {"image": iid, "p": [[5, 5]] * 65}}), 413,
              "over_limit")
        body = json.dumps({"graph": points, "inputs": {"image": iid, "p": [[float("nan"), 5]]}})  # NaN as JSON allows
        error(client.post(RUN, content=body, headers={"content-type": "application/json"}), 422, "bad_input")
        ok = client.post(RUN, json={"graph": BOXES_GRAPH, "inputs": {"image": iid, "boxes": boxes[:4]}})
        assert ok.status_code == 200 and ok.json()["outputs"]["masks"]["shape"][:2] == [4, 1]


@pytest.mark.parametrize("node, limit", [
    ("{type: prompt.boxes, params: {boxes: BOXES}}", "max_boxes"),
    ("{type: prompt.points, params: {points: POINTS}}", "max_points"),
    ("{type: clip.text, params: {text: [a, b, c, d, e, f, g, h, i]}}", "max_texts"),
    ("{type: clip.rank, params: {negatives: [a, b, c, d, e, f, g, h, i]}, inputs: {image: $inputs.image, "
     "masks: $inputs.m, text: $inputs.t}}", "max_texts"),
    ("{type: sam.auto, params: {points_per_side: 64}, inputs: {embedding: $inputs.e, image: $inputs.image}}",
     "max_auto_prompts"),
    ("{type: sam.auto, params: {points_per_side: 8, crop_n_layers: 3}, inputs: {embedding: $inputs.e, "
     "image: $inputs.image}}", "MAX_AUTO_CROP_LAYERS"),
])
def test_graph_run_params_are_limited(make_client, node, limit):
    node = node.replace("BOXES", str([[0, 0, 9, 9]] * 65)).replace("POINTS", str([[1, 1]] * 65))
    graph = (f"samflow: 1\ninputs: {{image: Image, m: Masks, t: TextEmbedding, e: ImageEmbedding}}\n"
             f"nodes:\n  n: {node}\noutputs: {{}}\n")
    with make_client() as client:
        assert limit in error(client.post(RUN, json={"graph": graph}), 413, "over_limit")


def test_graph_masks_and_nodes_are_limited(make_client, scene_png):
    many = "samflow: 1\nnodes:\n" + "".join(f"  p{i}: {{type: prompt.points, params: {{points: [[1, 2]]}}}}\n"
                                            for i in range(33)) + "outputs: {}\n"
    boxes = str([[0, 0, 9, 9]] * 64)
    decoders = ("samflow: 1\ninputs: {image: Image}\nnodes:\n"
                "  e: {type: sam.encoder, inputs: {image: $inputs.image}}\n"
                f"  b: {{type: prompt.boxes, params: {{boxes: {boxes}}}}}\n"
                "  d1: {type: sam.decoder, inputs: {embedding: $e.embedding, boxes: $b.boxes}}\n"
                "  d2: {type: sam.decoder, inputs: {embedding: $e.embedding, boxes: $b.boxes}}\n"
                "outputs: {m1: $d1.masks, m2: $d2.masks}\n")
    with make_client() as client:
        iid = upload(client, scene_png)
        assert "max_graph_nodes" in error(client.post(RUN, json={"graph": many}), 413, "over_limit")
        message = error(client.post(RUN, json={"graph": decoders, "inputs": {"image": iid}}), 413, "over_limit")
        assert "masks the graph's decoders compute: 384" in message


def test_detectors_keep_at_most_max_boxes_over_http(make_client, scene_png):
    register_detector("test_serve.many", lambda image: np.tile([[1.0, 1.0, 30.0, 30.0]], (500, 1)))
    graph = ("samflow: 1\ninputs: {image: Image}\nnodes:\n  d: {type: detect.callable, params: {function: "
             "test_serve.many, max_detections: null}, inputs: {image: $inputs.image}}\noutputs: {d: $d.detections}\n")
    try:
        with make_client(max_boxes=16) as client:
            response = client.post(RUN, json={"graph": graph, "inputs": {"image": upload(client, scene_png)}})
            assert response.status_code == 200, response.text
            assert len(response.json()["outputs"]["d"]["boxes"]) == 16
    finally:
        unregister_detector("test_serve.many")


def test_only_preset_models_and_the_services_device(make_client):
    encoder = "samflow: 1\ninputs: {image: Image}\nnodes:\n  enc: {type: sam.encoder, params: PARAMS, inputs: {image: $inputs.image}}\noutputs: {}\n"
    with make_client() as client:
        config = "{model: {encoder_embed_dim: 1280, encoder_depth: 32, encoder_num_heads: 16}}"
        assert "SamConfig mapping" in error(client.post(RUN, json={"graph": encoder.replace("PARAMS", config)}), 403,
                                            "param_not_allowed")
        assert "--graph-models" in error(client.post(RUN, json={"graph": encoder.replace("PARAMS", "{model: vit_h}")}),
                                         403, "param_not_allowed")
        assert "device" in error(client.post(RUN, json={"graph": encoder.replace("PARAMS", "{device: 'cuda:3'}")}),
                                 403, "param_not_allowed")
        clip = "samflow: 1\nnodes:\n  t: {type: clip.text, params: {text: a, model: ViT-bigG-14}}\noutputs: {}\n"
        assert "without weights" in error(client.post(RUN, json={"graph": clip}), 403, "param_not_allowed")


def test_model_pool_is_bounded_least_recently_used_first():
    parent = ModelPool()
    parent.get("served", lambda: "S")
    pool = BoundedModelPool(2, parent=parent)
    loads = []

    def loader(name):
        return lambda: loads.append(name) or name.upper()

    assert pool.get("served", loader("never")) == "S" and loads == []  # shared, not counted
    pool.get("a", loader("a"))
    pool.get("b", loader("b"))
    pool.get("a", loader("a"))  # a is now the most recently used
    pool.get("c", loader("c"))  # evicts b
    assert loads == ["a", "b", "c"] and len(pool) == 2 and "b" not in pool and "a" in pool
    assert pool.evictions == 1 and "served" in pool


def test_graph_runs_use_the_bounded_pool(make_client, scene_png):
    graph = ("samflow: 1\ninputs: {image: Image}\nnodes:\n  e: {type: sam.encoder, params: {dtype: DTYPE}, "
             "inputs: {image: $inputs.image}}\noutputs: {}\n")
    with make_client(max_models=1) as client:
        pool = client.app_state.service.graph_models
        iid = upload(client, scene_png)
        for dtype in ("bfloat16", "float16", "bfloat16"):
            response = client.post(RUN, json={"graph": graph.replace("DTYPE", dtype), "inputs": {"image": iid}})
            assert response.status_code == 200, response.text
            assert len(pool) == 1
        assert pool.evictions == 2 and pool.max_models == 1


def test_mask_encoding_runs_inside_the_model_slot(make_client, scene_png, monkeypatch):
    import samflow.serve.service as service_module

    held = []

    def watch(function):
        def wrapped(*args, **kwargs):
            held.append(client.app_state.service._model_slots._value == 0)  # the only slot is taken
            return function(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(service_module, "masks_out", watch(service_module.masks_out))
    monkeypatch.setattr(service_module, "payload_json", watch(service_module.payload_json))
    with make_client(model_workers=1) as client:
        iid = upload(client, scene_png)
        assert client.post(f"/api/images/{iid}/segment", json={"points": [[50, 50]]}).status_code == 200
        response = client.post(RUN, json={"graph": BOXES_GRAPH, "inputs": {"image": iid, "boxes": [[1, 1, 40, 40]]}})
        assert response.status_code == 200
    assert held and all(held), held

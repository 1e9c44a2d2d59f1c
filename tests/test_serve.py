"""The service: upload -> prompts -> masks round trip, every documented error, body limits that do not read an
oversized upload, unmixed answers to concurrent clients, LRU eviction by bytes, graph runs."""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import sys
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from PIL import Image as PILImage  # noqa: E402
from serve_testing import live_service, make_segmenter, png_bytes  # noqa: E402

from samflow import SamPredictor  # noqa: E402
from samflow.data.synthetic import render_scene  # noqa: E402
from samflow.ops import rle  # noqa: E402
from samflow.serve import ServiceSettings, create_app  # noqa: E402

LIMIT = 1 << 20  # uploads
JSON_LIMIT = 64 << 10
SETTINGS = ServiceSettings(max_upload_bytes=LIMIT, max_json_bytes=JSON_LIMIT, max_side=1024)
GRAPH = """samflow: 1
inputs: {image: Image}
nodes:
  encoder: {type: sam.encoder, params: {model: tiny}, inputs: {image: $inputs.image}}
  clicks:  {type: prompt.points, params: {points: [[120, 80]], labels: [1]}}
  segment: {type: sam.decoder, params: {multimask: true}, inputs: {embedding: $encoder.embedding, points: $clicks.points}}
outputs: {masks: $segment.masks, scores: $segment.scores}
"""


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(seed, size=256).image for seed in (31, 32, 33)]


@pytest.fixture(scope="module")
def segmenter():
    return make_segmenter()


@pytest.fixture(scope="module")
def service(segmenter):
    with live_service(SETTINGS, segmenter) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client, app


@pytest.fixture(scope="module")
def uploaded(service, scenes):
    client, _ = service
    ids = []
    for pixels in scenes:
        response = client.post("/api/images", content=png_bytes(pixels), headers={"content-type": "image/png"})
        assert response.status_code == 200, response.text
        ids.append(response.json()["id"])
    return ids


def test_health_docs_and_app(service):
    client, _ = service
    health = client.get("/api/health").json()
    assert health["model"] == "tiny" and health["limits"]["max_upload_bytes"] == LIMIT
    assert health["text_prompts"] in (None, False)  # not tried yet, or no samflow.models.text
    assert "swagger" in client.get("/docs").text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/images", "/api/images/{image_id}/segment", "/api/graphs/run"} <= set(paths)
    assert "multipart/form-data" in paths["/api/images"]["post"]["requestBody"]["content"]
    page = client.get("/")
    assert page.status_code == 200 and "app/app.js" in page.text
    assert client.get("/app/app.js").status_code == 200


def test_upload_prompt_mask_round_trip(service, scenes, uploaded, segmenter):
    client, app = service
    info = client.get(f"/api/images/{uploaded[0]}").json()
    assert (info["width"], info["height"]) == (256, 256)
    encodes = segmenter.stats.encodes
    again = client.post("/api/images", files={"file": ("scene.png", png_bytes(scenes[0]), "image/png")})
    assert again.status_code == 200 and again.json()["id"] == uploaded[0]  # same bytes, same id
    assert again.json()["encode_ms"] == 0 and segmenter.stats.encodes == encodes  # not encoded again

    response = client.post(f"/api/images/{uploaded[0]}/segment", json={"points": [[100, 60]], "labels": [1]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image_id"] == uploaded[0] and len(body["objects"]) == 1
    obj = body["objects"][0]
    assert len(obj["masks"]) == 3 and obj["label"] is None

    predictor = SamPredictor(app.state.service.model)
    predictor.set_image(scenes[0])
    masks, scores, _ = predictor.predict(np.array([[100.0, 60.0]]), np.array([1]), multimask_output=True)
    assert obj["best"] == int(np.argmax(scores))
    for k, out in enumerate(obj["masks"]):
        from_rle = rle.decode(out["rle"])
        from_png = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(out["png_base64"])))) > 0
        np.testing.assert_array_equal(from_rle, masks[k])
        np.testing.assert_array_equal(from_png, masks[k])
        assert out["score"] == pytest.approx(float(scores[k]), rel=1e-5)
        assert out["area"] == int(masks[k].sum())
        assert out["bbox"] == rle.bbox(out["rle"]).tolist()

    boxes = client.post(f"/api/images/{uploaded[0]}/segment",
                        json={"boxes": [[10, 10, 120, 110], [100, 120, 250, 250]], "multimask": False, "png": False})
    objects = boxes.json()["objects"]
    assert [len(o["masks"]) for o in objects] == [1, 1] and objects[0]["masks"][0]["png_base64"] is None


def _error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error["message"]


def test_documented_errors(service, uploaded, monkeypatch):
    client, _ = service
    iid = uploaded[0]
    seg = f"/api/images/{iid}/segment"
    post = client.post
    _error(post(f"/api/images/{'0' * 64}/segment", json={"points": [[5, 5]]}), 404, "unknown_image")
    _error(post("/api/images/not-an-id/segment", json={"points": [[5, 5]]}), 404, "unknown_image")
    _error(client.get(f"/api/images/{'f' * 64}"), 404, "unknown_image")
    _error(post("/api/images", content=b"certainly not a picture"), 422, "bad_image")
    _error(post("/api/images", content=png_bytes(np.zeros((4, 4, 3), np.uint8))[:40]), 422, "bad_image")
    _error(post("/api/images", content=b""), 400, "empty_upload")
    _error(post("/api/images", files={"other": ("a.png", b"x", "image/png")}), 400, "bad_upload")
    assert "1025x8" in _error(post("/api/images", content=png_bytes(np.zeros((8, 1025, 3), np.uint8))), 413,
                              "image_too_large")
    assert "outside the 256x256" in _error(post(seg, json={"points": [[300, 10]]}), 422, "bad_prompt")
    _error(post(seg, json={}), 422, "bad_prompt")
    _error(post(seg, json={"points": [[5, 5], [6, 6]], "labels": [1]}), 422, "bad_prompt")
    _error(post(seg, json={"boxes": [[50, 50, 10, 10]]}), 422, "bad_prompt")
    _error(post(seg, json={"points": [[5, 5]], "labels": [2]}), 422, "invalid_request")
    _error(post(seg, json={"points": [[5]]}), 422, "invalid_request")
    _error(post(seg, json={"points": [[5, 5]], "colour": "red"}), 422, "invalid_request")
    _error(post(seg, content=b"{not json", headers={"content-type": "application/json"}), 422, "invalid_request")
    _error(post(seg, json={"points": [[5, 5]] * 65}), 422, "bad_prompt")
    _error(post(seg, json={"text": "x" * (JSON_LIMIT + 1)}), 413, "too_large")
    _error(client.get("/api/nothing-here"), 404, "not_found")
    _error(client.delete(seg), 405, "method_not_allowed")
    # Text prompts without text models (whatever this checkout has): a clear 422, and the service keeps going.
    monkeypatch.setitem(sys.modules, "samflow.predict.text", types.SimpleNamespace())
    assert "text prompts need" in _error(post(seg, json={"text": "a red star"}), 422, "text_prompts_unavailable")
    assert client.get("/api/health").json()["text_prompts"] is False
    # Graph runs.
    run = "/api/graphs/run"
    assert "<request>:" in _error(post(run, json={"graph": "samflow: 1\nnodes:\n  a: {type: sam.encodr}\n"}), 422,
                                  "bad_graph")
    _error(post(run, json={"graph": GRAPH, "inputs": {"image": "f" * 64}}), 404, "unknown_image")
    _error(post(run, json={"graph": GRAPH, "inputs": {"image": iid, "other": 1}}), 422, "bad_input")
    _error(post(run, json={"graph": GRAPH, "inputs": {}}), 422, "bad_input")
    points_graph = GRAPH.replace("inputs: {image: Image}", "inputs: {image: Image, clicks: Points}")
    _error(post(run, json={"graph": points_graph, "inputs": {"image": iid, "clicks": "/etc/passwd"}}), 422,
           "bad_input")
    writer = GRAPH.replace("outputs:", "  write: {type: masks.write, inputs: {masks: $segment.masks}}\noutputs:")
    assert "output folder" in _error(post(run, json={"graph": writer, "inputs": {"image": iid}}), 422,
                                     "node_failed")
    assert client.get("/api/health").status_code == 200


def test_oversized_upload_is_refused_before_it_is_read(service):
    client, _ = service
    host, port = client.base_url.host, client.base_url.port
    # Declared too large: answered at once, though not one byte of the body is sent.
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /api/images HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                     b"Content-Length: %d\r\n\r\n" % (100 * LIMIT))
        reply = b""
        while chunk := sock.recv(65536):  # the server closes the connection after its answer
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and '"too_large"' in reply

    # Streamed without a length: the app stops pulling chunks once past the limit (raw body and multipart alike).
    app = create_app(SETTINGS, segmenter=make_segmenter())
    chunk = 64 << 10

    async def upload(multipart: bool) -> tuple[int, int, dict]:
        pulled = 0

        async def body():
            nonlocal pulled
            if multipart:
                yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
            for _ in range(64):  # 4 MiB offered
                pulled += 1
                yield b"\0" * chunk

        headers = {"content-type": "multipart/form-data; boundary=XyZ" if multipart else "image/png"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as ac:
            response = await ac.post("/api/images", content=body(), headers=headers)
        return response.status_code, pulled, response.json()

    for multipart in (False, True):
        status, pulled, body = asyncio.run(upload(multipart))
        assert status == 413 and body["error"]["code"] == "too_large"
        assert pulled <= LIMIT // chunk + 2, pulled


def test_concurrent_clients_get_their_own_answers(service, uploaded, scenes, segmenter):
    client, _ = service
    # Clicks on two different objects of each scene, so every job has its own answer.
    objects = [render_scene(seed, size=256).annotations[:2] for seed in (31, 32, 33)]
    jobs = [(i, [float(v) for v in a["point"]]) for i in range(len(uploaded)) for a in objects[i]]

    def ask(job):
        i, click = job
        response = client.post(f"/api/images/{uploaded[i]}/segment", json={"points": [click], "png": False})
        assert response.status_code == 200, response.text
        return [m["rle"]["counts"] for m in response.json()["objects"][0]["masks"]]

    alone = [ask(job) for job in jobs]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(ask, jobs * 2))
    assert together == alone * 2
    assert len({tuple(a) for a in alone}) == len(jobs)  # the answers do differ: a mix-up would show

    # Several clients uploading one new picture at once: one encoder run.
    fresh = png_bytes(np.ascontiguousarray(scenes[0][::-1]))
    encodes = segmenter.stats.encodes
    with ThreadPoolExecutor(4) as pool:
        ids = set(pool.map(lambda _: client.post("/api/images", content=fresh).json()["id"], range(4)))
    assert len(ids) == 1 and segmenter.stats.encodes == encodes + 1


def test_uploads_are_evicted_least_recently_used_by_bytes(scenes, segmenter, uploaded):
    from fastapi.testclient import TestClient

    image_bytes = 256 * 256 * 3
    settings = ServiceSettings(image_cache_bytes=int(2.5 * image_bytes))
    # The module's segmenter already holds these embeddings: only the image store is under test here.
    with TestClient(create_app(settings, segmenter=segmenter), base_url="http://localhost") as client:
        ids = [client.post("/api/images", content=png_bytes(p)).json()["id"] for p in scenes[:2]]
        assert client.get(f"/api/images/{ids[0]}").status_code == 200  # now the most recently used
        client.post("/api/images", content=png_bytes(scenes[2]))
        assert client.get(f"/api/images/{ids[0]}").status_code == 200
        _error(client.get(f"/api/images/{ids[1]}"), 404, "unknown_image")
        _error(client.post("/api/images", content=png_bytes(np.zeros((1000, 1000, 3), np.uint8))), 413,
               "image_too_large")


def test_graph_run_shares_the_uploaded_embedding(service, uploaded):
    client, _ = service
    response = client.post("/api/graphs/run", json={"graph": GRAPH, "inputs": {"image": uploaded[1]}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["nodes"]["encoder"]["cache_hits"] == 1 and body["nodes"]["encoder"]["runs"] == 0
    masks = body["outputs"]["masks"]
    assert masks["shape"] == [1, 3, 256, 256]
    direct = client.post(f"/api/images/{uploaded[1]}/segment", json={"points": [[120, 80]], "png": False}).json()
    assert [m["rle"] for m in masks["masks"]] == [m["rle"] for m in direct["objects"][0]["masks"]]
    assert body["outputs"]["scores"]["scores"][0] == pytest.approx([m["score"] for m in direct["objects"][0]["masks"]])


def test_cli_binds_loopback_by_default():
    from samflow.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 8000, "tiny")

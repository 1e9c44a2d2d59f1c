"""Issue 19, item 3, over HTTP: what the browser app decodes with. The embedding as raw floats with its sizes, the
decoder ONNX file (exported once per process, the official interface) that, fed as the app feeds it, gives
SamPredictor's masks; onnxruntime-web's files served gzipped from the package; the guard applies to all of them."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hostile_testing import error, upload
from serve_testing import png_bytes

from samflow.data.synthetic import render_scene
from samflow.predict.predictor import SamPredictor
from samflow.serve import browser

ort = pytest.importorskip("onnxruntime")


def app_coords(points: np.ndarray, height: int, width: int, image_size: int) -> np.ndarray:
    """decode.js's inputScale: the long side to image_size, each side rounded (ResizeLongestSide.apply_coords)."""
    scale = image_size / max(height, width)
    new_h, new_w = int(height * scale + 0.5), int(width * scale + 0.5)
    return points * np.array([new_w / width, new_h / height])


def test_embedding_is_raw_floats_with_its_sizes(make_client, segmenter):
    image = render_scene(7, size=256).image[:200, :]  # 256 wide, 200 high
    with make_client() as client:
        service = client.app_state.service
        iid = upload(client, png_bytes(image))
        response = client.get(f"/api/images/{iid}/embedding")
        assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
        h = response.headers
        shape = [int(v) for v in h["x-embedding-shape"].split(",")]
        assert shape == [1, 256, 32, 32] and h["x-embedding-dtype"] == "float32"
        assert h["x-original-size"] == "200,256" and h["x-input-size"] == "200,256" and h["x-image-size"] == "256"
        info = client.get("/api/decoder").json()
        assert h["x-model-key"] == info["model_key"] and "X-Embedding-Shape" in h["access-control-expose-headers"]
        want = segmenter.embed(service.model, service.image(iid)).features.cpu().numpy()
        got = np.frombuffer(response.content, "<f4").reshape(shape)
        np.testing.assert_array_equal(got, want)
        half = client.get(f"/api/images/{iid}/embedding", params={"dtype": "float16"})
        assert half.headers["x-embedding-dtype"] == "float16" and len(half.content) == got.nbytes // 2
        np.testing.assert_allclose(np.frombuffer(half.content, "<f2").reshape(shape), want, rtol=1e-3, atol=1e-3)
        error(client.get(f"/api/images/{'0' * 64}/embedding"), 404, "unknown_image")
        assert client.get(f"/api/images/{iid}/embedding", params={"dtype": "int8"}).status_code == 422


def test_decoder_file_decodes_as_the_predictor(make_client):
    # Portrait, 170 x 300: resized to 145 x 256, so x scales by 145/170 (not 256/300: each side is rounded).
    image = render_scene(11, size=256).image[:, :170]
    image = np.ascontiguousarray(np.concatenate([image, image[:44]], axis=0))
    height, width = image.shape[:2]
    with make_client() as client:
        service = client.app_state.service
        info = client.get("/api/decoder").json()
        assert info["available"] and info["model"] == "tiny" and info["multimask_outputs"] == [1, 2, 3]
        assert info["image_size"] == 256 and info["embedding_shape"] == [1, 256, 32, 32]
        assert info["low_res_size"] == [128, 128] and info["runtime"] == "ort/ort.wasm.min.js"
        response = client.get(info["decoder"])
        assert response.status_code == 200 and response.headers["etag"] == f'"{info["model_key"]}"'
        assert client.get(info["decoder"], headers={"if-none-match": response.headers["etag"]}).status_code == 304
        error(client.get("/api/models/vit_h/decoder.onnx"), 404, "unknown_model")
        session = ort.InferenceSession(response.content, providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["image_embeddings", "point_coords", "point_labels",
                                                          "mask_input", "has_mask_input", "orig_im_size"]
        iid = upload(client, png_bytes(image))
        embedding = np.frombuffer(client.get(f"/api/images/{iid}/embedding").content, "<f4").reshape(1, 256, 32, 32)

        predictor = SamPredictor(service.model)
        predictor.set_image(image)

        def run(coords, labels, mask_input=None):
            feeds = {"image_embeddings": embedding, "point_coords": coords[None].astype(np.float32),
                     "point_labels": np.asarray(labels, np.float32)[None],
                     "mask_input": np.zeros((1, 1, 128, 128), np.float32) if mask_input is None else mask_input[None],
                     "has_mask_input": np.array([0.0 if mask_input is None else 1.0], np.float32),
                     "orig_im_size": np.array([height, width], np.float32)}
            masks, scores, low = session.run(None, feeds)
            return masks[0, 1:] > info["mask_threshold"], scores[0, 1:], low[0, 1:]

        # One click, as the app sends it: the padding point (0, 0) with label -1.
        click = np.array([[80.3, 151.7]])
        got, got_scores, got_low = run(np.concatenate([app_coords(click, height, width, 256), [[0, 0]]]), [1, -1])
        want, want_scores, want_low = predictor.predict(click, np.array([1]), multimask_output=True)
        assert (got != want).sum() <= 10, (got != want).sum()
        np.testing.assert_allclose(got_scores, want_scores, atol=1e-4)
        # A second click refining the best mask (its low-res logits as mask_input).
        best = int(want_scores.argmax())
        clicks, labels = np.array([[80.3, 151.7], [120.0, 40.5]]), [1, 0]
        got, _, _ = run(np.concatenate([app_coords(clicks, height, width, 256), [[0, 0]]]), labels + [-1],
                        got_low[best:best + 1])
        want, _, _ = predictor.predict(clicks, np.array(labels), mask_input=want_low[best:best + 1],
                                       multimask_output=True)
        assert (got != want).sum() <= 10
        # A box: its corners with labels 2 and 3, no padding point.
        box = np.array([30.0, 60.5, 150.0, 250.0])
        got, _, _ = run(app_coords(box.reshape(2, 2), height, width, 256), [2, 3])
        want, _, _ = predictor.predict(box=box, multimask_output=True)
        assert (got != want).sum() <= 10


def test_browser_decoder_file_gives_the_predictors_low_res_masks(make_client):
    """What the app runs: decoder.onnx's inputs but orig_im_size, out the three masks' scores and low-res logits,
    SamPredictor's for the same click (the page upscales them itself: test_browser_decoding checks that)."""
    image = render_scene(12, size=256).image[:200]
    height, width = image.shape[:2]
    with make_client() as client:
        info = client.get("/api/decoder").json()
        assert info["browser_decoder"] == "api/models/tiny/browser_decoder.onnx"
        assert info["browser_decoder_int8"] == "api/models/tiny/browser_decoder.onnx?quantized=1"
        response = client.get(info["browser_decoder"])
        assert response.status_code == 200 and response.headers["etag"] == f'"{info["model_key"]}-browser"'
        assert client.get(info["browser_decoder"],
                          headers={"if-none-match": response.headers["etag"]}).status_code == 304
        error(client.get("/api/models/vit_h/browser_decoder.onnx"), 404, "unknown_model")
        session = ort.InferenceSession(response.content, providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["image_embeddings", "point_coords", "point_labels",
                                                          "mask_input", "has_mask_input"]
        assert [o.name for o in session.get_outputs()] == ["iou_predictions", "low_res_masks"]
        int8 = client.get(info["browser_decoder_int8"])
        assert int8.status_code == 200 and len(int8.content) < len(response.content) / 2
        iid = upload(client, png_bytes(image))
        embedding = np.frombuffer(client.get(f"/api/images/{iid}/embedding").content, "<f4").reshape(1, 256, 32, 32)
        predictor = SamPredictor(client.app_state.service.model)
        predictor.set_image(image)
        click = np.array([[120.0, 90.5]])
        feeds = {"image_embeddings": embedding,
                 "point_coords": np.concatenate([app_coords(click, height, width, 256), [[0, 0]]])[None]
                 .astype(np.float32),
                 "point_labels": np.array([[1, -1]], np.float32),
                 "mask_input": np.zeros((1, 1, 128, 128), np.float32), "has_mask_input": np.zeros(1, np.float32)}
        scores, low = session.run(None, feeds)
        _, want_scores, want_low = predictor.predict(click, np.array([1]), multimask_output=True)
        np.testing.assert_allclose(scores[0], want_scores, atol=1e-4)
        np.testing.assert_allclose(low[0], want_low, atol=1e-3 * np.abs(want_low).max())


def test_factored_browser_decoder_files_give_the_predictors_low_res_masks(make_client):
    """The browser decoder split at the image: browser_products.onnx once per image, then per click
    browser_factored_decoder.onnx on its outputs (by name) gives SamPredictor's scores and low-res logits."""
    image = render_scene(13, size=256).image[:, :220]
    height, width = image.shape[:2]
    with make_client() as client:
        info = client.get("/api/decoder").json()
        assert info["browser_products"] == "api/models/tiny/browser_products.onnx"
        assert info["browser_factored_decoder"] == "api/models/tiny/browser_factored_decoder.onnx"
        products_file = client.get(info["browser_products"])
        decoder_file = client.get(info["browser_factored_decoder"])
        assert products_file.status_code == decoder_file.status_code == 200
        assert decoder_file.headers["etag"] == f'"{info["model_key"]}-factored"'
        assert client.get(info["browser_products"],
                          headers={"if-none-match": products_file.headers["etag"]}).status_code == 304
        error(client.get("/api/models/vit_h/browser_factored_decoder.onnx"), 404, "unknown_model")
        products = ort.InferenceSession(products_file.content, providers=["CPUExecutionProvider"])
        decoder = ort.InferenceSession(decoder_file.content, providers=["CPUExecutionProvider"])
        assert [i.name for i in products.get_inputs()] == ["image_embeddings"]
        names = [o.name for o in products.get_outputs()]
        assert [i.name for i in decoder.get_inputs()] == ["point_coords", "point_labels", *names]
        assert [o.name for o in decoder.get_outputs()] == ["iou_predictions", "low_res_masks"]
        iid = upload(client, png_bytes(image))
        embedding = np.frombuffer(client.get(f"/api/images/{iid}/embedding").content, "<f4").reshape(1, 256, 32, 32)
        per_image = dict(zip(names, products.run(None, {"image_embeddings": embedding})))
        predictor = SamPredictor(client.app_state.service.model)
        predictor.set_image(image)
        for click in (np.array([[60.0, 150.5]]), np.array([[200.0, 40.0]])):
            feeds = {"point_coords": np.concatenate([app_coords(click, height, width, 256), [[0, 0]]])[None]
                     .astype(np.float32), "point_labels": np.array([[1, -1]], np.float32), **per_image}
            scores, low = decoder.run(None, feeds)
            _, want_scores, want_low = predictor.predict(click, np.array([1]), multimask_output=True)
            np.testing.assert_allclose(scores[0], want_scores, atol=1e-4)
            np.testing.assert_allclose(low[0], want_low, atol=1e-3 * np.abs(want_low).max())


def test_decoder_unavailable_without_onnx(make_client, monkeypatch):
    monkeypatch.setattr(browser, "_onnx_missing", lambda: "exporting the decoder needs the onnx package")
    with make_client() as client:
        info = client.get("/api/decoder").json()
        assert not info["available"] and "onnx" in info["reason"]
        assert "onnx" in error(client.get(info["decoder"]), 503, "browser_decoding_unavailable")


def test_a_model_the_export_does_not_cover_is_tried_once(make_client, monkeypatch):
    calls = []

    def cannot(model, browser_decoder):
        calls.append((model, browser_decoder))
        raise browser.ApiError(503, "browser_decoding_unavailable", "could not export OnnxDecoder to ONNX: ...")

    monkeypatch.setattr(browser, "DECODERS", browser._Decoders())
    monkeypatch.setattr(browser, "_export", cannot)
    with make_client() as client:
        for _ in range(3):
            error(client.get("/api/models/tiny/decoder.onnx"), 503, "browser_decoding_unavailable")
            error(client.get("/api/models/tiny/browser_decoder.onnx"), 503, "browser_decoding_unavailable")
    assert [b for _, b in calls] == [False, True]


def test_runtime_files_are_shipped_and_served_gzipped(make_client):
    with make_client() as client:
        wasm = client.get("/ort/ort-wasm-simd-threaded.wasm", headers={"accept-encoding": "gzip"})
        assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
        assert wasm.headers["content-encoding"] == "gzip" and wasm.content[:4] == b"\0asm"  # httpx decompressed
        stored = (browser.ORT_DIR / "ort-wasm-simd-threaded.wasm.gz").read_bytes()
        assert int(wasm.headers["content-length"]) == len(stored)
        plain = client.get("/ort/ort-wasm-simd-threaded.wasm", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.content == gzip.decompress(stored)
        assert plain.headers["etag"] != wasm.headers["etag"]
        assert client.get("/ort/ort-wasm-simd-threaded.wasm", headers={"if-none-match": wasm.headers["etag"]},
                          ).status_code == 304
        for name in ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs"):
            response = client.get(f"/ort/{name}")
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/javascript")
            assert response.content == (browser.ORT_DIR / name).read_bytes()
            assert f"v{browser.ORT_VERSION}" in response.text[:200] or name.endswith(".mjs")
        for name in ("ort.min.js", "ort-wasm-simd-threaded.jsep.wasm", "..%2Fapp.js", "LICENSE"):
            assert client.get(f"/ort/{name}").status_code == 404, name
    total = sum(p.stat().st_size for p in browser.ORT_DIR.iterdir())
    assert total < 4.5 * 2**20  # what the WASM backend needs, and the licence files


def test_browser_endpoints_need_the_token(make_client, scene_png):
    with make_client(token="s3cret") as client:
        auth = {"authorization": "Bearer s3cret"}
        iid = client.post("/api/images", content=scene_png, headers={"content-type": "image/png", **auth}).json()["id"]
        for path in ("/api/decoder", f"/api/images/{iid}/embedding", "/api/models/tiny/decoder.onnx",
                     "/ort/ort.wasm.min.js"):
            error(client.get(path), 401, "unauthorized")
            assert client.get(path, headers=auth).status_code == 200, path


def test_pages_and_runtime_files_are_cross_origin_isolated(make_client):
    """COOP + COEP on the app's page and the runtime's files (so the page is crossOriginIsolated and onnxruntime-web
    may decode with several threads), CORP on what other sites must not embed."""
    with make_client() as client:
        for path in ("/", "/ort/ort.wasm.min.js", "/api/decoder"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert response.headers["cross-origin-opener-policy"] == "same-origin", path
            assert response.headers["cross-origin-embedder-policy"] == "require-corp", path
            assert response.headers["cross-origin-resource-policy"] == "same-origin", path

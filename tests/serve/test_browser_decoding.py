"""Issue 19, items 3-4, in headless Chromium (Playwright driving Debian's `chromium`): the browser app decodes
clicks, boxes and refinements itself with onnxruntime-web, making no segment request after it fetched the
embedding, and its masks are SamPredictor's for the same prompts; accept, undo (Ctrl+Z) and the exports work for
masks decoded there; without the runtime, or without WebAssembly, the app says so and the server decodes."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api")

from PIL import Image as PILImage  # noqa: E402
from serve_testing import live_service, png_bytes  # noqa: E402

from samflow.data.synthetic import render_scene  # noqa: E402
from samflow.ops import rle  # noqa: E402
from samflow.predict.predictor import SamPredictor  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SIZE = 256
BOUNDARY_PIXELS = 12  # masks of onnxruntime-web and torch may differ where the logits are ~0

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def service():
    with live_service() as (url, app):
        yield url, app


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    image = render_scene(41, size=SIZE).image
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    path.write_bytes(png_bytes(image))
    return image, path


class Page:
    """A page of the app with every request it makes recorded."""

    def __init__(self, browser, url: str, block_runtime: bool = False, init_script: str | None = None,
                 path: str = "/") -> None:
        self.context = browser.new_context(viewport={"width": 1100, "height": 700}, accept_downloads=True)
        if block_runtime:
            self.context.route("**/ort/**", lambda route: route.fulfill(status=404, body="blocked by the test"))
        if init_script:
            self.context.add_init_script(init_script)
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append((r.method, r.url)))
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.url = url
        self.page.goto(url + path)
        self.page.wait_for_selector("body[data-decoder='browser'], body[data-decoder='server']", state="attached")

    def open(self, path: Path) -> None:
        self.page.set_input_files("#file", str(path))
        self.page.wait_for_selector("body[data-has-image='1']", state="attached")
        self.page.wait_for_function("() => document.body.dataset.status === 'idle'")

    def screen(self, x: float, y: float) -> tuple[float, float]:
        box = self.page.locator("#canvas").bounding_box()
        return box["x"] + (x + 0.5) * box["width"] / SIZE, box["y"] + (y + 0.5) * box["height"] / SIZE

    def prompt(self, act) -> None:
        """Do `act` and wait for the mask it asks for to be drawn."""
        count = self.page.evaluate("samflowApp.timings.length")
        act()
        self.page.wait_for_function(f"() => samflowApp.timings.length > {count} "
                                    "&& document.body.dataset.status === 'idle'")

    def click(self, x: float, y: float, button: str = "left") -> None:
        self.prompt(lambda: self.page.mouse.click(*self.screen(x, y), button=button))

    def drag(self, x0: float, y0: float, x1: float, y1: float) -> None:
        def act() -> None:
            self.page.mouse.move(*self.screen(x0, y0))
            self.page.mouse.down()
            self.page.mouse.move(*self.screen(x1, y1), steps=4)
            self.page.mouse.up()

        self.prompt(act)

    def shown(self) -> tuple[np.ndarray, int]:
        """The mask drawn now (the app's array) and its index among the candidates."""
        got = self.page.evaluate("samflowApp.shownMask()")
        bits = np.frombuffer(base64.b64decode(got["bits"]), np.uint8).reshape(got["height"], got["width"])
        return bits.astype(bool), got["index"]

    def prompts(self) -> tuple[np.ndarray, np.ndarray, list | None]:
        state = self.page.evaluate("({points: samflowApp.state.points, box: samflowApp.state.box})")
        coords = np.array([[p["x"], p["y"]] for p in state["points"]]).reshape(-1, 2)
        return coords, np.array([p["label"] for p in state["points"]]), state["box"]

    def canvas(self) -> np.ndarray:
        url = self.page.evaluate("() => document.getElementById('canvas').toDataURL('image/png')")
        return np.asarray(PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))

    def segment_requests(self) -> int:
        return sum(1 for method, url in self.requests if method == "POST" and url.endswith("/segment"))

    def download(self, button: str) -> dict:
        with self.page.expect_download() as info:
            self.page.click(button)
        return json.loads(Path(info.value.path()).read_text())

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors


def assert_same_mask(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and 0 < want.mean() < 1
    differ = int((got != want).sum())
    assert differ <= BOUNDARY_PIXELS, f"{differ} pixels differ"


def test_clicks_are_decoded_in_the_browser(service, browser, scene):
    url, app = service
    segmenter = app.state.service.segmenter
    image, path = scene
    app_page = Page(browser, url)
    page = app_page.page
    assert page.get_attribute("body", "data-decoder") == "browser", page.inner_text("#decoder")
    assert "decoded in this browser" in page.inner_text("#decoder")
    app_page.open(path)
    assert "decoded in this browser" in page.inner_text("#status")
    fetched = [u for m, u in app_page.requests if m == "GET" and u.endswith("/embedding")]
    assert len(fetched) == 1
    after_embedding = len(app_page.requests)
    decodes = segmenter.stats.decodes
    before = app_page.canvas()

    # A click: the mask is drawn, and it is SamPredictor's mask for that click.
    started = time.perf_counter()
    app_page.click(100, 60)
    seconds = time.perf_counter() - started
    model = app.state.service.model
    predictor = SamPredictor(model)
    predictor.set_image(image)
    coords, labels, box = app_page.prompts()
    assert labels.tolist() == [1] and box is None and np.allclose(coords, [[100.5, 60.5]], atol=1)
    want, scores, low = predictor.predict(coords, labels, multimask_output=True)
    first, index = app_page.shown()
    assert index == int(scores.argmax())
    assert_same_mask(first, want[index])
    for k in range(3):  # every candidate, cycled with C
        page.keyboard.press("c")
        mask, shown = app_page.shown()
        assert shown == (index + k + 1) % 3 and f"mask {shown + 1} of 3" in page.inner_text("#candidate")
        assert_same_mask(mask, want[shown])
    changed = np.abs(app_page.canvas().astype(int) - before).max(axis=-1) > 3
    yy, xx = np.mgrid[:SIZE, :SIZE]
    near_click = (xx - coords[0, 0]) ** 2 + (yy - coords[0, 1]) ** 2 <= 10**2  # the point marker is drawn there
    assert changed[first & ~near_click].mean() > 0.95 and changed[~first & ~near_click].mean() < 0.01
    timing = page.evaluate("samflowApp.timings[0]")
    assert timing["path"] == "browser" and timing["total_ms"] < 2000 and seconds < 3
    # A click without a mask input runs the decoder split at the image (its products made once, at load).
    assert page.evaluate("samflowDecoder.runtime.factored") and timing["decoder"] == "factored"
    assert "split at the image" in page.inner_text("#decoder")
    print(f"click to drawn mask in the browser: {timing['total_ms']:.0f} ms (session.run {timing['run_ms']:.0f} ms)")

    # A negative click refines it: the shown mask's low-res logits go in as mask_input, as SamPredictor takes them.
    app_page.click(60, 180, button="right")
    coords2, labels2, _ = app_page.prompts()
    assert labels2.tolist() == [1, 0]
    want2, scores2, _ = predictor.predict(coords2, labels2, mask_input=low[index:index + 1], multimask_output=True)
    assert page.evaluate("samflowApp.timings.at(-1).decoder") == "browser"  # a mask input: the whole decoder
    refined, index2 = app_page.shown()
    assert index2 == int(scores2.argmax())
    assert_same_mask(refined, want2[index2])

    # Accept; Ctrl+Z takes the object back with its clicks and mask; Z again undoes the second click.
    page.click("#accept")
    assert page.locator("#objects li").count() == 1 and page.get_attribute("canvas", "data-mask-shown") == "0"
    page.keyboard.press("Control+z")
    assert page.locator("#objects li").count() == 0
    assert app_page.prompts()[1].tolist() == [1, 0]
    np.testing.assert_array_equal(app_page.shown()[0], refined)
    page.click("#undo")
    assert app_page.prompts()[1].tolist() == [1]
    np.testing.assert_array_equal(app_page.shown()[0], first)

    # Accept the first mask and export: the RLE made in the browser is pycocotools' for that mask.
    page.click("#accept")
    sa1b = app_page.download("#export-sa1b")
    ann = sa1b["annotations"][0]
    assert ann["segmentation"] == rle.encode(first)
    assert ann["area"] == int(first.sum()) and ann["bbox"] == rle.bbox(ann["segmentation"]).tolist()
    assert ann["point_coords"] == coords.tolist() and ann["point_labels"] == [1]
    coco = app_page.download("#export-coco")
    np.testing.assert_array_equal(rle.decode(coco["annotations"][0]["segmentation"]), first)

    # A box is decoded here too.
    app_page.drag(150, 140, 240, 230)
    _, _, box = app_page.prompts()
    want_box, box_scores, _ = predictor.predict(box=np.array(box), multimask_output=True)
    mask, shown = app_page.shown()
    assert shown == int(box_scores.argmax())
    assert_same_mask(mask, want_box[shown])

    # Nothing after the embedding went to the server's decoder, nor outside this service (no network needed).
    assert app_page.segment_requests() == 0 and segmenter.stats.decodes == decodes
    assert all(u.startswith(url) for _, u in app_page.requests[after_embedding:])
    assert all(u.startswith((url, "blob:", "data:")) for _, u in app_page.requests), app_page.requests
    assert {u.rsplit("/", 1)[1] for _, u in app_page.requests if "/ort/" in u} == {
        "ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"}
    app_page.close()


@pytest.mark.parametrize("size", [(534, 800), (300, 170), (256, 256), (37, 500), (1001, 263)])
def test_the_page_upscales_masks_as_postprocess_masks(service, browser, size):
    """The app decodes low-res logits and makes the shown mask itself: the same mask as Sam.postprocess_masks
    (bilinear to the model's size, the crop to the resized image, bilinear to the image) thresholded, except
    where torch's logit lies within float rounding of the threshold."""
    import torch

    url, app = service
    model = app.state.service.model
    height, width = size
    low = 4 * model.config.embedding_size
    gen = torch.Generator().manual_seed(height)
    logits = torch.nn.functional.interpolate(torch.randn(1, 1, low // 8, low // 8, generator=gen) * 4, (low, low),
                                             mode="bicubic", align_corners=False)
    from samflow.ops.transforms import preprocess_shape

    with torch.no_grad():
        want = model.postprocess_masks(logits, preprocess_shape(height, width, model.config.image_size), size)[0, 0]
    app_page = Page(browser, url)
    got = app_page.page.evaluate(
        """([data, h, w]) => {
            const { mask, area } = samflowDecoder.upscaleMask(new Float32Array(data), h, w);
            let bits = "";
            for (let i = 0; i < mask.length; i += 8192) bits += String.fromCharCode(...mask.subarray(i, i + 8192));
            return { bits: btoa(bits), area };
        }""", [logits.flatten().tolist(), height, width])
    mask = np.frombuffer(base64.b64decode(got["bits"]), np.uint8).reshape(size).astype(bool)
    want = want.numpy()
    differ = mask != (want > model.mask_threshold)
    assert 0.05 < mask.mean() < 0.95 and got["area"] == int(mask.sum())
    assert np.all(np.abs(want[differ]) < 1e-4), f"{differ.sum()} pixels differ away from the threshold"
    app_page.close()


def test_without_the_runtime_the_server_decodes(service, browser, scene):
    url, app = service
    image, path = scene
    app_page = Page(browser, url, block_runtime=True)
    page = app_page.page
    assert page.get_attribute("body", "data-decoder") == "server"
    assert "decoded on the server" in page.inner_text("#decoder")
    app_page.open(path)
    assert "decoded on the server" in page.inner_text("#status")
    assert not [u for _, u in app_page.requests if u.endswith("/embedding") or u.endswith("decoder.onnx")]
    with page.expect_response(lambda r: r.url.endswith("/segment") and r.request.method == "POST") as response:
        app_page.click(100, 60)
    answer = response.value.json()["objects"][0]
    assert "from the server" in page.inner_text("#status") and app_page.segment_requests() == 1
    mask, index = app_page.shown()
    assert index == answer["best"]
    np.testing.assert_array_equal(mask, rle.decode(answer["masks"][index]["rle"]))
    # Undo works here too, without asking the server again.
    app_page.click(60, 180, button="right")
    assert app_page.segment_requests() == 2
    page.keyboard.press("Control+z")
    np.testing.assert_array_equal(app_page.shown()[0], mask)
    assert app_page.segment_requests() == 2
    app_page.close()


def test_without_webassembly_the_app_says_so(service, browser):
    url, _ = service
    app_page = Page(browser, url, init_script="delete globalThis.WebAssembly;")
    assert app_page.page.get_attribute("body", "data-decoder") == "server"
    assert "no WebAssembly" in app_page.page.inner_text("#decoder")
    app_page.close()


def test_browser_decoding_behind_the_access_token(browser, scene):
    """A service shared by many annotators has a token: the page opened once with ?token= gets the cookie, and the
    runtime, the decoder and the embedding load with it."""
    from samflow.serve import ServiceSettings

    _, path = scene
    with live_service(ServiceSettings(token="annotators-only")) as (url, _):
        app_page = Page(browser, url, path="/?token=annotators-only")
        assert app_page.page.get_attribute("body", "data-decoder") == "browser", app_page.page.inner_text("#decoder")
        app_page.open(path)
        app_page.click(100, 60)
        assert app_page.page.evaluate("samflowApp.timings[0].path") == "browser"
        assert app_page.segment_requests() == 0
        # COOP/COEP: the page is isolated, so the runtime decodes with min(cores, 4) threads
        assert app_page.page.evaluate("self.crossOriginIsolated") is True
        cores = app_page.page.evaluate("navigator.hardwareConcurrency")
        assert app_page.page.evaluate("samflowDecoder.runtime.threads") == min(cores, 4)
        app_page.close()

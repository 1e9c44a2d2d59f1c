"""The browser app in headless Chromium (Playwright driving Debian's system `chromium`): open an image, click, see
the mask drawn on the canvas (its pixels, not only the DOM), cycle, accept, export SA-1B and COCO JSON that decode to
that mask; drag a box, right click, a text prompt; a screenshot is kept as an artifact. Here every prompt is
decoded by the server (the runtime for decoding in the browser is withheld)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

from PIL import Image as PILImage  # noqa: E402
from serve_testing import live_service, png_bytes  # noqa: E402

from samflow.data.synthetic import render_scene  # noqa: E402
from samflow.ops import rle  # noqa: E402
from samflow.predict.api import segment  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT_COPY = Path("/tmp/samflow_app.png")
SIZE = 256

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def page():
    with live_service() as (url, _), sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1100, "height": 700}, accept_downloads=True)
        # Without onnxruntime-web the app decodes on the server: this test drives that path (the fallback, and the
        # one text prompts always take); tests/serve/test_browser_decoding.py drives decoding in the browser.
        context.route("**/ort/**", lambda route: route.fulfill(status=404))
        page = context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/")
        yield page
        browser.close()
        assert not errors, errors


def canvas_pixels(page) -> np.ndarray:
    """The canvas as drawn, uint8 (H, W, 3), read back through its PNG."""
    url = page.evaluate("() => document.getElementById('canvas').toDataURL('image/png')")
    return np.asarray(PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def screen_point(page, x: float, y: float) -> tuple[float, float]:
    box = page.locator("#canvas").bounding_box()
    return box["x"] + (x + 0.5) * box["width"] / SIZE, box["y"] + (y + 0.5) * box["height"] / SIZE


def prompt_and_wait(page, act) -> tuple[dict, dict, float]:
    """Do `act`, wait for the mask it asks for to be drawn; (request body, response body, seconds)."""
    started = time.perf_counter()
    with page.expect_response(lambda r: r.url.endswith("/segment") and r.request.method == "POST") as info:
        act()
    response = info.value
    assert response.status == 200, response.text()
    page.wait_for_selector("canvas[data-mask-shown='1']", state="attached")
    page.wait_for_function("() => document.body.dataset.status === 'idle'")
    return json.loads(response.request.post_data), response.json(), time.perf_counter() - started


def download_json(page, button: str) -> dict:
    with page.expect_download() as info:
        page.click(button)
    return json.loads(Path(info.value.path()).read_text())


def test_click_accept_export_in_the_browser(page, tmp_path, monkeypatch):
    image = render_scene(41, size=SIZE).image
    path = tmp_path / "scene.png"
    path.write_bytes(png_bytes(image))
    page.set_input_files("#file", str(path))
    page.wait_for_selector("body[data-has-image='1']", state="attached")
    before = canvas_pixels(page)
    assert np.abs(before.astype(int) - image).max() <= 2  # the picture itself is on the canvas

    # Left click: a positive point, and the mask drawn over the picture.
    sent, answer, seconds = prompt_and_wait(page, lambda: page.mouse.click(*screen_point(page, 100, 60)))
    (px, py), = sent["points"]
    assert sent["labels"] == [1] and abs(px - 100.5) <= 1 and abs(py - 60.5) <= 1
    masks = answer["objects"][0]["masks"]
    best = answer["objects"][0]["best"]
    mask = rle.decode(masks[best]["rle"])
    assert 0 < mask.mean() < 1
    after = canvas_pixels(page)
    changed = np.abs(after.astype(int) - before).max(axis=-1) > 3
    yy, xx = np.mgrid[:SIZE, :SIZE]
    near_click = (xx - px) ** 2 + (yy - py) ** 2 <= 10**2  # the point marker is drawn there
    assert changed[mask & ~near_click].mean() > 0.95
    assert changed[~mask & ~near_click].mean() < 0.01
    print(f"click to drawn mask: {seconds * 1e3:.0f} ms (decoder {answer['decode_ms']:.0f} ms)")
    assert seconds < 2.0

    # The same click through the Python API gives the same mask.
    np.testing.assert_array_equal(segment(image, points=[[px, py]], multimask=True).masks[0], mask)

    # Cycle the three candidates: the canvas shows another mask, then the best again.
    page.keyboard.press("c")
    assert f"mask {(best + 1) % 3 + 1} of 3" in page.inner_text("#candidate")
    other = rle.decode(masks[(best + 1) % 3]["rle"])
    shown = np.abs(canvas_pixels(page).astype(int) - before).max(axis=-1) > 3
    differ = (other != mask) & ~near_click
    assert (shown[differ] == other[differ]).mean() > 0.95
    page.keyboard.press("c")
    page.keyboard.press("c")
    assert f"mask {best + 1} of 3" in page.inner_text("#candidate")

    # Accept, then export: both files decode to that mask.
    page.click("#accept")
    assert page.locator("#objects li").count() == 1
    sa1b = download_json(page, "#export-sa1b")
    assert sa1b["image"]["file_name"] == "scene.png" and len(sa1b["annotations"]) == 1
    ann = sa1b["annotations"][0]
    np.testing.assert_array_equal(rle.decode(ann["segmentation"]), mask)
    assert ann["area"] == int(mask.sum()) and ann["point_coords"] == [[px, py]]
    assert ann["bbox"] == rle.bbox(ann["segmentation"]).tolist()
    coco = download_json(page, "#export-coco")
    assert coco["images"][0]["width"] == SIZE and coco["categories"] == [{"id": 1, "name": "object"}]
    np.testing.assert_array_equal(rle.decode(coco["annotations"][0]["segmentation"]), mask)

    # Drag a box, then right click inside it: a box prompt, then a negative point with it.
    start, end = screen_point(page, 150, 140), screen_point(page, 240, 230)

    def drag() -> None:
        page.mouse.move(*start)
        page.mouse.down()
        page.mouse.move(*end, steps=4)
        page.mouse.up()

    sent, answer, _ = prompt_and_wait(page, drag)
    assert sent["points"] == [] and np.allclose(sent["boxes"], [[150.5, 140.5, 240.5, 230.5]], atol=1.5)
    sent, _, _ = prompt_and_wait(page, lambda: page.mouse.click(*screen_point(page, 200, 200), button="right"))
    assert sent["labels"] == [0] and len(sent["boxes"]) == 1

    # The text box: the text goes to the server with the prompts (a stand-in text model answers with the tokens
    # of a click, so this checks the app and the service, whatever text models this checkout has).
    def click_tokens(text, sam_model, image_embeddings=None):
        coords = torch.tensor([[[60.0, 180.0]]])
        return sam_model.prompt_encoder._embed_points(coords, torch.ones(1, 1, dtype=torch.int), pad=True)

    monkeypatch.setitem(sys.modules, "samflow.predict.text", types.SimpleNamespace(text_prompt_tokens=click_tokens))
    page.keyboard.press("Escape")
    page.fill("#text", "a red star")
    sent, answer, _ = prompt_and_wait(page, lambda: page.click("#text-go"))
    assert sent["text"] == "a red star" and sent["points"] == [] and answer["objects"][0]["label"] == "a red star"

    shot = tmp_path / "samflow_app.png"
    page.screenshot(path=str(shot))
    shutil.copy(shot, SCREENSHOT_COPY)
    assert shot.stat().st_size > 10_000

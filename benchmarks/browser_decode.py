"""Click-to-mask latency of the browser app, measured inside headless Chromium: decoding in the browser
(onnxruntime-web, WASM, one thread) next to the server path (HTTP round trip to `POST /api/images/{id}/segment`).

    python benchmarks/browser_decode.py [--models tiny,vit_b] [--clicks 40] [--warmup 5] [--image PATH]
                                        [--chromium PATH]

For each model the service runs in this process on a free 127.0.0.1 port (vit_b with random weights: the timings
do not depend on them; its embedding is 64x64), the app is opened in Debian's chromium and one image is uploaded
(../shared/images/dog.jpg, 800x534, when present). Then --clicks single clicks at seeded random points, each a new
object (Esc in between; --warmup untimed ones first), first with the app decoding in the browser, then in a second page where the runtime is
withheld so that the app falls back to the server. Every figure is the app's own `performance.now()` around its
work (samflowApp.timings):

- total: from the mouse-up event to the mask drawn on the canvas (what the annotator waits for);
- browser: `session.run` of the decoder (the paper's "~50 ms on a CPU" is for this step, vit_b), the thresholding
  of the three masks, the drawing;
- native: `session.run` of the same decoder.onnx on onnxruntime's CPU provider with one thread, in this process,
  for the same clicks (what this CPU does natively: the rest is the WASM build's cost);
- CPU per click: the renderer's CPU time (DevTools ProcessTime) over the clicks, divided by their number: what a
  click costs the annotator's machine whatever else runs on it (wall times grow with the load; CPU time hardly);
- server: the HTTP round trip (request, the server's decoder and RLE encoding, JSON) and the server's own decoder
  time, then RLE decoding and drawing in the page.

Median and p95 over the clicks; the load average before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import benchmark_image, cpu_report, load_average

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def stats(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return f"{statistics.median(ordered):7.1f} / {p95:7.1f}"


def renderer_cpu(page) -> float:
    """CPU seconds the page's renderer process has used (DevTools' Performance.getMetrics ProcessTime)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    cdp.detach()
    return metrics["ProcessTime"]


def run_clicks(page, points: np.ndarray, width: int, height: int) -> tuple[list[dict], float, float]:
    """The app's timings of each click, and the CPU milliseconds per click of the renderer and of this process
    (the service, and the Playwright calls driving the page)."""
    box = page.locator("#canvas").bounding_box()
    renderer, here = renderer_cpu(page), time.process_time()
    for x, y in points:
        count = page.evaluate("samflowApp.timings.length")
        page.mouse.click(box["x"] + (x + 0.5) * box["width"] / width, box["y"] + (y + 0.5) * box["height"] / height)
        page.wait_for_function(f"() => samflowApp.timings.length > {count} "
                               "&& document.body.dataset.status === 'idle'", timeout=120_000)
        page.keyboard.press("Escape")
    renderer, here = renderer_cpu(page) - renderer, time.process_time() - here
    timings = page.evaluate(f"samflowApp.timings.slice(-{len(points)})")
    return timings, 1e3 * renderer / len(points), 1e3 * here / len(points)


def open_app(browser, url: str, image_path: Path, block_runtime: bool):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    if block_runtime:
        context.route("**/ort/**", lambda route: route.fulfill(status=404))
    page = context.new_page()
    page.set_default_timeout(300_000)
    started = time.perf_counter()
    page.goto(url + "/")
    page.wait_for_selector("body[data-decoder='browser'], body[data-decoder='server']", state="attached")
    ready = time.perf_counter() - started
    page.set_input_files("#file", str(image_path))
    page.wait_for_selector("body[data-has-image='1']", state="attached")
    page.wait_for_function("() => document.body.dataset.status === 'idle'")
    return context, page, ready


def bench_model(browser, model: str, image: np.ndarray, image_path: Path, clicks: int, warmup: int) -> None:
    from serve_testing import make_segmenter

    from samflow.serve import ServiceSettings, create_app
    from samflow.serve.server import BackgroundServer

    height, width = image.shape[:2]
    rng = np.random.default_rng(0)
    points = np.stack([rng.uniform(0, width - 1, clicks), rng.uniform(0, height - 1, clicks)], axis=1).round(1)
    warm = points[:warmup]
    app = create_app(ServiceSettings(model=model), segmenter=make_segmenter())
    config = app.state.service.model.config
    with BackgroundServer(app) as url:
        # Upload once here so the encoder (seconds for vit_b) is outside every timing; the pages find it cached.
        import httpx

        httpx.post(url + "/api/images", content=image_path.read_bytes(), headers={"content-type": "image/jpeg"},
                   timeout=600).raise_for_status()
        context, page, ready = open_app(browser, url, image_path, block_runtime=False)
        decoder = page.get_attribute("body", "data-decoder")
        if decoder != "browser":
            raise SystemExit(f"{model}: the app did not decode in the browser: {page.inner_text('#decoder')}")
        info = httpx.get(url + "/api/decoder").json()
        decoder_file = httpx.get(f"{url}/{info['decoder']}", timeout=600).content
        decoder_bytes = len(decoder_file)
        run_clicks(page, warm, width, height)  # untimed: the WebAssembly code's tier-up, the first draws
        here, here_cpu, _ = run_clicks(page, points, width, height)
        page_image_id = page.evaluate("samflowApp.state.imageId")
        context.close()
        context, page, _ = open_app(browser, url, image_path, block_runtime=True)
        run_clicks(page, warm, width, height)
        server, server_page_cpu, server_cpu = run_clicks(page, points, width, height)
        context.close()
        image_id = page_image_id
        embedding = httpx.get(f"{url}/api/images/{image_id}/embedding", timeout=600)
        native, native_cpu = native_runs(decoder_file, embedding, info, points, height, width)
    assert all(t["path"] == "browser" for t in here) and all(t["path"] == "server" for t in server)
    grid = config.embedding_size
    print(f"\n{model}: {config.image_size} px input, {grid}x{grid} embedding "
          f"({4 * np.prod(info['embedding_shape']) / 2**20:.1f} MiB as float32), decoder.onnx "
          f"{decoder_bytes / 2**20:.1f} "
          f"MiB; image {width}x{height}; {clicks} clicks; page ready to decode in {ready:.1f} s")
    print("  median / p95 ms                          ")
    print(f"  browser  click -> mask drawn         {stats([t['total_ms'] for t in here])}")
    print(f"           session.run (decoder)       {stats([t['run_ms'] for t in here])}")
    print(f"           decode (run + 3 masks)      {stats([t['decode_ms'] for t in here])}")
    print(f"           draw                        {stats([t['draw_ms'] for t in here])}")
    print(f"           CPU per click (renderer)    {here_cpu:7.1f}")
    print(f"  native   session.run, 1 thread       {stats(native)}")
    print(f"           its CPU time                {stats(native_cpu)}")
    print(f"  server   click -> mask drawn         {stats([t['total_ms'] for t in server])}")
    print(f"           HTTP round trip             {stats([t['decode_ms'] for t in server])}")
    print(f"           server's decoder            {stats([t['server_ms'] for t in server])}")
    print(f"           draw (RLE decode + draw)    {stats([t['draw_ms'] for t in server])}")
    print(f"           CPU per click: service + driver {server_cpu:5.1f}, renderer {server_page_cpu:5.1f}")


def native_runs(model: bytes, embedding, info: dict, points: np.ndarray, height: int,
                width: int) -> tuple[list[float], list[float]]:
    """session.run of the same decoder file on onnxruntime's CPU provider, one thread: what this CPU does natively
    (the WASM build's cost is the rest)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    shape = [int(v) for v in embedding.headers["x-embedding-shape"].split(",")]
    features = np.frombuffer(embedding.content, "<f4").reshape(shape)
    scale = info["image_size"] / max(height, width)
    sx, sy = int(width * scale + 0.5) / width, int(height * scale + 0.5) / height
    low = info["low_res_size"]
    times, cpu = [], []
    for x, y in points:
        feeds = {"image_embeddings": features, "point_coords": np.array([[[x * sx, y * sy], [0, 0]]], np.float32),
                 "point_labels": np.array([[1, -1]], np.float32), "mask_input": np.zeros((1, 1, *low), np.float32),
                 "has_mask_input": np.zeros(1, np.float32), "orig_im_size": np.array([height, width], np.float32)}
        started, cpu_started = time.perf_counter(), time.process_time()
        session.run(None, feeds)
        times.append((time.perf_counter() - started) * 1e3)
        cpu.append((time.process_time() - cpu_started) * 1e3)
    return times, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,vit_b")
    parser.add_argument("--clicks", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5, help="untimed clicks first (default 5)")
    parser.add_argument("--image", type=Path, help="an image file (default: ../shared/images/dog.jpg or a pattern)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    from PIL import Image
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        if args.image:
            image = np.asarray(Image.open(args.image).convert("RGB"))
        else:
            image = benchmark_image()
        image_path = Path(tmp) / "image.jpg"
        Image.fromarray(image).save(image_path, quality=95)
        image = np.asarray(Image.open(image_path).convert("RGB"))
        print(cpu_report())
        print(f"{load_average()} (before)")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            print(f"chromium {browser.version}; onnxruntime-web WASM backend, 1 thread")
            for model in args.models.split(","):
                bench_model(browser, model.strip(), image, image_path, args.clicks, args.warmup)
            browser.close()
        print(f"\n{load_average()} (after)")


if __name__ == "__main__":
    main()

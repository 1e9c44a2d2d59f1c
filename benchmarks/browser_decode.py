"""Click-to-mask latency of the browser app, measured inside headless Chromium: decoding in the browser
(onnxruntime-web, WASM; float32 and int8 decoders; the app's thread count or the ones asked for) next to the
server path (HTTP round trip to `POST /api/images/{id}/segment`), native onnxruntime, and the floor: what the
decoder's matrix products alone take on the same runtime with the same threads.

    python benchmarks/browser_decode.py [--models tiny,vit_b] [--clicks 40] [--warmup 5] [--threads default,1,2]
                                        [--precisions fp32,whole,int8] [--no-floor] [--image PATH] [--chromium PATH]

For each model the service runs in this process on a free 127.0.0.1 port (vit_b with random weights: the timings
do not depend on them; its embedding is 64x64), the app is opened in Debian's chromium and one image is uploaded
(../shared/images/dog.jpg, 800x534, when present). The service sends COOP/COEP, so the page is crossOriginIsolated
and onnxruntime-web may use threads; each page says how many it got (`threads`) and whether it is isolated.
For each thread count (`default`: what the app chooses, min(cores, 4); a number: the page opened with
`?threads=N`) and precision (fp32: the app's default, clicks on the decoder split at the image, its per-image half
run when the image loads; `whole`, `?factored=0`: the whole float32 browser decoder per click; `?decoder=int8`: the
dynamically quantised browser decoder) --clicks single clicks at seeded
random points, each a new object (Esc in between; --warmup untimed ones first); then the same clicks again, untimed,
to read the masks shown; then in one more page, where the runtime is withheld, the app falls back to the server.
Every figure is the app's own `performance.now()` around its work (samflowApp.timings):

- total: from the mouse-up event to the mask drawn on the canvas (what the annotator waits for);
- run: `session.run` of the decoder the app runs per click (browser_factored_decoder.onnx, or browser_decoder.onnx
  for `whole` and int8: the three masks' low-res logits; the paper's "~50 ms on a CPU" is for this step, vit_b); decode: that, and the shown mask's upscaling to the image
  in JavaScript (decode.js upscaleMask); draw: drawing;
- CPU per click: the renderer's CPU time (DevTools ProcessTime, all its threads: the runtime's workers too) over
  the clicks, divided by their number: what a click costs the annotator's machine whatever else runs on it (wall
  times grow with the load; CPU time hardly);
- agreement: the IoU of the mask shown (the best of three) with the float32 decoder's in the browser for the same
  click (for int8), and with the server's (float32), mean and minimum over the clicks, and how often the same
  candidate was shown;
- native: `session.run` of the same decoder file on onnxruntime's CPU provider with the same threads, in this
  process, for the same clicks (what this CPU does natively: the rest is the WASM build's cost), and of the
  official-interface decoder.onnx (all four masks upscaled in the graph) beside it;
- floor: the decoder's matrix products (MatMul, Gemm and Conv nodes, their shapes and FLOPs read from a native
  profile of one click), each timed alone in the same page as a chain of MatMuls of that shape (inputs fed from
  JavaScript; the difference between a long and a short chain, so copying in and out cancels) and natively: what
  any decoder that does this arithmetic needs on this runtime with these threads, before a single
  LayerNorm, Resize or Transpose;
- server: the HTTP round trip (request, the server's decoder and RLE encoding, JSON) and the server's own decoder
  time, then RLE decoding and drawing in the page.

Median and p95 over the clicks; the CPU flags and the load average before and after (the machine may be shared:
note them beside every figure).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from _common import benchmark_image, cpu_report, load_average

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
GEMM_OPS = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm", "MatMulInteger", "MatMulIntegerToFloat",
            "DynamicQuantizeMatMul", "Conv", "FusedConv")
FLOOR_SHARE = 0.98  # the largest GEMM shapes timed alone, until they hold this share of the FLOPs
FLOOR_RUNS = 7
CHAIN_FLOPS = 4e8  # a timed chain holds about this much work


def stats(values: list[float]) -> str:
    if not values:
        return "      -          -"
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


def click(page, box: dict, x: float, y: float, width: int, height: int) -> None:
    count = page.evaluate("samflowApp.timings.length")
    page.mouse.click(box["x"] + (x + 0.5) * box["width"] / width, box["y"] + (y + 0.5) * box["height"] / height)
    page.wait_for_function(f"() => samflowApp.timings.length > {count} "
                           "&& document.body.dataset.status === 'idle'", timeout=120_000)


def run_clicks(page, points: np.ndarray, width: int, height: int) -> tuple[list[dict], float, float]:
    """The app's timings of each click, and the CPU milliseconds per click of the renderer and of this process
    (the service, and the Playwright calls driving the page)."""
    box = page.locator("#canvas").bounding_box()
    renderer, here = renderer_cpu(page), time.process_time()
    for x, y in points:
        click(page, box, x, y, width, height)
        page.keyboard.press("Escape")
    renderer, here = renderer_cpu(page) - renderer, time.process_time() - here
    timings = page.evaluate(f"samflowApp.timings.slice(-{len(points)})")
    return timings, 1e3 * renderer / len(points), 1e3 * here / len(points)


def shown_masks(page, points: np.ndarray, width: int, height: int) -> list[tuple[np.ndarray, int]]:
    """The mask the app shows for each click (untimed: reading it back costs the page), and its index."""
    box = page.locator("#canvas").bounding_box()
    masks = []
    for x, y in points:
        click(page, box, x, y, width, height)
        got = page.evaluate("samflowApp.shownMask()")
        bits = np.frombuffer(base64.b64decode(got["bits"]), np.uint8).reshape(got["height"], got["width"])
        masks.append((bits.astype(bool), got["index"]))
        page.keyboard.press("Escape")
    return masks


def agreement(got: list[tuple[np.ndarray, int]], want: list[tuple[np.ndarray, int]]) -> str:
    ious = []
    for (a, _), (b, _) in zip(got, want, strict=True):
        union = int((a | b).sum())
        ious.append(1.0 if union == 0 else int((a & b).sum()) / union)
    same = sum(i == j for (_, i), (_, j) in zip(got, want, strict=True))
    return f"IoU mean {np.mean(ious):.4f} min {min(ious):.4f}, same candidate {same}/{len(got)}"


def open_app(browser, url: str, image_path: Path, block_runtime: bool, query: dict | None = None):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    if block_runtime:
        context.route("**/ort/**", lambda route: route.fulfill(status=404))
    page = context.new_page()
    page.set_default_timeout(300_000)
    started = time.perf_counter()
    page.goto(url + "/" + (f"?{urlencode(query)}" if query else ""))
    page.wait_for_selector("body[data-decoder='browser'], body[data-decoder='server']", state="attached")
    ready = time.perf_counter() - started
    page.set_input_files("#file", str(image_path))
    page.wait_for_selector("body[data-has-image='1']", state="attached")
    page.wait_for_function("() => document.body.dataset.status === 'idle'")
    return context, page, ready


def bench_model(browser, model: str, image: np.ndarray, image_path: Path, args: argparse.Namespace) -> None:
    import httpx
    from serve_testing import make_segmenter

    from samflow.serve import ServiceSettings, create_app
    from samflow.serve.server import BackgroundServer

    height, width = image.shape[:2]
    rng = np.random.default_rng(0)
    points = np.stack([rng.uniform(0, width - 1, args.clicks), rng.uniform(0, height - 1, args.clicks)],
                      axis=1).round(1)
    warm = points[:args.warmup]
    app = create_app(ServiceSettings(model=model), segmenter=make_segmenter())
    config = app.state.service.model.config
    rows, floors = [], []
    with BackgroundServer(app) as url:
        # Upload once here so the encoder (seconds for vit_b) is outside every timing; the pages find it cached.
        httpx.post(url + "/api/images", content=image_path.read_bytes(), headers={"content-type": "image/jpeg"},
                   timeout=600).raise_for_status()
        info = httpx.get(url + "/api/decoder").json()
        files = {"whole": httpx.get(f"{url}/{info['browser_decoder']}", timeout=600).content,
                 "int8": httpx.get(f"{url}/{info['browser_decoder_int8']}", timeout=600).content}
        files["fp32"] = httpx.get(f"{url}/{info['browser_factored_decoder']}", timeout=600).content
        products_file = httpx.get(f"{url}/{info['browser_products']}", timeout=600).content
        official = httpx.get(f"{url}/{info['decoder']}", timeout=600).content
        image_id = None
        for threads in args.threads:
            masks: dict[str, list] = {}
            for precision in args.precisions:
                query = ({"decoder": "fp32", "factored": "0"} if precision == "whole" else {"decoder": precision}) \
                    | ({} if threads == "default" else {"threads": threads})
                context, page, ready = open_app(browser, url, image_path, block_runtime=False, query=query)
                if page.get_attribute("body", "data-decoder") != "browser":
                    raise SystemExit(f"{model}: the app did not decode in the browser: {page.inner_text('#decoder')}")
                runtime = page.evaluate("({...samflowDecoder.runtime, cores: navigator.hardwareConcurrency, "
                                        "isolatedPage: self.crossOriginIsolated, "
                                        "productsMs: samflowApp.state.embedding.productsMs})")
                run_clicks(page, warm, width, height)  # untimed: the WebAssembly code's tier-up, the first draws
                timings, cpu, _ = run_clicks(page, points, width, height)
                assert all(t["path"] == "browser" for t in timings)
                assert all(t["decoder"] == ("factored" if precision == "fp32" else "browser") for t in timings)
                masks[precision] = shown_masks(page, points, width, height)
                image_id = page.evaluate("samflowApp.state.imageId")
                if not args.no_floor and precision == args.precisions[0]:
                    floors.append((runtime["threads"], *floor_in_page(page, files["fp32"], info, products_file)))
                context.close()
                rows.append({"threads": runtime["threads"], "asked": threads, "precision": precision,
                             "isolated": runtime["isolatedPage"], "cores": runtime["cores"], "ready": ready,
                             "timings": timings, "cpu": cpu, "masks": masks[precision],
                             "products_ms": runtime.get("productsMs"),
                             "bytes": len(files[precision])})
        context, page, _ = open_app(browser, url, image_path, block_runtime=True)
        run_clicks(page, warm, width, height)
        server, server_page_cpu, server_cpu = run_clicks(page, points, width, height)
        server_masks = shown_masks(page, points, width, height)
        context.close()
        assert all(t["path"] == "server" for t in server)
        embedding = httpx.get(f"{url}/api/images/{image_id}/embedding", timeout=600)
    feeds = click_feeds(embedding, info, points, height, width, products_file)
    grid = config.embedding_size
    print(f"\n{model}: {config.image_size} px input, {grid}x{grid} embedding "
          f"({4 * np.prod(info['embedding_shape']) / 2**20:.1f} MiB as float32); browser_decoder.onnx "
          f"{len(files['whole']) / 2**20:.1f} MiB, int8 {len(files['int8']) / 2**20:.1f} MiB; split at the image: "
          f"browser_products.onnx {len(products_file) / 2**20:.1f} MiB, browser_factored_decoder.onnx "
          f"{len(files['fp32']) / 2**20:.1f} MiB; image {width}x{height}; {args.clicks} clicks")
    print("  (fp32: clicks on the decoder split at the image; whole: the whole fp32 browser decoder per click)")
    print("  median / p95 ms            threads isolated   click->mask    session.run    decode(+upscale)  draw   "
          "  CPU/click")
    for row in rows:
        t = row["timings"]
        print(f"  browser {row['precision']:4s} ({row['asked']:>7s})  {row['threads']:3d}    {row['isolated']!s:5s}  "
              f"{stats([x['total_ms'] for x in t])}  {stats([x['run_ms'] for x in t])}  "
              f"{stats([x['decode_ms'] for x in t])}  {statistics.median(x['draw_ms'] for x in t):5.1f}  "
              f"{row['cpu']:7.1f}")
    cores = rows[0]["cores"] if rows else "?"
    ready = ", ".join(f"{r['ready']:.1f}" for r in rows)
    print(f"  (navigator.hardwareConcurrency {cores}; each page ready to decode in {ready} s)")
    for row in rows:
        if row["products_ms"] is not None:
            print(f"  {row['precision']}: the image's products for the split decoder, once when it opened: "
                  f"{row['products_ms']:.0f} ms")
    print("  mask agreement (the shown mask, the best of three)")
    for row in rows:
        fp32 = next((r for r in rows if r["precision"] == "fp32" and r["asked"] == row["asked"]), None)
        versus = f"vs float32 in the browser: {agreement(row['masks'], fp32['masks'])}; " \
            if fp32 is not None and row is not fp32 else ""
        print(f"    {row['precision']} ({row['asked']}): {versus}vs the server: {agreement(row['masks'], server_masks)}")
    native_threads = sorted({1, *(r["threads"] for r in rows)})
    for threads in native_threads:
        for precision in args.precisions:
            times, cpu = native_runs(files[precision], feeds, threads)
            print(f"  native  {precision:4s} session.run, {threads} thread{'s' if threads > 1 else ' '}  {stats(times)}   "
                  f"its CPU time {stats(cpu)}")
        times, cpu = native_runs(official, feeds, threads)
        print(f"  native  official-interface decoder.onnx (4 masks upscaled), {threads} thread"
              f"{'s' if threads > 1 else ' '}  {stats(times)}   its CPU time {stats(cpu)}")
    print(f"  server  click -> mask drawn         {stats([t['total_ms'] for t in server])}")
    print(f"          HTTP round trip             {stats([t['decode_ms'] for t in server])}")
    print(f"          server's decoder            {stats([t['server_ms'] for t in server])}")
    print(f"          draw (RLE decode + draw)    {stats([t['draw_ms'] for t in server])}")
    print(f"          CPU per click: service + driver {server_cpu:5.1f}, renderer {server_page_cpu:5.1f}")
    for threads, gemms, browser_ms in floors:
        fp32 = [r for r in rows if r["threads"] == threads and r["precision"] == "fp32"]
        print_floor(gemms, browser_ms, native_gemm(gemms, threads), threads, fp32[0] if fp32 else None,
                    native_runs(files["fp32"], feeds, threads)[0])


def image_products(products_file: bytes, features: np.ndarray) -> dict:
    """The factored decoder's per-image inputs (browser_products.onnx run once, natively)."""
    session = native_session(products_file, 2)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image_embeddings": features})))


def click_feeds(embedding, info: dict, points: np.ndarray, height: int, width: int,
                products_file: bytes) -> list[dict]:
    """The decoders' inputs for each click, as the app makes them (decode.js promptTensors), the image's products
    for the factored decoder included."""
    shape = [int(v) for v in embedding.headers["x-embedding-shape"].split(",")]
    features = np.frombuffer(embedding.content, "<f4").reshape(shape)
    products = image_products(products_file, features)
    scale = info["image_size"] / max(height, width)
    sx, sy = int(width * scale + 0.5) / width, int(height * scale + 0.5) / height
    low = info["low_res_size"]
    return [{"image_embeddings": features, "point_coords": np.array([[[x * sx, y * sy], [0, 0]]], np.float32),
             "point_labels": np.array([[1, -1]], np.float32), "mask_input": np.zeros((1, 1, *low), np.float32),
             "has_mask_input": np.zeros(1, np.float32), "orig_im_size": np.array([height, width], np.float32),
             **products} for x, y in points]


def native_session(model: bytes, threads: int, profile: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def native_runs(model: bytes, feeds: list[dict], threads: int) -> tuple[list[float], list[float]]:
    """session.run of the decoder file on onnxruntime's CPU provider for each click: what this CPU does
    natively (the WASM build's cost is the rest). Wall and CPU milliseconds."""
    session = native_session(model, threads)
    names = {i.name for i in session.get_inputs()}  # the browser decoder takes no orig_im_size
    feeds = [{k: v for k, v in feed.items() if k in names} for feed in feeds]
    for feed in feeds[:3]:
        session.run(None, feed)
    times, cpu = [], []
    for feed in feeds:
        started, cpu_started = time.perf_counter(), time.process_time()
        session.run(None, feed)
        times.append((time.perf_counter() - started) * 1e3)
        cpu.append((time.process_time() - cpu_started) * 1e3)
    return times, cpu


# ------------------------------------------------------------------------------------------- the floor


def decoder_gemms(model: bytes, feed: dict) -> Counter:
    """{(M, K, N): count} of the decoder's matrix products in one click, from a native onnxruntime profile
    (the optimised graph, as the web runtime runs it): MatMul and Gemm with their batch folded into M when the
    right operand is shared, 1x1 and strided convolutions as the GEMMs they are."""
    with tempfile.TemporaryDirectory() as tmp:
        session = native_session(model, 1, profile=str(Path(tmp) / "decoder"))
        session.run(None, {k: v for k, v in feed.items() if k in {i.name for i in session.get_inputs()}})
        events = json.loads(Path(session.end_profiling()).read_text())
    gemms: Counter = Counter()
    for event in events:
        args = event.get("args", {})
        if (event.get("cat") != "Node" or not event["name"].endswith("_kernel_time")
                or args.get("op_name") not in GEMM_OPS):
            continue
        ins = [next(iter(t.values())) for t in args.get("input_type_shape", [])]
        out = next(iter(args["output_type_shape"][0].values()))
        if args["op_name"] in ("Conv", "FusedConv"):
            weight = ins[1]
            gemms[(math.prod(out[2:]) * out[0], math.prod(weight[1:]), weight[0])] += 1
            continue
        a = ins[0]
        k = a[-1] if len(a) < 2 or a[-2] == out[-2] else a[-2]
        batch = math.prod(out[:-2])
        shared = len(ins) > 1 and math.prod(ins[1][:-2]) == 1
        if shared:
            gemms[(batch * out[-2], k, out[-1])] += 1
        else:
            gemms[(out[-2], k, out[-1])] += batch
    return gemms


def chain_model(m: int, k: int, n: int, length: int) -> bytes:
    """An ONNX model of `length` (even) MatMuls: A (m, k) times B1 (k, n), that times B2 (n, k), and so on; all
    three are inputs, so nothing is folded or packed ahead."""
    from onnx import TensorProto, helper

    nodes, y = [], "A"
    for i in range(length):
        nodes.append(helper.make_node("MatMul", [y, "B1" if i % 2 == 0 else "B2"], [f"y{i}"]))
        y = f"y{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k]),
                                               helper.make_tensor_value_info("B1", TensorProto.FLOAT, [k, n]),
                                               helper.make_tensor_value_info("B2", TensorProto.FLOAT, [n, k])],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, [m, k])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def chain_lengths(m: int, k: int, n: int) -> tuple[int, int]:
    long = max(4, 2 * round(CHAIN_FLOPS / (2 * m * k * n) / 2))
    return 2, min(long, 64)


def floor_shapes(gemms: Counter) -> list[tuple[int, int, int]]:
    """The largest shapes by FLOPs, until they hold FLOOR_SHARE of them (the rest: timed at their mean rate)."""
    total = sum(2 * m * k * n * c for (m, k, n), c in gemms.items())
    shapes, share = [], 0.0
    for (m, k, n), count in sorted(gemms.items(), key=lambda kv: -kv[0][0] * kv[0][1] * kv[0][2] * kv[1]):
        if share >= FLOOR_SHARE:
            break
        shapes.append((m, k, n))
        share += 2 * m * k * n * count / total
    return shapes


CHAIN_JS = """async ([specs, runs]) => {
  const median = (v) => { const s = [...v].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
  const random = (length, scale) => {
    const a = new Float32Array(length);
    for (let i = 0; i < length; i++) a[i] = (Math.random() - 0.5) * scale;
    return a;
  };
  const out = [];
  for (const spec of specs) {
    const [m, k, n] = spec.shape;
    const feeds = { A: new ort.Tensor("float32", random(m * k, 2), [m, k]),
      B1: new ort.Tensor("float32", random(k * n, 3.46 / Math.sqrt(k)), [k, n]),
      B2: new ort.Tensor("float32", random(n * k, 3.46 / Math.sqrt(n)), [n, k]) };
    const medians = [];
    for (const encoded of spec.models) {
      const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
      const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"],
        graphOptimizationLevel: "all" });
      const times = [];
      for (let i = 0; i < runs + 2; i++) {
        const started = performance.now();
        const result = await session.run(feeds);
        const ms = performance.now() - started;
        for (const t of Object.values(result)) if (t.dispose) t.dispose();
        if (i >= 2) times.push(ms);
      }
      await session.release();
      medians.push(median(times));
    }
    out.push(medians);
  }
  return out;
}"""


def per_matmul_ms(short_ms: float, long_ms: float, lengths: tuple[int, int]) -> float:
    return max(long_ms - short_ms, 1e-6) / (lengths[1] - lengths[0])


def floor_in_page(page, decoder: bytes, info: dict, products_file: bytes) -> tuple[Counter, dict]:
    """The decoder's GEMMs and each shape's milliseconds per product in this page's runtime."""
    low = info["low_res_size"]
    side = info["image_size"]
    features = np.random.default_rng(0).standard_normal(info["embedding_shape"]).astype(np.float32)
    feed = {"image_embeddings": features,
            "point_coords": np.array([[[side / 3, side / 4], [0, 0]]], np.float32),
            "point_labels": np.array([[1, -1]], np.float32), "mask_input": np.zeros((1, 1, *low), np.float32),
            "has_mask_input": np.zeros(1, np.float32), "orig_im_size": np.array([side, side], np.float32),
            **image_products(products_file, features)}
    gemms = decoder_gemms(decoder, feed)
    shapes = floor_shapes(gemms)
    specs = [{"shape": list(s), "models": [base64.b64encode(chain_model(*s, n)).decode()
                                            for n in chain_lengths(*s)]} for s in shapes]
    medians = page.evaluate(CHAIN_JS, [specs, FLOOR_RUNS])
    return gemms, {s: per_matmul_ms(*ms, chain_lengths(*s)) for s, ms in zip(shapes, medians, strict=True)}


def native_gemm(gemms: Counter, threads: int) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for m, k, n in floor_shapes(gemms):
        feed = {"A": rng.uniform(-1, 1, (m, k)).astype(np.float32),
                "B1": (rng.uniform(-1, 1, (k, n)) * 1.73 / np.sqrt(k)).astype(np.float32),
                "B2": (rng.uniform(-1, 1, (n, k)) * 1.73 / np.sqrt(n)).astype(np.float32)}
        medians = []
        for length in chain_lengths(m, k, n):
            session = native_session(chain_model(m, k, n, length), threads)
            times = []
            for i in range(FLOOR_RUNS + 2):
                started = time.perf_counter()
                session.run(None, feed)
                if i >= 2:
                    times.append((time.perf_counter() - started) * 1e3)
            medians.append(statistics.median(times))
        out[(m, k, n)] = per_matmul_ms(*medians, chain_lengths(m, k, n))
    return out


def floor_ms(gemms: Counter, per_product: dict) -> tuple[float, float]:
    """(milliseconds of all the decoder's GEMMs, GFLOP they hold); shapes not timed at the timed ones' rate."""
    timed_flops = sum(2 * m * k * n * gemms[(m, k, n)] for m, k, n in per_product)
    timed_ms = sum(ms * gemms[s] for s, ms in per_product.items())
    total = sum(2 * m * k * n * c for (m, k, n), c in gemms.items())
    return timed_ms * total / timed_flops, total / 1e9


def print_floor(gemms: Counter, browser_ms: dict, native_ms: dict, threads: int, row: dict | None,
                native_decoder: list[float]) -> None:
    gflop = sum(2 * m * k * n * c for (m, k, n), c in gemms.items()) / 1e9
    print(f"  floor, {threads} thread{'s' if threads > 1 else ''}: the decoder's GEMMs ({gflop:.2f} GFLOP per click; "
          f"{len(gemms)} shapes, the largest timed alone)")
    print("      M x K x N       count   GFLOP   WASM ms  GFLOP/s   native ms  GFLOP/s")
    for (m, k, n), ms in browser_ms.items():
        count = gemms[(m, k, n)]
        flop = 2 * m * k * n
        print(f"    {m:6d} x {k:4d} x {n:4d}  {count:4d}  {flop * count / 1e9:6.3f}  {ms * count:8.2f}  "
              f"{flop / ms / 1e6:7.1f}   {native_ms[(m, k, n)] * count:8.2f}  {flop / native_ms[(m, k, n)] / 1e6:7.1f}")
    wasm_floor, _ = floor_ms(gemms, browser_ms)
    native_floor, _ = floor_ms(gemms, native_ms)
    print(f"    all GEMMs: WASM {wasm_floor:.1f} ms, native {native_floor:.1f} ms (same threads)")
    if row is not None:
        run = statistics.median(t["run_ms"] for t in row["timings"])
        native_run = statistics.median(native_decoder)
        print(f"    decoder session.run: WASM {run:.1f} ms = {run / wasm_floor:.2f} x its GEMM floor "
              f"({100 * wasm_floor / run:.0f}% of it GEMMs); native {native_run:.1f} ms = "
              f"{native_run / native_floor:.2f} x its floor; WASM / native {run / native_run:.2f} x "
              f"(GEMMs alone {wasm_floor / native_floor:.2f} x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,vit_b")
    parser.add_argument("--clicks", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5, help="untimed clicks first (default 5)")
    parser.add_argument("--threads", default="default",
                        help="comma-separated: 'default' (the app's choice) and/or thread counts (default: default)")
    parser.add_argument("--precisions", default="fp32,whole,int8",
                        help="comma-separated: fp32 (clicks on the decoder split at the image), whole (the whole "
                             "fp32 browser decoder per click, ?factored=0), int8 (the int8 browser decoder); "
                             "default all three")
    parser.add_argument("--no-floor", action="store_true", help="skip timing the decoder's GEMMs alone")
    parser.add_argument("--image", type=Path, help="an image file (default: ../shared/images/dog.jpg or a pattern)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.threads = [t.strip() for t in args.threads.split(",")]
    args.precisions = [p.strip() for p in args.precisions.split(",")]
    if any(t != "default" and not t.isdigit() for t in args.threads) or not set(args.precisions) <= {"fp32", "whole",
                                                                                                      "int8"}:
        parser.error("--threads takes 'default' and numbers, --precisions fp32, whole and int8")

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
            print(f"chromium {browser.version}; onnxruntime-web WASM backend")
            for model in args.models.split(","):
                bench_model(browser, model.strip(), image, image_path, args)
                print(f"  {load_average()}")
            browser.close()
        print(f"\n{load_average()} (after)")


if __name__ == "__main__":
    main()

// samflow browser decoding: SAM's prompt encoder and mask decoder run in this browser with onnxruntime-web (its
// WebAssembly backend), on the image embedding the server computed once. The service sends COOP/COEP headers, so
// the page is crossOriginIsolated and the runtime decodes with min(hardwareConcurrency, 4) threads (one thread on
// a page that is not isolated, e.g. behind a proxy that drops the headers). The runtime (ort/), the decoder
// (api/models/NAME/browser_decoder.onnx: segment-anything's ONNX inputs but orig_im_size, out the three
// ambiguity-aware masks as low-res logits), the same split at the image (browser_products.onnx once per image,
// browser_factored_decoder.onnx per click without a mask input: about a third of the work) and the embedding
// (api/images/ID/embedding: raw little-endian floats) all come from the service, so this works with no other
// network. The full-size mask is made here, only for the
// masks shown, with the weights of Sam.postprocess_masks (the official upscaling in the exported graph resizes all
// masks twice, about a quarter of a click in WebAssembly). Also COCO RLE encoding, for exporting masks.
"use strict";

window.samflowDecoder = (() => {
  const MAX_THREADS = 4; // more threads hardly help the decoder (its operations are small) and cost memory
  let info = null;
  let session = null;
  // The browser decoder split at the image (api/models/NAME/browser_products.onnx, run once per image, and
  // browser_factored_decoder.onnx, per click without a mask input: about a third of the work); null when the
  // service has none or it did not load (then every click runs `session`).
  let factored = null; // {products, decoder}: two sessions
  let runtime = null; // {threads, isolated, precision, decoderBytes, factored}: how this page decodes
  let running = Promise.resolve(); // the last session.run
  const taps = new Map(); // "HxW" -> the upscaling's taps for that image size (see upscaleTaps)

  // The WebAssembly threads to ask for: `wanted` (a setting) or min(cores, MAX_THREADS), 1 where the page is not
  // crossOriginIsolated (no SharedArrayBuffer: the runtime would fall back to one thread, with a warning).
  function threadCount(wanted) {
    if (!self.crossOriginIsolated) return 1;
    const cores = navigator.hardwareConcurrency || 1;
    const n = Number.isInteger(wanted) && wanted > 0 ? wanted : Math.min(cores, MAX_THREADS);
    return Math.max(1, Math.min(n, 16));
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && body.error) return `${body.error.message} (${body.error.code})`;
    } catch (_) { /* not JSON */ }
    return `HTTP ${response.status}`;
  }

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = () => resolve();
      script.onerror = () => reject(new Error(`cannot load the runtime ${src}`));
      document.head.append(script);
    });
  }

  // Load the runtime and the served model's decoder; resolves to the decoder's description (GET api/decoder).
  // `fetchFn` is the app's fetch (it may add the service's token). options: `threads` (default: see threadCount),
  // `precision` "fp32" (default) or "int8" (the dynamically quantised decoder: smaller; see `runtime`).
  async function init(fetchFn, options = {}) {
    if (typeof WebAssembly !== "object" || typeof WebAssembly.instantiate !== "function") {
      throw new Error("this browser has no WebAssembly");
    }
    const described = await fetchFn("api/decoder");
    if (!described.ok) throw new Error(`api/decoder: ${await errorText(described)}`);
    const decoder = await described.json();
    if (!decoder.available) throw new Error(decoder.reason || "the service cannot export its decoder");
    if (!window.ort) await loadScript(decoder.runtime);
    const ort = window.ort;
    if (!ort || !ort.InferenceSession) throw new Error("the runtime did not load");
    const precision = options.precision === "int8" ? "int8" : "fp32";
    if (!runtime) { // the runtime's threads are fixed once its WebAssembly is loaded (the first session)
      ort.env.wasm.numThreads = threadCount(options.threads);
      ort.env.wasm.proxy = options.proxy === true;
      ort.env.wasm.wasmPaths = new URL(decoder.wasm_paths, document.baseURI).href;
      ort.env.logLevel = "error";
    }
    const url = precision === "int8" ? decoder.browser_decoder_int8 : decoder.browser_decoder;
    const response = await fetchFn(url);
    if (!response.ok) throw new Error(`${url}: ${await errorText(response)}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    const created = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"],
      graphOptimizationLevel: "all" });
    const previous = session;
    session = created;
    if (previous) {
      await running.catch(() => {}); // a decoding still on the old session finishes first
      await previous.release();
    }
    info = decoder;
    const previousFactored = factored;
    factored = precision === "fp32" && options.factored !== false ? await loadFactored(fetchFn, decoder) : null;
    if (previousFactored) {
      await previousFactored.products.release();
      await previousFactored.decoder.release();
    }
    // numThreads as the runtime took it (it falls back to 1 where threads do not work).
    runtime = { threads: ort.env.wasm.numThreads, isolated: self.crossOriginIsolated === true, precision,
      decoderBytes: bytes.byteLength, factored: factored !== null };
    // One decoding of a blank embedding now: the first real click would otherwise pay the runtime's warm-up.
    const blank = await prepared({ origSize: [decoder.image_size, decoder.image_size],
      tensor: new ort.Tensor("float32", new Float32Array(decoder.embedding_shape.reduce((x, y) => x * y, 1)),
        decoder.embedding_shape) });
    await decode(blank, [{ x: 0, y: 0, label: 1 }], null, null);
    if (factored) await decode(blank, [{ x: 0, y: 0, label: 1 }], null, new Float32Array(
      decoder.low_res_size[0] * decoder.low_res_size[1])); // the browser decoder too (refinements run it)
    return decoder;
  }

  // The two sessions of the factored decoder, or null (with a console note) when they cannot be had.
  async function loadFactored(fetchFn, decoder) {
    if (!decoder.browser_products || !decoder.browser_factored_decoder) return null;
    try {
      const made = [];
      for (const url of [decoder.browser_products, decoder.browser_factored_decoder]) {
        const response = await fetchFn(url);
        if (!response.ok) throw new Error(`${url}: ${await errorText(response)}`);
        made.push(await window.ort.InferenceSession.create(new Uint8Array(await response.arrayBuffer()),
          { executionProviders: ["wasm"], graphOptimizationLevel: "all" }));
      }
      return { products: made[0], decoder: made[1] };
    } catch (error) {
      console.warn(`samflow: clicks decode with the browser decoder alone (${error.message})`);
      return null;
    }
  }

  // `embedding` with the image's products for the factored decoder (made once per image), when it is loaded.
  async function prepared(embedding) {
    if (!factored) return embedding;
    const started = performance.now();
    running = factored.products.run({ image_embeddings: embedding.tensor });
    const products = await running;
    return { ...embedding, products, productsMs: performance.now() - started };
  }

  // IEEE half -> float for a float16 embedding.
  function halfToFloat(half) {
    const out = new Float32Array(half.length);
    for (let i = 0; i < half.length; i++) {
      const h = half[i];
      const sign = h & 0x8000 ? -1 : 1;
      const exp = (h >> 10) & 0x1f;
      const frac = h & 0x3ff;
      if (exp === 0) out[i] = sign * frac * 2 ** -24;
      else if (exp === 31) out[i] = frac ? NaN : sign * Infinity;
      else out[i] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
    }
    return out;
  }

  // The embedding of an uploaded image, as a tensor, with the image size the decoder needs.
  async function loadEmbedding(fetchFn, imageId, dtype = "float32") {
    if (!session) throw new Error("the decoder is not loaded");
    const query = dtype === "float32" ? "" : `?dtype=${dtype}`;
    const response = await fetchFn(`api/images/${imageId}/embedding${query}`);
    if (!response.ok) throw new Error(`embedding: ${await errorText(response)}`);
    const shape = response.headers.get("X-Embedding-Shape").split(",").map(Number);
    const got = response.headers.get("X-Embedding-Dtype");
    const origSize = response.headers.get("X-Original-Size").split(",").map(Number);
    const key = response.headers.get("X-Model-Key");
    if (key && key !== info.model_key) throw new Error("the embedding is of other weights than the decoder's");
    const buffer = await response.arrayBuffer();
    const data = got === "float16" ? halfToFloat(new Uint16Array(buffer)) : new Float32Array(buffer);
    if (data.length !== shape.reduce((a, b) => a * b, 1)) throw new Error("the embedding has the wrong size");
    return prepared({ imageId, origSize, bytes: buffer.byteLength,
      tensor: new window.ort.Tensor("float32", data, shape) });
  }

  // Image pixels -> the model's input frame, as segment-anything's ResizeLongestSide.apply_coords (what
  // SamPredictor and the official export's notebook use): the long side scaled to image_size, each side rounded.
  function inputScale(height, width) {
    const size = info.image_size;
    const scale = size / Math.max(height, width);
    const newH = Math.floor(height * scale + 0.5);
    const newW = Math.floor(width * scale + 0.5);
    return [newW / width, newH / height];
  }

  // The official prompt layout: points (1 positive, 0 negative), then a box as two corners (labels 2, 3) or,
  // without a box, the padding point (0, 0) with label -1.
  function promptTensors(embedding, points, box) {
    const [height, width] = embedding.origSize;
    const [sx, sy] = inputScale(height, width);
    const n = points.length + (box ? 2 : 1);
    const coords = new Float32Array(2 * n);
    const labels = new Float32Array(n);
    points.forEach((p, i) => {
      coords[2 * i] = p.x * sx;
      coords[2 * i + 1] = p.y * sy;
      labels[i] = p.label;
    });
    const i = points.length;
    if (box) {
      coords.set([box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy], 2 * i);
      labels[i] = 2;
      labels[i + 1] = 3;
    } else {
      labels[i] = -1;
    }
    return { coords, labels, n };
  }

  // One axis of Sam.postprocess_masks as taps: `low` logits, bilinear (align_corners=False, as torch) to `size`,
  // the first `keep`, bilinear to `out`. Each output index gets 4 (low-res index, weight) taps (two linear steps
  // of two each); `used`: the low-res entries any output reaches (the padding's never do).
  function axisTaps(low, size, keep, out) {
    const index = new Int32Array(4 * out);
    const weight = new Float32Array(4 * out);
    const source = (o, from, to) => Math.max((o + 0.5) * (from / to) - 0.5, 0);
    let used = 0;
    for (let o = 0; o < out; o++) {
      const s = source(o, keep, out);
      const i0 = Math.floor(s);
      const f = s - i0;
      [[i0, 1 - f], [Math.min(i0 + 1, keep - 1), f]].forEach(([i, wi], a) => {
        const t = source(i, low, size);
        const j0 = Math.floor(t);
        const g = t - j0;
        const j1 = Math.min(j0 + 1, low - 1);
        index[4 * o + 2 * a] = j0;
        weight[4 * o + 2 * a] = wi * (1 - g);
        index[4 * o + 2 * a + 1] = j1;
        weight[4 * o + 2 * a + 1] = wi * g;
        used = Math.max(used, j1 + 1);
      });
    }
    return { index, weight, used };
  }

  function upscaleTaps(height, width) {
    const key = `${height}x${width}`;
    if (!taps.has(key)) {
      const [sx, sy] = inputScale(height, width);
      const [lh, lw] = info.low_res_size;
      const size = info.image_size;
      if (taps.size >= 8) taps.delete(taps.keys().next().value);
      taps.set(key, { rows: axisTaps(lh, size, Math.round(height * sy), height),
        cols: axisTaps(lw, size, Math.round(width * sx), width) });
    }
    return taps.get(key);
  }

  // The full-size 0/1 mask (H*W, row-major) of one low-res logit map and its area: Sam.postprocess_masks
  // thresholded at mask_threshold, columns first (on the rows that reach the image), then rows.
  function upscaleMask(lowRes, height, width) {
    const { rows, cols } = upscaleTaps(height, width);
    const lw = info.low_res_size[1];
    const wide = new Float32Array(rows.used * width);
    for (let r = 0; r < rows.used; r++) {
      const base = r * lw;
      const line = r * width;
      for (let x = 0; x < width; x++) {
        const t = 4 * x;
        const ci = cols.index;
        const cw = cols.weight;
        wide[line + x] = lowRes[base + ci[t]] * cw[t] + lowRes[base + ci[t + 1]] * cw[t + 1]
          + lowRes[base + ci[t + 2]] * cw[t + 2] + lowRes[base + ci[t + 3]] * cw[t + 3];
      }
    }
    const mask = new Uint8Array(height * width);
    const threshold = info.mask_threshold;
    let area = 0;
    for (let y = 0; y < height; y++) {
      const t = 4 * y;
      const r0 = rows.index[t] * width, r1 = rows.index[t + 1] * width;
      const r2 = rows.index[t + 2] * width, r3 = rows.index[t + 3] * width;
      const w0 = rows.weight[t], w1 = rows.weight[t + 1], w2 = rows.weight[t + 2], w3 = rows.weight[t + 3];
      const line = y * width;
      for (let x = 0; x < width; x++) {
        if (wide[r0 + x] * w0 + wide[r1 + x] * w1 + wide[r2 + x] * w2 + wide[r3 + x] * w3 > threshold) {
          mask[line + x] = 1;
          area++;
        }
      }
    }
    return { mask, area };
  }

  // A candidate whose full-size mask and area are made when first read (cycling shows one mask at a time).
  function candidate(score, lowRes, height, width) {
    let full = null;
    const made = () => full || (full = upscaleMask(lowRes, height, width));
    return { score, lowRes, get mask() { return made().mask; }, get area() { return made().area; } };
  }

  // The three ambiguity-aware masks for a prompt: [{score, lowRes (Float32Array 4h*4w logits: the next click's
  // mask_input), mask (Uint8Array H*W, row-major; made on first read), area}], the best index, the time of the
  // run and which decoder ran ("factored" or "browser"). maskInput: the previous mask's low-res logits (refining
  // an object), or null.
  async function decode(embedding, points, box, maskInput) {
    const ort = window.ort;
    const [height, width] = embedding.origSize;
    const { coords, labels, n } = promptTensors(embedding, points, box);
    const [lh, lw] = info.low_res_size;
    const prompt = {
      point_coords: new ort.Tensor("float32", coords, [1, n, 2]),
      point_labels: new ort.Tensor("float32", labels, [1, n]),
    };
    const useFactored = !maskInput && factored !== null && embedding.products !== undefined;
    const feeds = useFactored ? { ...prompt, ...embedding.products } : {
      image_embeddings: embedding.tensor,
      ...prompt,
      mask_input: new ort.Tensor("float32", maskInput || new Float32Array(lh * lw), [1, 1, lh, lw]),
      has_mask_input: new ort.Tensor("float32", new Float32Array([maskInput ? 1 : 0]), [1]),
    };
    const started = performance.now();
    running = (useFactored ? factored.decoder : session).run(feeds);
    const out = await running;
    const runMs = performance.now() - started;
    const scores = out.iou_predictions.data;
    const low = out.low_res_masks.data;
    const lowSize = lh * lw;
    const k = out.low_res_masks.dims[1];
    if (out.low_res_masks.dims[2] !== lh || out.low_res_masks.dims[3] !== lw) throw new Error("low-res masks of the wrong size");
    const candidates = [];
    for (let i = 0; i < k; i++) candidates.push(candidate(scores[i], low.slice(i * lowSize, (i + 1) * lowSize), height, width));
    for (const tensor of Object.values(out)) if (tensor.dispose) tensor.dispose();
    let best = 0;
    candidates.forEach((c, i) => { if (c.score > candidates[best].score) best = i; });
    return { candidates, best, runMs, decoder: useFactored ? "factored" : "browser" };
  }

  // ----------------------------------------------------------------------------------------- COCO RLE

  // Compressed COCO RLE of a row-major 0/1 mask, as pycocotools encodes it (runs down the columns, starting with
  // background; each count after the second as a difference to the one two back, in 5-bit groups).
  function encodeRle(mask, height, width) {
    const counts = [];
    let previous = 0;
    let run = 0;
    for (let x = 0; x < width; x++) {
      for (let i = x; i < height * width; i += width) {
        const v = mask[i] ? 1 : 0;
        if (v !== previous) {
          counts.push(run);
          run = 0;
          previous = v;
        }
        run++;
      }
    }
    counts.push(run);
    const chars = [];
    for (let i = 0; i < counts.length; i++) {
      let x = counts[i];
      if (i > 2) x -= counts[i - 2];
      let more = true;
      while (more) {
        let c = x & 0x1f;
        x >>= 5;
        more = c & 0x10 ? x !== -1 : x !== 0;
        if (more) c |= 0x20;
        chars.push(c + 48);
      }
    }
    let text = "";
    for (let i = 0; i < chars.length; i += 8192) text += String.fromCharCode(...chars.slice(i, i + 8192));
    return { size: [height, width], counts: text };
  }

  // [x, y, width, height] of a mask's pixels (COCO; [0, 0, 0, 0] when empty), as samflow.ops.rle.bbox.
  function maskBbox(mask, height, width) {
    let x0 = width, y0 = height, x1 = -1, y1 = -1;
    for (let y = 0; y < height; y++) {
      const row = y * width;
      for (let x = 0; x < width; x++) {
        if (mask[row + x]) {
          if (x < x0) x0 = x;
          if (x > x1) x1 = x;
          if (y < y0) y0 = y;
          y1 = y;
        }
      }
    }
    return x1 < 0 ? [0, 0, 0, 0] : [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
  }

  return {
    init, loadEmbedding, decode, upscaleMask, encodeRle, maskBbox, inputScale, threadCount,
    get info() { return info; },
    get runtime() { return runtime; },
  };
})();

// samflow browser app: click, drag or describe an object, see SAM's mask, keep it, export SA-1B or COCO JSON.
// Plain JS, no build step. The server computes each image's embedding once; clicks and boxes are decoded in this
// browser (decode.js: onnxruntime-web on the served decoder), so a click costs the server nothing. Text prompts,
// and every prompt when the browser cannot decode (no WebAssembly, the runtime or model failed to load), are sent
// to the server (POST api/images/ID/segment).
"use strict";

(() => {
  // tab10, as samflow's overlay pictures (samflow/ops/draw.py).
  const PALETTE = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]];
  const CURRENT_COLOUR = [0, 200, 255];
  const DRAG_THRESHOLD = 5; // screen pixels a press must move to become a box
  const MAX_HISTORY = 200; // undo steps kept
  const MAX_TIMINGS = 1000;

  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const decoder = window.samflowDecoder;

  const state = {
    imageId: null, width: 0, height: 0, fileName: "", picture: null,
    points: [], box: null, text: "", maskInput: null,
    candidates: [], current: 0,
    objects: [], nextObjectId: 1,
    history: [], version: 0, shownVersion: 0,
    seq: 0, inflight: false, pending: false, promptAt: 0,
    press: null, drag: null,
    // where prompts are decoded: "pending" (loading the decoder), "browser", or "server" (with why)
    decoder: "pending", decoderNote: "", embedding: null,
  };
  // Click-to-mask timings, for benchmarks/browser_decode.py and the tests: {path, decode_ms, draw_ms, total_ms,
  // run_ms (onnxruntime's session.run) and decoder ("factored" or "browser": decode.js), or server_ms (the
  // server's decoder)}.
  const timings = [];

  // Settings of decoding in the browser: the decoder's precision ("fp32", or "int8": the quantised decoder), as
  // chosen in the panel (kept in this browser) or given in the address (?decoder=int8), and the WebAssembly
  // threads (?threads=N; default min(cores, 4) on a crossOriginIsolated page).
  const params = new URLSearchParams(location.search);
  const PRECISION_KEY = "samflow.decoder";
  function storedPrecision() {
    try {
      return localStorage.getItem(PRECISION_KEY);
    } catch (_) { return null; } // storage disabled
  }
  const settings = {
    precision: (params.get("decoder") || storedPrecision()) === "int8" ? "int8" : "fp32",
    threads: params.has("threads") ? Number.parseInt(params.get("threads"), 10) : undefined,
    proxy: params.get("proxy") === "1",
    factored: params.get("factored") !== "0", // ?factored=0: every click runs the whole browser decoder
  };

  // The service's fetch: every request of the app (and of decode.js) goes through here.
  function apiFetch(path, options = {}) {
    return fetch(path, options);
  }

  // ------------------------------------------------------------------------------------------- COCO RLE

  // Counts of a compressed COCO RLE string (pycocotools' rleFrString).
  function rleCounts(text) {
    const counts = [];
    let p = 0;
    while (p < text.length) {
      let x = 0, k = 0, more = true;
      while (more) {
        const c = text.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = (c & 0x20) !== 0;
        p += 1;
        k += 1;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (counts.length > 2) x += counts[counts.length - 2];
      counts.push(x);
    }
    return counts;
  }

  // Row-major Uint8Array (h * w) of an RLE; runs go down columns, starting with background.
  function decodeRle(rle) {
    const [h, w] = rle.size;
    const counts = typeof rle.counts === "string" ? rleCounts(rle.counts) : rle.counts;
    const mask = new Uint8Array(h * w);
    let index = 0;
    for (let r = 0; r < counts.length; r++) {
      if (r % 2 === 1) {
        for (let i = index; i < index + counts[r]; i++) {
          const col = Math.floor(i / h);
          mask[(i - col * h) * w + col] = 1;
        }
      }
      index += counts[r];
    }
    return mask;
  }

  // An offscreen canvas holding the mask in one opaque colour (drawn translucent over the picture).
  function maskLayer(mask, colour) {
    const layer = document.createElement("canvas");
    layer.width = state.width;
    layer.height = state.height;
    const lctx = layer.getContext("2d");
    const data = lctx.createImageData(state.width, state.height);
    const px = new Uint32Array(data.data.buffer);
    const bytes = new Uint8Array([colour[0], colour[1], colour[2], 255]);
    const value = new Uint32Array(bytes.buffer)[0]; // RGBA in memory order, whatever the endianness
    for (let i = 0; i < mask.length; i++) if (mask[i]) px[i] = value;
    lctx.putImageData(data, 0, 0);
    return layer;
  }

  function candidateLayer(cand) {
    if (!cand.layer) cand.layer = maskLayer(cand.mask, CURRENT_COLOUR);
    return cand.layer;
  }

  // ------------------------------------------------------------------------------------------- drawing

  function render() {
    if (!state.picture) return;
    ctx.globalAlpha = 1;
    ctx.drawImage(state.picture, 0, 0, state.width, state.height);
    ctx.globalAlpha = 0.45;
    for (const obj of state.objects) ctx.drawImage(obj.layer, 0, 0);
    const cand = state.candidates[state.current];
    if (cand) {
      ctx.globalAlpha = 0.55;
      ctx.drawImage(candidateLayer(cand), 0, 0);
    }
    ctx.globalAlpha = 1;
    canvas.dataset.maskShown = cand ? "1" : "0";
    const unit = Math.max(1, Math.max(state.width, state.height) / 400);
    const box = state.drag || state.box;
    if (box) {
      ctx.setLineDash([6 * unit, 4 * unit]);
      ctx.lineWidth = 2 * unit;
      ctx.strokeStyle = "#ffffff";
      ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
      ctx.setLineDash([]);
    }
    for (const pt of state.points) {
      ctx.beginPath();
      ctx.arc(pt.x, pt.y, 4 * unit, 0, 2 * Math.PI);
      ctx.fillStyle = pt.label === 1 ? "#28dc28" : "#e61e1e";
      ctx.fill();
      ctx.lineWidth = 1.5 * unit;
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
    }
  }

  // Show the picture as large as the stage allows, small images scaled up, aspect kept (the canvas keeps image
  // pixels; clicks are mapped back through its on-screen size).
  function fitCanvas() {
    if (!state.width) return;
    const stage = $("stage");
    const room = [stage.clientWidth - 24, stage.clientHeight - 24];
    const scale = Math.max(0.05, Math.min(room[0] / state.width, room[1] / state.height));
    canvas.style.width = `${Math.floor(state.width * scale)}px`;
    canvas.style.height = `${Math.floor(state.height * scale)}px`;
  }

  function setStatus(text, isError = false) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", isError);
  }

  function showDecoder() {
    document.body.dataset.decoder = state.decoder;
    const info = decoder && decoder.info;
    const runtime = decoder && decoder.runtime;
    if (runtime) {
      document.body.dataset.threads = String(runtime.threads);
      document.body.dataset.precision = runtime.precision;
    }
    $("precision").value = settings.precision;
    $("precision").disabled = state.decoder === "pending" || !runtime;
    const threads = runtime && `${runtime.threads} thread${runtime.threads === 1 ? "" : "s"}`
      + (runtime.isolated ? "" : ", page not cross-origin isolated");
    $("decoder").textContent = state.decoder === "browser"
      ? `Clicks are decoded in this browser (onnxruntime-web ${info.runtime_version}, WebAssembly, ${threads}; `
        + `${info.model}, ${runtime.precision === "int8" ? "int8" : "float32"} decoder`
        + `${runtime.factored ? ", split at the image" : ""}).`
      : state.decoder === "server"
        ? `Clicks are decoded on the server: ${state.decoderNote}`
        : "Loading the decoder into this browser…";
  }

  function updateControls() {
    const hasImage = state.imageId !== null;
    const hasPrompt = state.points.length > 0 || state.box !== null || state.text !== "";
    $("text").disabled = !hasImage;
    $("text-go").disabled = !hasImage;
    $("cycle").disabled = state.candidates.length < 2;
    $("accept").disabled = state.candidates.length === 0;
    $("undo").disabled = state.history.length === 0;
    $("clear").disabled = !hasPrompt;
    $("export-sa1b").disabled = state.objects.length === 0;
    $("export-coco").disabled = state.objects.length === 0;
    document.body.dataset.hasImage = hasImage ? "1" : "0";
    const cand = state.candidates[state.current];
    $("candidate").textContent = cand
      ? `mask ${state.current + 1} of ${state.candidates.length} · predicted IoU ${cand.score.toFixed(3)} · `
        + `${cand.area} px`
      : "";
  }

  function renderObjects() {
    const list = $("objects");
    list.replaceChildren();
    for (const obj of state.objects) {
      const item = document.createElement("li");
      const row = document.createElement("div");
      row.className = "row";
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = `rgb(${obj.colour.join(",")})`;
      const text = document.createElement("span");
      text.className = "what";
      text.textContent = `${obj.label || "object"} · ${obj.area} px · IoU ${obj.score.toFixed(2)}`;
      row.append(swatch, text);
      const remove = document.createElement("button");
      remove.textContent = "✕";
      remove.title = "Remove this object";
      remove.addEventListener("click", () => {
        remember();
        state.objects = state.objects.filter((o) => o !== obj);
        renderObjects();
        render();
        updateControls();
      });
      row.append(remove);
      item.append(row);
      list.append(item);
    }
    $("count").textContent = String(state.objects.length);
  }

  // ------------------------------------------------------------------------------------------- undo

  // Every change of the prompts or of the objects is remembered first; undo goes back one step (the last click,
  // box, text, clear, accepted or removed object) without asking anyone for masks again.
  function remember() {
    state.history.push({
      points: state.points.slice(), box: state.box, text: state.text, maskInput: state.maskInput,
      candidates: state.candidates, current: state.current, objects: state.objects.slice(),
      nextObjectId: state.nextObjectId, version: state.version, shownVersion: state.shownVersion,
    });
    if (state.history.length > MAX_HISTORY) state.history.shift();
  }

  function undo() {
    const step = state.history.pop();
    if (!step) return;
    Object.assign(state, step);
    $("text").value = state.text;
    state.seq++; // answers still on their way are stale
    state.pending = false;
    renderObjects();
    render();
    updateControls();
    setStatus("Undone.");
    if (state.shownVersion !== state.version) requestMasks(); // its masks never arrived: ask again
  }

  // ------------------------------------------------------------------------------------------- server

  async function apiError(response) {
    try {
      const body = await response.json();
      if (body && body.error) return `${body.error.message} (${body.error.code})`;
    } catch (_) { /* not JSON */ }
    return `HTTP ${response.status}`;
  }

  // Load the runtime and the decoder once per page; on any failure, clicks go to the server.
  const decoderReady = (async () => {
    try {
      if (!decoder) throw new Error("decode.js did not load");
      await decoder.init(apiFetch, settings);
      state.decoder = "browser";
    } catch (err) {
      fallBack(`browser decoding is unavailable (${err.message}).`);
    }
    showDecoder();
  })();

  // The panel's decoder choice: load the other decoder file (clicks meanwhile go to the server).
  async function changePrecision(precision) {
    settings.precision = precision;
    try {
      localStorage.setItem(PRECISION_KEY, precision);
    } catch (_) { /* storage disabled: for this page only */ }
    await decoderReady;
    if (!decoder.runtime) return; // the runtime never loaded: the server decodes
    let embedding = state.embedding;
    state.decoder = "pending";
    showDecoder();
    try {
      await decoder.init(apiFetch, settings);
      if (state.imageId !== null && !(embedding && embedding.imageId === state.imageId)) {
        embedding = await decoder.loadEmbedding(apiFetch, state.imageId); // an image opened meanwhile
      }
      state.embedding = embedding;
      state.decoder = "browser";
    } catch (err) {
      fallBack(`the ${precision} decoder could not be loaded (${err.message}).`);
    }
    showDecoder();
  }

  function fallBack(note) {
    state.decoder = "server";
    state.decoderNote = note;
    state.embedding = null;
    showDecoder();
  }

  async function openImage(file) {
    setStatus(`Uploading ${file.name} and computing its embedding…`);
    document.body.dataset.status = "busy";
    try {
      const response = await apiFetch("api/images", {
        method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
      });
      if (!response.ok) throw new Error(await apiError(response));
      const info = await response.json();
      let picture;
      try {
        picture = await createImageBitmap(file, { imageOrientation: "from-image" });
      } catch (_) { // a format the browser cannot draw: show the server's decoding
        const png = await apiFetch(`api/images/${info.id}/image.png`);
        picture = await createImageBitmap(await png.blob());
      }
      await decoderReady;
      let embedding = null;
      if (state.decoder === "browser") {
        setStatus(`${file.name}: fetching its embedding…`);
        try {
          embedding = await decoder.loadEmbedding(apiFetch, info.id);
        } catch (err) {
          fallBack(`the embedding could not be loaded into this browser (${err.message}).`);
        }
      }
      Object.assign(state, {
        imageId: info.id, width: info.width, height: info.height, fileName: file.name, picture, embedding,
        points: [], box: null, text: "", maskInput: null, candidates: [], current: 0, objects: [], nextObjectId: 1,
        history: [], version: 0, shownVersion: 0,
      });
      state.seq++;
      $("text").value = "";
      canvas.width = info.width;
      canvas.height = info.height;
      fitCanvas();
      renderObjects();
      render();
      const took = info.encode_ms ? ` (embedding: ${Math.round(info.encode_ms)} ms)` : " (embedding cached)";
      const scaled = info.scale && info.scale < 1
        ? ` (downscaled by the service from ${info.original_width}×${info.original_height}; masks and exports are at this size)`
        : "";
      const where = state.decoder === "browser" ? "Masks are decoded in this browser."
        : `Masks are decoded on the server: ${state.decoderNote}`;
      setStatus(`${file.name}: ${info.width}×${info.height}${scaled}${took}. Click an object. ${where}`);
    } catch (err) {
      setStatus(`Cannot open ${file.name}: ${err.message}`, true);
    } finally {
      document.body.dataset.status = "idle";
      showDecoder();
      updateControls();
    }
  }

  // The prompts changed (a click, a box, a text): remember the step, then ask for masks.
  function changePrompts(change) {
    remember();
    change();
    state.version++;
    state.promptAt = performance.now();
    render();
    updateControls();
    requestMasks();
  }

  // One decoding at a time; prompts changed meanwhile are decoded when it returns (only the latest matters).
  function requestMasks() {
    if (state.inflight) {
      state.pending = true;
      return;
    }
    if (state.points.length === 0 && state.box === null && state.text === "") {
      state.candidates = [];
      state.shownVersion = state.version;
      render();
      updateControls();
      return;
    }
    sendPrompts();
  }

  function inBrowser() {
    return state.decoder === "browser" && state.embedding !== null && state.embedding.imageId === state.imageId
      && state.text === "";
  }

  async function sendPrompts() {
    state.inflight = true;
    state.pending = false;
    const seq = ++state.seq;
    const version = state.version;
    const started = state.promptAt || performance.now();
    document.body.dataset.status = "busy";
    try {
      let result;
      if (inBrowser()) {
        try {
          result = await decodeHere();
        } catch (err) { // the runtime failed on this prompt: the server answers from now on
          fallBack(`decoding in this browser failed (${err.message}).`);
          result = await decodeOnServer();
        }
      } else {
        result = await decodeOnServer();
      }
      if (seq === state.seq && !state.pending) showResult(result, started, version);
    } catch (err) {
      setStatus(err.message, true);
    } finally {
      state.inflight = false;
      document.body.dataset.status = "idle";
      if (state.pending) requestMasks();
    }
  }

  async function decodeHere() {
    const decodeStarted = performance.now();
    const answer = await decoder.decode(state.embedding, state.points, state.box, state.maskInput);
    void answer.candidates[answer.best].mask; // the shown mask's upscaling counts as decoding (the others: lazily)
    return {
      path: "browser", candidates: answer.candidates, best: answer.best, label: null,
      decodeMs: performance.now() - decodeStarted, runMs: answer.runMs, decoder: answer.decoder,
    };
  }

  async function decodeOnServer() {
    const body = {
      points: state.points.map((p) => [p.x, p.y]),
      labels: state.points.map((p) => p.label),
      boxes: state.box ? [state.box] : [],
      text: state.text || null,
      multimask: true,
      png: false,
    };
    const decodeStarted = performance.now();
    const response = await apiFetch(`api/images/${state.imageId}/segment`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(await apiError(response));
    const result = await response.json();
    // A text alone may find nothing: its route refuses absent objects (no mask rather than the nearest shape).
    if (result.objects.length === 0) throw new Error(`nothing here matches "${body.text}"`);
    const obj = result.objects[0];
    return {
      path: "server", candidates: obj.masks.map((m) => ({ ...m, mask: decodeRle(m.rle) })), best: obj.best,
      label: obj.label, decodeMs: performance.now() - decodeStarted, serverMs: result.decode_ms,
    };
  }

  function showResult(result, started, version) {
    const drawStarted = performance.now();
    state.candidates = result.candidates;
    state.current = result.best;
    state.shownVersion = version;
    render();
    updateControls();
    const now = performance.now();
    const timing = {
      path: result.path, decode_ms: result.decodeMs, draw_ms: now - drawStarted, total_ms: now - started,
      ...(result.path === "browser" ? { run_ms: result.runMs, decoder: result.decoder } : { server_ms: result.serverMs }),
    };
    timings.push(timing);
    if (timings.length > MAX_TIMINGS) timings.shift();
    setStatus(result.path === "browser"
      ? `Mask in ${Math.round(timing.total_ms)} ms, decoded in this browser (decoder ${Math.round(result.runMs)} ms).`
      : `Mask in ${Math.round(timing.total_ms)} ms from the server (decoder ${Math.round(result.serverMs)} ms).`
        + (state.decoder === "server" ? ` ${state.decoderNote}` : ""));
  }

  // ------------------------------------------------------------------------------------------- actions

  function accept() {
    const cand = state.candidates[state.current];
    if (!cand) return;
    remember();
    const colour = PALETTE[(state.nextObjectId - 1) % PALETTE.length];
    // Masks decoded here are encoded here: exports need no server.
    const rle = cand.rle || decoder.encodeRle(cand.mask, state.height, state.width);
    const bbox = cand.bbox || decoder.maskBbox(cand.mask, state.height, state.width);
    state.objects.push({
      id: state.nextObjectId++, rle, bbox, area: cand.area, score: cand.score,
      label: state.text || null, colour, layer: maskLayer(cand.mask, colour), mask: cand.mask,
      points: state.points.map((p) => [p.x, p.y]), pointLabels: state.points.map((p) => p.label),
      box: state.box,
    });
    resetPrompts();
    renderObjects();
    render();
    updateControls();
    setStatus(`Object ${state.objects.length} kept. Click the next one (Ctrl+Z takes it back).`);
  }

  function resetPrompts() {
    state.points = [];
    state.box = null;
    state.text = "";
    state.maskInput = null;
    $("text").value = "";
    state.candidates = [];
    state.current = 0;
    state.version++;
    state.shownVersion = state.version;
    state.seq++; // answers still on their way are stale
    state.pending = false;
  }

  function clearPrompts() {
    if (!state.points.length && state.box === null && state.text === "" && !state.candidates.length) return;
    remember();
    resetPrompts();
    render();
    updateControls();
  }

  function cycle() {
    if (state.candidates.length < 2) return;
    state.current = (state.current + 1) % state.candidates.length;
    render();
    updateControls();
  }

  // ------------------------------------------------------------------------------------------- export

  function download(name, data) {
    const blob = new Blob([JSON.stringify(data)], { type: "application/json" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  function stem() {
    return (state.fileName || "image").replace(/\.[^.]*$/, "");
  }

  function exportSa1b() {
    download(`${stem()}.json`, {
      image: { image_id: 1, width: state.width, height: state.height, file_name: state.fileName },
      annotations: state.objects.map((o, i) => ({
        id: i + 1, segmentation: o.rle, bbox: o.bbox, area: o.area, predicted_iou: o.score,
        point_coords: o.points, point_labels: o.pointLabels, box: o.box,
        crop_box: [0, 0, state.width, state.height], ...(o.label ? { label: o.label } : {}),
      })),
    });
  }

  function exportCoco() {
    const names = [...new Set(state.objects.map((o) => o.label || "object"))];
    download(`${stem()}.coco.json`, {
      info: { description: "annotated with samflow", date_created: new Date().toISOString() },
      images: [{ id: 1, file_name: state.fileName, width: state.width, height: state.height }],
      categories: names.map((name, i) => ({ id: i + 1, name })),
      annotations: state.objects.map((o, i) => ({
        id: i + 1, image_id: 1, category_id: names.indexOf(o.label || "object") + 1, segmentation: o.rle,
        area: o.area, bbox: o.bbox, iscrowd: 0, score: o.score,
      })),
    });
  }

  // ------------------------------------------------------------------------------------------- input

  function imagePoint(event) {
    const rect = canvas.getBoundingClientRect();
    const x = ((event.clientX - rect.left) * state.width) / rect.width;
    const y = ((event.clientY - rect.top) * state.height) / rect.height;
    return [Math.min(Math.max(x, 0), state.width), Math.min(Math.max(y, 0), state.height)];
  }

  canvas.addEventListener("contextmenu", (event) => event.preventDefault());

  canvas.addEventListener("mousedown", (event) => {
    if (state.imageId === null) return;
    event.preventDefault();
    state.press = { button: event.button, clientX: event.clientX, clientY: event.clientY, at: imagePoint(event) };
  });

  window.addEventListener("mousemove", (event) => {
    const press = state.press;
    if (!press || press.button !== 0) return;
    if (!state.drag && Math.hypot(event.clientX - press.clientX, event.clientY - press.clientY) < DRAG_THRESHOLD) {
      return;
    }
    const [x, y] = imagePoint(event);
    const [x0, y0] = press.at;
    state.drag = [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)];
    render();
  });

  window.addEventListener("mouseup", (event) => {
    const press = state.press;
    if (!press) return;
    state.press = null;
    if (state.drag) {
      const box = state.drag.map((v) => Math.round(v * 10) / 10);
      state.drag = null;
      changePrompts(() => {
        state.box = box;
        state.maskInput = null; // a new box starts the object afresh
      });
    } else if (press.button === 0 || press.button === 2) {
      const [x, y] = press.at;
      const shown = state.candidates[state.current];
      changePrompts(() => {
        // A click on an object with a mask refines it: that mask's low-res logits go in as mask_input.
        state.maskInput = shown && shown.lowRes ? shown.lowRes : null;
        state.points.push({ x: Math.round(x * 10) / 10, y: Math.round(y * 10) / 10, label: press.button === 0 ? 1 : 0 });
      });
    } else {
      return;
    }
    event.preventDefault();
  });

  window.addEventListener("resize", fitCanvas);

  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) openImage(file);
    event.target.value = "";
  });

  const stage = $("stage");
  stage.addEventListener("dragover", (event) => {
    event.preventDefault();
    stage.classList.add("dragover");
  });
  stage.addEventListener("dragleave", () => stage.classList.remove("dragover"));
  stage.addEventListener("drop", (event) => {
    event.preventDefault();
    stage.classList.remove("dragover");
    const file = event.dataTransfer.files[0];
    if (file) openImage(file);
  });

  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    changePrompts(() => {
      state.text = text;
      state.maskInput = null;
    });
  });
  $("precision").addEventListener("change", (event) => changePrecision(event.target.value));
  $("cycle").addEventListener("click", cycle);
  $("accept").addEventListener("click", accept);
  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clearPrompts);
  $("export-sa1b").addEventListener("click", exportSa1b);
  $("export-coco").addEventListener("click", exportCoco);

  window.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement) return; // typing a text prompt
    const key = event.key.toLowerCase();
    if (key === "z" && !event.altKey && !event.shiftKey) undo(); // Z, Ctrl+Z, Cmd+Z
    else if (event.ctrlKey || event.metaKey || event.altKey) return;
    else if (key === "c") cycle();
    else if (key === "a" || key === "enter") accept();
    else if (key === "escape") clearPrompts();
    else return;
    event.preventDefault();
  });

  // For tests and benchmarks: the state, the timings, and the shown mask as base64 bytes (row-major 0/1).
  window.samflowApp = {
    state, timings,
    shownMask() {
      const cand = state.candidates[state.current];
      if (!cand) return null;
      let text = "";
      for (let i = 0; i < cand.mask.length; i += 8192) text += String.fromCharCode(...cand.mask.subarray(i, i + 8192));
      return { width: state.width, height: state.height, score: cand.score, index: state.current, bits: btoa(text) };
    },
  };

  showDecoder();
  updateControls();
})();

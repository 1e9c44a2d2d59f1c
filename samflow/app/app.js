// samflow browser app: click, drag or describe an object, see SAM's mask, keep it, export SA-1B or COCO JSON.
// Plain JS, no build step. The server keeps the image embedding; each prompt is one POST answered by the decoder.
"use strict";

(() => {
  // tab10, as samflow's overlay pictures (samflow/ops/draw.py).
  const PALETTE = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]];
  const CURRENT_COLOUR = [0, 200, 255];
  const DRAG_THRESHOLD = 5; // screen pixels a press must move to become a box

  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });

  const state = {
    imageId: null, width: 0, height: 0, fileName: "", picture: null,
    points: [], box: null, text: "",
    candidates: [], current: 0,
    objects: [], nextObjectId: 1,
    seq: 0, inflight: false, pending: false,
    press: null, drag: null,
  };

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
    const px = data.data;
    for (let i = 0; i < mask.length; i++) {
      if (mask[i]) {
        px[4 * i] = colour[0];
        px[4 * i + 1] = colour[1];
        px[4 * i + 2] = colour[2];
        px[4 * i + 3] = 255;
      }
    }
    lctx.putImageData(data, 0, 0);
    return layer;
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
      ctx.drawImage(cand.layer, 0, 0);
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

  function updateControls() {
    const hasImage = state.imageId !== null;
    const hasPrompt = state.points.length > 0 || state.box !== null || state.text !== "";
    $("text").disabled = !hasImage;
    $("text-go").disabled = !hasImage;
    $("cycle").disabled = state.candidates.length < 2;
    $("accept").disabled = state.candidates.length === 0;
    $("undo").disabled = state.points.length === 0;
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

  // ------------------------------------------------------------------------------------------- server

  async function apiError(response) {
    try {
      const body = await response.json();
      if (body && body.error) return `${body.error.message} (${body.error.code})`;
    } catch (_) { /* not JSON */ }
    return `HTTP ${response.status}`;
  }

  async function openImage(file) {
    setStatus(`Uploading ${file.name} and computing its embedding…`);
    document.body.dataset.status = "busy";
    try {
      const response = await fetch("api/images", {
        method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
      });
      if (!response.ok) throw new Error(await apiError(response));
      const info = await response.json();
      let picture;
      try {
        picture = await createImageBitmap(file, { imageOrientation: "from-image" });
      } catch (_) { // a format the browser cannot draw: show the server's decoding
        const png = await fetch(`api/images/${info.id}/image.png`);
        picture = await createImageBitmap(await png.blob());
      }
      Object.assign(state, {
        imageId: info.id, width: info.width, height: info.height, fileName: file.name, picture,
        points: [], box: null, text: "", candidates: [], current: 0, objects: [], nextObjectId: 1,
      });
      $("text").value = "";
      canvas.width = info.width;
      canvas.height = info.height;
      fitCanvas();
      renderObjects();
      render();
      const took = info.encode_ms ? ` (embedding: ${Math.round(info.encode_ms)} ms)` : " (embedding cached)";
      setStatus(`${file.name}: ${info.width}×${info.height}${took}. Click an object.`);
    } catch (err) {
      setStatus(`Cannot open ${file.name}: ${err.message}`, true);
    } finally {
      document.body.dataset.status = "idle";
      updateControls();
    }
  }

  // One request at a time; prompts changed meanwhile are sent when it returns (only the latest matters).
  function requestMasks() {
    if (state.inflight) {
      state.pending = true;
      return;
    }
    if (state.points.length === 0 && state.box === null && state.text === "") {
      state.candidates = [];
      render();
      updateControls();
      return;
    }
    sendPrompts();
  }

  async function sendPrompts() {
    state.inflight = true;
    state.pending = false;
    const seq = ++state.seq;
    const body = {
      points: state.points.map((p) => [p.x, p.y]),
      labels: state.points.map((p) => p.label),
      boxes: state.box ? [state.box] : [],
      text: state.text || null,
      multimask: true,
      png: false,
    };
    const started = performance.now();
    document.body.dataset.status = "busy";
    try {
      const response = await fetch(`api/images/${state.imageId}/segment`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      if (!response.ok) throw new Error(await apiError(response));
      const result = await response.json();
      if (seq === state.seq && !state.pending) showResult(result, performance.now() - started);
    } catch (err) {
      setStatus(err.message, true);
    } finally {
      state.inflight = false;
      document.body.dataset.status = "idle";
      if (state.pending) requestMasks();
    }
  }

  function showResult(result, ms) {
    const obj = result.objects[0];
    state.candidates = obj.masks.map((m) => {
      const mask = decodeRle(m.rle);
      return { ...m, mask, layer: maskLayer(mask, CURRENT_COLOUR) };
    });
    state.current = obj.best;
    render();
    updateControls();
    setStatus(`Mask in ${Math.round(ms)} ms (decoder ${Math.round(result.decode_ms)} ms).`);
  }

  // ------------------------------------------------------------------------------------------- actions

  function accept() {
    const cand = state.candidates[state.current];
    if (!cand) return;
    const colour = PALETTE[(state.nextObjectId - 1) % PALETTE.length];
    state.objects.push({
      id: state.nextObjectId++, rle: cand.rle, bbox: cand.bbox, area: cand.area, score: cand.score,
      label: state.text || null, colour, layer: maskLayer(cand.mask, colour),
      points: state.points.map((p) => [p.x, p.y]), pointLabels: state.points.map((p) => p.label),
      box: state.box,
    });
    clearPrompts();
    renderObjects();
    setStatus(`Object ${state.objects.length} kept. Click the next one.`);
  }

  function clearPrompts() {
    state.points = [];
    state.box = null;
    state.text = "";
    $("text").value = "";
    state.candidates = [];
    state.current = 0;
    state.seq++; // answers still on their way are stale
    render();
    updateControls();
  }

  function cycle() {
    if (state.candidates.length < 2) return;
    state.current = (state.current + 1) % state.candidates.length;
    render();
    updateControls();
  }

  function undo() {
    if (!state.points.length) return;
    state.points.pop();
    requestMasks();
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
      state.box = state.drag.map((v) => Math.round(v * 10) / 10);
      state.drag = null;
    } else if (press.button === 0 || press.button === 2) {
      const [x, y] = press.at;
      state.points.push({ x: Math.round(x * 10) / 10, y: Math.round(y * 10) / 10, label: press.button === 0 ? 1 : 0 });
    } else {
      return;
    }
    event.preventDefault();
    render();
    updateControls();
    requestMasks();
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
    state.text = $("text").value.trim();
    updateControls();
    requestMasks();
  });
  $("cycle").addEventListener("click", cycle);
  $("accept").addEventListener("click", accept);
  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clearPrompts);
  $("export-sa1b").addEventListener("click", exportSa1b);
  $("export-coco").addEventListener("click", exportCoco);

  window.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement) return; // typing a text prompt
    const key = event.key.toLowerCase();
    if (key === "c") cycle();
    else if (key === "a" || key === "enter") accept();
    else if (key === "z") undo();
    else if (key === "escape") clearPrompts();
    else return;
    event.preventDefault();
  });

  updateControls();
})();

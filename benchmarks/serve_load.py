"""Load and fault benchmark of `samflow serve`: concurrent clients mixing uploads, clicks, boxes, text and graph
runs with hostile requests, on loopback, bounded in count and time.

    python benchmarks/serve_load.py [--clients 8] [--requests 400] [--seconds 90] [--workers 2]
                                    [--image-cache-mb 128] [--cache-mb 64] [--json]

Starts `samflow serve` on a free 127.0.0.1 port in a child process with the given settings, then --clients threads
(each with its own connection) send requests drawn from a fixed mix until --requests are answered or --seconds pass:

- work: uploads of distinct pictures (small scenes, and small PNGs that decode to 4096x4096, downscaled by the
  service), clicks, 1-16 boxes, text prompts, graph runs (point prompts on an uploaded image);
- faults, each with the answer it must get: a billion-laughs graph and 100,000 nested `[` (422), 3,000 boxes as a
  graph input (413), a server path in a graph param (403), 64 boxes x 3 masks on a 2048x2048 image (422), a foreign
  Host (400), a cross-origin text/plain upload (403), a body over the upload limit (413), junk bytes (422).

Reports per kind p50/p95 latency at the client and the answers; `errors` counts answers other than the expected
ones (any 5xx, a refusal where work was expected, a transport failure). The server's memory is sampled from
/proc: RSS after start and after a warm-up (one request of each kind: lazy imports and first model loads), peak
RSS (VmHWM) and at the end; the peak's rise over the warm-up is held against the budget the settings give (image cache +
embedding cache + per request at work: the decoded upload before downscaling and max_mask_pixels of masks, with
their RLE/PNG copies + the bodies being received). Exits 1 when there are errors or the peak exceeds that budget.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict

import httpx
import numpy as np

MiB = 2**20
POINT_GRAPH = """samflow: 1
inputs: {image: Image}
nodes:
  encoder: {type: sam.encoder, params: {model: tiny}, inputs: {image: $inputs.image}}
  clicks:  {type: prompt.points, params: {points: [[40, 40]], labels: [1]}}
  segment: {type: sam.decoder, params: {multimask: true}, inputs: {embedding: $encoder.embedding, points: $clicks.points}}
outputs: {masks: $segment.masks, scores: $segment.scores}
"""
BOXES_GRAPH = """samflow: 1
inputs: {image: Image, boxes: Boxes}
nodes:
  encoder: {type: sam.encoder, inputs: {image: $inputs.image}}
  segment: {type: sam.decoder, params: {multimask: false}, inputs: {embedding: $encoder.embedding, boxes: $inputs.boxes}}
outputs: {masks: $segment.masks}
"""
LAUGHS = "\n".join(['  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
                   + [f"  l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)])
BOMB = f"samflow: 1\ndescription:\n{LAUGHS}\nnodes: {{}}\n"
DEEP = "samflow: 1\nnodes:\n  a: {type: prompt.points, params: {points: " + "[" * 100_000 + "}}\n"
SERVER_PATH = "samflow: 1\nnodes:\n  p: {type: prompt.points, params: {file: /etc/passwd}}\noutputs: {p: $p.points}\n"

# kind: (weight, statuses that are the right answer)
MIX = {
    # 404: the image was evicted from the image cache meanwhile (the client uploads again); 422 for text: this
    # checkout has no text models (text_prompts_unavailable)
    "upload": (10, {200}), "upload_4096": (3, {200}), "click": (30, {200, 404}), "boxes": (12, {200, 404}),
    "text": (5, {200, 404, 422}), "graph": (10, {200, 404}),
    "fault_bomb": (2, {422}), "fault_deep": (1, {413, 422}), "fault_3000_boxes": (2, {404, 413}),
    "fault_server_path": (2, {403}), "fault_64x3_masks": (2, {404, 422}), "fault_host": (2, {400}),
    "fault_cross_origin": (2, {403}), "fault_oversize_body": (1, {413}), "fault_junk": (2, {422}),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "samflow", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--model", args.model, "--workers", str(args.workers), "--image-cache-mb", str(args.image_cache_mb),
               "--cache-mb", str(args.cache_mb), "--max-upload-mb", str(args.max_upload_mb)]
    env = {**os.environ, "SAMFLOW_TOKEN": ""}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"samflow serve exited: {process.stderr.read()}")
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise SystemExit("samflow serve did not start within 180 s")


class Load:
    """The clients' shared state: uploaded ids, results per kind, the request budget."""

    def __init__(self, url: str, requests: int, seconds: float, seed: int) -> None:
        from samflow.data.synthetic import render_scene

        self.url = url
        self.lock = threading.Lock()
        self.left = requests
        self.deadline = time.monotonic() + seconds
        self.results: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.unexpected: list[str] = []
        self.ids: list[tuple[str, int, int]] = []  # (id, width, height)
        self.counter = 0
        self.scenes = [png(render_scene(seed + i, size=size).image) for i, size in enumerate((256, 512, 768, 1024))]
        self.kinds = list(MIX)
        self.weights = [MIX[k][0] for k in self.kinds]

    def take(self) -> int | None:
        with self.lock:
            if self.left <= 0 or time.monotonic() > self.deadline:
                return None
            self.left -= 1
            self.counter += 1
            return self.counter

    def record(self, kind: str, seconds: float, status: int, body: str) -> None:
        with self.lock:
            self.results[kind].append((seconds, status))
            if status not in MIX[kind][1]:
                self.unexpected.append(f"{kind}: {status} {body[:200]}")

    def image(self, rng: random.Random, big: bool = False) -> tuple[str, int, int] | None:
        with self.lock:
            choices = [i for i in self.ids if (i[1] * i[2] >= 2048 * 2048) == big] if big else self.ids
            return rng.choice(choices) if choices else None


def distinct_png(n: int, scenes: list[bytes], huge: bool) -> bytes:
    """A picture no other request sends (so each upload is decoded and encoded)."""
    if huge:  # a few KB that decode to 4096 x 4096
        pixels = np.full((4096, 4096, 3), (n * 37 % 256, n * 91 % 256, 128), np.uint8)
        pixels[:64, :64] = 255 - pixels[:64, :64]
        return png(pixels)
    from PIL import Image

    picture = np.array(Image.open(io.BytesIO(scenes[n % len(scenes)])))
    picture[0, : 1 + n % picture.shape[1]] = n % 256  # one row changed: new bytes, same scene
    return png(picture)


def one_request(load: Load, client: httpx.Client, n: int, rng: random.Random) -> None:
    kind = rng.choices(load.kinds, load.weights)[0]
    target = load.image(rng)
    if target is None and kind in ("click", "boxes", "text", "graph", "fault_3000_boxes"):
        kind = "upload"
    if kind == "fault_64x3_masks":
        target = load.image(rng, big=True)
        if target is None:
            kind = "upload_4096"
    started = time.perf_counter()
    if kind in ("upload", "upload_4096"):
        response = client.post("/api/images", content=distinct_png(n, load.scenes, kind == "upload_4096"),
                               headers={"content-type": "image/png"})
        if response.status_code == 200:
            info = response.json()
            with load.lock:
                load.ids.append((info["id"], info["width"], info["height"]))
    elif kind in ("click", "boxes", "text"):
        iid, w, h = target
        if kind == "click":
            body = {"points": [[rng.uniform(0, w), rng.uniform(0, h)]], "png": False}
        elif kind == "boxes":
            boxes = []
            for _ in range(rng.randint(1, 16)):
                x0, y0 = rng.uniform(0, w * 0.8), rng.uniform(0, h * 0.8)
                boxes.append([x0, y0, min(w, x0 + w * 0.2), min(h, y0 + h * 0.2)])
            body = {"boxes": boxes, "multimask": False, "png": False}
        else:
            body = {"text": "a red star", "png": False}
        response = client.post(f"/api/images/{iid}/segment", json=body)
    elif kind == "graph":
        response = client.post("/api/graphs/run", json={"graph": POINT_GRAPH, "inputs": {"image": target[0]}})
    elif kind == "fault_bomb":
        response = client.post("/api/graphs/run", json={"graph": BOMB})
    elif kind == "fault_deep":
        response = client.post("/api/graphs/run", json={"graph": DEEP})
    elif kind == "fault_3000_boxes":
        response = client.post("/api/graphs/run", json={"graph": BOXES_GRAPH, "inputs": {
            "image": target[0], "boxes": [[1, 1, 20, 20]] * 3000}})
    elif kind == "fault_server_path":
        response = client.post("/api/graphs/run", json={"graph": SERVER_PATH})
    elif kind == "fault_64x3_masks":
        boxes = [[i, i, i + 50, i + 50] for i in range(64)]
        response = client.post(f"/api/images/{target[0]}/segment", json={"boxes": boxes, "png": True})
    elif kind == "fault_host":
        response = client.get("/api/health", headers={"host": "attacker.example"})
    elif kind == "fault_cross_origin":
        response = client.post("/api/images", content=load.scenes[0],
                               headers={"content-type": "text/plain", "origin": "http://attacker.example"})
    elif kind == "fault_oversize_body":  # 100 MiB declared, none sent: answered at once, nothing read
        status = oversize_upload(load.url)
        load.record(kind, time.perf_counter() - started, status, "")
        return
    else:  # fault_junk
        response = client.post("/api/images", content=os.urandom(4096), headers={"content-type": "image/png"})
    if response.status_code == 404 and target is not None:  # evicted: forget it
        with load.lock:
            load.ids = [i for i in load.ids if i[0] != target[0]]
    load.record(kind, time.perf_counter() - started, response.status_code, response.text)


def oversize_upload(url: str) -> int:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /api/images HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                     b"Content-Length: %d\r\n\r\n" % (100 * MiB))
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def warm_up(load: Load) -> None:
    """One request of each kind of work, in turn, before the clock starts (not counted)."""
    rng = random.Random(-1)
    weights = load.weights
    with httpx.Client(base_url=load.url, timeout=120) as client:
        for n, kind in enumerate(("upload", "upload_4096", "click", "boxes", "text", "graph")):
            load.weights = [1 if k == kind else 0 for k in load.kinds]
            one_request(load, client, -1 - n, rng)
    load.weights = weights
    load.results.clear()
    load.unexpected.clear()


def client_loop(load: Load, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=load.url, timeout=120) as client:
        while (n := load.take()) is not None:
            try:
                one_request(load, client, n, rng)
            except httpx.HTTPError as exc:
                with load.lock:
                    load.unexpected.append(f"transport: {type(exc).__name__}: {exc}")
                client = httpx.Client(base_url=load.url, timeout=120)  # the server closed it: a fresh one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400, help="total requests (bound)")
    parser.add_argument("--seconds", type=float, default=90.0, help="time bound")
    parser.add_argument("--workers", type=int, default=2, help="the server's --workers")
    parser.add_argument("--image-cache-mb", type=float, default=128)
    parser.add_argument("--cache-mb", type=float, default=64)
    parser.add_argument("--max-upload-mb", type=float, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    from samflow.serve.settings import ServiceSettings

    defaults = ServiceSettings()
    process, url = start_server(args)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                samples.append(proc_status(process.pid)["VmRSS"])
            except (OSError, KeyError):
                return
            time.sleep(0.05)

    try:
        health = httpx.get(url + "/api/health").json()
        start_rss = proc_status(process.pid)["VmRSS"]
        load = Load(url, args.requests, args.seconds, args.seed)
        warm_up(load)  # one request of each kind of work: lazy imports and first loads are not the load's
        warm_rss = proc_status(process.pid)["VmRSS"]
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(load, args.seed + i)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        status = proc_status(process.pid)
        stop.set()
        alive = httpx.get(url + "/api/health").status_code == 200
    finally:
        stop.set()
        process.terminate()
        process.wait(timeout=30)

    # What the settings allow on top of the process at rest: the two caches, per request at work (--workers) the
    # decoded upload before downscaling (max_side^2 RGB, twice) and max_mask_pixels of bool masks with their RLE /
    # PNG copies, and the bodies of max_connections requests being received.
    per_request = defaults.max_side**2 * 3 * 2 + defaults.max_mask_pixels * 2
    bodies = defaults.max_connections * int(args.max_upload_mb * MiB)
    budget = int((args.image_cache_mb + args.cache_mb) * MiB) + args.workers * per_request + bodies
    peak_rise = status["VmHWM"] - warm_rss
    kinds = {}
    total = sum(len(v) for v in load.results.values())
    print(f"samflow serve: model {health['model']} on {health['device']}, {os.cpu_count()} CPUs; --workers "
          f"{args.workers}, image cache {args.image_cache_mb:g} MiB, embedding cache {args.cache_mb:g} MiB")
    print(f"{args.clients} clients, {total} requests in {wall:.1f} s ({total / wall:.1f}/s); errors: "
          f"{len(load.unexpected)}; service alive after: {alive}")
    print(f"{'kind':<22}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}   answers")
    for kind in MIX:
        rows = load.results.get(kind, [])
        if not rows:
            continue
        ms = np.array([s for s, _ in rows]) * 1e3
        answers = defaultdict(int)
        for _, code in rows:
            answers[code] += 1
        kinds[kind] = {"n": len(rows), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                       "answers": dict(answers)}
        print(f"{kind:<22}{len(rows):>5}{kinds[kind]['p50_ms']:>10.1f}{kinds[kind]['p95_ms']:>10.1f}   "
              + ", ".join(f"{code} x{count}" for code, count in sorted(answers.items())))
    print(f"server RSS: {start_rss / MiB:.0f} MiB after start, {warm_rss / MiB:.0f} MiB after the warm-up, peak "
          f"{status['VmHWM'] / MiB:.0f} MiB (+{peak_rise / MiB:.0f} over the warm-up), {status['VmRSS'] / MiB:.0f} "
          f"MiB at the end; the settings' budget over the warm-up: {budget / MiB:.0f} MiB")
    for line in load.unexpected[:10]:
        print("  unexpected:", line)
    if args.json:
        print(json.dumps({"clients": args.clients, "requests": total, "seconds": wall, "errors": len(load.unexpected),
                          "kinds": kinds, "rss_mib": {"start": start_rss / MiB, "warm": warm_rss / MiB,
                                                      "peak": status["VmHWM"] / MiB,
                                                      "end": status["VmRSS"] / MiB, "budget_above_warm": budget / MiB}},
                         indent=2))
    if load.unexpected or peak_rise > budget or not alive:
        sys.exit(1)


if __name__ == "__main__":
    main()

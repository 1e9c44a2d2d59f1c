"""Click-to-mask latency of `samflow serve` over HTTP on loopback, and throughput under concurrent clients.

    python benchmarks/serve.py [--model tiny] [--clicks 200] [--clients 4] [--requests 200] [--seconds 30]

Starts `samflow serve` on a free 127.0.0.1 port in a child process (or uses --url), uploads one image (the embedding
is computed once, outside the timings), then:
- latency: --clicks sequential click requests (a random point each; masks as COCO RLE as the browser app asks, or
  also PNG with --png), timed at the client from request to parsed JSON: median and p95;
- throughput: --clients threads, each with its own connection, sending clicks until --requests are answered or
  --seconds pass (bounded load, loopback only): requests per second and latency under load.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from _common import benchmark_image


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, device: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "samflow", "serve", "--host", "127.0.0.1", "--port", str(port), "--model", model]
    if device:
        command += ["--device", device]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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


def png(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def click(client: httpx.Client, image_id: str, point: list[float], with_png: bool) -> tuple[float, float]:
    """(seconds at the client, server decode ms) of one click request."""
    started = time.perf_counter()
    response = client.post(f"/api/images/{image_id}/segment", json={"points": [point], "png": with_png})
    body = response.json()
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"request failed: {response.status_code} {body}")
    return seconds, body["decode_ms"]


def summary(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1e3
    return (f"median {np.median(ms):7.1f} ms   p95 {np.percentile(ms, 95):7.1f} ms   mean {ms.mean():7.1f} ms   "
            f"min {ms.min():6.1f}   max {ms.max():7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", help="the server's device (default: cuda when available)")
    parser.add_argument("--url", help="benchmark a running service (must be on loopback) instead of starting one")
    parser.add_argument("--image", help="image file (default: ../shared/images/dog.jpg or a synthetic picture)")
    parser.add_argument("--clicks", type=int, default=200)
    parser.add_argument("--png", action="store_true", help="also ask for each mask as PNG")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="throughput: total requests (bound)")
    parser.add_argument("--seconds", type=float, default=30.0, help="throughput: time bound")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise SystemExit("benchmarks run on loopback only")

    process = None
    url = args.url
    if url is None:
        process, url = start_server(args.model, args.device)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            health = client.get("/api/health").json()
            data = Path(args.image).read_bytes() if args.image else png(benchmark_image())
            started = time.perf_counter()
            info = client.post("/api/images", content=data).json()
            upload_s = time.perf_counter() - started
            image_id, w, h = info["id"], info["width"], info["height"]
            print(f"service: model {health['model']} on {health['device']}, {os.cpu_count()} CPUs; image {w}x{h}; "
                  f"upload + encoder {upload_s * 1e3:.0f} ms (encoder {info['encode_ms']:.0f} ms)")
            rng = np.random.default_rng(0)
            points = (rng.random((args.clicks + args.requests, 2)) * [w - 1, h - 1]).round(1).tolist()
            for point in points[:5]:  # warm-up
                click(client, image_id, point, args.png)
            timings = [click(client, image_id, p, args.png) for p in points[: args.clicks]]
        latency = [t for t, _ in timings]
        decode = [d / 1e3 for _, d in timings]
        print(f"click -> mask over HTTP, {args.clicks} sequential clicks ({'RLE + PNG' if args.png else 'RLE'}):")
        print(f"  round trip  {summary(latency)}")
        print(f"  server      {summary(decode)}   (prompt encoder, mask decoder, upsampling: the decode_ms the service reports)")

        lock = threading.Lock()
        todo = iter(points[args.clicks :])
        loaded: list[float] = []
        deadline = time.monotonic() + args.seconds

        def worker() -> None:
            with httpx.Client(base_url=url, timeout=60) as own:
                while time.monotonic() < deadline:
                    with lock:
                        point = next(todo, None)
                    if point is None:
                        return
                    seconds, _ = click(own, image_id, point, args.png)
                    with lock:
                        loaded.append(seconds)

        started = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        print(f"throughput, {args.clients} concurrent clients: {len(loaded)} requests in {wall:.1f} s = "
              f"{len(loaded) / wall:.1f} requests/s")
        print(f"  round trip  {summary(loaded)}")
        if args.json:
            print(json.dumps({
                "model": health["model"], "device": health["device"], "image": [w, h], "clicks": args.clicks,
                "latency_ms": {"median": statistics.median(latency) * 1e3,
                               "p95": float(np.percentile(latency, 95) * 1e3)},
                "server_ms": {"median": statistics.median(decode) * 1e3},
                "throughput": {"clients": args.clients, "requests": len(loaded), "seconds": wall,
                               "per_second": len(loaded) / wall,
                               "median_ms": statistics.median(loaded) * 1e3 if loaded else None},
            }, indent=2))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()

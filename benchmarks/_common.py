"""Helpers shared by the benchmark scripts: timing, peak-memory sampling, models with identical weights."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SHARED_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "images"
# The official-model builders are test helpers (tests/official_reference.py), not part of the runtime package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the process RSS in a thread; `peak` is the rise above the level at entry, in bytes."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = 0

    def __enter__(self) -> PeakRSS:
        self.base = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes() - self.base)
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes() - self.base)


def best_time(fn: Callable[[], object], repeats: int,
              clock: Callable[[], float] = time.perf_counter) -> tuple[float, object]:
    """Best of `repeats` timings of `fn` by `clock` (time.process_time: CPU seconds, for shared machines)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = clock()
        result = fn()
        best = min(best, clock() - start)
    return best, result


def interleaved(runs: dict[str, Callable[[], object]], rounds: int, pause: float,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds of each run, `rounds` times, in turn (one warm-up each first), the order rotated every round. The
    same pause after every call: onnxruntime's threads must stop spinning before the next call, and a call after
    an idle pause starts with colder caches (and sleeping worker threads) than one right after another, so every
    call gets the same start."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for name in names:
        runs[name]()
        time.sleep(pause)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            runs[name]()
            times[name].append(clock() - start)
            time.sleep(pause)
    return times


def benchmark_image(size: int = 1024) -> np.ndarray:
    """A real photograph from ../shared/images when present, else a deterministic synthetic picture."""
    path = SHARED_IMAGES / "dog.jpg"
    if path.is_file():
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    img[size // 4 : size // 2, size // 4 : size // 2] = rng.integers(0, 255, 3)
    return img


def twin_models(preset: str, seed: int = 0, checkpoint: str | None = None):
    """A samflow model and an official model holding the same weights (random but perturbed, or a checkpoint)."""
    from official_reference import twin_models as twins

    from samflow.models.sam import SamConfig

    return twins(SamConfig.preset(preset) if checkpoint is None else None, seed=seed, checkpoint=checkpoint)


FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_report() -> str:
    """The CPU model and whether it has the flags that matter here (lscpu)."""
    flags: set[str] = set()
    name = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("Flags:"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    have = " ".join(f"{f}={'yes' if f in flags else 'no'}" for f in FLAGS)
    return f"cpu: {name}; {os.cpu_count()} logical cpus; lscpu flags {have}"


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())

"""Helpers of the batch-engine tests: a model-free graph node that can be slowed down (so that a run can be stopped
in the middle of an item), distinct little images, and `samflow` in a subprocess that a test can signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from samflow.engine.context import ItemContext
from samflow.engine.node import Input, Node, NodeParams
from samflow.engine.registry import register
from samflow.engine.types import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DRIVER = HERE / "drive_samflow.py"


@register("testing.slow_copy")
class SlowCopy(Node):
    """The image, unchanged, after `seconds` (a stand-in for a model: no weights, no threads)."""

    class Params(NodeParams):
        seconds: float = 0.0

    inputs = {"image": Input(Image)}
    outputs = {"image": Image}

    def run(self, ctx: ItemContext, image: Image) -> dict[str, Image]:
        time.sleep(self.params.seconds)
        return {"image": image}


def copy_graph(folder: Path, seconds: float = 0.0) -> Path:
    """A graph file whose one node copies its image (slowly); written once per folder."""
    path = folder / f"copy_{seconds:g}.yaml"
    path.write_text(f"""\
samflow: 1
inputs: {{image: Image}}
nodes:
  copy: {{type: testing.slow_copy, params: {{seconds: {seconds}}}, inputs: {{image: $inputs.image}}}}
outputs: {{picture: $copy.image}}
""")
    return path


def write_images(folder: Path, names: list[str], seed: int = 0) -> list[Path]:
    """Small PNGs of distinct content (seeded by name and `seed`: the same name in two folders differs)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, name in enumerate(names):
        rng = np.random.default_rng([seed, index, len(name)])
        data = rng.integers(0, 80, (48, 64, 3), dtype=np.uint8)
        data[8:30, 10:40] = rng.integers(120, 255, 3)
        path = folder / name
        PILImage.fromarray(data).save(path)
        paths.append(path)
    return paths


def manifest(out: Path, name: str = "run.json") -> dict:
    return json.loads((out / name).read_text())


def by_id(document: dict) -> dict[str, dict]:
    return {item["id"]: item for item in document["items"]}


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`samflow ARGS` in a subprocess (with this folder's test nodes registered), its output in a pipe; samflow
    from this tree, as the tests import it."""
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.Popen([sys.executable, str(DRIVER), *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": path, **(env or {})})


def wait_for(condition, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"samflow exited ({process.returncode}) first:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM, timeout: float = 60.0) -> tuple[int, str]:
    """Send `signum`, wait for the exit; (exit status, output)."""
    process.send_signal(signum)
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def items_on_disk(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))

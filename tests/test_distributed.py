"""Distributed runs on a real local Ray cluster (2 CPUs, a small object store), started once for the module.

Ray runs give the files the in-process engines give (graphs and the data engine); a killed worker loses nothing
and duplicates nothing; an interrupted run resumes with only the missing items; corrupt images are error records,
not failed jobs. Each Ray execution starts fresh workers (seconds each), so the tests share them frugally.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from graph_testing import make_checkpoint, make_images, three_decoders_yaml

from samflow.cli import main
from samflow.engine.graph import Graph
from samflow.errors import InputError
from samflow.scale.jobs import GraphJob
from samflow.scale.ray_worker import FAULT_ENV

pytest.importorskip("ray.data")
# Ray's own DataContext sets deprecated fields of its own when it is created; nothing here asks for them.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


@pytest.fixture(scope="module")
def cluster():
    # Read by Ray when imported: a local cluster on loopback addresses only (tests must not listen on the network).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    ray.init(num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory) -> tuple[Path, Path]:
    """A graph with three decoders over 4 images and a corrupt one, run in-process for reference."""
    root = tmp_path_factory.mktemp("graph")
    make_images(root / "images", 4)
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    (root / "graph.yaml").write_text(three_decoders_yaml(make_checkpoint(root)))
    with one_thread():
        assert main(["run", str(root / "graph.yaml"), "--input", f"image={root / 'images'}", "--out",
                     str(root / "local"), "--no-progress"]) == 1  # the corrupt image
    return root, root / "local"


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread, as each Ray worker here (cpus_per_worker=1): CPU float sums depend on the thread
    count, and byte-identical files need equal sums."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "run.json"}


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def test_graph_run_interrupted_then_resumed_with_a_killed_worker(cluster, graph_run, tmp_path, monkeypatch):
    """On Ray, a graph run whose driver is stopped after two items, then rerun with `samflow run --engine ray`
    while one of its workers dies on its second batch: only the missing items are processed, every item is
    written and recorded once, the corrupt image is an error record, and the files are those of `samflow run`."""
    root, local = graph_run
    from samflow.scale import distributed

    out = tmp_path / "out"
    graph = Graph.load(root / "graph.yaml")
    items = distributed.plan_items(graph, {"image": root / "images"})
    commit, commits = GraphJob.commit, []

    def interrupted_commit(self, out, item_id, files):  # Ctrl-C in the driver after two items
        if len(commits) == 2:
            raise KeyboardInterrupt
        commits.append(item_id)
        commit(self, out, item_id, files)

    monkeypatch.setattr(GraphJob, "commit", interrupted_commit)
    with pytest.raises(KeyboardInterrupt):
        distributed.run(graph, root / "images", out, workers=1, batch_size=1, progress=False)
    first = _manifest(out)
    done = {item["id"] for item in first["items"] if item["status"] == "ok"}
    assert done == set(commits) and len(first["items"]) == len(items)
    assert first["counts"]["pending"] == len(items) - 2 - first["counts"]["failed"]
    monkeypatch.setattr(GraphJob, "commit", commit)

    marker = tmp_path / "killed"
    monkeypatch.setenv(FAULT_ENV, f"2:{marker}")  # the first worker to reach its 2nd batch exits
    code = main(["run", str(root / "graph.yaml"), "--input", f"image={root / 'images'}", "--out", str(out),
                 "--engine", "ray", "--workers", "2", "--batch-size", "1", "--no-progress"])
    assert code == 1  # the corrupt image failed, as in-process; everything else is there
    assert marker.is_file(), "the hook did not kill a worker"
    manifest = _manifest(out)
    assert manifest["engine"] == "ray"
    assert [item["id"] for item in manifest["items"]] == [item_id for item_id, _ in items]  # each once, in order
    assert {item["id"] for item in manifest["items"] if item["status"] == "skipped"} == done
    assert manifest["counts"] == {"ok": len(items) - 3, "failed": 1, "skipped": 2, "pending": 0}
    # only the missing items reached the workers: one encoder run per image processed now
    assert manifest["nodes"]["encoder"]["runs"] == len(items) - 3
    assert manifest["summary"]["masks"] == (len(items) - 3) * 8
    (corrupt,) = [item for item in manifest["items"] if item["status"] == "failed"]
    assert corrupt["id"] == "corrupt" and "cannot read image" in corrupt["error"]
    assert corrupt["error"] == next(i for i in _manifest(local)["items"] if i["id"] == "corrupt")["error"]
    assert _files(out) == _files(local)
    assert not list(out.glob(".*"))  # no staging left behind


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """Twenty synthetic scenes and a corrupt file, annotated in-process (one torch thread) for reference."""
    from PIL import Image

    from samflow.data.synthetic import render_scene
    from samflow.models.sam import build_sam, save_checkpoint

    root = tmp_path_factory.mktemp("scenes")
    (root / "images").mkdir()
    for index in range(20):
        Image.fromarray(render_scene([11, index], (128, 144)).image).save(root / "images" / f"scene{index:02d}.png")
    (root / "images" / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    # The default model's weights, saved once: both engines (all processes) load the very same ones, shipped or
    # (until they ship) random.
    torch.manual_seed(0)
    save_checkpoint(build_sam("tiny"), root / "tiny.safetensors")
    options = ["--checkpoint", str(root / "tiny.safetensors"), "--no-progress", *SMALL_AMG]
    with one_thread():
        assert main(["annotate", str(root / "images"), "--out", str(root / "local"), *options]) == 1  # the corrupt
    return root, root / "local", options


# A small grid keeps it fast; loose thresholds keep masks even from random weights.
SMALL_AMG = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


def test_annotate_on_ray_gives_the_in_process_json(cluster, scenes):
    root, local, options = scenes
    out = root / "ray"
    code = main(["annotate", str(root / "images"), "--out", str(out), "--engine", "ray", "--workers", "2",
                 "--batch-size", "4", *options])
    assert code == 1  # the corrupt image failed, as in-process; the run went through
    names = sorted(p.name for p in local.glob("scene*.json"))
    assert len(names) == 20
    assert sorted(p.name for p in out.glob("*.json")) == sorted([*names, "image_ids.json", "summary.json"])
    for name in [*names, "image_ids.json"]:
        assert (out / name).read_bytes() == (local / name).read_bytes(), name
    ours, theirs = json.loads((out / "summary.json").read_text()), json.loads((local / "summary.json").read_text())
    for key in ("images", "skipped", "annotated", "failed", "masks", "params"):
        assert ours[key] == theirs[key], key
    assert ours["masks"] >= 20 and ours["failed"][0]["file"].endswith("zz_corrupt.jpg")
    assert ours["counts"] == {"ok": 20, "failed": 1, "skipped": 0, "pending": 0}
    assert [item["id"] for item in ours["items"]] == [*(n[:-5] for n in names), "zz_corrupt"]
    assert ours["summary"]["images_per_s"] > 0 and ours["summary"]["masks_per_s"] > 0


def test_datasets_given_as_ray_datasets_or_pairs(cluster, graph_run):
    from samflow.scale import distributed

    root, _ = graph_run
    graph = Graph.load(root / "graph.yaml")
    planned = distributed.plan_items(graph, {"image": root / "images"})
    paths = [{"image": inputs["image"]} for _, inputs in planned]
    # a Ray Dataset comes back in any order: its items are sorted by path, as listed ones are
    assert distributed._items_of(graph, cluster.data.from_items(paths[::-1])) == planned
    with_ids = cluster.data.from_items([{**row, "id": f"n{i}"} for i, row in enumerate(paths)])
    assert [item_id for item_id, _ in distributed._items_of(graph, with_ids)] == [f"n{i}" for i in range(5)]
    assert distributed._items_of(graph, planned) == planned
    assert distributed._items_of(graph, str(root / "images")) == planned
    with pytest.raises(InputError, match="no column for graph input"):
        distributed._items_of(graph, cluster.data.from_items([{"picture": "x.png"}]))


def test_ray_only_options_are_refused_in_process(tmp_path, capsys):
    assert main(["annotate", str(tmp_path), "--out", str(tmp_path / "o"), "--workers", "2"]) == 2
    assert "--workers: only with --engine ray" in capsys.readouterr().err
    assert main(["run", "graph.yaml", "--out", str(tmp_path), "--batch-size", "2"]) == 2
    err = capsys.readouterr().err
    assert "--batch-size: only with --engine ray" in err or "cannot read graph" in err
    with pytest.raises(InputError, match="workers must be at least 1"):
        from samflow.scale.distributed import RayOptions

        RayOptions(workers=0)

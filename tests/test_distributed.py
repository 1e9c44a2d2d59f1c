"""Distributed runs on a real local Ray cluster (2 CPUs, a small object store), started once for the module.

Graph runs give the files `samflow run` gives; a killed worker loses nothing and duplicates nothing; an interrupted
run resumes with only the missing items; corrupt images are error records, not failed jobs.
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
from samflow.graph import Graph
from samflow.jobs import GraphJob
from samflow.ray_worker import FAULT_ENV

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


def test_graph_run_on_ray_gives_the_in_process_files(cluster, graph_run):
    root, local = graph_run
    out = root / "ray"
    code = main(["run", str(root / "graph.yaml"), "--input", f"image={root / 'images'}", "--out", str(out),
                 "--engine", "ray", "--workers", "2", "--batch-size", "2", "--no-progress"])
    assert code == 1  # one item failed, as in-process; the others are all there
    assert _files(out) == _files(local)
    manifest = _manifest(out)
    assert manifest["engine"] == "ray" and manifest["counts"] == {"ok": 4, "failed": 1, "skipped": 0, "pending": 0}
    (corrupt,) = [item for item in manifest["items"] if item["status"] == "failed"]
    assert corrupt["id"] == "corrupt" and "cannot read image" in corrupt["error"]
    assert corrupt["error"] == next(i for i in _manifest(local)["items"] if i["id"] == "corrupt")["error"]
    assert manifest["nodes"]["encoder"]["runs"] == 4 and manifest["summary"]["masks"] == 4 * 8
    assert not list(out.glob(".*"))  # no staging left behind


def test_interrupted_run_then_a_killed_worker_every_output_once(cluster, graph_run, tmp_path, monkeypatch):
    """The driver is stopped after two items; the rerun processes only the rest, and one of its workers dies
    on its second batch: every item still ends up written once and recorded once."""
    root, local = graph_run
    from samflow import distributed

    graph = Graph.load(root / "graph.yaml")
    items = distributed.plan_items(graph, {"image": root / "images"})
    commit, commits = GraphJob.commit, []

    def interrupted_commit(self, out, item_id, files):  # Ctrl-C in the driver after two items
        if len(commits) == 2:
            raise KeyboardInterrupt
        commits.append(item_id)
        commit(self, out, item_id, files)

    monkeypatch.setattr(GraphJob, "commit", interrupted_commit)
    options = distributed.RayOptions(workers=1, batch_size=1, progress=False)
    with pytest.raises(KeyboardInterrupt):
        distributed.execute(GraphJob(graph), items, tmp_path / "out", options)
    first = _manifest(tmp_path / "out")
    done = {item["id"] for item in first["items"] if item["status"] == "ok"}
    assert done == set(commits) and len(first["items"]) == len(items)
    assert first["counts"]["pending"] == len(items) - 2 - first["counts"]["failed"]
    monkeypatch.setattr(GraphJob, "commit", commit)

    marker = tmp_path / "killed"
    monkeypatch.setenv(FAULT_ENV, f"2:{marker}")  # the first worker to reach its 2nd batch exits
    report = distributed.execute(GraphJob(graph), items, tmp_path / "out", options)
    assert marker.is_file(), "the hook did not kill a worker"
    second = _manifest(tmp_path / "out")
    assert [item["id"] for item in second["items"]] == [item_id for item_id, _ in items]  # each once, in order
    assert {item["id"] for item in second["items"] if item["status"] == "skipped"} == done
    assert second["counts"] == {"ok": len(items) - 3, "failed": 1, "skipped": 2, "pending": 0}
    assert report.counts() == second["counts"]
    # only the missing items reached the workers: one encoder run per image processed now
    assert second["nodes"]["encoder"]["runs"] == len(items) - 3
    assert _files(tmp_path / "out") == _files(local)
    assert not list((tmp_path / "out").glob(".*"))

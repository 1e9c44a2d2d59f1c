"""Distributed runs on a real local Ray cluster (2 CPUs, a small object store), started once for the module.

Ray runs give the files the in-process engines give (graphs and the data engine); a killed worker loses nothing
and duplicates nothing; an input that kills every worker it reaches is recorded as failed and the run ends; an
interrupted run (SIGTERM) resumes with only the missing items; corrupt images are error records, not failed jobs.
Each Ray execution starts fresh workers (seconds each), so the tests share them frugally.

Worker deaths are injected by test jobs (below), shipped to the workers by value: nothing of it is in samflow.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
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
from samflow.scale.records import ITEM_RECORD

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
    # The test jobs below reach the workers by value (the workers cannot import this test module).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


class DieOnce(GraphJob):
    """The first worker to reach its `nth` item while `marker` does not exist creates it and exits at once, as a
    killed worker would (no clean-up, no exception)."""

    def __init__(self, job: GraphJob, marker: Path, nth: int = 2) -> None:
        super().__init__(job.graph, job.graph_source, job.cache_bytes)
        self.marker, self.nth, self.calls = str(marker), nth, 0

    def process(self, item_id, inputs):
        self.calls += 1
        if self.calls >= self.nth and not os.path.exists(self.marker):
            Path(self.marker).write_text(f"{os.getpid()} died on {item_id}\n")
            os._exit(1)
        return super().process(item_id, inputs)


class CrashOn(GraphJob):
    """Kills its worker process whenever it reaches the input file named `culprit` (a segfault, say)."""

    def __init__(self, graph: Graph, culprit: str) -> None:
        super().__init__(graph)
        self.culprit = culprit

    def process(self, item_id, inputs):
        if Path(inputs["image"]).name == self.culprit:
            os._exit(1)
        return super().process(item_id, inputs)


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


def _files(folder: Path, records: bool = True) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "run.json" and (records or p.name != ITEM_RECORD)}


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def test_graph_run_interrupted_then_resumed_with_a_killed_worker(cluster, graph_run, tmp_path, monkeypatch):
    """On Ray, `samflow run --engine ray` gets SIGTERM after two items: it exits 143 with run.json marking the
    rest pending; rerun while one of its workers dies on its second item: only the missing items are processed,
    every item is written and recorded once, the corrupt image is an error record, and the files (the records of
    each item's inputs included) are those of `samflow run`."""
    root, local = graph_run
    from samflow.scale import distributed

    out = tmp_path / "out"
    graph = Graph.load(root / "graph.yaml")
    items = distributed.plan_items(graph, {"image": root / "images"})
    command = ["run", str(root / "graph.yaml"), "--input", f"image={root / 'images'}", "--out", str(out),
               "--engine", "ray", "--no-progress"]
    commit, commits = GraphJob.commit, []

    def terminated_commit(self, out, item_id, files):  # `kill PID` while the driver commits its third item
        if len(commits) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        commits.append(item_id)
        commit(self, out, item_id, files)

    monkeypatch.setattr(GraphJob, "commit", terminated_commit)
    assert main([*command, "--workers", "1", "--batch-size", "1"]) == 128 + signal.SIGTERM
    first = _manifest(out)
    done = {item["id"] for item in first["items"] if item["status"] == "ok"}
    assert done == set(commits[:2]) and len(first["items"]) == len(items)
    assert first["counts"]["pending"] == len(items) - 2 - first["counts"]["failed"]
    assert not list(out.glob(".*"))  # the third item's staging did not stay behind
    monkeypatch.setattr(GraphJob, "commit", commit)

    marker = tmp_path / "killed"
    execute = distributed.execute
    monkeypatch.setattr(distributed, "execute", lambda job, *args: execute(DieOnce(job, marker), *args))
    code = main([*command, "--workers", "2", "--batch-size", "1"])
    assert code == 1  # the corrupt image failed, as in-process; everything else is there
    assert marker.is_file(), "no worker was killed"
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
    assert manifest["worker_crashes"] == {marker.read_text().split()[-1]: 1}  # died once, then done
    assert _files(out) == _files(local)
    assert not list(out.glob(".*"))  # no staging left behind


def test_an_input_that_kills_its_workers_is_failed_and_the_run_ends(cluster, graph_run, tmp_path):
    """One image kills every worker that reaches it: after two deaths it is recorded as failed ("worker crashed 2
    times on this input") and the run finishes the rest; before, Ray retried it for ever. OUT already holds
    another file's `img0`: this run's img0 goes to `img0_2` instead of passing for done."""
    from samflow.scale import distributed

    root, local = graph_run
    out = tmp_path / "out"
    other = tmp_path / "other"
    other.mkdir()
    (other / "img0.png").write_bytes((root / "images" / "img1.png").read_bytes())
    with one_thread():
        assert main(["run", str(root / "graph.yaml"), "--input", f"image={other}", "--out", str(out),
                     "--no-progress"]) == 0
    graph = Graph.load(root / "graph.yaml")
    items = distributed.plan_items(graph, {"image": root / "images"})
    started = time.perf_counter()
    report = distributed.execute(CrashOn(graph, "img2.png"), items, out,
                                 distributed.RayOptions(workers=2, batch_size=2, progress=False))
    seconds = time.perf_counter() - started
    status = {item["id"]: item for item in _manifest(out)["items"]}
    assert status["img2"]["status"] == "failed", status["img2"]
    assert status["img2"]["error"].startswith("worker crashed 2 times on this input")
    assert _manifest(out)["worker_crashes"] == {"img2": 2}
    assert [item["id"] for item in report.items] == ["corrupt", "img0_2", "img1", "img2", "img3"]
    assert {i for i, item in status.items() if item["status"] == "ok"} == {"img0_2", "img1", "img3"}
    assert status["corrupt"]["status"] == "failed"
    assert status["img0"]["status"] == "skipped" and status["img0"]["inputs"]["image"] == str(other / "img0.png")
    ours, theirs = _files(out, records=False), _files(local, records=False)
    assert {k.replace("img0_2/", "img0/"): v for k, v in ours.items() if not k.startswith("img0/")} == {
        k: v for k, v in theirs.items() if not k.startswith("img2/")}
    assert seconds < 150, seconds


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

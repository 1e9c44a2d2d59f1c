"""The worker side of distributed runs, without a cluster: a batch in, one row per item out, files as the
in-process runner writes them; failures are rows; the crash ledger; counter increments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from graph_testing import make_checkpoint, make_images, three_decoders_yaml

from samflow.engine.graph import Graph
from samflow.engine.scheduler import Scheduler
from samflow.errors import InputError
from samflow.scale import records
from samflow.scale.distributed import plan_items
from samflow.scale.jobs import GraphJob
from samflow.scale.runner import plan_items as runner_plan_items
from samflow.scale.runner import run_graph

pa = pytest.importorskip("pyarrow")
from samflow.scale.ray_worker import BatchWorker, CrashLedger, stats_add, stats_delta  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Graph]:
    root = tmp_path_factory.mktemp("worker")
    make_images(root / "images", 3)
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root, Graph.from_yaml(three_decoders_yaml(make_checkpoint(root)))


def _batch(items) -> pa.Table:
    rows = [{"id": i, "inputs": json.dumps({k: str(v) for k, v in d.items()})} for i, d in items]
    return pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.string()), ("inputs", pa.string())]))


def test_plan_items_matches_the_runner(setup):
    root, graph = setup
    expected = [(i, {k: str(v) for k, v in d.items()}) for i, d in runner_plan_items(graph, {"image": root / "images"})]
    assert plan_items(graph, {"image": root / "images"}) == expected
    uri = plan_items(graph, {"image": f"file://{root}/images"})
    assert [i for i, _ in uri] == [i for i, _ in expected]
    assert uri[0][1]["image"] == f"file://{root}/images/broken.png"
    with pytest.raises(InputError, match="missing: image"):
        plan_items(graph, {})


def test_worker_rows_and_files_equal_the_runner(setup, tmp_path):
    root, graph = setup
    items = plan_items(graph, {"image": root / "images"})
    with Scheduler(graph) as scheduler:
        run_graph(scheduler, runner_plan_items(graph, {"image": root / "images"}), tmp_path / "local", progress=False)
    job = GraphJob(graph)
    worker = BatchWorker(job)
    table = worker(_batch(items))
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == ["broken", "img0", "img1", "img2"]
    assert rows[0]["status"] == "failed" and "cannot read image" in rows[0]["error"] and rows[0]["names"] == []
    local = json.loads((tmp_path / "local" / "run.json").read_text())["items"]
    assert rows[0]["error"] == local[0]["error"]
    for row in rows[1:]:
        assert row["status"] == "ok" and row["masks"] == 8 and row["outputs"] == local[1]["outputs"]
        job.commit(tmp_path / "ray", row["id"], list(zip(row["names"], row["blobs"])))
        written = sorted(p.relative_to(tmp_path / "ray").as_posix() for p in (tmp_path / "ray").rglob("*")
                         if p.is_file() and p.parent.name == row["id"])
        assert written  # every file the runner wrote, with the same bytes
        for name in written:
            assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert job.is_done(tmp_path / "ray", "img0") and not job.is_done(tmp_path / "ray", "broken")
    stats = json.loads(rows[-1]["stats"])
    assert stats["nodes"]["encoder"]["runs"] == 3 and all(r["stats"] is None for r in rows[:-1])
    again = json.loads(worker(_batch(items[1:2])).to_pylist()[-1]["stats"])
    # increments, not totals: the image was seen, so its embedding comes from the worker's cache
    assert again["nodes"]["encoder"]["runs"] == 0 and again["nodes"]["encoder"]["cache_hits"] == 1
    assert again["cache"]["hits"] == 1
    assert again["nodes"]["encoder"]["type"] == "sam.encoder"


def test_job_pickles_without_its_scheduler(setup):
    import pickle

    _, graph = setup
    job = GraphJob(graph)
    job.start()
    clone = pickle.loads(pickle.dumps(job))
    assert clone._scheduler is None and job._scheduler is not None
    job.close()


def test_the_ledger_refuses_an_input_its_workers_died_on_twice():
    """An item begun and not ended when it begins again was being processed when its worker died; after two such
    deaths it is refused (a failed row) instead of run; inputs that passed, or failed in Python, are not counted."""
    ledger = CrashLedger(limit=2)
    assert ledger.begin("a", "w1") is None
    ledger.end("a")  # done: never counted
    assert ledger.begin("a", "w1") is None
    ledger.end("a")
    assert ledger.begin("bad", "w1") is None  # ... and w1 dies on it
    assert ledger.begin("bad", "w2") is None  # one death: retried, and w2 dies too
    refused = ledger.begin("bad", "w3")  # two deaths: not tried again
    assert refused is not None and refused.startswith("worker crashed 2 times on this input") and "w1, w2" in refused
    assert ledger.begin("bad", "w4") == refused  # for good: no further try is opened
    assert ledger.crashes() == {"bad": 2}


def test_the_worker_records_a_refused_input_as_failed_and_goes_on(setup):
    root, graph = setup

    class Counting(GraphJob):
        calls: list[str] = []

        def start(self) -> None:
            pass

        def process(self, item_id, inputs):
            self.calls.append(item_id)
            raise ValueError("no models here")

    ledger = CrashLedger(limit=1)
    ledger.begin("img1", "gone:1")  # a worker died on img1 once
    worker = BatchWorker(Counting(graph), guard=ledger)
    rows = worker(_batch([(f"img{i}", {"image": root / "images" / f"img{i}.png"}) for i in range(3)])).to_pylist()
    assert [r["status"] for r in rows] == ["failed"] * 3
    assert rows[1]["error"].startswith("worker crashed 1 times on this input (its process died: gone:1)")
    assert rows[0]["error"] == rows[2]["error"] == "ValueError: no models here"
    assert Counting.calls == ["img0", "img2"]  # the refused input never ran
    assert ledger.crashes() == {"img1": 1} and not ledger._open  # Python failures end their items


def test_the_item_record_is_committed_with_the_outputs(setup, tmp_path):
    root, graph = setup
    job = GraphJob(graph)
    inputs = {"image": str(root / "images" / "img0.png")}
    job.commit(tmp_path, "img0", [("a.json", b"{}"), *job.item_files("img0", inputs)])
    assert records.scan_items(tmp_path) == {"img0": {"image": str((root / "images" / "img0.png").resolve())}}


def test_stats_arithmetic():
    total: dict = {}
    stats_add(total, stats_delta({"a": {"runs": 3, "type": "x"}, "n": 2.5}, {"a": {"runs": 1}}))
    stats_add(total, {"a": {"runs": 1}, "n": 0.5, "flag": True})
    assert total == {"a": {"runs": 3, "type": "x"}, "n": 3.0, "flag": True}

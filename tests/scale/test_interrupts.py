"""Stopped runs leave an honest folder: SIGTERM (and Ctrl-C) during `samflow run` / `samflow annotate` writes the
final manifest with the items not reached pending and exits 143 (130); after a SIGKILL the next run repairs the
stale manifest from the disk and removes the killed run's leftovers, whichever items it plans; and the manifest
describes the whole output folder across invocations, not only the last one. (The Ray engine: SIGTERM in
tests/test_distributed.py, and its SIGTERM handler here.)"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import scale_testing as testing
from graph_testing import make_checkpoint
from scale_testing import SlowCopy, by_id, copy_graph, items_on_disk, manifest, write_images

from samflow.cli import main

NAMES = [f"im{i}.png" for i in range(6)]


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


def test_sigterm_during_run_writes_run_json_with_the_rest_pending(tmp_path):
    graph = copy_graph(tmp_path, seconds=0.5)
    write_images(tmp_path / "images", NAMES)
    out = tmp_path / "out"
    process = testing.start("run", str(graph), "--input", f"image={tmp_path / 'images'}", "--out", str(out),
                            "--no-progress")
    testing.wait_for(lambda: out.is_dir() and items_on_disk(out), process=process)
    code, output = testing.stop(process)
    assert code == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM" in output and "Traceback" not in output
    document = manifest(out)
    done = items_on_disk(out)
    assert 1 <= len(done) < 6
    assert {i["id"] for i in document["items"] if i["status"] == "ok"} == set(done)
    assert document["counts"] == {"ok": len(done), "failed": 0, "skipped": 0, "pending": 6 - len(done)}
    assert all("rerun" in i["reason"] for i in document["items"] if i["status"] == "pending")
    assert _leftovers(out) == []  # the item in progress left no staging behind

    assert main(["run", str(graph), "--input", f"image={tmp_path / 'images'}", "--out", str(out),
                 "--no-progress"]) == 0
    assert manifest(out)["counts"] == {"ok": 6 - len(done), "failed": 0, "skipped": len(done)}


def test_ctrl_c_during_run_marks_the_rest_pending(tmp_path, monkeypatch):
    graph = copy_graph(tmp_path)
    write_images(tmp_path / "images", NAMES[:4])
    out = tmp_path / "out"
    run, calls = SlowCopy.run, []

    def interrupted(self, ctx, image):
        calls.append(ctx.item_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return run(self, ctx, image)

    monkeypatch.setattr(SlowCopy, "run", interrupted)
    assert main(["run", str(graph), "--input", f"image={tmp_path / 'images'}", "--out", str(out),
                 "--no-progress"]) == 130
    statuses = {i["id"]: i["status"] for i in manifest(out)["items"]}
    assert statuses == {"im0": "ok", "im1": "ok", "im2": "pending", "im3": "pending"}
    assert _leftovers(out) == [] and items_on_disk(out) == ["im0", "im1"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("weights"))


LOOSE = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--device", "cpu"]


def test_sigterm_during_annotate_writes_summary_json_with_the_rest_pending(tmp_path, checkpoint):
    write_images(tmp_path / "images", NAMES[:5])
    out = tmp_path / "sa"
    process = testing.start("annotate", str(tmp_path / "images"), "--out", str(out), "--checkpoint",
                            str(checkpoint), "--no-progress", *LOOSE, env={"SAMFLOW_TESTING_ANNOTATE_SECONDS": "0.7"})
    testing.wait_for(lambda: out.is_dir() and any(out.glob("im[0-9].json")), process=process)
    code, output = testing.stop(process)
    assert code == 128 + signal.SIGTERM, output
    summary = manifest(out, "summary.json")
    done = sorted(p.stem for p in out.glob("im[0-9].json"))
    assert 1 <= len(done) < 5
    assert summary["counts"] == {"ok": len(done), "failed": 0, "skipped": 0, "pending": 5 - len(done)}
    assert summary["images"] == 5 and summary["annotated"] == len(done)
    assert sorted(i["id"] for i in summary["items"] if i["status"] == "ok") == done
    assert _leftovers(out) == []


def test_after_a_sigkill_the_next_run_repairs_the_folder(tmp_path):
    """Killed (no clean-up at all) mid-run: run.json is stale and a staging folder stays. The next run, planning
    only two of the images, removes every leftover and writes a run.json that counts from the disk: what the
    killed run committed is done, the rest pending, each image once."""
    graph = copy_graph(tmp_path, seconds=0.5)
    write_images(tmp_path / "images", NAMES)
    out = tmp_path / "out"
    process = testing.start("run", str(graph), "--input", f"image={tmp_path / 'images'}", "--out", str(out),
                            "--no-progress")
    testing.wait_for(lambda: out.is_dir() and len(items_on_disk(out)) >= 3, process=process)
    code, _ = testing.stop(process, signal.SIGKILL)
    assert code == -signal.SIGKILL
    done = items_on_disk(out)
    stale = manifest(out)
    assert {i["status"] for i in stale["items"]} == {"pending"}  # written at the start: nothing done, it says
    (out / ".ghost.partial").mkdir(exist_ok=True)  # as a killed run leaves them, whatever item they were
    (out / ".run.json.tmp").write_text('{"trunc')

    spec = f"{tmp_path}/images/im[01].png"  # two of the done images
    assert main(["run", str(graph), "--input", f"image={spec}", "--out", str(out), "--no-progress"]) == 0
    assert _leftovers(out) == []
    document = manifest(out)
    assert sorted(i["id"] for i in document["items"]) == [Path(n).stem for n in NAMES]  # each image once
    statuses = {i["id"]: i["status"] for i in document["items"]}
    assert {i for i, s in statuses.items() if s == "skipped"} == set(done)
    assert {i for i, s in statuses.items() if s == "pending"} == {Path(n).stem for n in NAMES} - set(done)
    assert document["counts"] == {"ok": 0, "failed": 0, "skipped": len(done), "pending": 6 - len(done)}


def test_the_manifests_describe_the_whole_folder_across_runs(tmp_path, checkpoint):
    graph = copy_graph(tmp_path)
    write_images(tmp_path / "a", ["a0.png", "a1.png"], seed=1)
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    write_images(tmp_path / "b", ["b0.png"], seed=2)
    out = tmp_path / "out"
    assert main(["run", str(graph), "--input", f"image={tmp_path / 'a'}", "--out", str(out), "--no-progress"]) == 1
    # another invocation, other inputs: it succeeds (exit 0), and run.json still tells a's story
    assert main(["run", str(graph), "--input", f"image={tmp_path / 'b'}", "--out", str(out), "--no-progress"]) == 0
    document = manifest(out)
    items = by_id(document)
    assert [i["id"] for i in document["items"]] == ["b0", "a0", "a1", "broken"]
    assert items["b0"]["status"] == "ok" and "earlier_run" not in items["b0"]
    assert items["a0"]["status"] == items["a1"]["status"] == "skipped" and items["a0"]["earlier_run"]
    assert items["broken"]["status"] == "failed" and "cannot read image" in items["broken"]["error"]
    assert document["counts"] == {"ok": 1, "failed": 1, "skipped": 2}

    sa = tmp_path / "sa"
    options = ["--out", str(sa), "--checkpoint", str(checkpoint), "--no-progress", *LOOSE]
    assert main(["annotate", str(tmp_path / "a"), *options]) == 1
    assert main(["annotate", str(tmp_path / "b"), *options]) == 0
    summary = manifest(sa, "summary.json")
    assert (summary["images"], summary["annotated"], summary["skipped"]) == (4, 1, 2)
    assert [Path(f["file"]).name for f in summary["failed"]] == ["broken.png"] and summary["failed_now"] == 0
    assert summary["counts"] == {"ok": 1, "failed": 1, "skipped": 2, "pending": 0}
    assert json.loads((sa / "image_ids.json").read_text())["b0"]["id"] == 4


def test_ray_init_does_not_take_the_commands_sigterm_handler(monkeypatch):
    """ray.init installs a SIGTERM handler of its own (sys.exit) in the driver: the command's is put back, so a
    Ray run stopped by SIGTERM also says what it left and exits 143."""
    ray = pytest.importorskip("ray")
    from samflow.commands._engine_options import stop_cleanly
    from samflow.scale.ray_cluster import cluster
    from samflow.scale.ray_options import RayOptions

    def init(**kwargs):
        signal.signal(signal.SIGTERM, lambda signum, frame: None)  # as ray.init does

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {})
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    before = signal.getsignal(signal.SIGTERM)
    with stop_cleanly() as stopping, cluster(RayOptions()):
        assert signal.getsignal(signal.SIGTERM) == stopping.handle
    assert signal.getsignal(signal.SIGTERM) is before  # the command's handler lasts as long as the command

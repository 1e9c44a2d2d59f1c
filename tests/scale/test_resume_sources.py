"""Resume never takes one file's results for another's: a rerun whose listing was widened or shifted gives a file
whose usual id (or stem) is held by another file's results a new one, in `samflow run` and `samflow annotate`
(the Ray engine plans and commits through the same records: tests/test_distributed.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from graph_testing import make_checkpoint
from PIL import Image as PILImage
from scale_testing import by_id, copy_graph, manifest, write_images

from samflow.cli import main
from samflow.scale.records import ITEM_RECORD, settle_ids


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(PILImage.open(path))


def run(graph: Path, spec: str, out: Path) -> int:
    return main(["run", str(graph), "--input", f"image={spec}", "--out", str(out), "--no-progress"])


def test_a_shifted_then_widened_glob_keeps_each_files_results(tmp_path, caplog):
    graph = copy_graph(tmp_path)
    shift_a = write_images(tmp_path / "shiftA", ["x.png", "y.png"], seed=1)
    (shift_b,) = write_images(tmp_path / "shiftB", ["x.png"], seed=2)
    out = tmp_path / "out"
    assert run(graph, f"{tmp_path}/shiftA/*.png", out) == 0
    first = (out / "x" / "picture.png").read_bytes()

    with caplog.at_level(logging.WARNING, logger="samflow.scale.records"):
        assert run(graph, f"{tmp_path}/shiftB/*.png", out) == 0
    # shiftB/x.png is not "done before": it has its own folder, with its own pixels
    assert np.array_equal(_pixels(out / "x_2" / "picture.png"), _pixels(shift_b))
    assert (out / "x" / "picture.png").read_bytes() == first
    assert np.array_equal(_pixels(out / "x" / "picture.png"), _pixels(shift_a[0]))
    warning = caplog.text
    assert str(shift_a[0].resolve()) in warning and str(shift_b.resolve()) in warning and "x_2" in warning
    record = json.loads((out / "x_2" / ITEM_RECORD).read_text())
    assert record == {"id": "x_2", "inputs": {"image": str(shift_b.resolve())}}
    items = by_id(manifest(out))
    assert items["x_2"]["status"] == "ok" and items["x_2"]["inputs"]["image"] == str(shift_b)
    # the folder's other items are still listed, done in the earlier run
    assert items["x"]["status"] == items["y"]["status"] == "skipped" and items["x"]["earlier_run"]
    assert manifest(out)["counts"] == {"ok": 1, "failed": 0, "skipped": 2}

    # Widened over both folders: every file finds its own results, nothing is redone, nothing renamed again.
    assert run(graph, f"{tmp_path}/shift*/*.png", out) == 0
    document = manifest(out)
    assert [(i["id"], i["status"]) for i in document["items"]] == [("x", "skipped"), ("y", "skipped"),
                                                                   ("x_2", "skipped")]
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "x", "x_2", "y"]


def test_a_folder_from_before_records_is_adopted_by_its_item(tmp_path):
    graph = copy_graph(tmp_path)
    write_images(tmp_path / "images", ["x.png"])
    out = tmp_path / "out"
    (out / "x").mkdir(parents=True)
    (out / "x" / "picture.png").write_bytes(b"from an older samflow")
    assert run(graph, str(tmp_path / "images"), out) == 0
    assert manifest(out)["counts"] == {"ok": 0, "failed": 0, "skipped": 1}  # as resume always did
    assert (out / "x" / "picture.png").read_bytes() == b"from an older samflow"


def test_settling_ids():
    # recorded identities keep their ids, wherever the listing puts them; others never take a recorded id
    ids, renamed = settle_ids([("x", "B"), ("x_2", "A")], {"x": "A"})
    assert ids == ["x_2", "x"] and renamed == [0]  # x_2's file found its results under x: the name is free
    assert settle_ids([("x", "B"), ("x_2", "C")], {"x": "A"}) == (["x_3", "x_2"], [0])
    assert settle_ids([("x", "A"), ("y", "C")], {"x": "A", "y": None}) == (["x", "y"], [])  # None: adopted
    assert settle_ids([("a", 1), ("a", 2)], {}) == (["a", "a_2"], [1])


LOOSE = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("weights"))


def annotate(spec: str, out: Path, checkpoint: Path) -> int:
    return main(["annotate", spec, "--out", str(out), "--checkpoint", str(checkpoint), "--device", "cpu",
                 "--no-progress", *LOOSE])


def test_annotate_gives_a_shifted_file_its_own_stem_and_id(tmp_path, checkpoint):
    from samflow.scale.ray_plan import plan_images

    (shift_a,) = write_images(tmp_path / "shiftA", ["x.png"], seed=1)
    (shift_b,) = write_images(tmp_path / "shiftB", ["x.png"], seed=2)
    out = tmp_path / "sa"
    assert annotate(str(tmp_path / "shiftA"), out, checkpoint) == 0
    first = (out / "x.json").read_bytes()
    # the Ray engine plans through the same records
    assert plan_images([tmp_path / "shiftB"], out) == [("x_2", {"image": str(shift_b), "image_id": "2"})]
    assert annotate(str(tmp_path / "shiftB"), out, checkpoint) == 0
    assert (out / "x.json").read_bytes() == first
    document = json.loads((out / "x_2.json").read_text())
    assert document["image"]["image_id"] == 2 and document["image"]["file_name"] == "x.png"
    assert document["image"]["height"] == 48
    assert json.loads((out / "image_ids.json").read_text()) == {
        "x": {"id": 1, "source": str(shift_a.resolve())}, "x_2": {"id": 2, "source": str(shift_b.resolve())}}
    summary = manifest(out, "summary.json")
    assert (summary["images"], summary["annotated"], summary["skipped"]) == (2, 1, 1)
    assert [(i["id"], i["status"]) for i in summary["items"]] == [("x_2", "ok"), ("x", "skipped")]

    # an image_ids.json from before sources were kept: its stems are adopted as they always were
    (out / "image_ids.json").write_text('{"x": 1}')
    (out / "x_2.json").unlink()
    assert annotate(str(tmp_path / "shiftA"), out, checkpoint) == 0
    assert json.loads((out / "image_ids.json").read_text()) == {"x": {"id": 1, "source": str(shift_a.resolve())}}
    assert manifest(out, "summary.json")["counts"] == {"ok": 0, "failed": 0, "skipped": 1, "pending": 1}


def test_a_damaged_image_ids_json_is_a_clear_error(tmp_path, capsys):
    write_images(tmp_path / "images", ["x.png"])
    out = tmp_path / "sa"
    out.mkdir()
    for damaged in ('{"x": [1]}', '{"x": {"source": "a.png"}}', "[1, 2]", "{"):
        (out / "image_ids.json").write_text(damaged)
        assert main(["annotate", str(tmp_path / "images"), "--out", str(out), "--no-progress"]) == 2
        assert "image_ids.json is not a map of image names to ids" in capsys.readouterr().err

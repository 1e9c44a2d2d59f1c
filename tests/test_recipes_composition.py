"""The composition recipes run as they are on the inputs `samflow demo-data` writes: graphs/detect_then_segment.yaml,
graphs/gaze_video.yaml, graphs/lift_3d.yaml (through `samflow run` / `samflow video`), and their Python versions
in examples/. A small random SAM stands in for `tiny` (via --set), so this checks the plumbing, not mask quality."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from composition_testing import one_torch_thread, read_ply  # noqa: F401 (an autouse fixture)
from graph_testing import SMALL_SAM, make_checkpoint
from PIL import Image as PILImage

from samflow.cli import main
from samflow.data.demo import write_demo
from samflow.data.gaze import read_gaze_csv

REPO = Path(__file__).resolve().parents[1]
MODEL = "{" + ", ".join(f"{k}: {v}" for k, v in SMALL_SAM.items()) + "}"



@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("composition")
    return root, write_demo(root / "demo-data"), make_checkpoint(root)


def small_model(checkpoint: Path) -> list[str]:
    return ["--set", f"encoder.model={MODEL}", "--set", f"encoder.checkpoint={checkpoint}", "--set",
            "encoder.device=cpu"]


def test_demo_data_is_what_the_recipes_name(demo):
    _, written, _ = demo
    for recipe, part in (("detect_then_segment", "detect"), ("gaze_video", "gaze"), ("lift_3d", "lift")):
        text = (REPO / "graphs" / f"{recipe}.yaml").read_text()
        for path in written[part].values():
            if path.suffix in (".json", ".csv") and path.name in text:
                assert f"demo-data/{part}/{path.name}" in text
    assert len(list(written["detect"]["images"].glob("*.png"))) == 3
    assert read_gaze_csv(written["gaze"]["gaze"]).kind == "2d" and read_gaze_csv(written["gaze"]["gaze_aria"]).kind == "aria"
    assert np.asarray(PILImage.open(written["lift"]["depth"])).dtype == np.uint16


def test_detect_then_segment_recipe(demo, tmp_path):
    _, written, checkpoint = demo
    files = written["detect"]
    code = main(["run", str(REPO / "graphs" / "detect_then_segment.yaml"), "--input", f"image={files['images']}",
                 "--out", str(tmp_path), "--no-progress", "--set", f"detect.file={files['detections']}",
                 "--set", f"detect.images={files['instances']}", *small_model(checkpoint)])
    assert code == 0
    truth = json.loads(files["instances"].read_text())
    records = json.loads((tmp_path / "sa_000002" / "masks" / "instance.json").read_text())
    expected = [a for a in truth["annotations"] if a["image_id"] == 2]
    names = {c["id"]: c["name"] for c in truth["categories"]}
    assert [r["label"] for r in records] == [names[a["category_id"]] for a in expected]
    assert all(r["confidence"] == 1.0 and r["file"] for r in records)
    assert (tmp_path / "sa_000002" / "overlay.png").is_file()


def test_gaze_video_recipe(demo, tmp_path):
    _, written, checkpoint = demo
    files = written["gaze"]
    code = main(["video", str(REPO / "graphs" / "gaze_video.yaml"), "--input", f"frame={files['video']}",
                 "--out", str(tmp_path), "--overlay", "--max-frames", "20", "--no-progress",
                 "--set", f"gaze.file={files['gaze']}", "--set", f"gaze.intrinsics={files['intrinsics']}",
                 *small_model(checkpoint)])
    assert code == 0
    lines = [json.loads(line) for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert len(lines) == 20 and all(line["outputs"]["gaze"]["status"] == "fixation" for line in lines)
    assert all(len(line["outputs"]["masks"]) == 1 for line in lines) and (tmp_path / "overlay.mp4").is_file()


def test_gaze_video_recipe_with_aria_gaze(demo, tmp_path):
    _, written, checkpoint = demo
    files = written["gaze"]
    code = main(["video", str(REPO / "graphs" / "gaze_video.yaml"), "--input", f"frame={files['video']}",
                 "--out", str(tmp_path), "--max-frames", "5", "--no-progress", "--set", f"gaze.file={files['gaze_aria']}",
                 "--set", "gaze.time_offset_s=first", "--set", f"gaze.intrinsics={files['intrinsics']}",
                 *small_model(checkpoint)])
    assert code == 0
    aria = [json.loads(line)["outputs"]["gaze"] for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    csv_2d = read_gaze_csv(files["gaze"])
    for frame, gaze in enumerate(aria):  # Aria yaw/pitch projected back onto the 2D gaze of the same samples
        nearest = np.argmin(np.abs(csv_2d.times - frame / 30))
        assert gaze["status"] == "fixation" and np.allclose([gaze["x"], gaze["y"]], csv_2d.xy[nearest], atol=0.01)


def test_lift_3d_recipe(demo, tmp_path):
    _, written, checkpoint = demo
    files = written["lift"]
    code = main(["run", str(REPO / "graphs" / "lift_3d.yaml"), "--input", f"image={files['image']}",
                 "--input", f"depth={files['depth']}", "--input", f"intrinsics={files['intrinsics']}",
                 "--out", str(tmp_path), "--no-progress", "--set", f"detect.file={files['detections']}",
                 "--set", f"detect.images={files['instances']}", *small_model(checkpoint)])
    assert code == 0
    item = tmp_path / "image"
    summary = json.loads((item / "clouds" / "cloud.json").read_text())
    assert [cloud["label"] for cloud in summary] == ["card", "ball"]
    points, colors = read_ply(item / "clouds" / "cloud_0.ply")
    assert points.shape[0] == summary[0]["points"] and np.isfinite(points).all() and colors.dtype == np.uint8
    assert (points[:, 2] > 1.0).all() and (points[:, 2] < 4.0).all()  # the scene lies 1.4-3.7 m away
    assert sorted(p.name for p in (item / "mcc").iterdir()) == ["000", "001"]


@pytest.mark.parametrize("example, extra", [
    ("detect_then_segment", []),
    ("gaze_video", ["--max-frames", "6"]),
    ("lift_3d", []),
])
def test_examples_make_their_inputs_and_run(example, extra, tmp_path, monkeypatch, demo, capsys):
    _, _, checkpoint = demo
    monkeypatch.chdir(tmp_path)  # the examples write demo-data/ and runs/ under the working folder
    monkeypatch.setattr(sys, "argv", [example, "--make-inputs", "--model", MODEL, "--checkpoint", str(checkpoint),
                                      *extra])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "examples" / f"{example}.py"), run_name="__main__")
    assert exit_info.value.code == 0, capsys.readouterr()
    assert any((tmp_path / "runs").iterdir())

"""The data engine as a command (`samflow annotate`: SA-1B JSON, resume, failures, previews) and as a graph
(`sam.auto` in graphs/auto_masks.yaml through `samflow run`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from graph_testing import SMALL_SAM, make_checkpoint
from PIL import Image as PILImage

from samflow.cli import main
from samflow.ops import rle

REPO = Path(__file__).resolve().parents[1]
# Random weights: keep every candidate so that masks come out; a small grid keeps it fast.
LOOSE = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("weights"))


def write_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        rng = np.random.default_rng(i)
        data = rng.integers(0, 80, (60 + 4 * i, 80, 3), dtype=np.uint8)
        data[10:40, 20:50] = rng.integers(150, 255, 3)
        path = folder / f"img{i}.png"
        PILImage.fromarray(data).save(path)
        paths.append(path)
    return paths


def annotate(images: Path, out: Path, checkpoint: Path, *extra: str) -> int:
    return main(["annotate", str(images), "--out", str(out), "--checkpoint", str(checkpoint), "--device", "cpu",
                 "--no-progress", *LOOSE, *extra])


def test_writes_sa1b_json(tmp_path: Path, checkpoint: Path) -> None:
    paths = write_images(tmp_path / "images", 2)
    out = tmp_path / "out"
    assert annotate(tmp_path / "images", out, checkpoint, "--preview") == 0
    for image_id, path in enumerate(paths, start=1):
        document = json.loads((out / f"{path.stem}.json").read_text())
        height, width = np.asarray(PILImage.open(path)).shape[:2]
        assert document["image"] == {"image_id": image_id, "width": width, "height": height,
                                     "file_name": path.name}
        assert document["annotations"]
        ids = set()
        for ann in document["annotations"]:
            assert set(ann) == {"id", "segmentation", "bbox", "area", "predicted_iou", "stability_score",
                                "crop_box", "point_coords"}
            mask = rle.decode(ann["segmentation"])
            assert mask.shape == (height, width) and mask.sum() == ann["area"]
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
            assert ann["crop_box"] == [0.0, 0.0, float(width), float(height)]
            ids.add(ann["id"])
        assert len(ids) == len(document["annotations"])
        assert (out / "previews" / f"{path.stem}.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["annotated"] == 2 and summary["failed"] == [] and summary["masks"] > 0


def test_resumes_without_duplicates_and_reports_failures(tmp_path: Path, checkpoint: Path) -> None:
    images = tmp_path / "images"
    paths = write_images(images, 3)
    out = tmp_path / "out"
    assert annotate(images, out, checkpoint) == 0
    outputs = {p.stem: out / f"{p.stem}.json" for p in paths}
    before = {stem: (path.read_bytes(), path.stat().st_mtime_ns) for stem, path in outputs.items()}

    # Interrupted mid-image: its JSON is missing and a partial temporary file lies beside the others.
    outputs["img1"].unlink()
    (out / ".img1.json.tmp").write_text('{"image": {"image_id": 2, "wid')
    # And a corrupt image joins the folder.
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")

    assert annotate(images, out, checkpoint) == 1  # the broken image failed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 4 and summary["skipped"] == 2 and summary["annotated"] == 1
    assert [Path(f["file"]).name for f in summary["failed"]] == ["broken.png"]
    assert "cannot read image" in summary["failed"][0]["error"]  # the one loader's words
    for stem in ("img0", "img2"):  # untouched
        assert (outputs[stem].read_bytes(), outputs[stem].stat().st_mtime_ns) == before[stem]
    # Redone: complete, valid, with the same content as the first time (the run is deterministic).
    assert outputs["img1"].read_bytes() == before["img1"][0]
    assert not (out / ".img1.json.tmp").exists()
    assert sorted(p.name for p in out.glob("*.json")) == ["image_ids.json", "img0.json", "img1.json", "img2.json",
                                                          "summary.json"]

    # Nothing left to do but the broken image, which fails again.
    assert annotate(images, out, checkpoint) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == 3 and summary["annotated"] == 0 and len(summary["failed"]) == 1


def test_missing_inputs_are_user_errors(tmp_path: Path, checkpoint: Path, capsys) -> None:
    assert annotate(tmp_path / "nowhere", tmp_path / "out", checkpoint) == 2
    assert "no such file or folder" in capsys.readouterr().err
    write_images(tmp_path / "images", 1)
    assert main(["annotate", str(tmp_path / "images"), "--out", str(tmp_path / "out"),
                 "--checkpoint", str(tmp_path / "missing.pth")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_help() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["annotate", "--help"])
    assert exit_info.value.code == 0


def test_auto_masks_recipe_runs(tmp_path: Path, checkpoint: Path) -> None:
    write_images(tmp_path / "images", 1)
    model = "{" + ", ".join(f"{k}: {v}" for k, v in SMALL_SAM.items()) + "}"
    out = tmp_path / "run"
    code = main(["run", str(REPO / "graphs" / "auto_masks.yaml"), "--input", f"image={tmp_path / 'images'}",
                 "--out", str(out), "--no-progress", "--set", f"encoder.model={model}",
                 "--set", f"encoder.checkpoint={checkpoint}", "--set", "encoder.device=cpu",
                 "--set", "auto.points_per_side=4", "--set", "auto.pred_iou_thresh=0",
                 "--set", "auto.stability_score_thresh=0", "--set", "auto.crop_n_layers=1"])
    assert code == 0
    item = out / "img0"
    records = json.loads((item / "masks.json").read_text())
    scores = json.loads((item / "scores.json").read_text())["scores"]
    assert len(records) == len(scores) > 0
    assert (item / "overlay.png").is_file()


def test_auto_node_matches_generator(checkpoint: Path) -> None:
    """The node returns the generator's masks, and crop embeddings go through the graph cache."""
    from samflow.engine.graph import Graph
    from samflow.engine.scheduler import Scheduler
    from samflow.models.sam import build_sam
    from samflow.predict.amg import SamAutomaticMaskGenerator

    data = np.asarray(PILImage.open(write_images(Path(checkpoint).parent / "node", 1)[0]))
    params = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "crop_n_layers": 1}
    graph = Graph.from_yaml(f"""
samflow: 1
inputs: {{image: Image}}
nodes:
  encoder: {{type: sam.encoder, params: {{model: {SMALL_SAM}, checkpoint: '{checkpoint}', device: cpu}},
            inputs: {{image: $inputs.image}}}}
  auto: {{type: sam.auto, params: {params}, inputs: {{embedding: $encoder.embedding, image: $inputs.image}}}}
outputs: {{masks: $auto.masks, scores: $auto.scores, boxes: $auto.boxes}}
""")
    with Scheduler(graph) as scheduler:
        first = scheduler.run(image=data)
        hits = scheduler.cache.stats.hits
        second = scheduler.run(image=data)
        assert scheduler.cache.stats.hits >= hits + 5  # the image and its 4 crops: no encoder run the second time
    expected = SamAutomaticMaskGenerator(build_sam(SMALL_SAM, checkpoint=checkpoint), **params).generate_masks(data)
    assert np.array_equal(first["masks"].data[:, 0], expected.masks())
    assert np.array_equal(second["masks"].data, first["masks"].data)
    assert np.allclose(first["scores"].values[:, 0], expected.predicted_iou)
    assert np.array_equal(first["boxes"].xyxy, expected.boxes + np.array([0, 0, 1, 1]))

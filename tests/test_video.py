"""Video: frame sources (PyAV, folders), the per-frame runner with its JSON-lines records, mask PNGs and overlay
video, `samflow video`, undecodable videos, and a 500-frame video in flat memory."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from composition_testing import one_torch_thread  # noqa: F401 (an autouse fixture)

from samflow.cli import main
from samflow.data.frames import FolderFrames, VideoFrames, open_frames
from samflow.data.synthetic_video import MovingShape, write_frames, write_video
from samflow.engine.cache import EmbeddingCache
from samflow.engine.graph import Graph
from samflow.engine.scheduler import Scheduler
from samflow.engine.types.video import Frame
from samflow.errors import InputError, NodeError
from samflow.scale.video import VideoRunner, frame_input, run_video

# A SAM reduced to its smallest working parts: per frame it costs milliseconds, so hundreds of frames stay quick.
MICRO_SAM = {"encoder_embed_dim": 16, "encoder_depth": 1, "encoder_num_heads": 1, "encoder_global_attn_indexes": [0],
             "image_size": 64, "window_size": 0, "prompt_embed_dim": 32, "decoder_mlp_dim": 64,
             "decoder_num_heads": 2, "iou_head_hidden_dim": 32, "mask_in_chans": 4}



def click_graph(point=(30, 30), multimask: bool = True) -> Graph:
    g = Graph()
    frame = g.input("frame", Frame)
    encoder = g.add("sam.encoder", "encoder", params={"model": MICRO_SAM, "device": "cpu"}, image=frame)
    clicks = g.add("prompt.points", "clicks", params={"points": [list(point)]})
    segment = g.add("sam.decoder", "segment", params={"multimask": multimask}, embedding=encoder.embedding,
                    points=clicks.points)
    g.output("masks", segment.masks)
    g.output("scores", segment.scores)
    return g


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    scene = MovingShape(64, 80, fps=25, seed=0)
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", scene, 12), scene


def test_video_frames_carry_index_and_time(video):
    path, scene = video
    frames = VideoFrames(path)
    assert frames.fps == pytest.approx(25) and frames.size == (64, 80)
    got = list(frames)
    assert [f.index for f in got] == list(range(12)) and got[3].time == pytest.approx(3 / 25)
    assert got[0].data.shape == (64, 80, 3) and got[0].path == path
    # Decoded colours are close to the rendered ones (the codec is lossy).
    assert np.abs(got[5].data.astype(int) - scene.frame(5)).mean() < 12
    picked = list(VideoFrames(path, start=2, step=3, max_frames=3))
    assert [f.index for f in picked] == [2, 5, 8] and picked[1].time == pytest.approx(5 / 25)


def test_folder_frames_in_natural_order_with_timestamps(tmp_path):
    scene = MovingShape(32, 32, fps=10)
    folder = write_frames(tmp_path / "frames", scene, 12)
    frames = list(FolderFrames(folder, timestamps=folder / "timestamps.csv"))  # as write_frames writes them
    assert [f.index for f in frames] == list(range(12)) and frames[5].time == pytest.approx(0.5)
    assert np.array_equal(frames[7].data, scene.frame(7))  # PNG frames are exact
    numbered = tmp_path / "numbered"
    numbered.mkdir()
    for i in (1, 2, 10):
        shutil.copy(folder / "frame_000000.png", numbered / f"img{i}.png")
    assert [f.name for f in FolderFrames(numbered).files] == ["img1.png", "img2.png", "img10.png"]
    (numbered / "times.csv").write_text("file,timestamp_ms\nimg10.png,900\nimg1.png,0\nimg2.png,40\n")
    times = [f.time for f in FolderFrames(numbered, timestamps=numbered / "times.csv")]
    assert times == pytest.approx([0.0, 0.04, 0.9])
    assert [f.time for f in FolderFrames(numbered, fps=4)] == [0.0, 0.25, 0.5]
    assert FolderFrames(numbered).size == (32, 32) and next(iter(FolderFrames(numbered))).time is None
    (numbered / "short.csv").write_text("timestamp_s\n0\n")
    with pytest.raises(InputError, match="has 1 rows for 3 frames"):
        FolderFrames(numbered, timestamps=numbered / "short.csv")


@pytest.mark.parametrize("content, needle", [
    (b"this is not a video at all" * 20, "cannot decode video"),
    (b"", "cannot decode video"),
])
def test_undecodable_video_is_a_clear_error(tmp_path, content, needle):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        list(open_frames(path))
    assert f"{needle} {path}" in str(info.value) and "Traceback" not in str(info.value)
    with pytest.raises(InputError, match="video file not found: .*missing.mp4"):
        open_frames(tmp_path / "missing.mp4")


def test_truncated_video_fails_naming_the_file(tmp_path, video):
    path, _ = video
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])  # the index (moov) is lost
    with pytest.raises(InputError, match=f"cannot decode video {cut}"):
        list(open_frames(cut))


def test_runner_writes_records_masks_and_overlay(tmp_path, video):
    path, _ = video
    report = run_video(click_graph(), VideoFrames(path), tmp_path / "out", overlay=True)
    assert (report.frames, report.ok, report.failed) == (12, 12, 0)
    lines = [json.loads(line) for line in (tmp_path / "out" / "frames.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(12)) and lines[4]["time"] == pytest.approx(0.16)
    record = lines[4]["outputs"]["masks"][0]
    assert record["file"] == "masks/000004_0.png" and (tmp_path / "out" / record["file"]).is_file()
    assert len(lines[4]["outputs"]["scores"]["scores"][0]) == 3
    overlay = list(VideoFrames(tmp_path / "out" / "overlay.mp4"))
    assert len(overlay) == 12 and overlay[0].data.shape == (64, 80, 3)
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    assert manifest["frames"] == 12 and manifest["nodes"]["encoder"]["runs"] == 12 and manifest["overlay"]


def test_runner_stops_when_every_frame_fails_alike(tmp_path, video):
    path, _ = video
    g = click_graph(point=(30, 30))
    g.nodes["clicks"].params = g.nodes["clicks"].node_type.parse_params({"file": str(tmp_path / "nope.json")})
    with Scheduler(g, cache=EmbeddingCache(max_bytes=0)) as scheduler:
        runner = VideoRunner(scheduler, tmp_path / "out", abort_after=4)
        with pytest.raises(NodeError, match="stopped after 4 frames in a row failed with: .*nope.json"):
            runner.run(VideoFrames(path))
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    assert manifest["failed"] == 4 and manifest["stopped"]


def test_frame_input_is_found_or_refused():
    assert frame_input(click_graph()) == "frame"
    g = Graph()
    g.input("a", "Depth")
    with pytest.raises(InputError, match="no Frame or Image input"):
        frame_input(g)


def test_samflow_video_command(tmp_path, video, capsys):
    path, _ = video
    graph_file = tmp_path / "clicks.yaml"
    graph_file.write_text(yaml.safe_dump(click_graph().to_dict(), sort_keys=False))
    out = tmp_path / "out"
    code = main(["video", str(graph_file), "--input", f"frame={path}", "--out", str(out), "--overlay", "masks",
                 "--step", "2", "--no-progress", "--set", "clicks.points=[[10, 10]]"])
    assert code == 0 and len((out / "frames.jsonl").read_text().splitlines()) == 6 and (out / "overlay.mp4").is_file()
    assert main(["video", str(graph_file), "--input", f"frame={tmp_path / 'nothing.mp4'}", "--out", str(out)]) == 2
    assert "video file not found" in capsys.readouterr().err
    assert main(["video", str(graph_file), "--input", "image=x", "--out", str(out)]) == 2
    assert "give the frames with --input frame=" in capsys.readouterr().err


def test_500_frames_in_flat_memory(tmp_path):
    """Memory after frame 500 is what it was after frame 100: nothing per frame is kept (frames, masks, embeddings,
    records), whatever the video's length."""
    scene = MovingShape(96, 96, fps=50, seed=3)  # 27 KB a frame: keeping each would add 11 MB over 400 frames
    path = write_video(tmp_path / "long.mp4", scene, 500)
    measured = {}
    with Scheduler(click_graph(multimask=False), cache=EmbeddingCache(max_bytes=0)) as scheduler:
        runner = VideoRunner(scheduler, tmp_path / "out")
        for result in runner.iter_frames(VideoFrames(path)):
            assert result.status == "ok", result.error
            if result.index + 1 in (100, 300, 500):
                del result
                gc.collect()
                measured[len(measured)] = rss_bytes()
    assert runner.report.frames == 500
    growth = measured[2] - measured[0]
    assert growth < 4 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB from frame 100 to 500 ({measured})"
    assert len((tmp_path / "out" / "frames.jsonl").read_text().splitlines()) == 500

"""Gaze: readers (Aria MPS, 2D), nearest-timestamp alignment, fixation filters, projection, the gaze.points node,
the simulated-gaze evaluation points, and a gaze that follows a moving shape yielding masks of that shape."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from composition_testing import one_torch_thread  # noqa: F401 (an autouse fixture)

from samflow.data.frames import VideoFrames
from samflow.data.gaze import read_gaze_csv
from samflow.data.synthetic_video import (
    MovingShape,
    gaze_recording,
    write_gaze_2d,
    write_gaze_aria,
    write_video,
)
from samflow.engine.cache import EmbeddingCache
from samflow.engine.graph import Graph
from samflow.engine.node import Input, Node
from samflow.engine.registry import register
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import Image, Masks, Points
from samflow.engine.types.video import Frame
from samflow.errors import GraphError, InputError, NodeError
from samflow.models.sam.build import SHIPPED_WEIGHTS
from samflow.ops import fixations
from samflow.ops.gaze_projection import cpf_points, pixel_angles, project_pinhole, transform_points
from samflow.ops.timealign import NearestSample, nearest_samples
from samflow.scale.video import VideoRunner

TINY_WEIGHTS = SHIPPED_WEIGHTS["tiny"]


@register("testing.colour_flood")
class ColourFlood(Node):
    """An exact segmenter for the synthetic video: the connected region of the clicked pixel's colour."""

    inputs = {"image": Input(Image), "points": Input(Points)}
    outputs = {"masks": Masks}

    def run(self, ctx, image, points):
        h, w = image.size
        masks = np.zeros((len(points), 1, h, w), bool)
        rgb = image.data.astype(np.int32)
        for n, (x, y) in enumerate(points.coords[:, 0]):
            similar = np.abs(rgb - rgb[int(y), int(x)]).sum(-1) < 60
            region = np.zeros((h, w), bool)
            region[int(y), int(x)] = True
            while True:  # grow inside the similar pixels until stable (4-neighbour flood fill)
                grown = region.copy()
                grown[1:] |= region[:-1]
                grown[:-1] |= region[1:]
                grown[:, 1:] |= region[:, :-1]
                grown[:, :-1] |= region[:, 1:]
                grown &= similar
                if (grown == region).all():
                    break
                region = grown
            masks[n, 0] = region
        return {"masks": Masks(masks)}


def iou(a, b):
    union = (a | b).sum()
    return (a & b).sum() / union if union else 1.0


# ------------------------------------------------------------------------------------------------ alignment


def test_nearest_sample_with_gaps_duplicates_and_out_of_order():
    samples = np.array([0.30, 0.10, 0.20, np.nan, 0.20, 1.00])  # out of order, a repeat, a NaN, a gap
    queries = np.array([0.0, 0.11, 0.149, 0.16, 0.21, 0.5, 0.99, 1.2, np.nan])
    got = nearest_samples(samples, queries, tolerance=0.05)
    assert got.tolist() == [-1, 1, 1, 2, 2, -1, 5, -1, -1]  # 0.2 twice: the earlier row (2) wins
    # Exactly half-way between two samples: the earlier one.
    assert nearest_samples(np.array([0.0, 1.0]), np.array([0.5]), 1.0).tolist() == [0]
    index = NearestSample(samples)
    assert index.query(0.31, 0.0).tolist() == [-1] and index.query(0.30, 0.0).tolist() == [0]
    with pytest.raises(InputError, match="tolerance"):
        index.query(0.3, -1)
    assert nearest_samples(np.array([]), np.array([1.0]), 1.0).tolist() == [-1]


# ------------------------------------------------------------------------------------------------ readers


def test_read_2d_gaze_sorts_rows_and_reads_units(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("timestamp_ms,x,y,extra\n20,5,6,a\n0,1,2,b\n10,,,c\n")
    track = read_gaze_csv(path)
    assert track.kind == "2d" and track.times.tolist() == [0.0, 0.01, 0.02]
    assert track.rows.tolist() == [1, 2, 0] and np.isnan(track.xy[1]).all() and track.xy[2].tolist() == [5, 6]
    path.write_text("frame,x,y\n3,1,1\n1,2,2\n")
    track = read_gaze_csv(path)
    assert track.times is None and track.frames.tolist() == [1, 3]


def test_read_aria_gaze_averages_eyes_and_keeps_depth(tmp_path):
    path = tmp_path / "general_eye_gaze.csv"
    path.write_text("tracking_timestamp_us,left_yaw_rads_cpf,right_yaw_rads_cpf,pitch_rads_cpf,depth_m\n"
                    "2000000,0.1,0.3,-0.1,\n1000000,0.0,0.0,0.05,1.5\n")
    track = read_gaze_csv(path)
    assert track.kind == "aria" and track.times.tolist() == [1.0, 2.0]
    assert np.allclose(track.yaw, [0.0, 0.2]) and track.depth[0] == 1.5 and math.isnan(track.depth[1])


@pytest.mark.parametrize("text, kind, needle", [
    ("timestamp_s,x\n0,1\n", "auto", "missing column(s) y"),
    ("x,y\n1,2\n", "auto", "missing column(s) frame or timestamp_s"),
    ("tracking_timestamp_us,pitch_rads_cpf\n1,0\n", "auto", "missing column(s) yaw_rads_cpf"),
    ("timestamp_s,x,y\n0,1,2\n0.1,oops,2\n", "auto", "line 3, column 'x': 'oops' is not a number"),
    ("", "auto", "is empty"),
])
def test_bad_gaze_files_name_the_file_and_problem(tmp_path, text, kind, needle):
    path = tmp_path / "bad_gaze.csv"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        read_gaze_csv(path, kind)
    assert str(path) in str(info.value) and needle in str(info.value)
    with pytest.raises(InputError, match="gaze file not found: .*nope.csv"):
        read_gaze_csv(tmp_path / "nope.csv")


def test_gaze_node_reports_a_bad_csv_with_its_file(tmp_path):
    path = tmp_path / "eye.csv"
    path.write_text("timestamp_s,x\n0,1\n")
    g = Graph()
    frame = g.input("frame", Frame)
    gaze = g.add("gaze.points", "gaze", params={"file": str(path), "velocity_threshold": 100}, frame=frame)
    g.output("points", gaze.points)
    with pytest.raises(NodeError) as info:
        Scheduler(g).run(frame=Frame(np.zeros((8, 8, 3), np.uint8), time=0.0))
    assert f"gaze file {path}: missing column(s) y" in str(info.value) and "'gaze' (gaze.points)" in str(info.value)


# ------------------------------------------------------------------------------------------------ filters


def test_ivt_drops_saccades_and_keeps_pursuit():
    scene = MovingShape(96, 96, 30, seed=2)
    recording = gaze_recording(scene, 6.0)
    k = scene.intrinsics
    degrees = pixel_angles(recording.xy, k["fx"], k["fy"], k["cx"], k["cy"])
    order = recording.order  # filters take samples in any order
    keep = fixations.ivt(recording.times[order], degrees[order], 30.0, max_gap=0.1)
    labels = recording.labels[order]
    assert (labels == "saccade").sum() >= 12 and not keep[labels == "saccade"].any()
    assert keep[labels == "pursuit"].mean() > 0.95 and not keep[labels == "blink"].any()
    # A minimum duration drops the short glances away too (about 120 ms each).
    longer = fixations.ivt(recording.times[order], degrees[order], 30.0, min_duration=0.2, max_gap=0.1)
    assert not longer[labels == "away"].any() and longer[labels == "pursuit"].mean() > 0.9


def test_idt_finds_static_fixations():
    rng = np.random.default_rng(0)
    times = np.arange(0, 1.2, 0.01)
    targets = np.array([[10.0, 10.0], [30.0, 12.0], [20.0, 30.0]])
    positions = np.empty((times.size, 2))
    labels = np.empty(times.size, object)
    for i, t in enumerate(times):
        phase, within = int(round(t * 100) // 40), round(t * 100) % 40
        if 0 < within < 5 and phase > 0:  # 40 ms of saccade from the previous target
            f = within / 5
            positions[i] = targets[phase - 1] + f * (targets[phase] - targets[phase - 1])
            labels[i] = "saccade"
        else:
            positions[i] = targets[phase] + rng.normal(0, 0.1, 2)
            labels[i] = "fixation"
    keep = fixations.idt(times, positions, threshold=1.0, min_duration=0.1)
    assert keep[labels == "fixation"].mean() > 0.95 and keep[labels == "saccade"].mean() < 0.3
    centroids = fixations.fixation_centroids(times, positions, keep)
    assert np.allclose(centroids[labels == "fixation"][:5], targets[0], atol=0.1)
    with pytest.raises(InputError, match="dispersion threshold"):
        fixations.idt(times, positions, 0.0)


# ------------------------------------------------------------------------------------------------ projection


def test_aria_direction_projects_through_the_pinhole():
    fx, fy, cx, cy = 200.0, 210.0, 64.0, 48.0
    u, v = np.array([10.0, 100.0]), np.array([90.0, 5.0])
    yaw, pitch = np.arctan((u - cx) / fx), np.arctan((v - cy) / fy)
    points = cpf_points(yaw, pitch, np.array([0.7, 3.0]))
    assert np.allclose(np.linalg.norm(points, axis=1), [0.7, 3.0])  # depth is along the ray
    uv, in_front = project_pinhole(points, fx, fy, cx, cy)
    assert in_front.all() and np.allclose(uv, np.stack([u, v], 1))
    flip = np.diag([-1.0, -1.0, -1.0, 1.0])  # a camera looking the other way sees nothing of it
    _, in_front = project_pinhole(transform_points(flip, points), fx, fy, cx, cy)
    assert not in_front.any()


def _frame(index, t, size=(96, 96)):
    return Frame(np.zeros((*size, 3), np.uint8), index=index, time=t)


def test_gaze_points_statuses_per_frame(tmp_path, ctx):
    from samflow.nodes.gaze import GazePoints

    path = tmp_path / "g.csv"
    rows = ["timestamp_s,x,y"] + [f"{t / 100:.2f},40,40" for t in range(0, 50)]  # 0..0.49 s fixating (40, 40)
    rows += ["0.50,41,40", "0.51,90,10", "0.52,140,10", "0.53,200,10", "0.60,,", "0.70,140,10", "0.71,140,10",
             "0.72,140,10"]
    path.write_text("\n".join(rows) + "\n")
    node = GazePoints({"file": str(path), "tolerance_s": 0.005, "velocity_threshold": 500})
    by_time = {t: node.run(ctx, frame=_frame(0, t)) for t in (0.2, 0.52, 0.6, 0.65, 0.71, 2.0)}
    assert by_time[0.2]["gaze"].status == "fixation" and by_time[0.2]["points"].coords.tolist() == [[[40, 40]]]
    assert by_time[0.52]["gaze"].status == "saccade" and len(by_time[0.52]["points"]) == 0
    assert by_time[0.6]["gaze"].status == "missing" and by_time[0.6]["gaze"].sample == 54  # a blink row
    assert by_time[0.65]["gaze"].status == "missing" and by_time[0.65]["gaze"].sample is None  # a gap
    assert by_time[0.71]["gaze"].status == "off_image" and by_time[0.71]["gaze"].x == 140  # 96 px wide frames
    assert by_time[2.0]["gaze"].status == "missing"
    node = GazePoints({"file": str(path), "tolerance_s": 0.005, "fixation": "ivt"})
    with pytest.raises(InputError, match="set velocity_threshold"):
        node.run(ctx, frame=_frame(0, 0.2))


def test_gaze_points_by_frame_index(tmp_path, ctx):
    from samflow.nodes.gaze import GazePoints

    path = tmp_path / "frames.csv"
    path.write_text("frame,x,y\n0,10,10\n1,10.5,10\n2,11,10\n4,11,11\n5,80,80\n")
    node = GazePoints({"file": str(path), "velocity_threshold": 100, "fps": 30})  # 0.5 px/frame = 15 px/s
    got = {i: node.run(ctx, frame=_frame(i, None))["gaze"] for i in range(7)}
    assert [got[i].status for i in range(7)] == ["fixation", "fixation", "fixation", "missing", "saccade",
                                                 "saccade", "missing"]
    assert (got[2].x, got[2].y) == (11, 10)
    loose = GazePoints({"file": str(path), "fixation": "none", "tolerance_frames": 1})
    assert loose.run(ctx, frame=_frame(3, None))["gaze"].sample == 2  # nearest: frame 2 (ties go earlier)


def test_gaze_points_from_aria_csv_with_device_clock(tmp_path, ctx):
    from samflow.nodes.gaze import GazePoints

    scene = MovingShape(96, 96, 30, seed=1)
    recording = gaze_recording(scene, 1.0, gap=None, blink=None, glance_every=10)
    csv_path = write_gaze_aria(tmp_path / "eye.csv", recording, scene)
    node = GazePoints({"file": str(csv_path), "intrinsics": scene.intrinsics, "time_offset_s": "first",
                       "tolerance_s": 0.02})
    out = node.run(ctx, frame=_frame(15, 0.5))
    expected = recording.xy[np.argmin(np.abs(recording.times - 0.5))]
    assert out["gaze"].status == "fixation" and np.allclose(out["points"].coords[0, 0], expected, atol=0.01)
    # Intrinsics stated for 96 x 96 scale to a frame twice the size.
    out = node.run(ctx, frame=_frame(15, 0.5, size=(192, 192)))
    assert np.allclose(out["points"].coords[0, 0], expected * 2 + 0.5, atol=0.05)
    with pytest.raises(GraphError, match="node 'gaze'.*intrinsics: fx must be > 0"):  # when the graph is built
        Graph().add("gaze.points", "gaze", params={"file": "eye.csv", "intrinsics": {"fx": 0, "fy": 1, "cx": 0,
                                                                                     "cy": 0}}, frame="$inputs.f")
    with pytest.raises(InputError, match="Aria eye gaze needs the camera intrinsics"):
        GazePoints({"file": str(csv_path), "time_offset_s": "first"}).run(ctx, frame=_frame(15, 0.5))


def test_simulated_gaze_random_and_center(ctx):
    from samflow.nodes.gaze import SimulatedGaze

    masks = np.zeros((2, 1, 40, 50), bool)
    masks[0, 0, 5:15, 5:35] = True
    masks[1, 0, 20:39, 30:49] = True
    random_points = SimulatedGaze({"seed": 3}).run(ctx, masks=Masks(masks))["points"]
    again = SimulatedGaze({"seed": 3}).run(ctx, masks=Masks(masks))["points"]
    assert np.array_equal(random_points.coords, again.coords) and random_points.coords.shape == (2, 1, 2)
    for n, (x, y) in enumerate(random_points.coords[:, 0].astype(int)):
        assert masks[n, 0, y, x]
    centre = SimulatedGaze({"mode": "center"}).run(ctx, masks=Masks(masks))["points"]
    assert centre.coords[1, 0].tolist() == [39, 29]  # the middle of the 19 x 19 square
    with pytest.raises(InputError, match="mask 0 is empty"):
        SimulatedGaze().run(ctx, masks=Masks(np.zeros((1, 1, 4, 4), bool)))


# ------------------------------------------------------------------------------------------------ end to end


def test_gaze_following_the_moving_shape_masks_the_shape(tmp_path):
    """Video + gaze CSV -> gaze.points -> a point-prompted segmenter: masks of the disc on most frames, none where
    the gaze is missing or in a saccade."""
    scene = MovingShape(96, 96, 30, seed=1)
    frames = 75  # 2.5 s: a tracking gap, a glance away (saccades) and a blink
    video = write_video(tmp_path / "video.mp4", scene, frames)
    recording = gaze_recording(scene, frames / scene.fps)
    gaze_csv = write_gaze_2d(tmp_path / "gaze.csv", recording)
    camera = tmp_path / "camera.json"
    camera.write_text(json.dumps(scene.intrinsics))

    g = Graph()
    frame = g.input("frame", Frame)
    gaze = g.add("gaze.points", "gaze", params={"file": str(gaze_csv), "intrinsics": str(camera),
                                                "tolerance_s": 0.02}, frame=frame)
    segment = g.add("testing.colour_flood", "segment", image=frame, points=gaze.points)
    g.output("masks", segment.masks)
    g.output("gaze", gaze.gaze)

    hits, statuses = 0, {}
    with Scheduler(g, cache=EmbeddingCache(max_bytes=0)) as scheduler:
        runner = VideoRunner(scheduler, tmp_path / "out")
        for result in runner.iter_frames(VideoFrames(video)):
            assert result.status == "ok", result.error
            status = result.outputs["gaze"].status
            statuses[status] = statuses.get(status, 0) + 1
            masks = result.outputs["masks"]
            assert (len(masks) == 1) == (status == "fixation")
            hits += len(masks) == 1 and iou(masks.data[0, 0], scene.mask(result.index)) > 0.8
    assert hits >= 0.75 * frames, statuses
    assert statuses["missing"] >= 6  # the tracking gap (1.1-1.35 s) and the blink
    assert statuses.get("saccade", 0) >= 1
    lines = (tmp_path / "out" / "frames.jsonl").read_text().splitlines()
    assert len(lines) == frames and json.loads(lines[0])["outputs"]["gaze"]["status"] == "fixation"


def test_sam_decoder_takes_a_frame_without_gaze(ctx):
    from graph_testing import SMALL_SAM
    from samflow.nodes.sam import SamDecoder, SamEncoder

    embedding = SamEncoder({"model": SMALL_SAM, "device": "cpu"}).run(ctx, image=_frame(0, 0.0))["embedding"]
    nothing = Points(np.zeros((0, 1, 2), np.float32), np.zeros((0, 1), np.int32))
    out = SamDecoder({"multimask": True}).run(ctx, embedding=embedding, points=nothing)
    assert out["masks"].data.shape == (0, 3, 96, 96) and out["scores"].values.shape == (0, 3)


@pytest.mark.skipif(not TINY_WEIGHTS.exists(), reason="needs shipped tiny weights")
def test_tiny_sam_masks_the_shape_the_gaze_follows(tmp_path):
    """The recipe's graph with the default tiny model: where the wearer fixates the moving disc, the mask is the
    disc on most frames."""
    scene = MovingShape(128, 128, 30, seed=4)
    frames = 30  # one second of pursuit (the glance away and the gap come later)
    video = write_video(tmp_path / "video.mp4", scene, frames)
    gaze_csv = write_gaze_2d(tmp_path / "gaze.csv", gaze_recording(scene, frames / scene.fps))
    g = Graph()
    frame = g.input("frame", Frame)
    gaze = g.add("gaze.points", "gaze", params={"file": str(gaze_csv), "intrinsics": scene.intrinsics,
                                                "tolerance_s": 0.02}, frame=frame)
    encoder = g.add("sam.encoder", "encoder", params={"model": "tiny"}, image=frame)
    segment = g.add("sam.decoder", "segment", params={"multimask": True}, embedding=encoder.embedding,
                    points=gaze.points)
    g.output("masks", segment.masks)
    g.output("gaze", gaze.gaze)
    on_disc = hits = 0
    with Scheduler(g, cache=EmbeddingCache(max_bytes=0)) as scheduler:
        runner = VideoRunner(scheduler, tmp_path / "out", abort_after=frames + 1)
        for result in runner.iter_frames(VideoFrames(video)):
            if result.status != "ok" or result.outputs["gaze"].status != "fixation":
                continue  # no gaze, no prompt (see the test above)
            truth = scene.mask(result.index)
            gaze_point = result.outputs["gaze"]
            if not truth[int(gaze_point.y), int(gaze_point.x)]:
                continue  # a glance away from the disc
            on_disc += 1
            hits += iou(result.outputs["masks"].best()[0], truth) > 0.7
    assert on_disc >= 0.6 * frames and hits >= 0.8 * on_disc, (hits, on_disc)

"""The one prompt rule (samflow.predict.prompts.fit_to_image) in every entry point, and the documented limits.

Points must lie in the image, boundary included ([0, W] x [0, H]); boxes need x0 < x1 and y0 < y1, are clipped to
the image where they overlap it and refused when they lie wholly outside it. Entry points: `samflow.segment` /
Prompts / Segmenter, SamPredictor.predict and predict_torch, the graph nodes (prompt.points, prompt.boxes,
sam.decoder, detect.segment) and so `samflow run`. Also: counts and text lengths are bounded, node params refuse
NaN and infinity, `--set` values that are not YAML are exit-2 errors, graph texts are bounded in size.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from graph_testing import make_images
from pydantic import ValidationError

from samflow import SamPredictor
from samflow.cli import main
from samflow.data.synthetic import render_scene
from samflow.engine import graph_yaml
from samflow.engine.cache import EmbeddingCache
from samflow.engine.graph import Graph, GraphValidationError
from samflow.engine.node import NodeParams
from samflow.engine.overrides import yaml_overrides
from samflow.engine.registry import load_node_types
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import Boxes, Image, Points
from samflow.errors import GraphError, InputError, NodeError
from samflow.predict import prompts as rules
from samflow.predict.api import segment
from samflow.predict.prompts import Prompts, fit_to_image
from samflow.predict.segmenter import Segmenter, default_segmenter

H, W = 192, 256  # the image of these tests: 256 wide, 192 high

GRAPH = """
samflow: 1
inputs: {image: Image}
nodes:
  encoder: {type: sam.encoder, params: {model: tiny}, inputs: {image: $inputs.image}}
  clicks:  {type: prompt.points, params: {points: POINTS}}
  segment: {type: sam.decoder, params: {multimask: false}, inputs: {embedding: $encoder.embedding, points: $clicks.points}}
outputs: {masks: $segment.masks, scores: $segment.scores}
"""

BOX_GRAPH = """
samflow: 1
inputs: {image: Image}
nodes:
  encoder: {type: sam.encoder, params: {model: tiny}, inputs: {image: $inputs.image}}
  boxes:   {type: prompt.boxes, params: {boxes: BOXES}}
  segment: {type: sam.decoder, params: {multimask: false}, inputs: {embedding: $encoder.embedding, boxes: $boxes.boxes}}
outputs: {masks: $segment.masks, scores: $segment.scores}
"""


@pytest.fixture(scope="module", autouse=True)
def _nodes():
    load_node_types()


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    return render_scene(3, size=W).image[:H]


@pytest.fixture(scope="module")
def model():
    return default_segmenter().model("tiny")


@pytest.fixture(scope="module")
def predictor(model, picture):
    p = SamPredictor(model)
    p.set_image(picture)
    return p


# ----------------------------------------------------------------------------------------------------- the rule


def test_points_on_the_closed_boundary_pass_unchanged():
    coords = np.array([[[0, 0], [W, H], [W, 0], [0.5, H]]], dtype=np.float64)
    out, boxes = fit_to_image(coords, None, (H, W))
    assert out is coords and boxes is None


@pytest.mark.parametrize("point, shown", [((5000, -20), "(5000, -20)"), ((W + 0.5, 3), "(256.5, 3)"),
                                          ((-0.001, 3), "(-0.001, 3)"), ((3, H + 1), "(3, 193)")])
def test_a_point_outside_names_the_point_and_the_image_size(point, shown):
    with pytest.raises(InputError, match=re.escape(f"point {shown} lies outside the 256x192 image: points must lie "
                                                   "in [0, 256] x [0, 192]")):
        fit_to_image(np.array([[point]]), None, (H, W))


def test_the_bad_point_of_a_batch_is_named_by_set_and_index():
    coords = np.array([[[1, 1], [2, 2]], [[3, 3], [900, 4]]])
    with pytest.raises(InputError, match=r"point \(900, 4\) \(prompt set 1, point 1\) lies outside"):
        fit_to_image(coords, None, (H, W))


def test_padding_points_are_not_checked():
    fit_to_image(np.array([[[5, 5], [-1e6, 1e6]]]), None, (H, W), labels=np.array([[1, -1]]))
    with pytest.raises(InputError, match="lies outside"):
        fit_to_image(np.array([[[5, 5], [-1e6, 1e6]]]), None, (H, W), labels=np.array([[1, 0]]))


def test_boxes_are_clipped_where_they_overlap():
    _, boxes = fit_to_image(None, np.array([[-10, -5, 300, 100], [10, 20, 30, 40], [250, 190, 1e6, 1e6]]), (H, W))
    assert boxes.tolist() == [[0, 0, 256, 100], [10, 20, 30, 40], [250, 190, 256, 192]]


@pytest.mark.parametrize("box", [[1000, 0, 1100, 50], [-50, 0, -1, 10], [0, 192, 10, 200], [256, 0, 300, 10],
                                 [0, -9, 10, 0]])
def test_a_box_wholly_outside_is_refused_by_index(box):
    with pytest.raises(InputError, match=r"box 1 \[.*\] lies wholly outside the 256x192 image"):
        fit_to_image(None, np.array([[0, 0, 5, 5], box]), (H, W))


@pytest.mark.parametrize("box, why", [([10, 10, 10, 50], "zero width"), ([10, 10, 50, 10], "zero height"),
                                      ([50, 10, 10, 40], "negative width"), ([1, 9, 5, 2], "negative height")])
def test_degenerate_boxes_are_refused_by_index(box, why):
    with pytest.raises(InputError, match=rf"box 0 \[.*\] has {why}: expected x0 < x1 and y0 < y1"):
        fit_to_image(None, np.array([box]), (H, W))


def test_non_finite_prompts_are_refused():
    with pytest.raises(InputError, match="NaN or infinite"):
        fit_to_image(np.array([[np.nan, 1]]), None, (H, W))
    with pytest.raises(InputError, match="NaN or infinite"):
        fit_to_image(None, np.array([[0, 0, np.inf, 1]]), (H, W))


def test_the_library_words_match_the_service():
    # The service refuses with "point (x, y) lies outside the WxH image" (samflow/serve/service.py): same words.
    with pytest.raises(InputError, match=r"^point \(300, 10\) lies outside the 256x256 image"):
        Prompts.build(points=[[300, 10]]).fit((256, 256))


# ----------------------------------------------------------------------------------- samflow.segment, Segmenter


def test_segment_refuses_a_point_outside_and_a_box_wholly_outside(picture):
    with pytest.raises(InputError, match=r"point \(5000, -20\) lies outside the 256x192 image"):
        segment(picture, points=[[5000, -20]])
    with pytest.raises(InputError, match=r"box 0 \[1000, 0, 1100, 50\] lies wholly outside the 256x192 image"):
        segment(picture, boxes=[1000, 0, 1100, 50])
    with pytest.raises(InputError, match="box 0 .* has zero width"):
        segment(picture, boxes=[10, 10, 10, 50])


def test_segment_clips_a_box_that_overlaps(picture):
    clipped = segment(picture, boxes=[[-40, -30, 120, 100]])
    inside = segment(picture, boxes=[[0, 0, 120, 100]])
    np.testing.assert_array_equal(clipped.masks, inside.masks)
    np.testing.assert_allclose(clipped.scores, inside.scores)
    assert clipped.prompts.boxes.tolist() == [[0, 0, 120, 100]]  # the prompts as used


def test_the_boundary_point_segments(picture):
    result = segment(picture, points=[[W, H]])
    assert result.masks.shape == (1, H, W)


def test_segmenter_applies_the_rule_to_an_embedding_too(model, picture):
    segmenter = Segmenter(cache=EmbeddingCache(max_bytes=1 << 26))
    embedding = segmenter.embed(model, Image(picture))
    with pytest.raises(InputError, match="lies outside the 256x192 image"):
        segmenter.predict(model, embedding, Prompts.build(points=[[10, 500]]))
    got = segmenter.predict(model, embedding, Prompts.build(boxes=[[200, 100, 400, 400]]))
    assert got.prompts.boxes.tolist() == [[200, 100, 256, 192]]


def test_segment_refuses_before_the_encoder_runs(picture):
    segmenter = Segmenter(cache=EmbeddingCache(max_bytes=1 << 26))
    with pytest.raises(InputError):
        segment(picture, points=[[1, 1e4]], segmenter=segmenter)
    assert segmenter.stats.encodes == 0


# ----------------------------------------------------------------------------------------------- SamPredictor


def test_predict_applies_the_rule(predictor):
    with pytest.raises(InputError, match=r"point \(5000, -20\) lies outside the 256x192 image"):
        predictor.predict(point_coords=np.array([[5000, -20]]), point_labels=np.array([1]))
    with pytest.raises(InputError, match=r"box 1 \[300, 0, 400, 10\] lies wholly outside"):
        predictor.predict(box=np.array([[0, 0, 10, 10], [300, 0, 400, 10]]))
    with pytest.raises(InputError, match="box 0 .* has zero height"):
        predictor.predict(box=np.array([0, 5, 10, 5]))
    clipped = predictor.predict(box=np.array([-20, -20, 90, 80]), multimask_output=False)
    inside = predictor.predict(box=np.array([0, 0, 90, 80]), multimask_output=False)
    np.testing.assert_array_equal(clipped[0], inside[0])
    np.testing.assert_allclose(clipped[1], inside[1])


def test_predict_torch_applies_the_rule_in_its_own_frame(predictor):
    h, w = predictor.input_size
    with pytest.raises(InputError, match=rf"lies outside the {w}x{h} input frame"):
        predictor.predict_torch(torch.tensor([[[w + 1.0, 1.0]]]), torch.tensor([[1]]))
    with pytest.raises(InputError, match="box 0 .* lies wholly outside"):
        predictor.predict_torch(None, None, boxes=torch.tensor([[w + 1.0, 0, w + 9.0, 9]]))
    clipped = predictor.predict_torch(None, None, boxes=torch.tensor([[-9.0, -9, w + 50.0, 40]]),
                                      multimask_output=False)
    inside = predictor.predict_torch(None, None, boxes=torch.tensor([[0.0, 0, w, 40]]), multimask_output=False)
    assert torch.equal(clipped[0], inside[0]) and torch.allclose(clipped[1], inside[1])


def test_predict_at_the_far_corner_passes_through_predict_torch(predictor):
    masks, _, _ = predictor.predict(point_coords=np.array([[W, H]]), point_labels=np.array([1]))
    assert masks.shape == (3, H, W)


# ----------------------------------------------------------------------------------------------- graph nodes


def _graph(points: str) -> Graph:
    return Graph.from_yaml(GRAPH.replace("POINTS", points))


def test_prompt_points_refuse_negative_coordinates_when_read():
    with pytest.raises(GraphValidationError, match=r"node 'clicks'.*point 1 \(3, -1\) lies outside any image"):
        _graph("[[1, 1], [3, -1]]")


def test_prompt_boxes_refuse_degenerate_and_negative_boxes_when_read():
    for boxes, why in [("[[3, 1, 3, 5]]", "box 0 .* has zero width"), ("[[0, 0, 4, 4], [-5, -5, -1, 2]]",
                                                                        r"box 1 \[-5, -5, -1, 2\] lies wholly outside")]:
        with pytest.raises(GraphValidationError, match=f"node 'boxes'.*{why}"):
            Graph.from_yaml(BOX_GRAPH.replace("BOXES", boxes))


def test_decoder_refuses_a_point_outside_the_image(picture):
    graph = _graph("[[10, 10], [900, 20]]")
    with Scheduler(graph) as scheduler, pytest.raises(NodeError, match=r"segment.*point \(900, 20\) \(prompt set 0, "
                                                                       r"point 1\) lies outside the 256x192 image"):
        scheduler.run({"image": Image(picture)})


def test_decoder_clips_boxes_and_refuses_boxes_wholly_outside(picture):
    def run(boxes: str):
        with Scheduler(Graph.from_yaml(BOX_GRAPH.replace("BOXES", boxes))) as scheduler:
            return scheduler.run({"image": Image(picture)})

    clipped, inside = run("[[100, 50, 900, 900]]"), run("[[100, 50, 256, 192]]")
    np.testing.assert_array_equal(clipped["masks"].data, inside["masks"].data)
    with pytest.raises(NodeError, match=r"box 0 \[300, 0, 400, 10\] lies wholly outside the 256x192 image"):
        run("[[300, 0, 400, 10]]")


def test_decoder_checks_prompts_given_as_graph_inputs(picture):
    graph = Graph.from_yaml("""
samflow: 1
inputs: {image: Image, points: Points}
nodes:
  encoder: {type: sam.encoder, params: {model: tiny}, inputs: {image: $inputs.image}}
  segment: {type: sam.decoder, inputs: {embedding: $encoder.embedding, points: $inputs.points}}
outputs: {masks: $segment.masks}
""")
    with Scheduler(graph) as scheduler, pytest.raises(NodeError, match="lies outside the 256x192 image"):
        scheduler.run({"image": Image(picture), "points": Points(np.array([[[-3, 4]]]), np.ones((1, 1)))})


def test_prompts_from_files_get_the_same_checks(tmp_path, picture):
    from samflow.nodes.prompt import BoxPrompt, PointPrompt

    from samflow.engine.context import ItemContext
    from samflow.pool import ModelPool

    ctx = ItemContext("item", tmp_path, ModelPool(), EmbeddingCache(max_bytes=1 << 20))
    (tmp_path / "b.json").write_text(json.dumps([[5, 5, 5, 9]]))
    with pytest.raises(InputError, match=r"b.json: box 0 \[5, 5, 5, 9\] has zero width"):
        BoxPrompt({"file": str(tmp_path / "b.json")}).run(ctx)
    (tmp_path / "p.json").write_text(json.dumps({"points": [[1, 2]] * (rules.MAX_POINTS_PER_SET + 1)}))
    with pytest.raises(InputError, match=f"p.json: {rules.MAX_POINTS_PER_SET + 1} points per set: at most"):
        PointPrompt({"file": str(tmp_path / "p.json")}).run(ctx)


def test_detect_segment_applies_the_rule_to_detections_given_as_input(picture):
    from samflow.engine.types.detect import Detections

    graph = Graph.from_yaml("""
samflow: 1
inputs: {image: Image, detections: Detections}
nodes:
  encoder: {type: sam.encoder, params: {model: tiny}, inputs: {image: $inputs.image}}
  segment: {type: detect.segment, inputs: {embedding: $encoder.embedding, detections: $inputs.detections}}
outputs: {masks: $segment.masks}
""")
    with Scheduler(graph) as scheduler, pytest.raises(NodeError, match="lies wholly outside the 256x192 image"):
        scheduler.run({"image": Image(picture), "detections": Detections(np.array([[500.0, 5, 600, 50]]))})


def test_samflow_run_fails_the_item_with_the_rule_s_message(tmp_path):
    make_images(tmp_path / "images", 1, size=(96, 128))
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH.replace("POINTS", "[[500, 20]]"))
    out = tmp_path / "out"
    assert main(["run", str(graph), "--input", f"image={tmp_path / 'images'}", "--out", str(out),
                 "--no-progress"]) == 1
    (item,) = json.loads((out / "run.json").read_text())["items"]
    assert item["status"] == "failed" and "point (500, 20) lies outside the 128x96 image" in item["error"]


def test_samflow_validate_refuses_negative_and_non_finite_points(tmp_path, capsys):
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH.replace("POINTS", "[[.inf, -1]]"))
    assert main(["validate", str(graph)]) == 2
    assert "param 'points.0.0': Input should be a finite number" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------ limits


def test_prompt_counts_and_text_lengths_are_bounded():
    n = rules.MAX_PROMPT_SETS + 1
    with pytest.raises(InputError, match=f"{n} boxes: at most {rules.MAX_PROMPT_SETS}"):
        Prompts.build(boxes=np.tile([0, 0, 5, 5], (n, 1)))
    with pytest.raises(InputError, match=f"{n} point sets"):
        Prompts.build(points=np.ones((n, 1, 2)))
    with pytest.raises(InputError, match=f"{rules.MAX_POINTS_PER_SET + 1} points per set"):
        Prompts.build(points=np.ones((rules.MAX_POINTS_PER_SET + 1, 2)))
    with pytest.raises(InputError, match=f"{n} text prompts"):
        Prompts.build(text=["a"] * n)
    with pytest.raises(InputError, match=f"at most {rules.MAX_TEXT_CHARS} are accepted"):
        Prompts.build(text="a" * (rules.MAX_TEXT_CHARS + 1))
    assert Prompts.build(boxes=np.tile([0, 0, 5, 5], (rules.MAX_PROMPT_SETS, 1))).n == rules.MAX_PROMPT_SETS


def test_graph_params_are_bounded():
    load_node_types()
    from samflow.nodes.auto import AutoParams
    from samflow.nodes.clip import RankParams, TextParams
    from samflow.nodes.prompt import BoxesParams, PointsParams

    with pytest.raises(ValidationError, match="points per set"):
        PointsParams(points=[[1, 1]] * (rules.MAX_POINTS_PER_SET + 1))
    PointsParams(points=[[1, 1]] * (rules.MAX_POINTS_PER_SET + 1), separate=True)  # sets of one: the set limit
    with pytest.raises(ValidationError, match="points .each its own prompt set."):
        PointsParams(points=[[1, 1]] * (rules.MAX_PROMPT_SETS + 1), separate=True)
    with pytest.raises(ValidationError, match="boxes: at most"):
        BoxesParams(boxes=[[0, 0, 1, 1]] * (rules.MAX_PROMPT_SETS + 1))
    with pytest.raises(ValidationError, match="characters: at most"):
        TextParams(text="x" * (rules.MAX_TEXT_CHARS + 1))
    with pytest.raises(ValidationError, match="text prompts: at most"):
        TextParams(text=["x"] * (rules.MAX_PROMPT_SETS + 1))
    with pytest.raises(ValidationError, match="negative captions"):
        RankParams(negatives=["x"] * (rules.MAX_PROMPT_SETS + 1))
    with pytest.raises(ValidationError, match="less than or equal to 256"):
        AutoParams(points_per_side=100_000)
    with pytest.raises(ValidationError, match="less than or equal to 4"):
        AutoParams(crop_n_layers=9)
    with pytest.raises(ValidationError, match="makes 344064 grid prompts over all crops: at most 65536"):
        AutoParams(points_per_side=128, crop_n_layers=2)
    AutoParams(points_per_side=128, crop_n_layers=2, crop_n_points_downscale_factor=2)  # 16384 + 4 x 4096 + 16 x 1024


@pytest.mark.parametrize("params, location", [
    ({"pred_iou_thresh": float("nan")}, "pred_iou_thresh"), ({"stability_score_thresh": 1.5}, "stability_score"),
    ({"pred_iou_thresh": -0.1}, "pred_iou_thresh"), ({"stability_score_offset": float("-inf")}, "offset"),
    ({"stability_score_offset": -1}, "offset"),
])
def test_auto_thresholds_are_finite_and_in_range(params, location):
    from samflow.nodes.auto import AutoParams

    with pytest.raises(ValidationError, match=location):
        AutoParams(**params)


def test_clip_rank_threshold_has_a_range():
    from samflow.nodes.clip import RankParams

    with pytest.raises(ValidationError, match="threshold"):
        RankParams(threshold=2)
    with pytest.raises(ValidationError, match="finite number"):
        RankParams(threshold=float("nan"))


class _Loose(NodeParams):
    value: float = 0.0
    extra: dict = {}
    nested: list[list[float]] = []
    anything: object = None


@pytest.mark.parametrize("params, where", [
    ({"value": float("nan")}, "value"), ({"value": "inf"}, "value"), ({"nested": [[1.0, float("-inf")]]}, "nested.0.1"),
    ({"extra": {"a": [1, {"b": float("nan")}]}}, "extra.a.1.b"), ({"anything": np.float32("nan")}, "anything"),
    ({"anything": np.array([1.0, np.inf])}, "anything"),
])
def test_node_params_refuse_non_finite_numbers_anywhere(params, where):
    with pytest.raises(ValidationError, match=where):
        _Loose(**params)
    assert _Loose(value=1e300, extra={"a": [1, 2.5, "nan"]}, nested=[[0.0]]).value == 1e300


def test_a_nan_threshold_is_a_validation_error_not_a_silent_filter(tmp_path, capsys):
    graph = tmp_path / "g.yaml"
    graph.write_text("""samflow: 1
inputs: {image: Image}
nodes:
  encoder: {type: sam.encoder, inputs: {image: $inputs.image}}
  auto: {type: sam.auto, params: {pred_iou_thresh: .nan}, inputs: {embedding: $encoder.embedding, image: $inputs.image}}
outputs: {masks: $auto.masks}
""")
    assert main(["validate", str(graph)]) == 2
    assert "node 'auto': param 'pred_iou_thresh': Input should be a finite number" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------- --set and YAML


def test_set_with_bad_yaml_is_a_clear_exit_2(tmp_path, capsys):
    recipe = str(Path(__file__).resolve().parents[1] / "graphs" / "point_prompt.yaml")
    assert main(["run", recipe, "--input", "image=x.png", "--set", "clicks.points=[[1,2",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set clicks.points='[[1,2': the value is not valid YAML: expected ',' or ']'")
    assert "Traceback" not in err and "column 6" in err


def test_set_values_are_read_with_the_bounded_reader():
    assert yaml_overrides(["a.b=[1, {c: 2}]", "x.y=.nan"])["a.b"] == [1, {"c": 2}]
    with pytest.raises(InputError, match="--set a.b=.*nested deeper"):
        yaml_overrides(["a.b=" + "[" * 500 + "]" * 500])


def test_graph_text_and_files_are_bounded(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"samflow: 1\n#" + b"x" * graph_yaml.MAX_GRAPH_BYTES)
    started = time.perf_counter()
    with pytest.raises(GraphValidationError, match=r"big.yaml: the graph is over 1,048,576 bytes \(MAX_GRAPH_BYTES\)"):
        Graph.load(big)
    assert time.perf_counter() - started < 1
    with pytest.raises(GraphValidationError, match="over 1,048,576 bytes"):
        Graph.from_yaml("#" + "é" * (graph_yaml.MAX_GRAPH_BYTES // 2))  # 2 bytes a character in UTF-8
    (tmp_path / "latin1.yaml").write_bytes(b"samflow: 1\ndescription: caf\xe9\n")
    with pytest.raises(GraphValidationError, match=r"latin1.yaml:2: not UTF-8 text"):
        Graph.load(tmp_path / "latin1.yaml")
    with pytest.raises(GraphError, match="cannot read graph"):
        Graph.load(tmp_path)


@pytest.mark.parametrize("text", ["a: !!int x", "a: !!timestamp nope", "a: !!float [1]", "a: !!binary é"])
def test_values_yaml_cannot_construct_are_graph_errors(text):
    with pytest.raises(GraphValidationError, match="YAML"):
        Graph.from_yaml(text)


def test_the_fast_reader_keeps_the_lines_and_the_limits():
    from samflow.yamlio import LineLoader

    if graph_yaml.CParser is None:
        pytest.skip("PyYAML without libyaml: the reader is samflow.yamlio's as it is")
    text = (Path(__file__).parent / "graphs" / "valid.yaml").read_text()
    fast, plain_reader = graph_yaml._load(text), LineLoader(text).get_single_data()
    assert fast == plain_reader and fast["nodes"].key_lines == plain_reader["nodes"].key_lines
    dup = graph_yaml._load("a: 1\nb: 2\na: 3\n")
    assert dup.duplicate_keys == [("a", 3)]
    for bad, why in [("[" * 200 + "]" * 200, "nested deeper"), ("a: &x [1]\nb: *y\n", "undefined alias"),
                     ("a: &a [" + ", ".join(["*a"] * 5) + "]", "recursive"),
                     ("x: !!python/object:os.system 1", "could not determine a constructor")]:
        with pytest.raises(yaml.YAMLError, match=why):
            graph_yaml._load(bad)
    laughs = "a: &a [" + ", ".join(["x"] * 10) + "]\n" + "".join(
        f"{c}: &{c} [" + ", ".join([f"*{p}"] * 10) + "]\n" for p, c in zip("abcdefg", "bcdefgh"))
    with pytest.raises(yaml.YAMLError, match="billion laughs"):
        graph_yaml._load(laughs)


def test_boxes_payload_as_graph_input_is_checked_by_the_decoder(picture):
    graph = Graph.from_yaml("""
samflow: 1
inputs: {image: Image, boxes: Boxes}
nodes:
  encoder: {type: sam.encoder, params: {model: tiny}, inputs: {image: $inputs.image}}
  segment: {type: sam.decoder, inputs: {embedding: $encoder.embedding, boxes: $inputs.boxes}}
outputs: {masks: $segment.masks}
""")
    with Scheduler(graph) as scheduler, pytest.raises(NodeError, match="box 0 .* has zero width"):
        scheduler.run({"image": Image(picture), "boxes": Boxes(np.array([[4.0, 4, 4, 9]]))})

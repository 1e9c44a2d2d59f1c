"""Every class of graph error, each from a YAML file under tests/graphs: file, line, node, port and names."""

from __future__ import annotations

from pathlib import Path

import pytest

from samflow.engine.graph import Graph, GraphValidationError

GRAPHS = Path(__file__).parent / "graphs"


def problems(name: str) -> list:
    with pytest.raises(GraphValidationError) as info:
        Graph.load(GRAPHS / name)
    return info.value.problems


def only(name: str) -> tuple[object, str]:
    found = problems(name)
    assert len(found) == 1, found
    return found[0], str(found[0])


def test_valid_graph_loads():
    graph = Graph.load(GRAPHS / "valid.yaml")
    assert list(graph.nodes) == ["encoder", "clicks", "segment"]


def test_yaml_syntax_error_names_file_and_line():
    problem, text = only("syntax_error.yaml")
    assert text.startswith(f"{GRAPHS / 'syntax_error.yaml'}:6: YAML syntax error")


def test_unknown_node_type_suggests_nearest():
    problem, text = only("unknown_type.yaml")
    assert (problem.line, problem.node) == (8, "segment")
    assert "unknown node type 'sam.decodr'; did you mean 'sam.decoder'" in text
    assert text.startswith(f"{GRAPHS / 'unknown_type.yaml'}:8: node 'segment'")


def test_unknown_input_port():
    problem, text = only("unknown_input.yaml")
    assert (problem.line, problem.node, problem.port) == (11, "segment", "pionts")
    assert "sam.decoder has no input 'pionts'; did you mean 'points'?" in text


def test_missing_required_input():
    problem, text = only("missing_input.yaml")
    assert (problem.line, problem.node, problem.port) == (9, "segment", "embedding")
    assert "missing required input (ImageEmbedding)" in text


def test_reference_to_missing_node():
    problem, text = only("missing_node.yaml")
    assert (problem.line, problem.node, problem.port) == (10, "segment", "embedding")
    assert "no node named 'encodr'; did you mean 'encoder'?" in text


def test_reference_to_missing_port():
    problem, text = only("missing_port.yaml")
    assert (problem.line, problem.node, problem.port) == (10, "segment", "embedding")
    assert "node 'encoder' (sam.encoder) has no output 'embeddings'" in text and "(outputs: embedding)" in text


def test_reference_to_missing_graph_input():
    problem, text = only("missing_graph_input.yaml")
    assert (problem.line, problem.node, problem.port) == (5, "encoder", "image")
    assert "the graph has no input 'picture' (inputs: image)" in text


def test_type_mismatch_names_both_types():
    problem, text = only("type_mismatch.yaml")
    assert (problem.line, problem.node, problem.port) == (11, "segment", "points")
    assert "type mismatch: $box.boxes is Boxes but sam.decoder input 'points' expects Points" in text


def test_cycle_is_printed():
    problem, text = only("cycle.yaml")
    assert problem.line == 7 and problem.node == "first"
    assert "cycle: first -> second -> first" in text
    assert "second.masks <- $first.logits" in text and "first.masks <- $second.logits" in text


def test_params_failing_the_model_name_field_and_reason():
    found = problems("bad_params.yaml")
    by_line = {p.line: (p.node, str(p)) for p in found}
    assert set(by_line) == {5, 10, 11}
    assert by_line[5][0] == "encoder" and "param 'model': unknown SAM preset 'vit_x'" in by_line[5][1]
    assert by_line[10][0] == "segment" and "param 'multimask'" in by_line[10][1] and "valid boolean" in by_line[10][1]
    assert "'maybe'" in by_line[10][1]
    assert "param 'multimsk': Extra inputs are not permitted; did you mean 'multimask'?" in by_line[11][1]


def test_unknown_top_level_key():
    found = problems("unknown_top_key.yaml")
    text = str(found[0])
    assert found[0].line == 6 and "unknown top-level key 'output'; did you mean 'outputs'" in text


def test_all_problems_reported_together():
    text = """\
samflow: 2
inputs: {image: Picture}
nodes:
  a: {type: sam.encoder, inputs: {image: $inputs.image}, colour: red}
  a: {type: prompt.points}
"""
    with pytest.raises(GraphValidationError) as info:
        Graph.from_yaml(text, source="many.yaml")
    lines = sorted((p.line, p.message.split(":")[0]) for p in info.value.problems)
    message = str(info.value)
    assert message.startswith("many.yaml: ")
    assert "unsupported graph format samflow: 2" in message
    assert "unknown payload type 'Picture'" in message
    assert "'a' is defined twice in 'nodes'" in message
    assert any(line == 4 for line, _ in lines) or any(line == 5 for line, _ in lines)


def test_set_overrides_are_validated_too():
    with pytest.raises(GraphValidationError, match="param 'multimask'"):
        Graph.load(GRAPHS / "valid.yaml", overrides={"segment.multimask": "perhaps"})
    with pytest.raises(GraphValidationError, match="cannot set 'segmnt.multimask'.*did you mean 'segment'"):
        Graph.load(GRAPHS / "valid.yaml", overrides={"segmnt.multimask": False})
    graph = Graph.load(GRAPHS / "valid.yaml", overrides={"segment.multimask": False, "encoder.model.image_size": 64})
    assert graph.nodes["segment"].params.multimask is False
    assert graph.nodes["encoder"].params.model.image_size == 64

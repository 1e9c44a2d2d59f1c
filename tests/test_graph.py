"""Graphs built in Python and loaded from YAML: typed handles, wiring checks, YAML round trip, same results."""

from __future__ import annotations

import numpy as np
import pytest
from graph_testing import BOXES, POINTS_A, SMALL_SAM, make_checkpoint, make_images, three_decoders_yaml

from samflow.engine.graph import Graph, GraphValidationError, Ref
from samflow.engine.node import Input, Node, NodeParams
from samflow.engine.registry import find_node_type, register
from samflow.engine.scheduler import Scheduler
from samflow.engine.types import Boxes, Image, ImageEmbedding, Masks, Points
from samflow.errors import GraphError


def build_points_graph(checkpoint) -> Graph:
    g = Graph()
    image = g.input("image", Image)
    encoder = g.add("sam.encoder", "encoder", params={"model": SMALL_SAM, "checkpoint": str(checkpoint),
                                                      "device": "cpu"}, image=image)
    clicks = g.add("prompt.points", "clicks", params={"points": POINTS_A, "labels": [1, 0]})
    boxes = g.add("prompt.boxes", "boxes", params={"boxes": BOXES})
    segment = g.add("sam.decoder", "segment", embedding=encoder.embedding, points=clicks.points)
    by_box = g.add("sam.decoder", "by_box", params={"multimask": False}, embedding=encoder.embedding,
                   boxes=boxes.boxes)
    g.output("masks", segment.masks)
    g.output("box_masks", by_box.masks)
    return g


def test_add_returns_typed_handles():
    g = Graph()
    image = g.input("image", "Image")
    encoder = g.add("sam.encoder", image=image)
    assert encoder.name == "encoder"  # named after the type when not given
    assert encoder.embedding.type is ImageEmbedding and encoder.embedding.ref == Ref("encoder", "embedding")
    assert g.add("sam.encoder", image=image).name == "encoder_2"
    with pytest.raises(GraphError, match="has no output 'embeddings'; its outputs: embedding"):
        _ = encoder.embeddings


def test_wrong_type_fails_at_once_naming_both_types():
    g = Graph()
    image = g.input("image", Image)
    boxes = g.add("prompt.boxes", params={"boxes": BOXES})
    encoder = g.add("sam.encoder", image=image)
    with pytest.raises(GraphValidationError) as info:
        g.add("sam.decoder", "segment", embedding=encoder.embedding, points=boxes.boxes)
    message = str(info.value)
    assert "is Boxes" in message and "expects Points" in message and "'segment'" in message
    assert __file__ in message  # the Python line that made the mistake
    assert "segment" not in g.nodes
    with pytest.raises(GraphValidationError, match="type mismatch: \\$inputs.image is Image"):
        g.add("sam.decoder", embedding=image)


def test_python_build_errors():
    g = Graph()
    image = g.input("image", Image)
    with pytest.raises(GraphError, match="unknown node type 'sam.decodr'; did you mean 'sam.decoder'"):
        g.add("sam.decodr")
    with pytest.raises(GraphError, match="missing required input embedding"):
        g.add("sam.decoder")
    with pytest.raises(GraphError, match="param 'multimask'"):
        g.add("sam.decoder", params={"multimask": "perhaps"}, embedding=g.add("sam.encoder", image=image).embedding)
    other = Graph()
    with pytest.raises(GraphError, match="belongs to another graph"):
        other.add("sam.encoder", image=image)


def test_to_yaml_round_trips(tmp_path):
    g = build_points_graph(tmp_path / "weights.safetensors")
    text = g.to_yaml()
    again = Graph.from_yaml(text)
    assert again.to_dict() == g.to_dict()
    assert again.to_yaml() == text
    g.to_yaml(tmp_path / "g.yaml")
    assert Graph.load(tmp_path / "g.yaml").to_dict() == g.to_dict()


def test_python_and_yaml_graphs_give_identical_results(tmp_path):
    checkpoint = make_checkpoint(tmp_path)
    image = make_images(tmp_path / "images", 1)[0]
    in_python = build_points_graph(checkpoint)
    model = "{" + ", ".join(f"{k}: {v}" for k, v in SMALL_SAM.items()) + "}"
    in_yaml = Graph.from_yaml(f"""
samflow: 1
inputs: {{image: Image}}
nodes:
  encoder: {{type: sam.encoder, params: {{model: {model}, checkpoint: '{checkpoint}', device: cpu}},
            inputs: {{image: $inputs.image}}}}
  clicks: {{type: prompt.points, params: {{points: {POINTS_A}, labels: [1, 0]}}}}
  boxes: {{type: prompt.boxes, params: {{boxes: {BOXES}}}}}
  segment: {{type: sam.decoder, inputs: {{embedding: $encoder.embedding, points: $clicks.points}}}}
  by_box: {{type: sam.decoder, params: {{multimask: false}}, inputs: {{embedding: $encoder.embedding,
           boxes: $boxes.boxes}}}}
outputs: {{masks: $segment.masks, box_masks: $by_box.masks}}
""", source="inline.yaml")
    assert in_yaml.to_dict() == in_python.to_dict()
    a = Scheduler(in_python).run(image=image)
    b = Scheduler(in_yaml).run(image=image)
    for name in ("masks", "box_masks"):
        assert np.array_equal(a[name].data, b[name].data)
        assert np.array_equal(a[name].scores, b[name].scores)


def test_generations_put_consumers_after_producers(tmp_path):
    g = Graph.from_yaml(three_decoders_yaml(tmp_path / "w.safetensors"))
    layers = g.generations()
    assert layers[0] == ["encoder", "clicks_a", "boxes", "clicks_b"]
    assert layers[1] == ["by_points", "by_boxes", "by_points_b"]
    assert set(g.digraph().predecessors("by_boxes")) == {"encoder", "boxes"}


def test_versioned_ids_and_plugins_by_decorator():
    @register("testing.scale@v2")
    class ScaleV2(Node):
        """Doubles boxes."""

        class Params(NodeParams):
            factor: float = 2.0

        inputs = {"boxes": Input(Boxes)}
        outputs = {"boxes": Boxes}

        def run(self, ctx, boxes):
            return {"boxes": Boxes(boxes.xyxy * self.params.factor)}

    assert find_node_type("testing.scale@v2") is ScaleV2
    assert find_node_type("testing.scale") is None  # v1 is a different node
    assert find_node_type("sam.decoder@v1") is find_node_type("sam.decoder")
    with pytest.raises(ValueError, match="bad node type id"):
        register("Not An Id")
    with pytest.raises(TypeError, match="Params must subclass"):

        @register("testing.bad")
        class Bad(Node):
            Params = int

    g = Graph()
    boxes = g.add("prompt.boxes", params={"boxes": [[1, 2, 3, 4]]})
    scaled = g.add("testing.scale@v2", params={"factor": 3}, boxes=boxes.boxes)
    g.output("boxes", scaled.boxes)
    assert Graph.from_yaml(g.to_yaml()).nodes["scale"].type_id == "testing.scale@v2"
    assert Scheduler(g).run()["boxes"].xyxy.tolist() == [[3, 6, 9, 12]]


def test_describe_lists_ports_and_param_defaults():
    info = find_node_type("sam.decoder").describe()
    assert info["inputs"]["points"] == {"type": "Points", "optional": True, "doc": ""}
    assert info["inputs"]["embedding"]["optional"] is False
    assert info["outputs"] == {"masks": "Masks", "scores": "Scores", "logits": "MaskLogits"}
    assert info["params"]["multimask"]["default"] is True
    assert find_node_type("sam.encoder").describe()["params"]["model"]["default"] == "tiny"
    assert issubclass(Masks, Points.__mro__[-2])  # all payloads share the Payload base


def test_entry_point_plugins_are_loaded(monkeypatch, tmp_path, caplog):
    from importlib.metadata import EntryPoint

    import samflow.engine.registry as registry

    (tmp_path / "samflow_plugin_demo.py").write_text('''
from samflow.engine.node import Node
from samflow.engine.registry import register
from samflow.engine.types import Boxes


@register("plugin.empty_boxes")
class EmptyBoxes(Node):
    outputs = {"boxes": Boxes}

    def run(self, ctx):
        return {"boxes": Boxes([[0, 0, 0, 0]])}
''')
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [EntryPoint("demo", "samflow_plugin_demo", registry.ENTRY_POINT_GROUP),
              EntryPoint("broken", "samflow_plugin_missing", registry.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda group: points if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_loaded", False)
    assert registry.find_node_type("plugin.empty_boxes").__name__ == "EmptyBoxes"
    assert "could not load samflow node plugin 'broken'" in caplog.text  # a broken plugin is a warning
    assert registry.find_node_type("sam.decoder") is not None


def test_yaml_names_registered_types_only():
    with pytest.raises(GraphValidationError, match="unknown node type 'samflow.nodes.sam:SamDecoder'"):
        Graph.from_yaml("samflow: 1\nnodes:\n  d: {type: 'samflow.nodes.sam:SamDecoder'}\n")
    with pytest.raises(GraphValidationError, match="unknown payload type 'samflow.engine.types.Image'"):
        Graph.from_yaml("samflow: 1\ninputs: {image: samflow.engine.types.Image}\nnodes: {}\n")

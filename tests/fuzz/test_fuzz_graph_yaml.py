"""Property tests of the YAML graph reader: whatever the text or the document, reading it either gives a Graph or
raises samflow's GraphError / InputError (never a raw YAML, pydantic, Key or Type error, never a hang).

Three layers of input: random characters that matter to YAML; random documents of any shape dumped as YAML; and
graph-shaped documents with the registered node types, random params and random references. Deterministic and
bounded (derandomize=True, max_examples).
"""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samflow.engine.graph import Graph
from samflow.engine.registry import find_node_type, load_node_types, node_types
from samflow.engine.types import PAYLOAD_TYPES
from samflow.errors import GraphError, InputError

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

load_node_types()
NODE_TYPES = sorted(node_types())
PARAM_NAMES = sorted({name for t in NODE_TYPES for name in find_node_type(t).Params.model_fields})

YAML_CHARS = list("{}[]:,-?&*!|>'\"%@`#\n\t .0123456789abcexyz$_") + ["samflow", "nodes", "inputs", "outputs",
                                                                   "type", "params", "<<", "!!int", "!!binary",
                                                                   "!!timestamp", "~", ".nan", ".inf", "é", "\x00"]

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=20) | st.sampled_from(["$inputs.image", "$encoder.embedding", "$x.y", "$", "tiny",
                                                     "Image", "Points", "sam.encoder", "1e999"]))
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=8) | st.integers(-3, 3), inner, max_size=4),
                         max_leaves=25)


def _read(text: str) -> None:
    try:
        Graph.from_yaml(text, source="<fuzz>")
    except (GraphError, InputError):
        pass


@FUZZ
@given(st.lists(st.sampled_from(YAML_CHARS), max_size=60).map("".join))
def test_random_yaml_text_is_a_graph_or_a_graph_error(text):
    _read(text)


@FUZZ
@given(documents)
def test_random_documents_are_a_graph_or_a_graph_error(document):
    _read(yaml.safe_dump(document))


@st.composite
def graph_documents(draw):
    names = draw(st.lists(st.sampled_from(["encoder", "clicks", "boxes", "segment", "auto", "x", "inputs", "1a"]),
                          min_size=1, max_size=4, unique=True))
    refs = st.sampled_from([f"${n}.{p}" for n in [*names, "inputs"] for p in ("image", "embedding", "points",
                                                                            "boxes", "masks", "nope")])
    nodes = {}
    for name in names:
        entry = {"type": draw(st.sampled_from(NODE_TYPES) | st.text(max_size=8))}
        if draw(st.booleans()):
            entry["params"] = draw(st.dictionaries(st.sampled_from(PARAM_NAMES), documents, max_size=3)
                                   | documents)
        if draw(st.booleans()):
            entry["inputs"] = draw(st.dictionaries(st.sampled_from(["image", "embedding", "points", "boxes", "masks",
                                                                     "text", "frame"]), refs | scalars, max_size=3))
        if draw(st.booleans()):
            entry[draw(st.sampled_from(["description", "typo"]))] = draw(scalars)
        nodes[name] = entry
    doc = {"samflow": draw(st.sampled_from([1, 1, 2, "1", None])),
           "inputs": draw(st.dictionaries(st.sampled_from(["image", "points", "e", "1"]),
                                          st.sampled_from(sorted(PAYLOAD_TYPES)) | scalars, max_size=3)),
           "nodes": nodes,
           "outputs": draw(st.dictionaries(st.sampled_from(["masks", "scores", "m"]), refs | scalars, max_size=2))}
    for key in draw(st.lists(st.sampled_from(["samflow", "inputs", "outputs", "description"]), max_size=2)):
        doc.pop(key, None)
    return doc


@settings(FUZZ, max_examples=300)
@given(graph_documents())
def test_graph_shaped_documents_are_a_graph_or_a_graph_error(document):
    _read(yaml.safe_dump(document, sort_keys=False))
    try:
        Graph.from_dict(document, source="<fuzz>")
    except (GraphError, InputError):
        pass


@FUZZ
@given(st.binary(max_size=200))
def test_random_files_are_a_graph_or_a_graph_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "g.yaml"
    path.write_bytes(data)
    try:
        Graph.load(path)
    except (GraphError, InputError):
        pass


@pytest.mark.parametrize("text", [
    "[" * 100_000, "{a: " * 50_000, "a: &a [*a]", "- !!python/object/apply:os.system [echo]", "a: !!float x",
    "a: !!timestamp 2020-99-99", "? !!binary é\n: 1", "samflow: 1\nnodes: {x: {type: sam.auto, params: {"
    "points_per_side: 99999999999999999999999}}}",
])
def test_hostile_documents_are_graph_errors(text):
    with pytest.raises(GraphError):
        Graph.from_yaml(text)

"""Issue 17, item 1: graph runs over HTTP read no server files.

Every param that names a server path is refused with 403 `server_path` naming the node and the param, with the same
answer whether the file exists or not (no existence oracle), before anything is read (`/dev/zero` included); an
operator's `--allow-dir` admits regular files inside it (resolved, so `..` and symlinks do not escape); graph inputs
are uploads (by id) or small JSON values only."""

from __future__ import annotations

import json
import time

import pytest
from hostile_testing import error, upload
from serve_testing import png_bytes

from samflow.data.synthetic import render_scene
from samflow.engine.node import Input, Node, NodeParams
from samflow.engine.registry import _NODES, register
from samflow.engine.types import Image, Points

RUN = "/api/graphs/run"
DECODE = """  encoder: {type: sam.encoder, params: {model: tiny}, inputs: {image: $inputs.image}}
  segment: {type: sam.decoder, inputs: {embedding: $encoder.embedding, points: $clicks.points}}
outputs: {masks: $segment.masks}
"""


def one_node(node: str, inputs: str = "{}") -> str:
    return f"samflow: 1\ninputs: {inputs}\nnodes:\n  n: {node}\noutputs: {{}}\n"


# (node and param named in the refusal, graph with PATH where the param goes)
CASES = {
    "prompt.points file": ("file", one_node("{type: prompt.points, params: {file: 'PATH'}}")),
    "prompt.boxes file": ("file", one_node("{type: prompt.boxes, params: {file: 'PATH'}}")),
    "sam.encoder checkpoint": ("checkpoint", one_node(
        "{type: sam.encoder, params: {model: tiny, checkpoint: 'PATH'}, inputs: {image: $inputs.image}}",
        "{image: Image}")),
    "sam.decoder text_adapter": ("text_adapter", "samflow: 1\ninputs: {image: Image}\nnodes:\n"
                                 "  e: {type: sam.encoder, inputs: {image: $inputs.image}}\n"
                                 "  t: {type: clip.text, params: {text: a star}}\n"
                                 "  n: {type: sam.decoder, params: {text_adapter: 'PATH'}, "
                                 "inputs: {embedding: $e.embedding, text: $t.text}}\noutputs: {}\n"),
    "clip.text checkpoint": ("checkpoint", one_node("{type: clip.text, params: {text: a mug, checkpoint: 'PATH'}}")),
    "clip.text model": ("model", one_node("{type: clip.text, params: {text: a mug, model: 'PATH'}}")),
    "detect.torchvision weights": ("weights", one_node(
        "{type: detect.torchvision, params: {weights: 'PATH'}, inputs: {image: $inputs.image}}", "{image: Image}")),
    "detect.file file": ("file", one_node("{type: detect.file, params: {file: 'PATH'}, inputs: {image: $inputs.image}}",
                                          "{image: Image}")),
    "gaze.points file": ("file", one_node("{type: gaze.points, params: {file: 'PATH'}, inputs: {frame: $inputs.f}}",
                                          "{f: Frame}")),
    "lift.depth intrinsics": ("intrinsics", one_node(
        "{type: lift.depth, params: {intrinsics: 'PATH'}, inputs: {image: $inputs.i, depth: $inputs.d, "
        "masks: $inputs.m}}", "{i: Image, d: Depth, m: Masks}")),
}


@pytest.fixture(scope="module")
def secret(tmp_path_factory):
    """A file a client must not read: valid JSON prompts, so a reader would accept it."""
    path = tmp_path_factory.mktemp("secret") / "points.json"
    path.write_text(json.dumps({"points": [[10, 10]], "boxes": [[1, 2, 30, 40]], "SECRET": "XYZZY-1234"}))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_path_params_are_refused_alike_whether_the_file_exists_or_not(make_client, secret, case):
    param, graph = CASES[case]
    type_id = case.split()[0]
    with make_client() as client:
        answers = []
        for path in (secret, secret.with_name("missing.json"), "/etc/passwd"):
            response = client.post(RUN, json={"graph": graph.replace("PATH", str(path))})
            message = error(response, 403, "server_path")
            assert f"node 'n' ({type_id})" in message and f"param '{param}'" in message
            assert "XYZZY" not in response.text and str(path) not in message
            answers.append(response.json())
        assert answers[0] == answers[1] == answers[2]  # no existence oracle


def test_overrides_cannot_name_server_files(make_client, secret):
    graph = "samflow: 1\nnodes:\n  clicks: {type: prompt.points, params: {points: [[1, 2]]}}\noutputs: {p: $clicks.points}\n"
    with make_client() as client:
        assert client.post(RUN, json={"graph": graph}).status_code == 200
        response = client.post(RUN, json={"graph": graph, "overrides": {"clicks.points": None,
                                                                         "clicks.file": str(secret)}})
        assert "param 'file'" in error(response, 403, "server_path") and "XYZZY" not in response.text


def test_dev_zero_is_never_read(make_client):
    graph = one_node("{type: prompt.points, params: {file: /dev/zero}}")
    with make_client() as client:
        started = time.perf_counter()
        error(client.post(RUN, json={"graph": graph}), 403, "server_path")
        assert time.perf_counter() - started < 5
    with make_client(allow_dirs=("/dev",)) as client:  # even inside an allowed folder: regular files only
        assert "no regular file" in error(client.post(RUN, json={"graph": graph}), 422, "bad_graph")
        assert time.perf_counter() - started < 10


def test_allowed_folder_admits_its_files_and_nothing_outside(make_client, tmp_path, secret):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "clicks.json").write_text(json.dumps({"points": [[120, 80]], "labels": [1]}))
    (allowed / "escape.json").symlink_to(secret)
    image = png_bytes(render_scene(31, size=256).image)
    inline = "samflow: 1\ninputs: {image: Image}\nnodes:\n  clicks: {type: prompt.points, params: {points: [[120, 80]]}}\n"
    from_file = "samflow: 1\ninputs: {image: Image}\nnodes:\n  clicks: {type: prompt.points, params: {file: 'PATH'}}\n"
    with make_client(allow_dirs=(str(allowed),)) as client:
        iid = upload(client, image)
        expected = client.post(RUN, json={"graph": inline + DECODE, "inputs": {"image": iid}})
        assert expected.status_code == 200, expected.text
        for name in ("clicks.json", str(allowed / "clicks.json"), f"{allowed}/../allowed/clicks.json"):
            response = client.post(RUN, json={"graph": from_file.replace("PATH", name) + DECODE,
                                              "inputs": {"image": iid}})
            assert response.status_code == 200, (name, response.text)
            assert response.json()["outputs"] == expected.json()["outputs"]
        for name in ("../secret0/points.json", str(secret), "escape.json", f"{allowed}/../{secret.parent.name}"):
            response = client.post(RUN, json={"graph": from_file.replace("PATH", name) + DECODE,
                                              "inputs": {"image": iid}})
            error(response, 403, "server_path")
            assert "XYZZY" not in response.text


def test_inputs_are_uploads_or_small_json_values(make_client, scene_png):
    overlay = ("samflow: 1\ninputs: {image: Image, m: Masks}\nnodes:\n"
               "  o: {type: masks.overlay, inputs: {image: $inputs.image, masks: $inputs.m}}\noutputs: {}\n")
    points = "samflow: 1\ninputs: {p: Points}\nnodes: {}\noutputs: {p: $inputs.p}\n"
    with make_client() as client:
        iid = upload(client, scene_png)
        mask = [[[[True] * 4] * 4]]
        assert "cannot be given over HTTP" in error(
            client.post(RUN, json={"graph": overlay, "inputs": {"image": iid, "m": mask}}), 422, "bad_input")
        error(client.post(RUN, json={"graph": points, "inputs": {"p": "/etc/passwd"}}), 422, "bad_input")
        error(client.post(RUN, json={"graph": points, "inputs": {"p": {"points": "/etc/passwd"}}}), 422, "bad_input")
        ok = client.post(RUN, json={"graph": points, "inputs": {"p": {"points": [[1, 2]], "labels": [1]}}})
        assert ok.status_code == 200, ok.text


class _ReaderParams(NodeParams):
    weights_path: str | None = None


def test_plugin_params_that_look_like_paths_are_refused(make_client):
    @register("test_serve.reader")
    class Reader(Node):
        Params = _ReaderParams
        inputs = {"image": Input(Image)}
        outputs = {"points": Points}

        def run(self, ctx, image):  # pragma: no cover - refused before it runs
            raise AssertionError("ran")

    try:
        graph = one_node("{type: test_serve.reader, params: {weights_path: /etc/passwd}, "
                         "inputs: {image: $inputs.image}}", "{image: Image}")
        with make_client() as client:
            assert "param 'weights_path'" in error(client.post(RUN, json={"graph": graph}), 403, "server_path")
    finally:
        _NODES.pop("test_serve.reader", None)

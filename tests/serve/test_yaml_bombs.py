"""Issue 17, item 2: YAML "billion laughs" and deep nesting, over HTTP and in the library's reader.

The service refuses anchors and aliases in graph documents, bounds nesting, the YAML text and JSON values; the
library reader (samflow.yamlio, under every graph file) bounds alias expansion and nesting with a clear error that
names the file and line, instead of gigabytes and a RecursionError."""

from __future__ import annotations

import time
import tracemalloc

import pytest
import yaml
from hostile_testing import error

from samflow.engine.graph import Graph
from samflow.errors import GraphError
from samflow.yamlio import ALIAS_BUDGET, MAX_DEPTH, YamlLimitError, load_with_lines, safe_load

RUN = "/api/graphs/run"


def laughs(levels: int = 9) -> str:
    """The classic: 9 levels of 9 aliases each, ~10**9 strings once expanded, in a few hundred bytes."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines)


def bomb_graph(where: str) -> str:
    def indent(spaces: int) -> str:
        return "\n".join(" " * spaces + line for line in laughs().splitlines())

    if where == "params":
        return ("samflow: 1\nnodes:\n  clicks:\n    type: prompt.points\n    params:\n      points: [[1, 2]]\n"
                f"      junk:\n{indent(8)}\noutputs: {{}}\n")
    return f"samflow: 1\ndescription:\n{indent(2)}\nnodes:\n  c: {{type: prompt.points, params: {{points: [[1, 2]]}}}}\n"


@pytest.mark.parametrize("where", ["params", "description"])
def test_billion_laughs_over_http_is_refused_at_once(make_client, where):
    text = bomb_graph(where)
    assert len(text) < 1000
    with make_client() as client:
        tracemalloc.start()
        started = time.perf_counter()
        response = client.post(RUN, json={"graph": text})
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    message = error(response, 422, "bad_graph")
    assert "<request>:" in message and ("anchors" in message or "aliases" in message)
    assert seconds < 2 and peak < 50 * 2**20, (seconds, peak)


def test_aliases_are_refused_over_http_even_small_ones(make_client):
    graph = ("samflow: 1\nnodes:\n  a: {type: prompt.points, params: {points: &p [[1, 2]]}}\n"
             "  b: {type: prompt.points, params: {points: *p}}\noutputs: {}\n")
    with make_client() as client:
        assert "<request>:3" in error(client.post(RUN, json={"graph": graph}), 422, "bad_graph")


def test_deep_nesting_over_http_is_a_clean_4xx(make_client):
    deep = "samflow: 1\nnodes:\n  a: {type: prompt.points, params: {points: " + "[" * 100_000 + "}}\n"
    with make_client() as client:
        response = client.post(RUN, json={"graph": deep}, headers={})
        assert response.status_code == 413 or f"deeper than {MAX_DEPTH}" in error(response, 422, "bad_graph")
        # Within the byte limit too: still the depth, not a RecursionError 500.
        with make_client(max_graph_bytes=1 << 20) as big:
            message = error(big.post(RUN, json={"graph": deep}), 422, "bad_graph")
            assert f"deeper than {MAX_DEPTH} levels" in message and "<request>:3" in message
        # Deep JSON (overrides, inputs) is refused too.
        nested: list = []
        for _ in range(200):
            nested = [nested]
        graph = "samflow: 1\nnodes:\n  a: {type: prompt.points, params: {points: [[1, 2]]}}\noutputs: {}\n"
        assert "nested deeper" in error(client.post(RUN, json={"graph": graph, "overrides": {"a.points": nested}}),
                                        413, "over_limit")
        raw = b'{"graph": "x", "inputs": {"p": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
        response = client.post(RUN, content=raw, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, response.text


def test_graph_text_is_bounded(make_client):
    graph = "samflow: 1\n# " + "x" * (70 * 1024) + "\nnodes: {}\n"
    with make_client() as client:
        assert "max_graph_bytes" in error(client.post(RUN, json={"graph": graph}), 413, "over_limit")


# ------------------------------------------------------------------------------------------- the library reader


def test_library_reader_bounds_alias_expansion():
    started = time.perf_counter()
    with pytest.raises(YamlLimitError) as caught:
        load_with_lines(laughs(), source="bomb.yaml")
    assert time.perf_counter() - started < 2
    assert isinstance(caught.value, yaml.YAMLError) and isinstance(caught.value, ValueError)
    assert "billion laughs" in str(caught.value) and 'in "bomb.yaml", line' in str(caught.value)
    # Through the graph reader: a GraphError naming the file and line.
    graph = "samflow: 1\ndescription:\n" + "\n".join("  " + line for line in laughs().splitlines()) + "\nnodes: {}\n"
    with pytest.raises(GraphError, match=r"bomb\.yaml:\d+: .*billion laughs"):
        Graph.from_yaml(graph, source="bomb.yaml")
    # Ordinary aliases still work, within the budget.
    data = load_with_lines("a: &a {x: 1}\nb: {<<: *a, y: 2}\nc: [*a, *a]\n")
    assert data == {"a": {"x": 1}, "b": {"x": 1, "y": 2}, "c": [{"x": 1}, {"x": 1}]}
    small = laughs(4)  # 9**3 * 9 strings: within ALIAS_BUDGET
    assert 9**4 < ALIAS_BUDGET and len(safe_load(small)["l3"]) == 9


def test_library_reader_bounds_nesting_and_recursion():
    with pytest.raises(YamlLimitError, match=f"deeper than {MAX_DEPTH} levels") as caught:
        load_with_lines("a:\n  b: " + "[" * 100_000, source="deep.yaml")
    assert caught.value.problem_mark.line == 1 and 'in "deep.yaml"' in str(caught.value)
    with pytest.raises(GraphError, match=r"deep\.yaml:3: .*deeper than 100 levels"):
        Graph.from_yaml("samflow: 1\nnodes:\n  a: " + "{b: " * 5000, source="deep.yaml")
    with pytest.raises(YamlLimitError, match="recursive YAML alias"):
        load_with_lines("x: &a [1, *a]\n")
    assert load_with_lines("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None  # the limit itself is fine
    with pytest.raises(YamlLimitError, match="not accepted here"):
        load_with_lines("a: &x 1\nb: *x\n", allow_aliases=False)

"""The graph commands: validate, run (recipes, --set, globs), nodes, graph; every one has --help."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
from graph_testing import SMALL_SAM, make_checkpoint, make_images

from samflow.cli import main
from samflow.engine.graph import Graph

REPO = Path(__file__).resolve().parents[1]
GRAPHS = Path(__file__).parent / "graphs"


@pytest.mark.parametrize("command", ["validate", "run", "nodes", "graph"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "usage: samflow " + command in capsys.readouterr().out


def test_validate_exit_codes(capsys):
    assert main(["validate", str(GRAPHS / "valid.yaml")]) == 0
    assert "ok:" in capsys.readouterr().out
    assert main(["validate", str(GRAPHS / "valid.yaml"), str(GRAPHS / "type_mismatch.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{GRAPHS / 'type_mismatch.yaml'}:11: node 'segment' input 'points': type mismatch" in err
    assert "Traceback" not in err
    assert main(["validate", str(GRAPHS / "missing.yaml")]) == 2
    assert "cannot read graph" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", sorted((REPO / "graphs").glob("*.yaml")), ids=lambda p: p.name)
def test_recipes_validate(recipe):
    assert main(["validate", str(recipe)]) == 0


def test_nodes_lists_ports_types_and_params(capsys):
    assert main(["nodes"]) == 0
    out = capsys.readouterr().out
    for type_id in ("image.load", "sam.encoder", "sam.decoder", "prompt.points", "prompt.boxes", "masks.write",
                    "masks.overlay"):
        assert f"\n{type_id}  " in "\n" + out
    assert "in   points?: Points" in out and "out  masks: Masks" in out
    assert "param multimask: bool = true" in out
    assert main(["nodes", "sam.decoder", "--json"]) == 0
    (info,) = json.loads(capsys.readouterr().out)
    assert info["inputs"]["boxes"]["type"] == "Boxes"


def test_graph_diagrams(capsys):
    assert main(["graph", str(REPO / "graphs" / "point_prompt.yaml")]) == 0
    mermaid = capsys.readouterr().out
    assert mermaid.startswith("flowchart LR") and 'encoder -->|"embedding"| segment' in mermaid
    assert main(["graph", str(REPO / "graphs" / "box_prompt.yaml"), "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith("digraph samflow {") and '"boxes" -> "segment" [label="boxes"];' in dot


def test_run_recipes_as_they_are(tmp_path):
    images = make_images(tmp_path / "images", 2, size=(200, 240))
    for recipe in ("point_prompt", "box_prompt"):
        out = tmp_path / recipe
        assert main(["run", str(REPO / "graphs" / f"{recipe}.yaml"), "--input", f"image={tmp_path / 'images'}",
                     "--out", str(out), "--no-progress"]) == 0
        manifest = json.loads((out / "run.json").read_text())
        assert manifest["counts"]["ok"] == 2 and manifest["nodes"]["encoder"]["runs"] == 2
        for image in images:
            assert (out / image.stem / "overlay.png").is_file()
    assert (tmp_path / "point_prompt" / "img0" / "masks_0_2.png").is_file()
    assert len(list((tmp_path / "box_prompt" / "img1" / "masks").glob("mask_*_0.png"))) == 2


def test_run_with_set_glob_and_json_prompts(tmp_path):
    make_images(tmp_path / "images", 3)
    checkpoint = make_checkpoint(tmp_path)
    (tmp_path / "boxes.json").write_text(json.dumps({"boxes": [[5, 5, 40, 40], [20, 10, 60, 50], [0, 0, 9, 9]]}))
    out = tmp_path / "out"
    code = main(["run", str(REPO / "graphs" / "box_prompt.yaml"), "--input", f"image={tmp_path}/images/img[01].png",
                 "--set", f"encoder.model={json.dumps(SMALL_SAM)}", "--set", f"encoder.checkpoint={checkpoint}",
                 "--set", "boxes.boxes=null", "--set", f"boxes.file={tmp_path / 'boxes.json'}",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    manifest = json.loads((out / "run.json").read_text())
    assert [item["id"] for item in manifest["items"]] == ["img0", "img1"]
    assert len(list((out / "img0" / "masks").glob("*.png"))) == 3


def test_run_user_errors_exit_2(tmp_path, capsys):
    recipe = str(REPO / "graphs" / "point_prompt.yaml")
    assert main(["run", recipe, "--input", f"image={tmp_path}/nothing", "--out", str(tmp_path / "o")]) == 2
    assert "error: no such file or folder" in capsys.readouterr().err
    assert main(["run", recipe, "--input", "picture=x.png", "--out", str(tmp_path / "o")]) == 2
    assert "has no input picture" in capsys.readouterr().err
    assert main(["run", recipe, "--input", "image=x.png", "--set", "clicks.points=[[1]]",
                 "--out", str(tmp_path / "o")]) == 2
    assert "node 'clicks': param 'points.0" in capsys.readouterr().err


def test_example_builds_the_recipe_graph_and_runs(tmp_path, monkeypatch, capsys):
    module = runpy.run_path(str(REPO / "examples" / "point_prompt.py"))
    assert module["build_graph"]().to_dict() == Graph.load(REPO / "graphs" / "point_prompt.yaml").to_dict()
    make_images(tmp_path / "images", 1, size=(200, 240))
    monkeypatch.setattr(sys, "argv", ["point_prompt.py", str(tmp_path / "images"), "--out", str(tmp_path / "out")])
    assert module["main"]() == 0
    out = capsys.readouterr().out
    assert "img0: ok" in out and "click (80, 60)" in out
    assert (tmp_path / "out" / "img0" / "overlay.png").is_file()

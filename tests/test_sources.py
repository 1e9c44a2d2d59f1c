"""Input listing for distributed runs: local specs follow `samflow run`, URIs go through pyarrow, globs match alike."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
from graph_testing import make_images

from samflow.errors import InputError
from samflow.ops.image import IMAGE_SUFFIXES
from samflow.scale import sources
from samflow.scale.runner import expand_paths

pytest.importorskip("pyarrow")


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    make_images(tmp_path / "a", 3)
    make_images(tmp_path / "a" / "deep", 2)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"")
    return tmp_path


def test_uri_or_path():
    assert sources.is_uri("s3://bucket/x.png") and sources.is_uri("file:///tmp/x")
    assert not sources.is_uri("/tmp/x.png") and not sources.is_uri("C:/x.png") and not sources.is_uri(Path("a"))


def test_local_specs_list_as_samflow_run_does(tree):
    for spec in (tree / "a", tree / "a" / "img1.png", f"{tree}/a/*.png", f"{tree}/**/img1.png"):
        assert sources.list_files(spec, IMAGE_SUFFIXES) == [str(p) for p in expand_paths(spec, IMAGE_SUFFIXES)]
    with pytest.raises(InputError, match="no such file"):
        sources.list_files(tree / "missing")


@pytest.mark.parametrize("pattern", ["a", "a/img1.png", "a/*.png", "**/img[01].png", "a/*/img0.png", "**/*.png"])
def test_uris_list_like_local_globs(tree, pattern):
    local = sources.list_files(tree / pattern if "*" not in pattern else f"{tree}/{pattern}", IMAGE_SUFFIXES)
    uri = sources.list_files(f"file://{tree}/{pattern}", IMAGE_SUFFIXES)
    assert uri == [f"file://{p}" for p in local] and uri
    if "*" in pattern:  # and the matching is glob's, component by component
        assert local == sorted(glob.glob(f"{tree}/{pattern}", recursive=True))


def test_read_and_copy(tree, tmp_path):
    path = tree / "a" / "img0.png"
    assert sources.read_bytes(f"file://{path}") == sources.read_bytes(str(path)) == path.read_bytes()
    assert sources.local_copy(str(path), tmp_path) == path
    copy = sources.local_copy(f"file://{path}", tmp_path)
    assert copy.parent == tmp_path and copy.read_bytes() == path.read_bytes()
    with pytest.raises(InputError, match="cannot read"):
        sources.read_bytes(f"file://{tree}/nope.png")
    with pytest.raises(InputError, match="no such file"):
        sources.list_files(f"file://{tree}/nope")

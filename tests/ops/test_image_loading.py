"""The image loader refuses decompression bombs from the header, before decoding, in the API and the CLI alike."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samflow.errors import InputError
from samflow.ops.image import check_image_size, image_limits, load_image


def _bomb(path: Path, width: int, height: int) -> Path:
    Image.new("L", (width, height)).save(path)  # all-black: compresses to almost nothing
    return path


def test_a_small_file_with_a_huge_picture_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = _bomb(tmp_path / "bomb.png", 13000, 13000)
    assert bomb.stat().st_size < 1_000_000
    tracemalloc.start()
    with pytest.raises(InputError, match=r"^image .*bomb.png is 13000x13000 pixels; at most .* SAMFLOW_MAX_IMAGE"):
        load_image(bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50_000_000  # nothing decoded


def test_long_thin_images_are_bounded_by_their_side(tmp_path: Path) -> None:
    thin = tmp_path / "thin.tif"
    Image.new("L", (32, 20000)).save(thin, compression="tiff_deflate")
    with pytest.raises(InputError, match="32x20000"):
        load_image(thin)


def test_bounds_are_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    picture = tmp_path / "p.png"
    Image.fromarray(np.zeros((100, 300, 3), np.uint8)).save(picture)
    assert load_image(picture).shape == (100, 300, 3)
    monkeypatch.setenv("SAMFLOW_MAX_IMAGE_SIDE", "200")
    with pytest.raises(InputError, match="300x100"):
        load_image(picture)
    assert load_image(picture, max_side=400).shape == (100, 300, 3)
    with pytest.raises(InputError, match="empty"):
        check_image_size(0, 10)
    monkeypatch.setenv("SAMFLOW_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(InputError, match="SAMFLOW_MAX_IMAGE_PIXELS='lots'"):
        image_limits()


def test_the_api_and_the_cli_refuse_the_same_bomb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import samflow
    from samflow.cli import main

    bomb = _bomb(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(InputError, match=r"400,000,000 pixels; at most"):
        samflow.segment(str(bomb), points=[[10, 10]])
    assert main(["demo", "--image", str(bomb), "--out", str(tmp_path / "demo")]) != 0
    assert "400,000,000 pixels; at most" in capsys.readouterr().err

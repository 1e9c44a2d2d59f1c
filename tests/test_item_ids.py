"""Item ids (output folder names) are unique whatever the input names: no two files share one folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from samflow.scale.runner import unique_stems


def test_suffixed_ids_never_take_another_files_stem() -> None:
    assert unique_stems(["a.jpg", "a.png", "a_2.png"]) == ["a", "a_3", "a_2"]
    assert unique_stems(["x/a.png", "y/a.png", "z/a.png"]) == ["a", "a_2", "a_3"]
    assert unique_stems(["a_2.png", "a.png", "a.jpg", "a_3.jpg"]) == ["a_2", "a", "a_4", "a_3"]


def test_many_colliding_names_stay_unique_and_stable() -> None:
    rng = np.random.default_rng(0)
    names = [f"d{rng.integers(3)}/{rng.choice(['a', 'a_2', 'a_3', 'b'])}.{rng.choice(['png', 'jpg'])}"
             for _ in range(200)]
    ids = unique_stems(names)
    assert len(set(ids)) == len(ids) == 200 and ids == unique_stems(names)


def test_annotate_keeps_every_image_with_one_stem(tmp_path: Path) -> None:
    from samflow.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    for name, colour in [("a.jpg", 60), ("a.png", 120), ("a_2.png", 200)]:
        picture = np.zeros((64, 64, 3), np.uint8)
        picture[16:48, 16:48] = colour
        Image.fromarray(picture).save(photos / name)
    out = tmp_path / "sa"
    assert main(["annotate", str(photos), "--out", str(out), "--no-progress", "--points-per-side", "4"]) in (0, 1)
    written = sorted(p.name for p in out.glob("*.json") if p.name not in ("summary.json", "image_ids.json"))
    assert written == ["a.json", "a_2.json", "a_3.json"]
    import json

    files = {json.loads((out / name).read_text())["image"]["file_name"] for name in written}
    assert files == {"a.jpg", "a.png", "a_2.png"}


def test_one_loader_one_message_in_run_annotate_and_the_api(tmp_path: Path) -> None:
    import pytest

    from samflow.engine.types import Image as ImagePayload
    from samflow.errors import InputError
    from samflow.ops.image import load_image

    junk = tmp_path / "junk.png"
    junk.write_bytes(b"certainly not a picture")
    ppm = tmp_path / "bad.ppm"
    ppm.write_bytes(b"P6\n10 10\n-3\n" + b"\x00" * 30)
    for load in (load_image, ImagePayload.load):
        with pytest.raises(InputError, match=r"cannot read image .*junk.png: not a recognised image format"):
            load(junk)
        with pytest.raises(InputError, match=r"cannot read image .*bad.ppm"):
            load(ppm)
        with pytest.raises(InputError, match=r"image file not found: .*missing.png"):
            load(tmp_path / "missing.png")

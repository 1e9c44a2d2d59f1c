"""Property tests of the image loader (samflow.ops.image.load_image, behind Image.load, run, annotate, demo and the
API): random bytes, truncated and corrupted PNG / JPEG / BMP / GIF / TIFF / WebP / PPM files give an InputError
naming the file, or an RGB uint8 (H, W, 3) array; never another exception. Deterministic and bounded.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from samflow.errors import InputError
from samflow.ops.image import load_image

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FORMATS = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "gif": "GIF", "tif": "TIFF", "webp": "WEBP", "ppm": "PPM"}


def _encoded(suffix: str) -> bytes:
    rng = np.random.default_rng(len(suffix))
    picture = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    picture[5:15, 4:20] = (250, 10, 10)
    buffer = io.BytesIO()
    PILImage.fromarray(picture).save(buffer, format=FORMATS[suffix])
    return buffer.getvalue()


ENCODED = {suffix: _encoded(suffix) for suffix in FORMATS}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("images")


def _load(folder, name: str, data: bytes) -> None:
    path = folder / name
    path.write_bytes(data)
    try:
        array = load_image(path)
    except InputError as exc:
        assert str(path) in str(exc)
        return
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3 and array.size


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([*FORMATS, "dat"]))
def test_random_bytes_are_an_input_error(folder, data, suffix):
    _load(folder, f"random.{suffix}", data)


@FUZZ
@given(st.sampled_from(sorted(FORMATS)), st.floats(0, 1, exclude_max=True))
def test_truncated_files_are_an_input_error_or_an_image(folder, suffix, fraction):
    data = ENCODED[suffix]
    _load(folder, f"truncated.{suffix}", data[: int(len(data) * fraction)])


@FUZZ
@given(st.sampled_from(sorted(FORMATS)), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                                                  min_size=1, max_size=6))
def test_corrupted_files_are_an_input_error_or_an_image(folder, suffix, flips):
    data = bytearray(ENCODED[suffix])
    for where, value in flips:
        data[int(len(data) * where)] = value
    _load(folder, f"corrupt.{suffix}", bytes(data))


@FUZZ
@given(st.sampled_from(sorted(FORMATS)), st.binary(min_size=1, max_size=64))
def test_a_valid_header_with_garbage_after_it_is_an_input_error_or_an_image(folder, suffix, tail):
    data = ENCODED[suffix]
    _load(folder, f"garbage.{suffix}", data[: min(len(data), 40)] + tail)

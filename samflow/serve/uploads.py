"""Reading an uploaded image: the bytes (a raw body or a multipart `file` field), then pixels within limits.

The size limit itself is enforced while the body streams in (see limits.py); the image's dimensions are checked
from its header before any pixel is decoded, so a small file that would decode to a huge picture is refused too;
past `max_pixels` a picture is downscaled (or refused, per the settings), so what is kept and segmented is bounded.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from fastapi import Request

from samflow.engine.types import Image
from samflow.serve.errors import ApiError


async def read_upload(request: Request) -> bytes:
    """The uploaded file's bytes: the `file` field of a multipart form, or else the raw request body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "bad_upload", "a multipart upload needs the image in a file field named 'file'")
            data = await upload.read()
    else:
        chunks = [chunk async for chunk in request.stream()]
        data = b"".join(chunks)
    if not data:
        raise ApiError(400, "empty_upload", "the upload is empty: send the image file as the request body "
                                            "(or as the 'file' field of a multipart form)")
    return data


def decode_image(data: bytes, max_side: int, max_pixels: int | None = None, oversize: str = "downscale"
                 ) -> tuple[Image, tuple[int, int]]:
    """RGB pixels of an image file's bytes, oriented as its EXIF says (as browsers show it), and the (width,
    height) of the picture as uploaded.

    Over `max_pixels` (width x height) the picture is downscaled to fit (a JPEG decoded at a reduced scale
    directly), or with `oversize="refuse"` refused. ApiError 413 `image_too_large` when a side exceeds `max_side`
    (known from the header, before anything is decoded); 422 `bad_image` when it is not an image.
    """
    from PIL import Image as PILImage
    from PIL import ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as picture:
                width, height = picture.size  # from the header: nothing decoded yet
                if max(width, height) > max_side:
                    raise ApiError(413, "image_too_large", f"the image is {width}x{height}; this service takes at "
                                                           f"most {max_side} pixels per side")
                if width == 0 or height == 0:
                    raise ApiError(422, "bad_image", f"the image is empty ({width}x{height})")
                target = None
                if max_pixels is not None and width * height > max_pixels:
                    if oversize == "refuse":
                        raise ApiError(413, "image_too_large", f"the image is {width}x{height} "
                                                               f"({width * height} pixels); this service takes at "
                                                               f"most {max_pixels} pixels")
                    target = fit(width, height, max_pixels)
                    picture.draft("RGB", target)  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is enough
                picture.load()
                ImageOps.exif_transpose(picture, in_place=True)  # no copy of the full picture (nor below, for RGB)
                oriented = picture if picture.mode == "RGB" else picture.convert("RGB")
                if target is not None:
                    w, h = oriented.size
                    oriented = oriented.resize(fit(w, h, max_pixels), PILImage.Resampling.LANCZOS, reducing_gap=2.0)
                pixels = np.array(oriented)  # a copy: `picture` is closed when this block ends
    except ApiError:
        raise
    except Exception as exc:  # PIL's decoders raise many types (OSError, SyntaxError, EOFError, struct.error...)
        kind = "not a recognised image format" if "cannot identify" in str(exc) else str(exc)
        raise ApiError(422, "bad_image", f"cannot read the upload as an image: {kind}") from exc
    return Image(np.ascontiguousarray(pixels)), (width, height)


def fit(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest size of the same aspect ratio (within rounding) with at most `max_pixels` pixels."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    while w * h > max_pixels:
        w, h = max(1, w - 1), max(1, h - (1 if h > w else 0))
    return w, h

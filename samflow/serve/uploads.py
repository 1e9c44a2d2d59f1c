"""Reading an uploaded image: the bytes (a raw body or a multipart `file` field), then pixels within limits.

The size limit itself is enforced while the body streams in (see limits.py); the image's dimensions are checked
from its header before any pixel is decoded, so a small file that would decode to a huge picture is refused too.
"""

from __future__ import annotations

import io
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


def decode_image(data: bytes, max_side: int) -> Image:
    """RGB pixels of an image file's bytes, oriented as its EXIF says (as browsers show it).

    ApiError 413 `image_too_large` when a side exceeds `max_side`; 422 `bad_image` when it is not an image.
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
                pixels = np.asarray(ImageOps.exif_transpose(picture).convert("RGB"))
    except ApiError:
        raise
    except Exception as exc:  # PIL's decoders raise many types (OSError, SyntaxError, EOFError, struct.error...)
        kind = "not a recognised image format" if "cannot identify" in str(exc) else str(exc)
        raise ApiError(422, "bad_image", f"cannot read the upload as an image: {kind}") from exc
    return Image(np.ascontiguousarray(pixels))

"""Helpers of the service's hostile-input tests (tests/serve/)."""

from __future__ import annotations

import numpy as np
from serve_testing import png_bytes

BASE = "http://127.0.0.1"


def upload(client, data: bytes) -> str:
    response = client.post("/api/images", content=data, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code and body["message"], body
    return body["message"]


def flat_png(width: int, height: int) -> bytes:
    """A PNG of one colour: a few KB on disk however many pixels it decodes to."""
    return png_bytes(np.full((height, width, 3), 90, np.uint8))

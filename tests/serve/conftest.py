"""Fixtures of the service's hostile-input tests: one segmenter for the module, apps built per settings, driven
in-process (Starlette's TestClient) as http://127.0.0.1, and small PNG pictures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from hostile_testing import BASE  # noqa: E402
from serve_testing import make_segmenter, png_bytes  # noqa: E402

from samflow.data.synthetic import render_scene  # noqa: E402
from samflow.serve import ServiceSettings  # noqa: E402


@pytest.fixture(scope="module")
def segmenter():
    return make_segmenter()


@pytest.fixture(scope="module")
def scene_png() -> bytes:
    return png_bytes(render_scene(31, size=256).image)


@pytest.fixture(scope="module")
def make_client(segmenter):
    """`with make_client(**settings) as client:` a TestClient on a fresh app (the module's segmenter)."""
    from fastapi.testclient import TestClient

    from samflow.serve import create_app

    @contextmanager
    def factory(base_url: str = BASE, **settings) -> Iterator[TestClient]:
        app = create_app(ServiceSettings(**settings), segmenter=segmenter)
        with TestClient(app, base_url=base_url) as client:
            client.app_state = app.state
            yield client

    return factory

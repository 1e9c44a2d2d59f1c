"""Fixtures of the node tests: an ItemContext to call nodes directly."""

from __future__ import annotations

import pytest

from samflow.engine.cache import EmbeddingCache
from samflow.engine.context import ItemContext
from samflow.engine.registry import load_node_types
from samflow.pool import ModelPool


@pytest.fixture(scope="session", autouse=True)
def node_types_loaded():
    load_node_types()  # makes samflow.nodes importable from a source checkout too


@pytest.fixture
def ctx(tmp_path):
    return ItemContext("item", tmp_path, ModelPool(), EmbeddingCache(max_bytes=1 << 26))

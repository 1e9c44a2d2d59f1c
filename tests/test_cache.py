"""The embedding cache: content keys (never a constant fallback), LRU within a byte budget, the disk tier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samflow.engine.cache import EmbeddingCache, content_key
from samflow.engine.types import Image, ImageEmbedding, Masks
from samflow.errors import InputError


def embedding(seed: int, size: int = 4) -> dict:
    torch.manual_seed(seed)
    return {"embedding": ImageEmbedding(torch.randn(1, 8, size, size), (30, 40), (96, 128), "model", f"img{seed}")}


def test_content_key_hashes_content():
    a = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert content_key("m", a) == content_key("m", a.copy())
    assert content_key("m", a) != content_key("m", a.astype(np.int16))  # dtype matters
    assert content_key("m", a) != content_key("m", a.reshape(3, 2, 2))  # shape matters
    assert content_key("ab", "c") != content_key("a", "bc")
    assert content_key(Image(a)) == content_key(Image(a.copy()))
    assert content_key(torch.ones(2, dtype=torch.bfloat16)) != content_key(torch.ones(2))
    assert content_key({"b": 1, "a": [1, 2]}) == content_key({"a": [1, 2], "b": 1})


@pytest.mark.parametrize("value", [object(), {1, 2}, lambda: 0])
def test_content_key_refuses_what_it_cannot_hash(value):
    with pytest.raises(InputError, match="cannot build a cache key"):
        content_key("model", value)


def test_keys_must_be_digests():
    with pytest.raises(InputError, match="64 hex"):
        EmbeddingCache(max_bytes=1 << 20).put("image.png", embedding(0))


def test_lru_within_budget():
    one = embedding(0)["embedding"].nbytes
    cache = EmbeddingCache(max_bytes=2 * one)
    keys = [content_key(i) for i in range(3)]
    cache.put(keys[0], embedding(0))
    cache.put(keys[1], embedding(1))
    assert cache.get(keys[0]) is not None  # 0 is now the most recent
    cache.put(keys[2], embedding(2))  # evicts 1, the least recently used
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is not None and cache.get(keys[2]) is not None
    assert cache.nbytes == 2 * one and cache.stats.evictions == 1
    cache.put(content_key("big"), embedding(3, size=16))  # larger than the budget: not kept
    assert content_key("big") not in cache and cache.nbytes <= 2 * one


def test_memory_hits_are_the_same_object():
    cache = EmbeddingCache(max_bytes=1 << 20)
    entry = embedding(0)
    cache.put(content_key("k"), entry)
    assert cache.get(content_key("k"))["embedding"] is entry["embedding"]


def test_default_budget_is_sized_on_first_put():
    cache = EmbeddingCache()
    cache.put(content_key("k"), embedding(0))
    assert cache.max_bytes is not None and 0 < cache.max_bytes <= 4 << 30


def test_disk_tier_survives_a_new_cache(tmp_path):
    key = content_key("img", "model")
    entry = embedding(5)
    EmbeddingCache(max_bytes=1 << 20, disk_dir=tmp_path).put(key, entry)
    assert (tmp_path / f"{key}.safetensors").is_file() and not list(tmp_path.glob(".*tmp"))
    fresh = EmbeddingCache(max_bytes=1 << 20, disk_dir=tmp_path)
    loaded = fresh.get(key)["embedding"]
    assert torch.equal(loaded.features, entry["embedding"].features)
    assert (loaded.original_size, loaded.input_size, loaded.image_hash) == ((30, 40), (96, 128), "img5")
    assert fresh.stats.disk_hits == 1 and fresh.get(key) is not None and fresh.stats.hits == 1


def test_damaged_disk_entry_is_a_miss(tmp_path):
    key = content_key("x")
    (tmp_path / f"{key}.safetensors").write_bytes(b"garbage")
    assert EmbeddingCache(max_bytes=1 << 20, disk_dir=tmp_path).get(key) is None


def test_payloads_without_disk_form_stay_in_memory(tmp_path):
    cache = EmbeddingCache(max_bytes=1 << 20, disk_dir=tmp_path)
    cache.put(content_key("m"), {"masks": Masks(np.zeros((1, 1, 2, 2), bool))})
    assert cache.get(content_key("m")) is not None and not list(tmp_path.iterdir())

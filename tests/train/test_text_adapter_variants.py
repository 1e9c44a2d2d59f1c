"""recipes/text_adapter_variants.py: variants named on the command line become typed recipe settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("text_adapter_variants", Path("recipes/text_adapter_variants.py"))
variants = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(variants)


def test_a_variant_reads_as_typed_settings():
    name, settings = variants.parse_variant("conv3_wide:key_layers=3,key_channels=128,text_mix=0.5")
    assert name == "conv3_wide"
    assert settings == {"key_layers": 3, "key_channels": 128, "text_mix": 0.5}
    assert variants.parse_variant("base") == ("base", {})


def test_a_bad_variant_name_is_refused():
    with pytest.raises(SystemExit, match="plain NAME"):
        variants.parse_variant("../x:key_layers=1")

"""`samflow train` for the text prompt adapter: a few steps on a few scenes write an adapter that loads, with the
options the shipped recipe uses (conv context keys, caption mixing)."""

from __future__ import annotations

from text_testing import needs_shipped_text

from samflow.models.text.adapter import load_adapter
from samflow.train.text_adapter import TextAdapterConfig, train_text_adapter


@needs_shipped_text
def test_a_short_adapter_run_writes_an_adapter_that_loads(tmp_path):
    out = tmp_path / "adapter.safetensors"
    config = TextAdapterConfig(num_scenes=3, eval_scenes=2, heatmap_steps=3, heatmap_batch=8, steps=3, batch_size=4,
                               key_layers=1, key_channels=8, text_mix=0.5, point_prob=1.0, num_threads=2,
                               out=str(out))
    figures = train_text_adapter(config)
    assert figures["steps"] == 3 and figures["objects"] > 0
    for name in ("text_miou", "image_miou", "text_click_miou", "text_pointing"):
        assert 0.0 <= figures[name] <= 1.0, figures
    adapter = load_adapter(out)
    assert adapter.config.key_layers == 1 and adapter.config.key_channels == 8
    assert adapter.text_shift.abs().sum() > 0  # the modality gap was measured

"""A few training steps on generated scenes: the loss falls, a checkpoint is written, and a rerun resumes exactly."""

from __future__ import annotations

import pytest
import torch

from samflow.errors import InputError
from samflow.models.sam import SamConfig, build_sam, read_state_dict
from samflow.train import TrainConfig, load_train_config, train
from samflow.train.loop import STATE_NAME, WEIGHTS_NAME, lr_factor

# A very small SAM at 64 px, so a step takes milliseconds.
MODEL = dict(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
             image_size=64, window_size=2, prompt_embed_dim=32, decoder_mlp_dim=64, iou_head_hidden_dim=32)


def _config(tmp_path, **changes) -> TrainConfig:
    fields = dict(model=MODEL, out_dir=str(tmp_path / "run"), data={"kind": "synthetic", "seed": 3, "num_scenes": 2,
                  "scene_size": 64}, steps=12, images_per_batch=2, objects_per_image=2, rounds=2, lr=3e-3,
                  warmup_steps=2, log_every=1, num_threads=1)
    fields.update(changes)
    return TrainConfig(**fields)


def test_loss_falls_checkpoint_written_and_resume_is_exact(tmp_path):
    config = _config(tmp_path)
    first = train(config, progress=False, max_steps=8)
    assert first.step == 8 and not first.finished
    assert sum(first.losses[-2:]) < sum(first.losses[:2])
    out = config.resolved_out_dir()
    assert (out / WEIGHTS_NAME).is_file() and (out / STATE_NAME).is_file()
    state, meta = read_state_dict(out / WEIGHTS_NAME)
    assert meta["samflow_train_step"] == "8" and "samflow_config" in meta
    assert build_sam(checkpoint=out / WEIGHTS_NAME).config.image_size == 64  # the config travels with the weights

    resumed = train(config, progress=False)
    assert resumed.finished and resumed.step == 12 and len(resumed.losses) == 4

    # One uninterrupted run ends with the same weights: data, clicks and optimizer state all resume exactly.
    straight = train(_config(tmp_path / "b"), progress=False)
    a, _ = read_state_dict(resumed.checkpoint)
    b, _ = read_state_dict(straight.checkpoint)
    assert straight.losses[8:] == pytest.approx(resumed.losses, rel=1e-4)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_frozen_encoder_and_export(tmp_path):
    config = _config(tmp_path, steps=2, freeze_image_encoder=True, export=str(tmp_path / "shipped.safetensors"))
    before = build_sam(MODEL)
    torch.manual_seed(config.seed)
    result = train(config, progress=False)
    assert result.finished
    exported, _ = read_state_dict(tmp_path / "shipped.safetensors")
    assert exported["mask_decoder.iou_token.weight"].dtype == torch.float16
    # Starting from a checkpoint with a frozen encoder keeps the encoder bit-identical.
    tuned = train(_config(tmp_path / "tune", steps=2, freeze_image_encoder=True, init_checkpoint=str(
        result.checkpoint)), progress=False)
    start, _ = read_state_dict(result.checkpoint)
    end, _ = read_state_dict(tuned.checkpoint)
    assert all(torch.equal(start[k], end[k]) for k in start if k.startswith("image_encoder."))
    assert not all(torch.equal(start[k], end[k]) for k in start if k.startswith("mask_decoder."))
    del before


def test_schedule_and_config_errors(tmp_path):
    config = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, config) == pytest.approx(0.1)
    assert lr_factor(9, config) == pytest.approx(1.0)
    assert lr_factor(100, config) == pytest.approx(0.1)
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: -1\n")
    with pytest.raises(InputError, match="steps"):
        load_train_config(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")


def test_recipe_file_is_valid():
    config = load_train_config("recipes/tiny.yaml")
    assert config.model["patch_size"] == 16 and config.data.kind == "synthetic" and config.data.seed == 1
    stages = [load_train_config(f"recipes/tiny_stage{i}.yaml") for i in (3, 4, 5, 6)]
    for before, after in zip(stages, stages[1:]):  # each stage starts from the one before
        assert after.init_checkpoint == f"{before.out_dir}/final.safetensors"
    for stage in stages:
        assert SamConfig(**stage.model) == SamConfig.preset("tiny")
    # Only the last stage writes the shipped weights.
    assert [s.export for s in stages] == [None, None, None, "samflow/weights/sam_tiny.safetensors"]


def test_data_workers_prepare_the_same_batches(tmp_path):
    """Batches rendered ahead in worker processes are the ones the training process would render itself."""
    inline = train(_config(tmp_path / "a", steps=3), progress=False)
    workers = train(_config(tmp_path / "b", steps=3, data_workers=2), progress=False)
    assert workers.losses == pytest.approx(inline.losses, rel=1e-5)


def test_bf16_autocast_trains(tmp_path):
    """The mixed-precision path a GPU takes (bf16 autocast), run on the CPU: finite losses close to fp32's."""
    fp32 = train(_config(tmp_path / "a", steps=2, amp="off", device="cpu"), progress=False)
    bf16 = train(_config(tmp_path / "b", steps=2, amp="bf16", device="cpu"), progress=False)
    assert all(torch.isfinite(torch.tensor(bf16.losses)))
    assert bf16.losses[0] == pytest.approx(fp32.losses[0], rel=0.05)


def test_yaml_off_means_amp_off(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("amp: off\n")  # YAML 1.1 reads a bare `off` as false
    assert load_train_config(recipe).amp == "off"

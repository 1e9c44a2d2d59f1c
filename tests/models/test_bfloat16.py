"""bfloat16 inference (the encoder's products in bf16, its residual stream and norms in fp32) and dtype="auto".

fp32 exactness is the parity tests' job (tests/models/test_sam_parity.py); here: bf16 stays close to fp32 (the
embedding, and the masks of the shipped `tiny` on held-out synthetic scenes), "auto" picks bf16 only where the CPU
has native bf16 and it measured faster, and the CPU's separable mask resize equals the official interpolation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samflow import devices
from samflow.data.synthetic import render_scene
from samflow.models.sam import build_sam
from samflow.models.sam.build import SHIPPED_WEIGHTS
from samflow.models.sam.sam import _resize_separable
from samflow.ops.metrics import mask_iou
from samflow.predict.predictor import SamPredictor
from tests.conftest import SMALL, make_image

# Seeds never used in training (training: 1; evaluations: 1000, 2024).
HELD_OUT_SEEDS = range(900_000, 900_003)
# Measured 0.997 (clicks) / 0.998 (boxes) mean IoU with fp32 on 12 such scenes; the issue asks 0.97.
MASK_IOU_FLOOR = 0.97
EMBEDDING_RTOL = 2e-2  # max |bf16 - fp32| / max |fp32| (measured 9e-3 for random vit_b weights)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


# ------------------------------------------------------------------------------------------------ dtype names


def test_dtype_names():
    assert devices.resolve_dtype(None) == "float32"
    assert devices.resolve_dtype("bfloat16") == devices.resolve_dtype(torch.bfloat16) == "bfloat16"
    assert devices.resolve_dtype(torch.float16, "cuda") == "float16"
    with pytest.raises(ValueError, match="dtype must be one of"):
        devices.resolve_dtype("int8")


@pytest.mark.parametrize(("flags", "speedup", "expected"), [
    ((), 10.0, "float32"),  # no native bf16 (AVX2-only): emulated bf16 is slower, never measured
    (("amx_bf16", "avx512_bf16"), 5.0, "bfloat16"),
    (("avx512_bf16",), 1.2, "float32"),  # native, but not faster enough here
])
def test_auto_on_the_cpu_needs_the_flags_and_the_speed(monkeypatch, flags, speedup, expected):
    measured = []

    def speed() -> float:
        measured.append(True)
        return speedup

    monkeypatch.setattr(devices, "cpu_bf16_flags", lambda: flags)
    monkeypatch.setattr(devices, "cpu_bf16_speedup", speed)
    assert devices.resolve_dtype("auto", "cpu") == expected
    assert bool(measured) == bool(flags)


def test_auto_elsewhere(monkeypatch):
    monkeypatch.setattr(devices, "cpu_bf16_flags", lambda: ("amx_bf16",))
    monkeypatch.setattr(devices, "cpu_bf16_speedup", lambda: 5.0)
    assert devices.resolve_dtype("auto", "mps") == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_dtype("auto", "cuda:1") == "float32"


def test_the_real_probe_is_cached_and_sane():
    flags = devices.cpu_bf16_flags()
    assert set(flags) <= set(devices.BF16_CPU_FLAGS)
    if flags:
        assert devices.cpu_bf16_speedup() > 0 and devices.cpu_bf16_speedup() == devices.cpu_bf16_speedup()


def test_auto_reaches_build_sam_the_segmenter_and_the_node(monkeypatch):
    from samflow.nodes.sam import SamEncoder

    from samflow.engine.cache import EmbeddingCache
    from samflow.engine.context import ItemContext
    from samflow.pool import ModelPool
    from samflow.predict.segmenter import Segmenter

    monkeypatch.setattr(devices, "bf16_is_fast", lambda device: True)
    assert build_sam(SMALL, dtype="auto").dtype == torch.bfloat16
    pool = ModelPool()
    segmenter = Segmenter(models=pool)
    model = segmenter.model(SMALL, device="cpu", dtype="auto")
    assert model.dtype == torch.bfloat16
    assert segmenter.model(SMALL, device="cpu", dtype="bfloat16") is model  # one key for both names
    ctx = ItemContext("item", ".", ModelPool(), EmbeddingCache())
    assert SamEncoder({"model": "tiny", "device": "cpu", "dtype": "auto"}).model(ctx).dtype == torch.bfloat16
    monkeypatch.setattr(devices, "bf16_is_fast", lambda device: False)
    assert build_sam(SMALL, dtype="auto").dtype == torch.float32


# ------------------------------------------------------------------------------------------------ bf16 numbers


def test_bf16_embedding_close_to_fp32(twins):
    ours = twins[0]
    bf16 = build_sam(SMALL, dtype="bfloat16")
    bf16.load_state_dict(ours.state_dict())
    image = make_image(200, 256, seed=7)
    with torch.no_grad():
        ref = SamPredictor(ours).encode(image).features
        got = SamPredictor(bf16).encode(image).features
    assert got.dtype == torch.bfloat16
    assert rel_err(got, ref) < EMBEDDING_RTOL


@pytest.mark.skipif(not SHIPPED_WEIGHTS["tiny"].is_file(), reason="shipped tiny weights not present")
def test_bf16_tiny_masks_agree_with_fp32_on_held_out_scenes():
    fp32, bf16 = build_sam("tiny"), build_sam("tiny", dtype="bfloat16")
    clicks, boxes, embeddings = [], [], []
    for seed in HELD_OUT_SEEDS:
        scene = render_scene(seed, 256)
        points = np.array([[ann["point"]] for ann in scene.annotations])  # (N, 1, 2): one batched call each
        xywh = np.array([ann["bbox"] for ann in scene.annotations])
        box = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:] - 1], axis=1)
        results = []
        for model in (fp32, bf16):
            predictor = SamPredictor(model)
            predictor.set_image(scene.image)
            results.append((predictor.features,
                            predictor.predict(point_coords=points, point_labels=np.ones(points.shape[:2])),
                            predictor.predict(box=box, multimask_output=False)[0]))
        (f1, (m1, s1, _), b1), (f2, (m2, _, _), b2) = results
        embeddings.append(rel_err(f2, f1))
        best = np.argmax(s1, axis=1)
        rows = np.arange(len(best))
        clicks.extend(mask_iou(m1[rows, best], m2[rows, best]).tolist())
        boxes.extend(mask_iou(b1[:, 0], b2[:, 0]).tolist())
    assert len(clicks) >= 12
    assert max(embeddings) < EMBEDDING_RTOL
    assert np.mean(clicks) >= MASK_IOU_FLOOR, clicks
    assert np.mean(boxes) >= MASK_IOU_FLOOR, boxes


# ------------------------------------------------------------------------------------------------ mask resize


@pytest.mark.parametrize(("low", "size", "input_size", "original_size"), [
    (256, 1024, (684, 1024), (534, 800)),  # landscape
    (256, 1024, (1024, 683), (800, 534)),  # portrait
    (128, 256, (192, 256), (768, 1024)),  # tiny, upscaled
    (256, 1024, (1024, 1024), (1500, 1500)),
    (64, 256, (180, 256), (7, 10)),  # strong downscale
])
def test_separable_resize_equals_the_official_interpolation(low, size, input_size, original_size):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, low, low) * 8
    official = F.interpolate(logits, (size, size), mode="bilinear", align_corners=False)
    official = F.interpolate(official[..., : input_size[0], : input_size[1]], original_size, mode="bilinear",
                             align_corners=False)
    with torch.no_grad():
        ours = _resize_separable(logits, size, input_size, original_size)
    assert ours.shape == official.shape
    assert rel_err(ours, official) < 1e-6
    differ = (ours > 0) != (official > 0)
    assert not (differ & (official.abs() > 1e-4)).any()

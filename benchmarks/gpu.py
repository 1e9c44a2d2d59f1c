"""GPU speed: samflow vs the official segment-anything on a CUDA device, same weights, one process.

    python benchmarks/gpu.py [--model vit_b] [--prompts 64] [--repeats 10]

Times (CUDA events, median of `repeats` after warm-up) the image encoder at fp32 and under bf16 autocast, and the
mask decoder for `prompts` boxes in one batched call on one embedding, for both implementations; prints the ratio
and the largest relative difference of their outputs. Also the bf16 matrix-product rate (the chip's ceiling as
torch sees it) and the shipped `tiny` model's image + 64-prompt cost. Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from _common import twin_models

from samflow.models.sam import common

ONE_PIECE = common.cache_blocked  # the library's own choice: one piece on a GPU
DEVICE = "cuda"
REPO = Path(__file__).resolve().parents[1]


def cpu_layout(on: bool) -> None:
    """Force the CPU's cache-sized pieces (the layout before GPUs had their own), or restore the default."""
    common.cache_blocked = (lambda t: True) if on else ONE_PIECE


def cuda_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of `fn` on the current CUDA stream (wall clock with `--device cpu`, a smoke test)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if DEVICE != "cuda":
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def matmul_tflops(n: int = 8192) -> float:
    a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    return 2 * n**3 / cuda_ms(lambda: a @ b, 10) / 1e9


PRECISIONS = (("fp32", nullcontext), ("bf16", lambda: torch.autocast(DEVICE, dtype=torch.bfloat16)))


def _main_output(out):
    return out[0] if isinstance(out, tuple) else out  # the decoder returns (masks, iou)


def compare(label: str, run, ours, ref, repeats: int) -> tuple[float, float, float, float]:
    """ms of `run(ref)` and `run(ours)`, their outputs' max relative difference, and ms of `run(ours)` in the CPU
    layout: (official, samflow, difference, samflow in the CPU layout), all at precision `label`."""
    ctx = dict(PRECISIONS)[label]
    with torch.inference_mode(), ctx():
        t_ref, t_ours = cuda_ms(lambda: run(ref), repeats), cuda_ms(lambda: run(ours), repeats)
        diff = rel_diff(_main_output(run(ours)), _main_output(run(ref)))
        cpu_layout(True)
        t_cpu = cuda_ms(lambda: run(ours), repeats)
        cpu_layout(False)
    return t_ref, t_ours, diff, t_cpu


def bench_encoder(ours, ref, size: int, repeats: int) -> None:
    x = torch.randn(1, 3, size, size, device=DEVICE)
    for label, _ in PRECISIONS:
        t_ref, t_ours, diff, t_cpu = compare(label, lambda model: model.image_encoder(x), ours, ref, repeats)
        print(f"encoder {label}   official {t_ref:8.2f} ms   samflow {t_ours:8.2f} ms   x{t_ref / t_ours:5.2f}   "
              f"max|diff|/max|ref| {diff:.1e}   (CPU layout {t_cpu:8.2f} ms)")


def bench_decoder(ours, ref, prompts: int, repeats: int) -> None:
    size = ours.config.image_size
    grid = ours.config.embedding_size
    torch.manual_seed(0)
    emb = torch.randn(1, ours.config.prompt_embed_dim, grid, grid, device=DEVICE)
    xy0 = torch.rand(prompts, 2, device=DEVICE) * size * 0.5
    boxes = torch.cat([xy0, xy0 + torch.rand(prompts, 2, device=DEVICE) * size * 0.5], dim=1)

    def decode(model):
        sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
        return model.mask_decoder(emb, model.prompt_encoder.get_dense_pe(), sparse, dense, True)

    for label, _ in PRECISIONS:
        t_ref, t_ours, diff, t_cpu = compare(label, decode, ours, ref, repeats)
        print(f"decoder {label}   {prompts} boxes: official {t_ref:7.2f} ms   samflow {t_ours:7.2f} ms "
              f"({t_ours / prompts * 1e3:6.1f} us/prompt)   x{t_ref / t_ours:5.2f}   max|diff|/max|ref| {diff:.1e}"
              f"   (CPU layout {t_cpu:7.2f} ms)")


def bench_tiny(prompts: int, repeats: int) -> None:
    from samflow.models.sam.build import build_sam

    model = build_sam("tiny").to(DEVICE).eval()
    size = model.config.image_size
    x = torch.randn(1, 3, size, size, device=DEVICE)
    boxes = torch.tensor([[16.0, 16.0, 128.0, 128.0]], device=DEVICE).repeat(prompts, 1)

    def run():
        emb = model.image_encoder(x)
        sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
        return model.mask_decoder(emb, model.prompt_encoder.get_dense_pe(), sparse, dense, True)

    with torch.inference_mode():
        t = cuda_ms(run, repeats)
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            t16 = cuda_ms(run, repeats)
    print(f"tiny    one {size}px image + {prompts} boxes: fp32 {t:6.2f} ms   bf16 {t16:6.2f} ms")


def bench_train_step(repeats: int, images: int | None = None) -> None:
    """One training step of `tiny` as recipes/tiny_stage4.yaml runs it (32 scenes x 4 objects, bf16 autocast)."""
    from samflow.train.config import load_train_config
    from samflow.train.data import BatchSampler, SceneSource
    from samflow.train.loop import _autocast, build_model, interactive_loss

    config = load_train_config(REPO / "recipes" / "tiny_stage4.yaml", images_per_batch=images,
                               init_checkpoint=str(REPO / "samflow" / "weights" / "sam_tiny.safetensors"))
    device = torch.device(DEVICE)
    model = build_model(config, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    sampler = BatchSampler(SceneSource(config.data), config.images_per_batch, config.objects_per_image,
                           model.config.image_size, config.seed)
    batches = [sampler.batch(i) for i in range(4)]
    autocast, _ = _autocast(device, config.amp)
    calls = iter(range(10**9))

    def step(rounds: int) -> None:
        images, gt = batches[next(calls) % len(batches)]
        with autocast:
            loss, _ = interactive_loss(model, images, gt, config, None, rounds)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for layout in (False, True):
        cpu_layout(layout)
        t1, t3 = cuda_ms(lambda: step(1), repeats), cuda_ms(lambda: step(config.rounds), repeats)
        name = "CPU layout" if layout else "samflow   "
        print(f"train   tiny step, {config.images_per_batch}x{config.objects_per_image} prompts, {name}: "
              f"one round {t1:6.1f} ms   {config.rounds} rounds {t3:6.1f} ms")
    cpu_layout(False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda", help="cuda; cpu only checks that the script runs")
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--train-images", type=int, default=None, help="scenes per training step (recipe's)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA device")
    # fp32 means fp32 here: no TF32 on either side, so the difference column is a parity check.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    print(f"device {name}  torch {torch.__version__}")
    n = args.matmul_size
    print(f"bf16 matmul {n}^3: {matmul_tflops(n):.1f} TFLOP/s")
    ours, ref = twin_models(args.model)
    ours, ref = ours.to(DEVICE).eval(), ref.to(DEVICE).eval()
    print(f"model {args.model}")
    bench_encoder(ours, ref, ours.config.image_size, args.repeats)
    bench_decoder(ours, ref, args.prompts, args.repeats)
    del ours, ref
    bench_tiny(args.prompts, args.repeats)
    bench_train_step(args.repeats, args.train_images)


if __name__ == "__main__":
    main()

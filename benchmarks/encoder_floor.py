"""The matmul floor of the image encoder on this machine: every GEMM of the encoder at its exact shape, timed alone.

    python benchmarks/encoder_floor.py [--model vit_b] [--threads N] [--repeats 3]

The sum is what the encoder cannot go below without doing less arithmetic (layer norms, GELU, softmax, the rel-pos
terms and data movement come on top). Prints GFLOP, the achieved GFLOP/s and the floor in seconds, to compare with
`benchmarks/encoder.py`.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from samflow.models.sam import SamConfig


def gemms(config: SamConfig) -> list[tuple[str, int, tuple[int, int, int], int]]:
    """(what, count, (m, k, n), batch) for every matrix product of one image through the encoder."""
    grid = config.image_size // config.patch_size
    tokens = grid * grid
    d, heads = config.encoder_embed_dim, config.encoder_num_heads
    hd = d // heads
    hidden = int(d * config.encoder_mlp_ratio)
    win = config.window_size
    windows = math.ceil(grid / win) ** 2 if win else 0
    n_global = len(config.encoder_global_attn_indexes)
    n_window = config.encoder_depth - n_global
    depth = config.encoder_depth
    out = [
        ("patch embed", 1, (tokens, 3 * config.patch_size**2, d), 1),
        ("qkv", depth, (tokens, d, 3 * d), 1),
        ("proj", depth, (tokens, d, d), 1),
        ("mlp fc1", depth, (tokens, d, hidden), 1),
        ("mlp fc2", depth, (tokens, hidden, d), 1),
        ("global q@k", n_global, (tokens, hd, tokens), heads),
        ("global attn@v", n_global, (tokens, tokens, hd), heads),
        ("neck 1x1", 1, (tokens, d, config.prompt_embed_dim), 1),
        ("neck 3x3", 1, (tokens, 9 * config.prompt_embed_dim, config.prompt_embed_dim), 1),
    ]
    if n_window:
        out += [
            ("window q@k", n_window, (win * win, hd, win * win), heads * windows),
            ("window attn@v", n_window, (win * win, win * win, hd), heads * windows),
        ]
    return out


def time_gemm(m: int, k: int, n: int, batch: int, repeats: int) -> float:
    a, b = torch.randn(batch, m, k), torch.randn(batch, k, n)
    out = torch.empty(batch, m, n)
    torch.bmm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.bmm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return best


def floor_seconds(config: SamConfig, repeats: int = 3) -> float:
    """Sum over the encoder's GEMMs of the best time of each."""
    return sum(count * time_gemm(m, k, n, batch, repeats) for _, count, (m, k, n), batch in gemms(config))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = SamConfig.preset(args.model)
    total_s = total_flop = 0.0
    print(f"model {args.model}  threads {torch.get_num_threads()}")
    for what, count, (m, k, n), batch in gemms(config):
        seconds = count * time_gemm(m, k, n, batch, args.repeats)
        flop = count * 2.0 * batch * m * k * n
        total_s += seconds
        total_flop += flop
        print(f"  {what:14s} x{count:<3d} {flop / 1e9:8.1f} GFLOP  {seconds:7.3f} s  {flop / seconds / 1e9:6.1f} GFLOP/s")
    print(f"floor     {total_s:7.2f} s/image   {total_flop / 1e12:.3f} TFLOP at {total_flop / total_s / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()

"""The one default device (the caller's choice, else the first CUDA device when there is one, else the CPU), and
the one choice of compute dtype (`dtype="auto"`: bfloat16 where the device runs it faster, else float32)."""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")
# CPU features with native bfloat16 matrix arithmetic (Intel AMX, AVX512-BF16; Arm's BF16 extension).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
# bfloat16 is picked on a CPU only when its matmuls measured at least this much faster than fp32's.
BF16_MIN_SPEEDUP = 1.5


def resolve_device(device: Any = None) -> str:
    """`device` as a string (`"cpu"`, `"cuda:1"`, a torch.device); None or "auto" -> "cuda" when available, else "cpu"."""
    if device is not None and str(device) != "auto":
        return str(device)
    import torch  # here, so that importing this module stays cheap

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: Any = None, device: Any = None) -> str:
    """A dtype option as a name: None -> "float32"; "float32" / "float16" / "bfloat16" (or the torch dtypes) as
    given; "auto" -> "bfloat16" where `device` (see `resolve_device`) has fast bfloat16, else "float32".

    Fast bfloat16 means: a CUDA device that supports it; a CPU with native bfloat16 matrix instructions (AMX or
    AVX512-BF16, `cpu_bf16_flags`) on which a bfloat16 matmul also measured at least BF16_MIN_SPEEDUP times
    faster than fp32 (a few milliseconds, once per process). Elsewhere (an AVX2-only CPU, where bfloat16 is
    emulated and slower) "auto" stays float32.
    """
    if dtype is None:
        return "float32"
    name = str(dtype).removeprefix("torch.")
    if name == "auto":
        return "bfloat16" if bf16_is_fast(resolve_device(device)) else "float32"
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} or 'auto', not {dtype!r}")
    return name


def bf16_is_fast(device: str) -> bool:
    """Whether bfloat16 beats float32 on `device` ("cpu", "cuda", "cuda:1", ...)."""
    kind = device.split(":")[0]
    if kind == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind != "cpu":
        return False
    if not cpu_bf16_flags():
        return False
    speedup = cpu_bf16_speedup()
    log.info("bfloat16 matmul on this CPU: %.2fx fp32 (%s)", speedup, " ".join(cpu_bf16_flags()))
    return speedup >= BF16_MIN_SPEEDUP


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU's native-bfloat16 feature flags (from /proc/cpuinfo, else torch's own probes); empty if none."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags.update(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    if not flags:
        import torch

        probes = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
        flags = {flag for flag, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()}
    return tuple(f for f in BF16_CPU_FLAGS if f in flags)


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """How many times faster a bfloat16 matmul of encoder-like shape runs than fp32 on this CPU (measured once per
    process, best of a few runs of each: about 20 ms)."""
    import torch

    def best(dtype: torch.dtype) -> float:
        a = torch.randn(1024, 768).to(dtype)
        b = torch.randn(768, 768).to(dtype)
        out = torch.empty(1024, 768, dtype=dtype)
        torch.matmul(a, b, out=out)  # warm-up (kernel selection, first-touch)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            torch.matmul(a, b, out=out)
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.inference_mode():
        fp32, bf16 = best(torch.float32), best(torch.bfloat16)
        fp32 = min(fp32, best(torch.float32))  # interleaved, so a busy moment does not favour one side
    return fp32 / max(bf16, 1e-9)

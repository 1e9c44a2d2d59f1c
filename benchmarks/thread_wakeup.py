"""What an idle pause costs the next torch call: the intra-op threads' wake-up, measured on its own.

    python benchmarks/thread_wakeup.py [--threads 1,2] [--pauses 0,0.02,0.5] [--repeats 30]

A click arrives after the user has been idle, so the decoder's first parallel operation finds its worker threads
asleep. On a virtual machine, waking a worker whose core is idle can take milliseconds (the host must schedule
that virtual CPU again). This times three things in turn, each after the pause (`_common.interleaved`, as
onnx_anchor.py times its rows): a tiny matmul (7x256 @ 256x256: no real work, only the wake-up), a decoder-sized
one (4096x256 @ 256x256) and a pure-Python loop (the main thread alone, as a control). The per-click figures of benchmarks/onnx_anchor.py pause after every call, so both samflow and
onnxruntime pay this cost there.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import cpu_report, interleaved, load_average


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--pauses", default="0,0.02,0.5", help="seconds idle before each timed call")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(cpu_report())
    print(load_average())
    tiny, weight, big = torch.randn(7, 256), torch.randn(256, 256), torch.randn(4096, 256)
    rows = {"tiny matmul": lambda: tiny @ weight, "4096x256 matmul": lambda: big @ weight,
            "python loop": lambda: sum(range(10_000))}
    print(f"{'threads':>7} {'pause s':>8} " + " ".join(f"{name:>16}" for name in rows) + "   (median ms)")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for pause in (float(p) for p in args.pauses.split(",")):
            times = interleaved(rows, args.repeats, pause)
            print(f"{threads:>7} {pause:>8.3f} " + " ".join(f"{statistics.median(times[name]) * 1e3:>16.3f}"
                                                            for name in rows))
    print(load_average())


if __name__ == "__main__":
    main()

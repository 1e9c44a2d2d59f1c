"""Coverage-guided fuzzing of samflow's parsers with atheris, for long runs outside CI (the hypothesis tests beside
this file are the bounded, deterministic part that CI runs).

    pip install atheris
    python tests/fuzz/atheris_targets.py graph  -atheris_runs=200000            # the YAML graph reader
    python tests/fuzz/atheris_targets.py rle    -max_total_time=600             # COCO RLE decoding and measures
    python tests/fuzz/atheris_targets.py image  -max_len=4096 corpus/           # the image loader (a corpus folder)
    python tests/fuzz/atheris_targets.py prompts -atheris_runs=200000           # prompt parsing and the prompt rule

Arguments after the target name go to libFuzzer (-atheris_runs, -max_total_time, -max_len, a corpus folder...).
A finding is any exception other than samflow's own (InputError, GraphError and their subclasses): atheris stops
and writes the input as crash-<hash>; reproduce it with `python tests/fuzz/atheris_targets.py TARGET crash-<hash>`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from samflow.errors import GraphError, InputError

EXPECTED = (InputError, GraphError)


def graph(data: bytes) -> None:
    from samflow.engine.graph import Graph

    try:
        Graph.from_yaml(data.decode("utf-8", "replace"), source="<atheris>")
    except EXPECTED:
        pass


def rle(data: bytes) -> None:
    import atheris

    from samflow.ops import rle as ops

    fdp = atheris.FuzzedDataProvider(data)
    size = [fdp.ConsumeIntInRange(0, 1 << 12), fdp.ConsumeIntInRange(0, 1 << 12)]
    if fdp.ConsumeBool():
        counts = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)).decode("latin-1")
    else:
        counts = [fdp.ConsumeIntInRange(-(1 << 40), 1 << 40) for _ in range(fdp.ConsumeIntInRange(0, 16))]
    value = {"size": size, "counts": counts}
    for call in (ops.area, ops.bbox, ops.compressed_to_uncompressed, ops.uncompressed_to_compressed, ops.decode):
        try:
            call(value)
        except EXPECTED:
            pass


def image(data: bytes) -> None:
    from samflow.ops.image import load_image

    with tempfile.NamedTemporaryFile(suffix=".img", delete=False) as f:
        f.write(data)
    try:
        load_image(f.name)
    except EXPECTED:
        pass
    finally:
        os.unlink(f.name)


def prompts(data: bytes) -> None:
    from samflow.predict.prompts import Prompts

    try:
        value = json.loads(data.decode("utf-8", "replace"))
    except ValueError:
        return
    parts = value if isinstance(value, dict) else {"points": value}
    try:
        Prompts.build(parts.get("points"), parts.get("labels"), parts.get("boxes"), parts.get("text"),
                      parts.get("mask_input")).fit((480, 640))
    except EXPECTED:
        pass


TARGETS = {"graph": graph, "rle": rle, "image": image, "prompts": prompts}


def main() -> None:
    import atheris

    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv.pop(1)]
    import numpy  # noqa: F401  (the heavy libraries first, uninstrumented: coverage is samflow's and PyYAML's)
    import torch  # noqa: F401

    with atheris.instrument_imports(include=["samflow", "yaml"]):
        from samflow.engine.registry import load_node_types

        load_node_types()
        for module in ("samflow.engine.graph", "samflow.ops.rle", "samflow.ops.image", "samflow.predict.prompts"):
            __import__(module)
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

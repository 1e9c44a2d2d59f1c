"""int8 dynamic quantisation of an exported decoder, as the official export script offers it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from samflow.export.runtime import ExportError, require
from samflow.fileio import atomic_path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantiser logs a line per tensor, and advice, on the root logger: errors only while it runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_decoder(source: str | Path, target: str | Path) -> Path:
    """Write `target`: `source` with its weights quantised to uint8 and activations quantised dynamically
    (onnxruntime's quantize_dynamic with the official script's settings: per tensor, full range, QUInt8)."""
    quantization = require("onnxruntime.quantization", "int8 quantisation of the decoder")
    target = Path(target)
    with atomic_path(target) as tmp, _quiet_root_logger():
        try:
            quantization.quantize_dynamic(model_input=str(source), model_output=str(tmp), per_channel=False,
                                          reduce_range=False, weight_type=quantization.QuantType.QUInt8)
        except Exception as exc:  # onnxruntime raises plain exceptions for graphs it cannot quantise
            raise ExportError(f"could not quantise {source}: {exc}") from exc
    log.info("wrote %s (int8 dynamic quantisation of %s)", target, Path(source).name)
    return target

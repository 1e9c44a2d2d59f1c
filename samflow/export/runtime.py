"""The optional ONNX tools (onnx, onnxruntime): imported on first use with a clear error, and sessions on them."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from samflow.errors import SamflowError

INSTALL_HINT = 'pip install "samflow[onnx]"'


class ExportError(SamflowError):
    """A model cannot be exported to ONNX, or the tools the export needs are missing."""


def require(module: str, purpose: str = "ONNX export") -> ModuleType:
    """Import `module` (onnx, onnxruntime, onnxruntime.quantization) or raise ExportError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise ExportError(f"{purpose} needs the {top} package, which is not installed ({exc}): "
                          f"{INSTALL_HINT}") from None


def session(path: str | Path, purpose: str = "checking an ONNX export") -> Any:
    """An onnxruntime CPU InferenceSession on the model at `path`."""
    ort = require("onnxruntime", purpose)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the quantised graph's shape-inference notes are noise
    # No busy-waiting between runs: the checks alternate onnxruntime with torch, which would wait for the cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

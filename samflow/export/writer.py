"""A torch module to an ONNX file (the TorchScript-based exporter the official script uses), written atomically,
and the interface (names, dtypes, shapes) an ONNX file declares."""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from samflow.export.runtime import ExportError, require

log = logging.getLogger(__name__)

# Opsets the graphs are exported at: 13 is the oldest with every operator they use in its current form, 20 the
# newest the TorchScript-based exporter writes.
MIN_OPSET = 13
MAX_OPSET = 20
DEFAULT_OPSET = 17  # the official export script's default


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an ONNX graph: its name, numpy dtype name and shape (a str for a named dynamic axis,
    None for an unnamed one)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]

    def to_record(self) -> dict[str, object]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def check_opset(opset: int) -> int:
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset!r} is not supported: use an ONNX opset from {MIN_OPSET} to {MAX_OPSET} "
                          f"(default {DEFAULT_OPSET})")
    return opset


def write_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], path: str | Path, *, input_names: Sequence[str],
               output_names: Sequence[str], opset: int,
               dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
               fixed_output_dims: Mapping[str, Mapping[int, int]] | None = None) -> Path:
    """Trace `module` on `args` and write it to `path`; the file appears only when complete.

    fixed_output_dims declares sizes of outputs that the exporter's shape inference leaves unnamed (e.g. a
    resize's batch and channel axes), for a readable interface. Models over protobuf's 2 GiB limit (vit_h's
    encoder) keep their weights in one `<name>.data` file beside it.
    """
    onnx = require("onnx")
    check_opset(opset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")  # a folder: the exporter may write external weights beside
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        traced = staging / path.name
        extra = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        with warnings.catch_warnings(), torch.no_grad():
            # Tracing notes (constants for the model's fixed sizes) and the exporter's deprecation notice.
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(module, args, str(traced), export_params=True, opset_version=opset,
                                  do_constant_folding=True, input_names=list(input_names),
                                  output_names=list(output_names), dynamic_axes=dict(dynamic_axes or {}), **extra)
            except Exception as exc:
                raise ExportError(f"could not export {type(module).__name__} to ONNX: {exc}") from exc
        written = sorted(p.name for p in staging.iterdir())
        tmp = path.with_name(f".{path.name}.part")
        if written == [path.name] and not fixed_output_dims:
            os.replace(traced, tmp)
        else:
            model = onnx.load(str(traced))
            _fix_output_dims(model, fixed_output_dims or {})
            if written == [path.name]:
                onnx.save_model(model, str(tmp))
            else:  # external data, one file per tensor: gathered into one file next to the model
                onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=f"{path.name}.data")
        onnx.checker.check_model(str(tmp))
        os.replace(tmp, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        path.with_name(f".{path.name}.part").unlink(missing_ok=True)
    log.info("wrote %s", path)
    return path


def _fix_output_dims(model, dims: Mapping[str, Mapping[int, int]]) -> None:
    outputs = {v.name: v for v in model.graph.output}
    for name, sizes in dims.items():
        shape = outputs[name].type.tensor_type.shape
        for axis, size in sizes.items():
            shape.dim[axis].Clear()
            shape.dim[axis].dim_value = size


def interface(path: str | Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The (inputs, outputs) an ONNX file declares (initializers excluded)."""
    onnx = require("onnx")
    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}

    def spec(value) -> TensorSpec:
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        return TensorSpec(value.name, dtype, dims)

    inputs = tuple(spec(v) for v in model.graph.input if v.name not in initializers)
    return inputs, tuple(spec(v) for v in model.graph.output)

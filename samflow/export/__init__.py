"""Export of samflow's models to other runtimes: SAM to ONNX, with the official decoder interface.

`import samflow.export` loads torch and the model code; onnx and onnxruntime are imported only when a file is
written or checked (`pip install "samflow[onnx]"`).
"""

from samflow.export.checks import Agreement
from samflow.export.decoder import (
    BROWSER_DECODER_INPUTS,
    BROWSER_DECODER_OUTPUTS,
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    BrowserDecoder,
    BrowserFactoredDecoder,
    BrowserImageProducts,
    OnnxDecoder,
)
from samflow.export.encoder import ENCODER_INPUTS, ENCODER_OUTPUTS, OnnxEncoder
from samflow.export.onnx import (
    BrowserFactoredExport,
    DecoderExport,
    EncoderExport,
    OnnxExport,
    OnnxFile,
    QuantizedDecoder,
    export_browser_decoder,
    export_browser_factored,
    export_decoder,
    export_encoder,
    export_onnx,
)
from samflow.export.quantize import quantize_decoder
from samflow.export.runtime import INSTALL_HINT, ExportError
from samflow.export.writer import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, TensorSpec

__all__ = [
    "BROWSER_DECODER_INPUTS",
    "BROWSER_DECODER_OUTPUTS",
    "DECODER_INPUTS",
    "DECODER_OUTPUTS",
    "DEFAULT_OPSET",
    "ENCODER_INPUTS",
    "ENCODER_OUTPUTS",
    "INSTALL_HINT",
    "MAX_OPSET",
    "MIN_OPSET",
    "Agreement",
    "BrowserDecoder",
    "BrowserFactoredDecoder",
    "BrowserFactoredExport",
    "BrowserImageProducts",
    "DecoderExport",
    "EncoderExport",
    "ExportError",
    "OnnxDecoder",
    "OnnxEncoder",
    "OnnxExport",
    "OnnxFile",
    "QuantizedDecoder",
    "TensorSpec",
    "export_browser_decoder",
    "export_browser_factored",
    "export_decoder",
    "export_encoder",
    "export_onnx",
    "quantize_decoder",
]

"""ONNX export of SAM: `decoder.onnx` with the official interface, `encoder.onnx`, optionally `decoder_int8.onnx`.

    from samflow.export import export_onnx
    result = export_onnx("tiny", "onnx/")          # or a Sam; checkpoint= for weights
    print(result.summary())

The decoder takes what segment-anything's `scripts/export_onnx_model.py` export takes (see `samflow.export.decoder`),
so applications built on the official export and web demo run it unchanged; its masks are right for every
`orig_im_size`. The encoder maps the preprocessed (1, 3, S, S) image to the (1, C, h, w) embedding. Every export is
checked against samflow's torch model on a sample picture and prompts unless `verify=False`, and the int8 decoder's
mask agreement with the fp32 one is measured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from samflow.errors import InputError
from samflow.export import checks
from samflow.export.checks import Agreement
from samflow.export.decoder import (
    BROWSER_DECODER_INPUTS,
    BROWSER_DECODER_OUTPUTS,
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    FACTORED_PROMPT_INPUTS,
    IMAGE_PRODUCT_PREFIX,
    BrowserDecoder,
    BrowserFactoredDecoder,
    BrowserImageProducts,
    OnnxDecoder,
)
from samflow.export.encoder import ENCODER_INPUTS, ENCODER_OUTPUTS, OnnxEncoder
from samflow.export.quantize import quantize_decoder
from samflow.export.runtime import ExportError, require, session
from samflow.export.writer import DEFAULT_OPSET, TensorSpec, check_opset, interface, write_onnx
from samflow.fileio import write_json_atomic
from samflow.models.sam import Sam, SamConfig, build_sam
from samflow.models.sam.build import SHIPPED_WEIGHTS
from samflow.models.sam.config import FAMILY_NAMES

log = logging.getLogger(__name__)

DECODER_FILE = "decoder.onnx"
DECODER_INT8_FILE = "decoder_int8.onnx"
BROWSER_DECODER_FILE = "browser_decoder.onnx"
BROWSER_PRODUCTS_FILE = "browser_products.onnx"
BROWSER_FACTORED_FILE = "browser_factored_decoder.onnx"
ENCODER_FILE = "encoder.onnx"
MANIFEST_FILE = "export.json"
# The official script's example inputs: the traced graph must not depend on them (checked by the tests).
EXAMPLE_IMAGE_SIZE = (1500.0, 2250.0)
EXAMPLE_POINTS = 5
# The official dynamic axis (the number of points), and the masks' size, which follows orig_im_size.
DECODER_DYNAMIC_AXES = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"},
                        "masks": {2: "image_height", 3: "image_width"}}
# Sample prompts the checks decode.
CHECK_PROMPTS = 10


@dataclass(frozen=True, kw_only=True)
class OnnxFile:
    """A written ONNX file and the interface it declares."""

    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def to_record(self) -> dict[str, Any]:
        return {"file": self.path.name, "opset": self.opset, "inputs": [t.to_record() for t in self.inputs],
                "outputs": [t.to_record() for t in self.outputs]}


@dataclass(frozen=True, kw_only=True)
class QuantizedDecoder(OnnxFile):
    """The int8 decoder, with its masks' agreement with the fp32 decoder's on sample prompts."""

    agreement: Agreement

    def to_record(self) -> dict[str, Any]:
        return {**super().to_record(), "agreement_with_fp32": self.agreement.to_record()}


@dataclass(frozen=True, kw_only=True)
class DecoderExport(OnnxFile):
    """decoder.onnx: `multimask` False returns the one mask the official single-mask export picks, True all of
    the decoder's masks (4 for SAM, the single-mask output first). `max_relative_difference` per output, against
    the torch module, when verified."""

    multimask: bool
    use_stability_score: bool = False
    max_relative_difference: dict[str, float] | None = None
    quantized: QuantizedDecoder | None = None

    def to_record(self) -> dict[str, Any]:
        return {**super().to_record(), "multimask": self.multimask, "use_stability_score": self.use_stability_score,
                "max_relative_difference_vs_torch": self.max_relative_difference}


@dataclass(frozen=True, kw_only=True)
class EncoderExport(OnnxFile):
    """encoder.onnx: (1, 3, S, S) preprocessed image -> (1, C, h, w) embedding."""

    image_size: int
    max_relative_difference: float | None = None

    def to_record(self) -> dict[str, Any]:
        return {**super().to_record(), "image_size": self.image_size,
                "max_relative_difference_vs_torch": self.max_relative_difference}


@dataclass(frozen=True)
class OnnxExport:
    """Everything `export_onnx` wrote into `out_dir`."""

    out_dir: Path
    model: str | None
    config: SamConfig
    decoder: DecoderExport
    encoder: EncoderExport | None = None
    manifest: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def decoder_int8(self) -> QuantizedDecoder | None:
        return self.decoder.quantized

    @property
    def files(self) -> list[Path]:
        found = [self.decoder.path]
        found += [self.decoder.quantized.path] if self.decoder.quantized else []
        found += [self.encoder.path] if self.encoder else []
        return found + ([self.manifest] if self.manifest else [])

    def to_record(self) -> dict[str, Any]:
        c = self.config
        return {
            "model": self.model, "image_size": c.image_size, "embedding_size": c.embedding_size,
            "embedding_dim": c.prompt_embed_dim, "low_res_mask_size": 4 * c.embedding_size,
            "mask_threshold": Sam.mask_threshold, "pixel_mean": list(c.pixel_mean), "pixel_std": list(c.pixel_std),
            "decoder": self.decoder.to_record(),
            "decoder_int8": self.decoder.quantized.to_record() if self.decoder.quantized else None,
            "encoder": self.encoder.to_record() if self.encoder else None,
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """Lines for people: each file with its interface, and the measured differences."""
        lines = [f"ONNX export of {self.model or 'a SAM model'} ({self.config.describe()}, "
                 f"{self.config.image_size} px) in {self.out_dir}:"]

        def describe(f: OnnxFile) -> str:
            ins = ", ".join(f"{t.name} {_shape(t)}" for t in f.inputs)
            outs = ", ".join(f"{t.name} {_shape(t)}" for t in f.outputs)
            return f"  {f.path.name} (opset {f.opset}): {ins} -> {outs}"

        d = self.decoder
        lines.append(describe(d) + ("  [all masks]" if d.multimask else "  [single mask]"))
        if d.max_relative_difference is not None:
            worst = ", ".join(f"{k} {v:.1e}" for k, v in d.max_relative_difference.items())
            lines.append(f"    onnxruntime vs torch, max relative difference: {worst}")
        if d.quantized:
            lines.append(describe(d.quantized))
            lines.append(f"    int8 vs fp32: {d.quantized.agreement.describe()}")
        if self.encoder:
            lines.append(describe(self.encoder))
            if self.encoder.max_relative_difference is not None:
                lines.append(f"    onnxruntime vs torch, max relative difference: "
                             f"{self.encoder.max_relative_difference:.1e}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _shape(spec: TensorSpec) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in spec.shape) + ")"


def exportable(model: Sam) -> Sam:
    """`model` itself when it is a plain float32 CPU model in eval mode, else such a copy of it (the caller's model
    is never changed): ONNX graphs are traced in float32 on the CPU."""
    if not isinstance(model, Sam):
        raise InputError(f"expected a samflow Sam model (samflow.build_sam), not {type(model).__name__}")
    if model.family != "sam":
        # The official ONNX interface is SAM's: MobileSAM's TinyViT and HQ-SAM's extra inputs are not traced here.
        raise ExportError(f"ONNX export covers the original SAM models (vit_b, vit_l, vit_h, tiny); this is a "
                          f"{FAMILY_NAMES.get(model.family, model.family)} model ({model.family})")
    compiled = any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())
    plain = (model.device.type == "cpu" and not model.training and not compiled
             and all(t.dtype == torch.float32 for t in model.state_dict().values() if t.is_floating_point()))
    if plain:
        return model
    copy = Sam(model.config)
    copy.load_state_dict({k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
                          for k, v in model.state_dict().items()})
    return copy.eval()


def decoder_example(config: SamConfig) -> tuple[torch.Tensor, ...]:
    """Example inputs the decoder is traced on (as the official script's): random, at the official example size."""
    gen = torch.Generator().manual_seed(0)
    grid, low = config.embedding_size, 4 * config.embedding_size
    return (
        torch.randn(1, config.prompt_embed_dim, grid, grid, generator=gen),
        torch.randint(0, config.image_size, (1, EXAMPLE_POINTS, 2), generator=gen).float(),
        torch.randint(0, 4, (1, EXAMPLE_POINTS), generator=gen).float(),
        torch.randn(1, 1, low, low, generator=gen),
        torch.tensor([1.0]),
        torch.tensor(EXAMPLE_IMAGE_SIZE),
    )


def export_decoder(model: Sam, path: str | Path, *, multimask: bool = False, opset: int = DEFAULT_OPSET,
                   quantize: bool = False, use_stability_score: bool = False, verify: bool = True,
                   embedding: torch.Tensor | None = None) -> DecoderExport:
    """Write the prompt encoder + mask decoder with the official ONNX interface to `path`.

    multimask: False (the official `--return-single-mask`, what its web demo loads) returns one mask per call,
    chosen as the official export chooses; True returns all the decoder's masks (4 for SAM). quantize also
    writes `<stem>_int8.onnx` beside it and measures its mask agreement with the fp32 decoder. verify compares
    onnxruntime with torch on sample prompts (both need onnxruntime). embedding: the (1, C, h, w) embedding the
    checks decode (default: samflow's embedding of a generated picture).
    """
    check_opset(opset)
    if verify or quantize:
        require("onnxruntime", "checking the exported decoder")
    model = exportable(model)
    path = Path(path)
    module = OnnxDecoder(model, return_single_mask=not multimask, use_stability_score=use_stability_score).eval()
    write_onnx(module, decoder_example(model.config), path, input_names=DECODER_INPUTS,
               output_names=DECODER_OUTPUTS, opset=opset,
               dynamic_axes=DECODER_DYNAMIC_AXES,
               fixed_output_dims={"masks": {0: 1, 1: 1 if not multimask else model.mask_decoder.num_mask_tokens}})
    inputs, outputs = interface(path)
    worst = quantized = None
    if verify or quantize:
        log.info("checking %s on %d sample prompts", path.name, CHECK_PROMPTS)
        embedding = checks.sample_embedding(model) if embedding is None else embedding.detach().float().cpu()
        prompts = checks.sample_prompts(model, CHECK_PROMPTS)
        fp32 = session(path)
        if verify:
            worst = checks.decoder_difference(fp32, module, embedding, prompts, DECODER_OUTPUTS)
            log.debug("decoder: onnxruntime vs torch, max relative difference %s", worst)
        if quantize:
            int8_path = quantize_decoder(path, path.with_name(f"{path.stem}_int8{path.suffix}"))
            agreement = checks.mask_agreement(fp32, session(int8_path), embedding, prompts)
            log.debug("int8 decoder vs fp32: %s", agreement.describe())
            int8_inputs, int8_outputs = interface(int8_path)
            quantized = QuantizedDecoder(path=int8_path, inputs=int8_inputs, outputs=int8_outputs, opset=opset,
                                         agreement=agreement)
    return DecoderExport(path=path, inputs=inputs, outputs=outputs, opset=opset, multimask=multimask,
                         use_stability_score=use_stability_score, max_relative_difference=worst,
                         quantized=quantized)


def export_browser_decoder(model: Sam, path: str | Path, *, opset: int = DEFAULT_OPSET, quantize: bool = False,
                           verify: bool = True, embedding: torch.Tensor | None = None) -> DecoderExport:
    """Write the browser app's decoder (`samflow.export.decoder.BrowserDecoder`) to `path`: the official inputs
    but `orig_im_size`, out the three multimask candidates' `iou_predictions` (1, 3) and `low_res_masks`
    (1, 3, 4h, 4w), which the page upscales itself. quantize, verify and embedding as in `export_decoder` (the
    int8 agreement is measured on the low-res masks)."""
    check_opset(opset)
    if verify or quantize:
        require("onnxruntime", "checking the exported decoder")
    model = exportable(model)
    path = Path(path)
    module = BrowserDecoder(model).eval()
    write_onnx(module, decoder_example(model.config)[:-1], path, input_names=BROWSER_DECODER_INPUTS,
               output_names=BROWSER_DECODER_OUTPUTS, opset=opset,
               dynamic_axes={k: v for k, v in DECODER_DYNAMIC_AXES.items() if k != "masks"})
    inputs, outputs = interface(path)
    worst = quantized = None
    if verify or quantize:
        embedding = checks.sample_embedding(model) if embedding is None else embedding.detach().float().cpu()
        prompts = checks.sample_prompts(model, CHECK_PROMPTS)
        fp32 = session(path)
        if verify:
            worst = checks.decoder_difference(fp32, module, embedding, prompts, BROWSER_DECODER_OUTPUTS,
                                              input_names=BROWSER_DECODER_INPUTS)
        if quantize:
            int8_path = quantize_decoder(path, path.with_name(f"{path.stem}_int8{path.suffix}"))
            agreement = checks.mask_agreement(fp32, session(int8_path), embedding, prompts, masks="low_res_masks")
            int8_inputs, int8_outputs = interface(int8_path)
            quantized = QuantizedDecoder(path=int8_path, inputs=int8_inputs, outputs=int8_outputs, opset=opset,
                                         agreement=agreement)
    return DecoderExport(path=path, inputs=inputs, outputs=outputs, opset=opset, multimask=True,
                         max_relative_difference=worst, quantized=quantized)


@dataclass(frozen=True, kw_only=True)
class BrowserFactoredExport:
    """The browser decoder split at the image: `products` (per image: `image_embeddings` -> image_product_i) and
    `decoder` (per click: point_coords, point_labels and the products -> iou_predictions, low_res_masks, as the
    browser decoder's without a mask input), with the largest relative differences against torch's browser decoder
    when verified."""

    products: OnnxFile
    decoder: OnnxFile
    max_relative_difference: dict[str, float] | None = None


def export_browser_factored(model: Sam, products_path: str | Path, decoder_path: str | Path, *,
                            opset: int = DEFAULT_OPSET, verify: bool = True,
                            embedding: torch.Tensor | None = None) -> BrowserFactoredExport:
    """Write the browser app's per-image and per-click decoder files (see `samflow.export.decoder`: about a third of
    the browser decoder's work per click, for prompts without a mask input). verify runs both on onnxruntime for
    sample prompts and compares them with `BrowserDecoder` in torch."""
    check_opset(opset)
    if verify:
        require("onnxruntime", "checking the exported decoder")
    model = exportable(model)
    products_module = BrowserImageProducts(model).eval()
    names = [f"{IMAGE_PRODUCT_PREFIX}{i}" for i in range(len(products_module.keys))]
    example = decoder_example(model.config)
    products_path, decoder_path = Path(products_path), Path(decoder_path)
    write_onnx(products_module, example[:1], products_path, input_names=("image_embeddings",), output_names=names,
               opset=opset)
    with torch.no_grad():
        products = products_module(example[0])
    write_onnx(BrowserFactoredDecoder(model, products_module.keys).eval(), (*example[1:3], *products), decoder_path,
               input_names=(*FACTORED_PROMPT_INPUTS, *names), output_names=BROWSER_DECODER_OUTPUTS, opset=opset,
               dynamic_axes={k: v for k, v in DECODER_DYNAMIC_AXES.items() if k in FACTORED_PROMPT_INPUTS})
    worst = None
    if verify:
        embedding = checks.sample_embedding(model) if embedding is None else embedding.detach().float().cpu()
        reference = BrowserDecoder(model).eval()
        per_image = session(products_path).run(names, {"image_embeddings": embedding.numpy()})
        per_click = session(decoder_path)
        worst = dict.fromkeys(BROWSER_DECODER_OUTPUTS, 0.0)
        for prompt in checks.sample_prompts(model, CHECK_PROMPTS):
            feed = {k: prompt[k] for k in FACTORED_PROMPT_INPUTS}
            got = per_click.run(list(BROWSER_DECODER_OUTPUTS), {**feed, **dict(zip(names, per_image))})
            with torch.no_grad():
                want = reference(embedding, *(torch.from_numpy(v) for v in feed.values()),
                                 torch.zeros_like(torch.from_numpy(prompt["mask_input"])), torch.zeros(1))
            for name, a, b in zip(BROWSER_DECODER_OUTPUTS, got, want):
                worst[name] = max(worst[name], checks.relative_difference(a, b.numpy()))
    def written(path: Path) -> OnnxFile:
        inputs, outputs = interface(path)
        return OnnxFile(path=path, inputs=inputs, outputs=outputs, opset=opset)
    return BrowserFactoredExport(products=written(products_path), decoder=written(decoder_path),
                                 max_relative_difference=worst)


def export_encoder(model: Sam, path: str | Path, *, opset: int = DEFAULT_OPSET, verify: bool = True) -> EncoderExport:
    """Write the image encoder to `path`: `image` (1, 3, S, S), normalised and padded as `Sam.preprocess` makes it,
    to `image_embeddings` (1, C, h, w). verify compares onnxruntime with samflow's torch encoder on a sample."""
    check_opset(opset)
    if verify:
        require("onnxruntime", "checking the exported encoder")
    model = exportable(model)
    path = Path(path)
    size = model.config.image_size
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    write_onnx(OnnxEncoder(model).eval(), (example,), path, input_names=ENCODER_INPUTS,
               output_names=ENCODER_OUTPUTS, opset=opset)
    inputs, outputs = interface(path)
    worst = None
    if verify:
        log.info("checking %s against the torch encoder", path.name)
        image = checks.sample_input(model)
        with torch.no_grad():
            want = model.image_encoder(image).numpy()
        (got,) = session(path).run(list(ENCODER_OUTPUTS), {ENCODER_INPUTS[0]: image.numpy()})
        worst = checks.relative_difference(got, want)
        log.debug("encoder: onnxruntime vs torch, max relative difference %.2e", worst)
    return EncoderExport(path=path, inputs=inputs, outputs=outputs, opset=opset, image_size=size,
                         max_relative_difference=worst)


def export_onnx(model: str | Sam, out_dir: str | Path, checkpoint: str | Path | None = None, *,
                multimask: bool = False, quantize: bool = False, opset: int = DEFAULT_OPSET,
                use_stability_score: bool = False, encoder: bool = True, verify: bool = True) -> OnnxExport:
    """Export a SAM model to `out_dir`: decoder.onnx (the official interface), encoder.onnx (unless
    encoder=False), decoder_int8.onnx with `quantize`, and export.json describing them (sizes, normalisation,
    interfaces, measured differences).

    model: a preset name ("tiny", "vit_b", "vit_l", "vit_h"; weights from `checkpoint`, tiny's shipped ones by
    default) or a samflow `Sam`. Raises ExportError when the ONNX tools are missing or the model cannot be
    exported, CheckpointError for an unknown name or unreadable checkpoint.
    """
    check_opset(opset)
    require("onnx")
    if verify or quantize:
        require("onnxruntime", "checking the export")
    name = model if isinstance(model, str) else None
    if isinstance(model, str):
        sam = build_sam(model, checkpoint=checkpoint, device="cpu")
    elif checkpoint is not None:
        raise InputError("checkpoint= goes with a preset name; load the weights into the model you pass instead")
    else:
        sam = model
    sam = exportable(sam)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder: give --out a folder to write the ONNX files into")
    out.mkdir(parents=True, exist_ok=True)
    embedding = checks.sample_embedding(sam) if (verify or quantize) else None
    decoder = export_decoder(sam, out / DECODER_FILE, multimask=multimask, opset=opset, quantize=quantize,
                             use_stability_score=use_stability_score, verify=verify, embedding=embedding)
    enc = export_encoder(sam, out / ENCODER_FILE, opset=opset, verify=verify) if encoder else None
    notes = []
    if name is not None and checkpoint is None and name not in SHIPPED_WEIGHTS:
        notes.append(f"{name} has random weights (no --checkpoint given): the files are for testing only")
    result = OnnxExport(out_dir=out, model=name, config=sam.config, decoder=decoder, encoder=enc,
                        manifest=out / MANIFEST_FILE, notes=notes)
    write_json_atomic(result.manifest, result.to_record())
    return result

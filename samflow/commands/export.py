"""`samflow export onnx`: a SAM model to ONNX files (decoder with the official interface, encoder, int8 decoder)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a model to another runtime (ONNX)",
        description="Export a model to files other runtimes load. `samflow export onnx --help` for ONNX.")
    parser.set_defaults(func=lambda args: _no_format(parser))
    formats = parser.add_subparsers(dest="format", metavar="FORMAT")
    onnx = formats.add_parser(
        "onnx", help="decoder.onnx (the official interface), encoder.onnx, optionally decoder_int8.onnx",
        description="Write DIR/decoder.onnx with the official segment-anything ONNX interface (inputs "
                    "image_embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size; "
                    "outputs masks, iou_predictions, low_res_masks; any number of points; correct masks for any "
                    "orig_im_size), DIR/encoder.onnx (preprocessed 1x3xSxS image to the embedding) and "
                    "DIR/export.json. Each file is checked against the torch model with onnxruntime.")
    onnx.add_argument("--model", required=True, help="SAM preset: tiny, vit_b, vit_l, vit_h")
    onnx.add_argument("--checkpoint", help="weights file (.pth or .safetensors) for --model (tiny: its shipped "
                                           "weights by default; the others are random without one)")
    onnx.add_argument("--out", required=True, metavar="DIR", help="folder to write the files into")
    masks = onnx.add_mutually_exclusive_group()
    masks.add_argument("--single-mask", dest="multimask", action="store_false",
                       help="one mask per call, picked as the official --return-single-mask export does "
                            "(default; what the official web demo loads)")
    masks.add_argument("--multimask", dest="multimask", action="store_true",
                       help="all the decoder's masks per call (4: single-mask output first, then the three "
                            "ambiguity-aware ones), as the official export without --return-single-mask")
    onnx.add_argument("--use-stability-score", action="store_true",
                      help="score masks by stability instead of predicted IoU (the official option)")
    onnx.add_argument("--quantize", action="store_true",
                      help="also write decoder_int8.onnx (dynamic int8 quantisation) and report its mask "
                           "agreement with the fp32 decoder")
    onnx.add_argument("--opset", type=int, help="ONNX opset (default 17, as the official script)")
    onnx.add_argument("--no-encoder", action="store_true", help="write the decoder only")
    onnx.add_argument("--no-verify", action="store_true",
                      help="skip the onnxruntime-vs-torch checks (the int8 agreement is still measured)")
    onnx.set_defaults(func=run_onnx, multimask=False)


def _no_format(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_onnx(args: argparse.Namespace) -> int:
    from samflow.export import DEFAULT_OPSET, export_onnx

    result = export_onnx(args.model, args.out, checkpoint=args.checkpoint, multimask=args.multimask,
                         quantize=args.quantize, opset=DEFAULT_OPSET if args.opset is None else args.opset,
                         use_stability_score=args.use_stability_score, encoder=not args.no_encoder,
                         verify=not args.no_verify)
    print(result.summary())
    return 0

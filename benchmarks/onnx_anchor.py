"""samflow against what CPU users run: the official SAM exported to ONNX, on onnxruntime. Same weights, one process.

    python benchmarks/onnx_anchor.py [--model vit_b] [--rounds 5] [--threads 2] [--skip-encoder] [--skip-decoder]
                                     [--onnx-dir DIR] [--pause 0.5]

The official segment-anything encoder (`ImageEncoderViT`) and decoder (`segment_anything.utils.onnx.SamOnnxModel`,
as the official export script and notebook build it: one click plus the padding point, the best mask brought to
the image's size, `return_single_mask=True`) are exported with `torch.onnx.export` from an official model holding
samflow's (random, perturbed) weights, and run on onnxruntime's CPU provider with `intra_op_num_threads` = torch's
threads and spinning off. The runs are interleaved (A, B, A, B... in one process, the order rotated each round;
medians reported), with the same pause after every call: onnxruntime's worker threads would otherwise keep a core
busy while torch runs, and every call then starts alike (after an idle pause, as a user's click does).

Rows:
- encoder, 1024 px input (after the official preprocessing): onnxruntime fp32; samflow fp32; samflow
  `dtype="bfloat16"` (on CPUs with AMX / AVX512-BF16); the embedding's max |diff| / max |ref| against onnxruntime;
- one click on a 534x800 image with its full-size mask: onnxruntime (decoder, single mask, full size); samflow
  `SamPredictor.predict(point, multimask_output=True)` (all three masks at full size, scores, low-res logits: more
  output than the ONNX model gives); and the decoder alone at low resolution on both sides. The ONNX mask is
  checked against samflow's mask of the same index (IoU and logit difference).

Prints the CPU's features (lscpu flags), the load average before and after, and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import cpu_report, interleaved, load_average, twin_models

from samflow.models.sam import build_sam
from samflow.predict.predictor import SamPredictor

IMAGE_HW = (534, 800)  # the click benchmark's image (height, width)


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_encoder(ref: torch.nn.Module, path: Path) -> None:
    size = ref.image_encoder.img_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ref.image_encoder, (torch.randn(1, 3, size, size),), str(path), input_names=["image"],
                          output_names=["image_embeddings"], opset_version=17, dynamo=False)


def export_decoder(ref: torch.nn.Module, path: Path, full_size: bool = True,
                   image_hw: tuple[int, int] = IMAGE_HW) -> None:
    """As segment-anything's scripts/export_onnx_model.py does it (single mask, as in its notebook); without
    `full_size` the masks output is the low-res one (the decoder alone).

    The example image size is the benchmark's own: with torch 2.x's TorchScript exporter the crop before the
    last resize (`int(prepadded_size[0])`) is traced as a constant, so the graph is right for that size only.
    """
    from segment_anything.utils.onnx import SamOnnxModel

    class LowRes(SamOnnxModel):
        def mask_postprocessing(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
            return masks

    onnx_model = (SamOnnxModel if full_size else LowRes)(ref, return_single_mask=True)
    embed_dim = ref.prompt_encoder.embed_dim
    grid = ref.prompt_encoder.image_embedding_size
    mask_size = [4 * x for x in grid]
    dummy = {
        "image_embeddings": torch.randn(1, embed_dim, *grid),
        "point_coords": torch.randint(0, 1024, (1, 5, 2), dtype=torch.float),
        "point_labels": torch.randint(0, 4, (1, 5), dtype=torch.float),
        "mask_input": torch.randn(1, 1, *mask_size),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor(image_hw, dtype=torch.float),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(onnx_model, tuple(dummy.values()), str(path), input_names=list(dummy),
                          output_names=["masks", "iou_predictions", "low_res_masks"], opset_version=17,
                          dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
                          do_constant_folding=True, dynamo=False)


CLOCK = time.perf_counter  # --cpu-time: time.process_time (with --threads 1: robust on a shared machine)


def rel_diff(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a, b = np.asarray(torch.as_tensor(a).float()), np.asarray(torch.as_tensor(b).float())
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    return (f"median {statistics.median(values) * scale:.{digits}f} "
            f"(min {min(values) * scale:.{digits}f}, max {max(values) * scale:.{digits}f})")


def bench_encoder(ours: torch.nn.Module, ours_bf16: torch.nn.Module | None, onnx_path: Path, threads: int,
                  rounds: int, pause: float) -> None:
    session = ort_session(onnx_path, threads)
    size = ours.image_encoder.img_size
    x = ours.preprocess(torch.rand(1, 3, size, size) * 255)
    x_np = x.numpy()
    outputs: dict[str, object] = {}

    def keep(name: str, fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                outputs[name] = fn()
        return run

    runs = {"onnxruntime fp32": keep("ort", lambda: session.run(None, {"image": x_np})[0]),
            "samflow fp32": keep("fp32", lambda: ours.image_encoder(x))}
    if ours_bf16 is not None:
        runs["samflow bfloat16"] = keep("bf16", lambda: ours_bf16.image_encoder(x.to(ours_bf16.dtype)))
    times = interleaved(runs, rounds, pause, CLOCK)
    base = statistics.median(times["onnxruntime fp32"])
    print(f"\nimage encoder, {size} px, {rounds} interleaved rounds (seconds per image)")
    for name, values in times.items():
        print(f"  {name:18s} {spread(values)} s   x{base / statistics.median(values):.2f} onnxruntime")
    print(f"  embedding max|diff|/max|ref| vs onnxruntime: samflow fp32 {rel_diff(outputs['fp32'], outputs['ort']):.1e}"
          + (f", bfloat16 {rel_diff(outputs['bf16'], outputs['ort']):.1e}"
             f" (vs samflow fp32 {rel_diff(outputs['bf16'], outputs['fp32']):.1e})" if "bf16" in outputs else ""))


def bench_decoder(ours: torch.nn.Module, onnx_paths: tuple[Path, Path], threads: int, rounds: int, pause: float,
                  image_hw: tuple[int, int] = IMAGE_HW) -> None:
    session, session_low = (ort_session(p, threads) for p in onnx_paths)
    h, w = image_hw
    predictor = SamPredictor(ours)
    grid = ours.prompt_encoder.image_embedding_size
    torch.manual_seed(1)
    embedding = torch.randn(1, ours.prompt_encoder.embed_dim, *grid) * 0.5
    predictor.reset_image()
    predictor.features = embedding
    predictor.original_size = (h, w)
    scale = ours.image_encoder.img_size / max(h, w)
    predictor.input_size = (int(h * scale + 0.5), int(w * scale + 0.5))
    predictor.is_image_set = True

    click = np.array([[w * 0.45, h * 0.55]])
    label = np.array([1])
    # The ONNX model's inputs, as the official notebook builds them: the click, then a padding point.
    coords = np.concatenate([click, [[0.0, 0.0]]])[None].astype(np.float32)
    coords = predictor.transform.apply_coords(coords, (h, w)).astype(np.float32)
    feed = {
        "image_embeddings": embedding.numpy(),
        "point_coords": coords,
        "point_labels": np.array([[1, -1]], dtype=np.float32),
        "mask_input": np.zeros((1, 1, 4 * grid[0], 4 * grid[1]), dtype=np.float32),
        "has_mask_input": np.zeros(1, dtype=np.float32),
        "orig_im_size": np.array([h, w], dtype=np.float32),
    }
    feed_low = {i.name: feed[i.name] for i in session_low.get_inputs()}  # orig_im_size is unused there
    coords_t = torch.as_tensor(predictor.transform.apply_coords(click, (h, w)), dtype=torch.float)[None]
    labels_t = torch.ones(1, 1, dtype=torch.int)
    outputs: dict[str, object] = {}

    def decoder_only() -> object:
        # no_grad as in predict: the decoder keeps its per-image constants per grad mode (inference_mode's tensors
        # are another kind), so alternating the two modes would recompute them on every call.
        with torch.no_grad():
            sparse, dense = ours.prompt_encoder(points=(coords_t, labels_t), boxes=None, masks=None)
            return ours.mask_decoder(embedding, ours.prompt_encoder.get_dense_pe(), sparse, dense, True)

    def full(name: str, fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            outputs[name] = fn()
        return run

    runs = {
        "onnxruntime": full("ort", lambda: session.run(None, feed)),
        "onnxruntime low-res": full("ort_low", lambda: session_low.run(None, feed_low)),
        "samflow predict": full("ours", lambda: predictor.predict(point_coords=click, point_labels=label,
                                                                  multimask_output=True, return_logits=True)),
        "samflow decoder": full("dec", decoder_only),
    }
    times = interleaved(runs, rounds, pause, CLOCK)
    base = statistics.median(times["onnxruntime"])
    print(f"\none click on a {w}x{h} image, {rounds} interleaved rounds (ms)")
    print(f"  onnxruntime (decoder + best mask at {w}x{h})       {spread(times['onnxruntime'], 1e3, 1)} ms")
    print(f"  samflow predict (3 masks at {w}x{h} + low-res)     {spread(times['samflow predict'], 1e3, 1)} ms"
          f"   x{base / statistics.median(times['samflow predict']):.2f} onnxruntime")
    print(f"  onnxruntime decoder only (low-res)                   {spread(times['onnxruntime low-res'], 1e3, 1)} ms")
    print(f"  samflow decoder only (3 low-res masks)               {spread(times['samflow decoder'], 1e3, 1)} ms"
          f"   x{statistics.median(times['onnxruntime low-res']) / statistics.median(times['samflow decoder']):.2f}"
          " onnxruntime")
    ort_masks, ort_iou, ort_low = outputs["ort"]
    our_logits, our_iou, our_low = outputs["ours"]
    best = int(np.argmax(our_iou))
    a, b = ort_masks[0, 0] > 0, our_logits[best] > 0
    iou = (a & b).sum() / max((a | b).sum(), 1)
    print(f"  same mask: index {best}, IoU {iou:.6f}, full-size logits max|diff|/max|ref| "
          f"{rel_diff(our_logits[best], ort_masks[0, 0]):.1e}, low-res {rel_diff(our_low[best], ort_low[0, 0]):.1e}, "
          f"score {our_iou[best]:.5f} vs {float(ort_iou[0, 0]):.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds of rest after every timed call")
    parser.add_argument("--skip-encoder", action="store_true")
    parser.add_argument("--skip-decoder", action="store_true")
    parser.add_argument("--no-bf16", action="store_true", help="leave out samflow's bfloat16 encoder")
    parser.add_argument("--onnx-dir", default=None, help="where the exported models go (default: a temporary folder)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by the process's CPU time, not the wall clock: with --threads 1 the comparison "
                             "then holds on a machine that other work keeps busy")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    import onnxruntime

    print(cpu_report())
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__} "
          f"({args.threads} intra-op threads, no spinning); model {args.model}, random weights; "
          f"{'CPU time' if args.cpu_time else 'wall clock'}; {load_average()}")
    ours, ref = twin_models(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.onnx_dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if not args.skip_encoder:
            path = folder / f"{args.model}_encoder.onnx"
            if not path.is_file():
                export_encoder(ref, path)
            ours_bf16 = None
            if not args.no_bf16:
                ours_bf16 = build_sam(ours.config, dtype="bfloat16")
                ours_bf16.load_state_dict(ours.state_dict())
            bench_encoder(ours, ours_bf16, path, args.threads, args.rounds, args.pause)
            del ours_bf16
        if not args.skip_decoder:
            paths = (folder / f"{args.model}_decoder_{IMAGE_HW[0]}x{IMAGE_HW[1]}.onnx",
                     folder / f"{args.model}_decoder_lowres.onnx")
            for path, full_size in zip(paths, (True, False)):
                if not path.is_file():
                    export_decoder(ref, path, full_size)
            bench_decoder(ours, paths, args.threads, max(args.rounds, 20), args.pause)
    print(f"\n{load_average()}")


if __name__ == "__main__":
    main()
